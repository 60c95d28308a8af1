"""Multi-step arithmetic word problems, generated from a seed, with an exact oracle for every step.

Each problem is a small computation graph: named quantities defined from earlier ones by one operation
each (2-8 operations; the number of operations is the difficulty knob). A step computes one quantity:
`Ben = 12 * 3 = 36`; the last line is `Answer: 36`. The oracle knows every intermediate value, so it can
say exactly whether any prefix of steps is right.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

from ponder.tasks.base import Problem, Task, TaskError
from ponder.tasks.exact import apply_op, parse_equation, parse_number

NAMES = ("Ann", "Ben", "Cal", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Lou", "Max", "Ned",
         "Oli", "Pam", "Quin", "Ray", "Sue", "Tom")
ITEMS = ("pens", "coins", "cards", "books", "shells", "stamps", "apples", "marbles")
MAX_VALUE = 999
TEST_SEED_OFFSET = 1_000_000  # test problems come from a seed range that training never uses
MIN_OPS, MAX_OPS = 2, 8


@dataclass(frozen=True)
class Quantity:
    name: str
    value: int
    op: str | None = None  # None for a given quantity
    a: int = 0  # operand values
    b: int = 0


def generate(seed: int, n_ops: int) -> tuple[str, list[Quantity]]:
    """Question text and the quantities in definition order; the last one is asked for."""
    if not MIN_OPS <= n_ops <= MAX_OPS:
        raise TaskError(f"arith: n_ops must be between {MIN_OPS} and {MAX_OPS}, got {n_ops}")
    rng = random.Random(seed)
    names = iter(rng.sample(NAMES, len(NAMES)))
    item = rng.choice(ITEMS)
    first = Quantity(next(names), rng.randint(2, 20))
    quantities = [first]
    sentences = [f"{first.name} has {first.value} {item}."]
    cur = first
    for _ in range(n_ops):
        name = next(names)
        kinds = ["more", "together"]
        if cur.value > 2:
            kinds += ["fewer", "less_than"]
        if cur.value * 2 <= MAX_VALUE:
            kinds.append("times")
        if any(cur.value % k == 0 for k in range(2, 6)):
            kinds.append("share")
        kind = rng.choice(kinds)
        if kind == "more":
            k = rng.randint(1, 20)
            q = Quantity(name, cur.value + k, "+", cur.value, k)
            sentences.append(f"{name} has {k} more than {cur.name}.")
        elif kind == "fewer":
            k = rng.randint(1, cur.value - 1)
            q = Quantity(name, cur.value - k, "-", cur.value, k)
            sentences.append(f"{name} has {k} fewer than {cur.name}.")
        elif kind == "times":
            k = rng.randint(2, min(5, MAX_VALUE // cur.value))
            q = Quantity(name, cur.value * k, "*", cur.value, k)
            sentences.append(f"{name} has {k} times as many as {cur.name}.")
        elif kind == "share":
            k = rng.choice([k for k in range(2, 6) if cur.value % k == 0])
            q = Quantity(name, cur.value // k, "/", cur.value, k)
            sentences.append(f"{name} has 1/{k} as many as {cur.name}.")
        else:  # two quantities: introduce a new given one first
            other = Quantity(next(names), rng.randint(1, cur.value - 1) if kind == "less_than"
                             else rng.randint(1, 30))
            quantities.append(other)
            sentences.append(f"{other.name} has {other.value}.")
            if kind == "together":
                q = Quantity(name, cur.value + other.value, "+", cur.value, other.value)
                sentences.append(f"{name} has as many as {cur.name} and {other.name} together.")
            else:
                q = Quantity(name, cur.value - other.value, "-", cur.value, other.value)
                sentences.append(f"{name} has {cur.name}'s minus {other.name}'s.")
        quantities.append(q)
        cur = q
    sentences.append(f"How many {item} does {cur.name} have?")
    return " ".join(sentences), quantities


def _derived(problem: Problem) -> dict[str, Quantity]:
    return {q.name: q for q in problem.meta["quantities"] if q.op is not None}


class Arith(Task):
    name = "arith"

    def __init__(self, n_ops: int | None = None, size: int = 200) -> None:
        """`n_ops` fixes the difficulty; None mixes 2-8 operations evenly. `size` is the test-set size."""
        self.n_ops = n_ops
        self.size = size

    def make(self, seed: int, n_ops: int, id: str | None = None) -> Problem:
        text, quantities = generate(seed, n_ops)
        return Problem(id=id or f"arith-{seed}-{n_ops}", question=text, answer=str(quantities[-1].value),
                       meta={"quantities": quantities, "n_ops": n_ops, "seed": seed})

    def problems(self, split: str = "test", limit: int | None = None) -> list[Problem]:
        if split not in ("test", "train"):
            raise TaskError(f"arith has splits 'test' and 'train'; got {split!r}")
        count = self.size if limit is None else limit
        offset = TEST_SEED_OFFSET if split == "test" else 0
        span = MAX_OPS - MIN_OPS + 1
        return [
            self.make(offset + i, self.n_ops or MIN_OPS + i % span, id=f"arith-{split}-{i}")
            for i in range(count)
        ]

    def prompt(self, problem: Problem) -> str:
        return f"Question: {problem.question}\n"

    def reference_solution(self, problem: Problem) -> list[str]:
        steps = [f"{q.name} = {q.a} {q.op} {q.b} = {q.value}" for q in _derived(problem).values()]
        return [*steps, f"Answer: {problem.answer}"]

    def _check_equation(self, step: str, derived: dict[str, Quantity], done: set[str]) -> bool:
        tokens = step.split()
        if len(tokens) != 7 or tokens[1] != "=":
            return False
        parsed = parse_equation(tokens[2:])
        q = derived.get(tokens[0])
        if parsed is None or q is None or q.name in done:
            return False
        a, op, b, c = parsed
        operands_match = (a, b) == (q.a, q.b) or (op in "+*" and (b, a) == (q.a, q.b))
        return op == q.op and operands_match and apply_op(a, op, b) == c == q.value

    def check_step(self, problem: Problem, steps: list[str]) -> bool:
        derived, done = _derived(problem), set()
        for i, step in enumerate(steps):
            if step.lower().startswith("answer:"):
                return i == len(steps) - 1 and self.grade(problem, step.split(":", 1)[1].strip())
            if not self._check_equation(step, derived, done):
                return False
            done.add(step.split()[0])
        return True

    def other_error(self, problem: Problem, steps: list[str]) -> str:
        return "wrong quantity"  # a true equation, but not the one the question defines next

    def extract_answer(self, problem: Problem, steps: list[str]) -> str | None:
        for step in reversed(steps):
            if step.lower().startswith("answer:"):
                return step.split(":", 1)[1].strip()
        return None

    def grade(self, problem: Problem, answer: str | None) -> bool:
        value = parse_number(answer.strip()) if answer else None
        return value is not None and value == Fraction(int(problem.answer or 0))
