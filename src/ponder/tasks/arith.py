"""Multi-step arithmetic word problems, generated from a seed, with an exact oracle for every step.

Each problem is a small computation graph: named quantities defined from earlier ones by one operation each (2-8
operations; the number of operations is the difficulty knob; the `long` split holds 9-12, more than any training
problem has, to measure how a policy carries a chain beyond the lengths it learnt). A step computes one quantity in
three moves a small model can learn one at a time: the relation as the question states it, the values it refers to,
the result: `Ben = Ann * 3 = 12 * 3 = 36`; the last line is `Answer: 36`. Every value stays within 1-99, so the
arithmetic is two-digit and what grows with difficulty is the chain of references. The oracle knows every
intermediate value, so it can say exactly whether any prefix of steps is right.

rStar's actions (Qi et al., 2024) have lines of their own, which the oracle checks too: the question rephrased as
its relations (`Given: Ann = 12; Ben = Ann * 3; Cal = Ben + 5; Cal = ?`, first line only), a sub-question about the
next quantity (`Q: What is Ben?`) and its answer, a step behind `A: `. The intermediate quantities are the natural
sub-questions, so the task's own generator writes solutions that use them (`action_solution`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

from ponder.tasks.base import (
    Actions,
    Hintable,
    Problem,
    ReferenceSolver,
    Revisable,
    RStarActions,
    StepOracle,
    TaskError,
)
from ponder.tasks.exact import apply_op, format_number, parse_equation, parse_number

NAMES = ("Ann", "Ben", "Cal", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Lou", "Max", "Ned",
         "Oli", "Pam", "Quin", "Ray", "Sue", "Tom")
ITEMS = ("pens", "coins", "cards", "books", "shells", "stamps", "apples", "marbles")
MAX_VALUE = 99
TEST_SEED_OFFSET = 1_000_000  # test problems come from a seed range that training never uses
LONG_SEED_OFFSET = 2_000_000  # and the `long` split's from a third
MIN_OPS, MAX_OPS = 2, 8  # the train and test splits
LONG_OPS = (9, 12)  # the `long` split
LONG_TRAIN_SEED_OFFSET = 3_000_000  # `long-train`: training problems of the long lengths, from a fourth range
SPLITS = {"train": (0, MIN_OPS, MAX_OPS), "test": (TEST_SEED_OFFSET, MIN_OPS, MAX_OPS),
          "long": (LONG_SEED_OFFSET, *LONG_OPS), "long-train": (LONG_TRAIN_SEED_OFFSET, *LONG_OPS),
          # one length at a time (`long-train-9` ... `-12`), a curriculum's steps
          **{f"long-train-{n}": (LONG_TRAIN_SEED_OFFSET + n * 100_000, n, n)
             for n in range(LONG_OPS[0], LONG_OPS[1] + 1)}}  # seed offset, fewest and most operations


@dataclass(frozen=True)
class Quantity:
    name: str
    value: int
    op: str | None = None  # None for a given quantity
    x: str = ""  # operands as the question names them: a quantity's name or a number
    y: str = ""
    a: int = 0  # operand values
    b: int = 0

    def step(self) -> str:
        return f"{self.name} = {self.x} {self.op} {self.y} = {self.a} {self.op} {self.b} = {self.value}"


def generate(seed: int, n_ops: int) -> tuple[str, list[Quantity]]:
    """Question text and the quantities in definition order; the last one is asked for."""
    if not MIN_OPS <= n_ops <= LONG_OPS[1]:
        raise TaskError(f"arith: n_ops must be between {MIN_OPS} and {LONG_OPS[1]}, got {n_ops}")
    rng = random.Random(seed)
    names = iter(rng.sample(NAMES, len(NAMES)))
    unused = len(NAMES) - 1
    item = rng.choice(ITEMS)
    first = Quantity(next(names), rng.randint(2, 20))
    quantities = [first]
    sentences = [f"{first.name} has {first.value} {item}."]
    cur = first
    for i in range(n_ops):
        name = next(names)
        # a second given quantity takes a name beyond the one each operation left needs; never short below 10
        # operations, so the problems of up to 9 are what they were before the long split existed
        two = unused > n_ops - i
        unused -= 1
        kinds = ["more"] + ["together"] * two if cur.value < MAX_VALUE - 1 else []
        if cur.value > 2:
            kinds += ["fewer"] + ["less_than"] * two
        if cur.value * 2 <= MAX_VALUE:
            kinds.append("times")
        if any(cur.value % k == 0 for k in range(2, 6)):
            kinds.append("share")
        kind = rng.choice(kinds)
        if kind == "more":
            k = rng.randint(1, min(20, MAX_VALUE - cur.value))
            q = Quantity(name, cur.value + k, "+", cur.name, str(k), cur.value, k)
            sentences.append(f"{name} has {k} more than {cur.name}.")
        elif kind == "fewer":
            k = rng.randint(1, cur.value - 1)
            q = Quantity(name, cur.value - k, "-", cur.name, str(k), cur.value, k)
            sentences.append(f"{name} has {k} fewer than {cur.name}.")
        elif kind == "times":
            k = rng.randint(2, min(5, MAX_VALUE // cur.value))
            q = Quantity(name, cur.value * k, "*", cur.name, str(k), cur.value, k)
            sentences.append(f"{name} has {k} times as many as {cur.name}.")
        elif kind == "share":
            k = rng.choice([k for k in range(2, 6) if cur.value % k == 0])
            q = Quantity(name, cur.value // k, "/", cur.name, str(k), cur.value, k)
            sentences.append(f"{name} has 1/{k} as many as {cur.name}.")
        else:  # two quantities: introduce a new given one first
            unused -= 1
            other = Quantity(next(names), rng.randint(1, cur.value - 1) if kind == "less_than"
                             else rng.randint(1, min(30, MAX_VALUE - cur.value)))
            quantities.append(other)
            sentences.append(f"{other.name} has {other.value}.")
            if kind == "together":
                q = Quantity(name, cur.value + other.value, "+", cur.name, other.name, cur.value, other.value)
                sentences.append(f"{name} has as many as {cur.name} and {other.name} together.")
            else:
                q = Quantity(name, cur.value - other.value, "-", cur.name, other.name, cur.value, other.value)
                sentences.append(f"{name} has {cur.name}'s minus {other.name}'s.")
        quantities.append(q)
        cur = q
    sentences.append(f"How many {item} does {cur.name} have?")
    return " ".join(sentences), quantities


def _derived(problem: Problem) -> dict[str, Quantity]:
    return {q.name: q for q in problem.meta["quantities"] if q.op is not None}


def rephrased(problem: Problem) -> str:
    """The question as its relations, in the order it states them, and what it asks."""
    quantities = problem.meta["quantities"]
    parts = [f"{q.name} = {q.value}" if q.op is None else f"{q.name} = {q.x} {q.op} {q.y}" for q in quantities]
    return f"{ACTIONS.rephrase} {'; '.join(parts)}; {quantities[-1].name} = ?"


def subquestion(name: str) -> str:
    return f"{ACTIONS.subquestion} What is {name}?"


ACTIONS = Actions(rephrase="Given:", subquestion="Q:", subanswer="A:")
P_REPHRASE, P_SUBQUESTION = 0.25, 0.3  # how often `action_solution` uses each action


class Arith(StepOracle, ReferenceSolver, Hintable, Revisable, RStarActions):
    name = "arith"
    max_tokens = 480  # 12 steps of `Name = x op y = a op b = c` (about 35 tokens each) and the answer
    max_steps = 13
    actions = ACTIONS
    default_method = "cot"  # greedy solves every measured test problem; the PRM misleads searches

    def __init__(self, n_ops: int | None = None, size: int = 200) -> None:
        """`n_ops` fixes the difficulty; None mixes the split's range evenly (2-8; 9-12 in `long`). `size` is the
        test-set size."""
        self.n_ops = n_ops
        self.size = size

    def make(self, seed: int, n_ops: int, id: str | None = None) -> Problem:
        text, quantities = generate(seed, n_ops)
        return Problem(id=id or f"arith-{seed}-{n_ops}", question=text, answer=str(quantities[-1].value),
                       meta={"quantities": quantities, "n_ops": n_ops, "seed": seed})

    def problems(self, split: str = "test", limit: int | None = None) -> list[Problem]:
        if split not in SPLITS:
            raise TaskError(f"arith has splits {', '.join(map(repr, SPLITS))}; got {split!r}")
        count = self.size if limit is None else limit
        return [self._nth(split, i) for i in range(count)]

    def _nth(self, split: str, i: int) -> Problem:
        offset, low, high = SPLITS[split]
        return self.make(offset + i, self.n_ops or low + i % (high - low + 1), id=f"arith-{split}-{i}")

    def from_text(self, text: str) -> Problem:
        """A test problem by its index."""
        if not text.strip().isdigit() or int(text) >= self.size:
            raise TaskError(f"arith: give a test-problem index (0-{self.size - 1}), got {text!r}")
        return self._nth("test", int(text))

    def rebuild(self, problem_id: str, question: str) -> Problem:
        """A split's problem from its id (`arith-train-3`), quantities included; else the base rebuild."""
        split, _, index = problem_id.removeprefix("arith-").rpartition("-")
        if split in SPLITS and index.isdigit():
            problem = self._nth(split, int(index))
            if problem.question == question:
                return problem
        return super().rebuild(problem_id, question)

    def prompt(self, problem: Problem) -> str:
        return f"Question: {problem.question}\n"

    def difficulty(self, problem: Problem) -> int:
        return int(problem.meta["n_ops"])

    def reference_solution(self, problem: Problem) -> list[str]:
        return [*(q.step() for q in _derived(problem).values()), f"Answer: {problem.answer}"]

    def _check_equation(self, step: str, derived: dict[str, Quantity], known: set[str]) -> bool:
        """`Name = x op y = a op b = c`: the quantity comes next (its operands are known, it is not), the relation
        is the question's, the values are the operands', the result is right. `+` and `*` may swap their operands,
        in the relation and the values alike."""
        tokens = step.split()
        if len(tokens) != 11 or tokens[1] != "=" or tokens[5] != "=":
            return False
        q = derived.get(tokens[0])
        parsed = parse_equation(tokens[6:])
        if q is None or q.name in known or parsed is None:
            return False
        if any(operand in derived and operand not in known for operand in (q.x, q.y)):
            return False
        x, op, y = tokens[2:5]
        a, op_values, b, c = parsed
        if op != q.op or op_values != op:
            return False
        if (x, y, a, b) != (q.x, q.y, q.a, q.b):
            swapped = (y, x, b, a) == (q.x, q.y, q.a, q.b)
            if not (op in "+*" and swapped):
                return False
        return apply_op(a, op, b) == c == q.value

    def check_step(self, problem: Problem, steps: list[str]) -> bool:
        return self._progress(problem, steps) is not None

    def _progress(self, problem: Problem, steps: list[str]) -> tuple[set[str], str | None] | None:
        """After a right prefix: the quantities known and the sub-question waiting for its answer (None when no
        sub-question is open); None when a step is wrong. A rephrasing is right only as the first line and exactly
        as `rephrased` writes it; a sub-question asks for the quantity that can be computed next, and the next line
        answers it."""
        derived = _derived(problem)
        known = {q.name for q in problem.meta["quantities"] if q.op is None}
        asked: str | None = None
        for i, step in enumerate(steps):
            if step.lower().startswith("answer:"):
                ok = asked is None and i == len(steps) - 1 and self.grade(problem, step.split(":", 1)[1].strip())
                return (known, None) if ok else None
            if step.startswith(ACTIONS.rephrase):
                if i > 0 or " ".join(step.split()) != rephrased(problem):
                    return None
                continue
            if step.startswith(ACTIONS.subquestion):
                name = step[len(ACTIONS.subquestion):].strip().removeprefix("What is ").removesuffix("?")
                q = derived.get(name)
                if asked is not None or q is None or q.name in known or any(
                        v in derived and v not in known for v in (q.x, q.y)):
                    return None
                asked = name
                continue
            if step.startswith(ACTIONS.subanswer):
                step = step[len(ACTIONS.subanswer):].strip()
                if asked is None or step.split()[:1] != [asked]:
                    return None
                asked = None
            elif asked is not None:
                return None
            if not self._check_equation(step, derived, known):
                return None
            known.add(step.split()[0])
        return known, asked

    def action_solution(self, problem: Problem, rng: random.Random) -> list[str]:
        """The reference solution written with rStar's actions at random: the question rephrased first (a quarter
        of the time), each quantity asked as a sub-question and answered (30%) or computed as a plain step."""
        steps = [rephrased(problem)] if rng.random() < P_REPHRASE else []
        for q in _derived(problem).values():
            if rng.random() < P_SUBQUESTION:
                steps += [subquestion(q.name), f"{ACTIONS.subanswer} {q.step()}"]
            else:
                steps.append(q.step())
        return [*steps, f"Answer: {problem.answer}"]

    def step_candidates(self, problem: Problem, steps: list[str]) -> list[str]:
        """The next step and the slips a policy makes on it: the result off by one or ten (a carry or a borrow;
        nearly all the errors of a policy trained on an earlier step format were of this kind), an operand's value
        misread, the other operator, an answer given too early. After a wrong step the chain goes on from the value
        that step wrote, as a policy carries on from its own slip."""
        chain = list(_derived(problem).values())
        values = {q.name: Fraction(q.value) for q in problem.meta["quantities"] if q.op is None}
        if self.is_final(steps) or len(steps) > len(chain):
            return []
        for step, q in zip(steps, chain):
            tokens = step.split()
            written = parse_number(tokens[-1]) if len(tokens) == 11 and tokens[0] == q.name else None
            if written is None:
                return []  # not a step of the chain: nothing plausible follows
            values[q.name] = written
        if len(steps) == len(chain):
            last = values[chain[-1].name]
            return [f"Answer: {format_number(x)}" for x in (last, last + 1, last - 10)]
        q = chain[len(steps)]
        a, b = (values[v] if v in values else Fraction(int(v)) for v in (q.x, q.y))
        other_op = {"+": "-", "-": "+", "*": "+", "/": "*"}[q.op]

        def step(op: str, x: Fraction, y: Fraction, c: Fraction | None = None) -> str:
            c = apply_op(x, op, y) if c is None else c
            return f"{q.name} = {q.x} {op} {q.y} = {format_number(x)} {op} {format_number(y)} = {format_number(c)}"

        right = apply_op(a, q.op, b)
        assert right is not None  # divisors are 2-5
        slips = [step(q.op, a, b, right + d) for d in (1, -1, 10, -10) if right + d >= 0]
        return [step(q.op, a, b), *slips, step(q.op, a + 10, b), step(other_op, a, b), f"Answer: {format_number(a)}"]

    def moves(self, problem: Problem, steps: list[str]) -> list[str]:
        """The one right next step (the quantities form a chain): the next definition, then the answer; after a
        sub-question, its answer."""
        progress = self._progress(problem, steps)
        if progress is None or self.is_final(steps):
            return []
        known, asked = progress
        if asked is not None:
            return [f"{ACTIONS.subanswer} {_derived(problem)[asked].step()}"]
        following = [q.step() for q in _derived(problem).values() if q.name not in known]
        return following[:1] or [f"Answer: {problem.answer}"]

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
