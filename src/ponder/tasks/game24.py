"""Game of 24: combine four numbers with + - * / to make 24, each number used exactly once.

Puzzles are the Tree of Thoughts list (Yao et al., 2023, "Tree of Thoughts: Deliberate Problem Solving with
Large Language Models"), ranked by human solve time; the standard test set is ranks 901-1000 and training uses
the other puzzles only. A step combines two of the numbers left: `10 - 4 = 6 (left: 5 6 6)`. The last line is
`Answer: (10 - 4) * ... = 24`.
"""

from __future__ import annotations

import csv
import os
import random
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from functools import lru_cache
from importlib import resources
from itertools import combinations_with_replacement
from pathlib import Path

from ponder.tasks.base import Backtracking, Hintable, Problem, ReferenceSolver, Revisable, StepOracle, TaskError
from ponder.tasks.exact import apply_op, evaluate_expression, format_number, parse_equation, parse_number

TARGET = Fraction(24)
BACK = "back"  # opens a back step, `back (left: 4 6 15)`: a stream of search returns to that state (`Backtracking`)
TEST_RANKS = range(901, 1001)
SYNTHETIC_MAX = 24  # the `synthetic` split: solvable puzzles from 1..24 with a number above 13 (never a test one)
SYNTHETIC_LIMIT = 60  # `synthetic-N` takes numbers up to N (14..60)
FAR_RANGE = (25, 60)  # the `far` splits: one number in 25-60 (above every training split's), three in 1-24
FAR_TEST, FAR_TRAIN = 100, 1000  # puzzles in `far` (a test split) and in `far-train` (the pool a loop may train on)


def parse_puzzle(text: str, where: str = "puzzle") -> tuple[int, ...]:
    """'4 5 6 10' -> (4, 5, 6, 10). Raises TaskError saying what was expected."""
    parts = text.split()
    if len(parts) != 4 or not all(p.isdigit() and p.isascii() and len(p) <= 6 for p in parts):
        raise TaskError(f"{where}: expected four non-negative integers separated by spaces, got {text!r}")
    return tuple(int(p) for p in parts)


def load_puzzles(path: Path | None = None) -> list[tuple[int, tuple[int, ...]]]:
    """(rank, numbers) rows of a 24.csv file (columns Rank,Puzzles,...); the shipped copy by default."""
    if path is None:
        text = resources.files("ponder.tasks").joinpath("data/24.csv").read_text()
        name = "24.csv (shipped)"
    else:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise TaskError(f"cannot read puzzle file {path}: {err.strerror}") from err
        name = str(path)
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip() for c in rows[0][:2]] != ["Rank", "Puzzles"]:
        raise TaskError(f"{name}:1: expected a header starting 'Rank,Puzzles'")
    puzzles = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < 2 or not row[0].strip().isdigit():
            raise TaskError(f"{name}:{lineno}: expected 'rank,a b c d,...', got {','.join(row)!r}")
        puzzles.append((int(row[0]), parse_puzzle(row[1], where=f"{name}:{lineno}")))
    return puzzles


# --- exact solver ---------------------------------------------------------------------------------------

State = tuple[Fraction, ...]


def _key(numbers: list[Fraction] | tuple[Fraction, ...]) -> State:
    return tuple(sorted(numbers))


@lru_cache(maxsize=2_000_000)
def solvable(state: State) -> bool:
    """Whether the numbers left can still make 24 with any of + - * / (negatives allowed)."""
    if len(state) == 1:
        return state[0] == TARGET
    for i in range(len(state)):
        for j in range(i + 1, len(state)):
            rest = state[:i] + state[i + 1 : j] + state[j + 1 :]
            a, b = state[i], state[j]
            for c in (a + b, a - b, b - a, a * b, a / b if b else None, b / a if a else None):
                if c is not None and solvable(_key((*rest, c))):
                    return True
    return False


def _moves(state: State) -> list[tuple[Fraction, str, Fraction, Fraction, State]]:
    """Canonical steps from a state: non-negative results, the larger operand first for + * -."""
    moves = []
    seen = set()
    for i in range(len(state)):
        for j in range(i + 1, len(state)):
            rest = state[:i] + state[i + 1 : j] + state[j + 1 :]
            big, small = max(state[i], state[j]), min(state[i], state[j])
            candidates = [(big, "+", small), (big, "*", small), (big, "-", small), (big, "/", small)]
            if big != small:
                candidates.append((small, "/", big))
            for a, op, b in candidates:
                c = apply_op(a, op, b)
                if c is None or (a, op, b) in seen:
                    continue
                seen.add((a, op, b))
                moves.append((a, op, b, c, _key((*rest, c))))
    return moves


def _slips(state: State, a: Fraction, op: str, b: Fraction, c: Fraction, left: State) -> list[str]:
    """Four wrong versions of the move `a op b = c`, drawn (reproducibly, per state and move) from the slips a
    small policy makes on the training puzzles: two wrong results (off by one or two, another operation's
    result, the result for a neighbouring operand), one wrong `left` list (a number dropped, an operand kept in
    place of another number or of the result) and one operand that is not there (a number used twice, or one
    not in the list). A verifier trained on a narrow set of slips learns to spot those slips, not to check the
    arithmetic: one trained on the previous generator's (results +-1 and one other operation's) passed
    `13 * 4 = 64`."""
    rng = random.Random(f"{' '.join(map(str, state))}|{a}{op}{b}")
    rest = _without(left, c)
    results = {c + 1, c - 1, c + 2, c - 2, *(apply_op(a, other, b) for other in "+-*/"),
               apply_op(a, op, b + 1), apply_op(a, op, b - 1), apply_op(a + 1, op, b)}
    wrong = sorted(x for x in results - {c, None} if x is not None and x >= 0)
    out = [format_step(a, op, b, x, _key([*rest, x])) for x in rng.sample(wrong, min(2, len(wrong)))]
    lists = [_key([*rest, c, a]), _key([*rest, a]), _key(rest)] if rest else []
    if len(rest) > 1:
        lists += [_key([*rest[1:], a, c]), _key([*rest[:-1], b, c]), left[1:]]
    lists = [x for x in lists if Counter(x) != Counter(left)]
    if lists:
        out.append(format_step(a, op, b, c, rng.choice(lists)))
    operands = [(max(state) + 1, b)]
    if list(state).count(a) < 2 and apply_op(a, op, a) is not None:
        operands.append((a, a))
    x, y = rng.choice(operands)
    z = apply_op(x, op, y)
    z = x if z is None else z
    out.append(format_step(x, op, y, z, _key([*rest, z])))
    return out


def _without(numbers: State, x: Fraction) -> list[Fraction]:
    """`numbers` less one copy of `x`."""
    out = list(numbers)
    out.remove(x)
    return out


def _listed(step: str) -> list[Fraction | None]:
    """The numbers a step lists after `(left:` up to its closing `)`; None for one that does not parse."""
    return [parse_number(x) for x in step.partition("(left:")[2].removesuffix(")").split()]


def _written_state(steps: list[str]) -> State | None:
    """The numbers the last step says are left (right or not); None if it says none or does not parse."""
    if not steps:
        return None
    numbers = _listed(steps[-1])
    if len(numbers) < 2 or None in numbers:
        return None
    return _key([x for x in numbers if x is not None])


def format_step(a: Fraction, op: str, b: Fraction, c: Fraction, left: State) -> str:
    left_text = " ".join(format_number(x) for x in left)
    return f"{format_number(a)} {op} {format_number(b)} = {format_number(c)} (left: {left_text})"


def solutions(numbers: tuple[int, ...], limit: int | None = None) -> list[list[str]]:
    """All distinct canonical solution paths (steps plus answer line), in a fixed order."""
    found: list[list[str]] = []

    def walk(state: State, steps: list[str]) -> None:
        if limit is not None and len(found) >= limit:
            return
        if len(state) == 1:
            if state[0] == TARGET:
                found.append([*steps, f"Answer: {expression_from_steps(numbers, steps)} = 24"])
            return
        for a, op, b, c, nxt in _moves(state):
            if solvable(nxt):
                walk(nxt, [*steps, format_step(a, op, b, c, nxt)])

    walk(_key([Fraction(n) for n in numbers]), [])
    return found


def expression_from_steps(numbers: tuple[int, ...], steps: list[str]) -> str | None:
    """The expression a list of steps writes, e.g. `(10 - 4) * (6 - 5 + ...)`; None if a step does not parse.

    Nothing is checked here: an operand that is neither an input nor an earlier result is taken as a literal,
    so wrong steps give an expression that grades wrong, and self-consistency votes on what the model wrote.
    """
    pool: list[tuple[Fraction, str]] = [(Fraction(n), str(n)) for n in numbers]
    for step in steps:
        parsed = parse_equation(step.split())
        if parsed is None:
            return None
        a, op, b, c = parsed
        ea, eb = _take(pool, a), _take(pool, b)
        pool.append((c, f"({ea} {op} {eb})"))
    if len(pool) != 1:
        return " ".join(e for _, e in pool)
    expr = pool[0][1]
    return expr[1:-1] if expr.startswith("(") and expr.endswith(")") else expr


def _take(pool: list[tuple[Fraction, str]], value: Fraction) -> str:
    for i, (v, expr) in enumerate(pool):
        if v == value:
            pool.pop(i)
            return expr
    return format_number(value).replace("/", " / ")


@lru_cache(maxsize=2)
def synthetic_puzzles(max_number: int = SYNTHETIC_MAX) -> list[tuple[int, ...]]:
    """Extra training puzzles: every solvable multiset of four numbers from 1 to `max_number` with at least one
    number above 13. The Tree-of-Thoughts list holds every solvable puzzle of numbers 1 to 13, so none of these
    is a test puzzle; up to 24 they teach the moves and the arithmetic on seven times as many puzzles as the
    training split. Checked on every core (about a minute on one up to 24)."""
    candidates = [nums for nums in combinations_with_replacement(range(1, max_number + 1), 4) if nums[-1] > 13]
    workers = min(os.cpu_count() or 1, 16)
    chunks = [candidates[i::workers * 4] for i in range(workers * 4)]
    with ProcessPoolExecutor(workers) as pool:
        found = [nums for part in pool.map(_solvable_only, chunks) for nums in part]
    return sorted(found)


def _solvable_only(puzzles: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    return [nums for nums in puzzles if solvable(_key([Fraction(n) for n in nums]))]


@lru_cache(maxsize=1)
def far_puzzles() -> list[tuple[int, ...]]:
    """Solvable puzzles with one number in 25-60 and three in 1-24, distinct, drawn in a fixed (seeded) order: the
    first `FAR_TEST` are the `far` test split, the next `FAR_TRAIN` the `far-train` pool, so none is in both. The
    solver decides solvability only; it writes no data."""
    rng = random.Random("game24-far")
    found: dict[tuple[int, ...], None] = {}
    while len(found) < FAR_TEST + FAR_TRAIN:
        nums = tuple(sorted([rng.randint(*FAR_RANGE), *(rng.randint(1, FAR_RANGE[0] - 1) for _ in range(3))]))
        if nums not in found and solvable(_key([Fraction(n) for n in nums])):
            found[nums] = None
    return list(found)


def _bound(split: str, prefix: str, low: int, high: int) -> int | None:
    """N of a split named `prefix` followed by N, with N in low-high; None for any other name."""
    bound = split.removeprefix(prefix)
    return int(bound) if split.startswith(prefix) and bound.isdigit() and low <= int(bound) <= high else None


def _synthetic_max(split: str) -> int:
    """`synthetic` is numbers up to 24; `synthetic-N` up to N."""
    if split == "synthetic":
        return SYNTHETIC_MAX
    bound = _bound(split, "synthetic-", 14, SYNTHETIC_LIMIT)
    if bound is None:
        raise TaskError(f"game24: synthetic splits are 'synthetic' and 'synthetic-N' with N in 14-{SYNTHETIC_LIMIT}; "
                        f"got {split!r}")
    return bound


def _far_max(split: str) -> int:
    """`far` and `far-train` reach the far range's top; `far-train-N` only N: a curriculum's steps, nearest the
    training numbers first."""
    if split in ("far", "far-train"):
        return FAR_RANGE[1]
    bound = _bound(split, "far-train-", *FAR_RANGE)
    if bound is None:
        raise TaskError(f"game24: far splits are 'far', 'far-train' and 'far-train-N' with N in "
                        f"{FAR_RANGE[0]}-{FAR_RANGE[1]}; got {split!r}")
    return bound


# --- the task -------------------------------------------------------------------------------------------


class Game24(StepOracle, ReferenceSolver, Hintable, Revisable, Backtracking):
    name = "game24"
    max_tokens = 160
    max_steps = 4  # three moves and, if the model writes one, an answer line
    default_method = "tot_bfs"  # 93% of the test split at k = 32, best-of-16 83% (docs/RESULTS.md)

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._puzzles: list[tuple[int, tuple[int, ...]]] | None = None

    def problems(self, split: str = "test", limit: int | None = None) -> list[Problem]:
        if split.startswith("synthetic"):
            return [self.problem(nums, id=f"game24-s-{'-'.join(map(str, nums))}")
                    for nums in synthetic_puzzles(_synthetic_max(split))[:limit]]
        if split.startswith("far"):
            top, far = _far_max(split), far_puzzles()
            chosen = [nums for nums in (far[:FAR_TEST] if split == "far" else far[FAR_TEST:]) if max(nums) <= top]
            return [self.problem(nums, id=f"game24-far-{'-'.join(map(str, nums))}") for nums in chosen[:limit]]
        if split not in ("test", "train", "all"):
            raise TaskError("game24 has splits 'test' (ranks 901-1000), 'train', 'all', 'synthetic' and "
                            f"'synthetic-N' (numbers up to N, 14-{SYNTHETIC_LIMIT}), 'far' and 'far-train' (one "
                            f"number in {FAR_RANGE[0]}-{FAR_RANGE[1]}) and 'far-train-N' (that number at most N); "
                            f"got {split!r}")
        if self._puzzles is None:
            self._puzzles = load_puzzles(self.path)
        rows = [
            (rank, nums)
            for rank, nums in self._puzzles
            if split == "all" or (rank in TEST_RANKS) == (split == "test")
        ]
        return [self.problem(nums, id=f"game24-{rank}") for rank, nums in rows[:limit]]

    def problem(self, numbers: tuple[int, ...] | str, id: str | None = None) -> Problem:
        nums = parse_puzzle(numbers) if isinstance(numbers, str) else numbers
        text = " ".join(str(n) for n in nums)
        return Problem(id=id or f"game24-{text.replace(' ', '-')}", question=text, meta={"numbers": nums})

    def prompt(self, problem: Problem) -> str:
        return f"Input: {problem.question}\n"

    @staticmethod
    def numbers(problem: Problem) -> tuple[int, ...]:
        return tuple(problem.meta.get("numbers") or parse_puzzle(problem.question))

    def from_text(self, text: str) -> Problem:
        return self.problem(text)

    def reference_solution(self, problem: Problem) -> list[str] | None:
        found = solutions(self.numbers(problem), limit=1)
        return found[0] if found else None

    def solutions(self, problem: Problem) -> list[list[str]]:
        # Steps only: the answer is rebuilt from the checked steps, and leaving the answer line out puts a third
        # more of every training batch on the arithmetic the model has to learn.
        return [path[:-1] for path in solutions(self.numbers(problem))]

    def step_candidates(self, problem: Problem, steps: list[str]) -> list[str]:
        """Next steps: every canonical move, and for each four of the slips a policy makes (`_slips`). After a
        wrong step the moves start from the numbers it *wrote*, as a policy carries on from its own slip."""
        state = self._state_after(problem, steps)
        if state is None:
            state = _written_state(steps)
        if state is None:
            return []
        out = []
        for a, op, b, c, left in _moves(state):
            out.append(format_step(a, op, b, c, left))
            out.extend(_slips(state, a, op, b, c, left))
        return out

    def moves(self, problem: Problem, steps: list[str]) -> list[str]:
        state = self._state_after(problem, steps)
        return [] if state is None else [format_step(a, op, b, c, left) for a, op, b, c, left in _moves(state)]

    def _state_after(self, problem: Problem, steps: list[str]) -> State | None:
        """The numbers left after right steps; None after a wrong one."""
        replayed = self._replay(problem, steps)
        return _key(list(replayed[0].elements())) if replayed is not None else None

    def back_step(self, problem: Problem, steps: list[str]) -> str:
        """`back (left: 4 6 15)`: the numbers the state after `steps` lists."""
        path = self.resolve(problem, steps)
        state = _written_state(path) if path else self._start(problem)
        if state is None:
            raise TaskError(f"game24: no state to go back to after {steps[-1]!r}")
        return f"{BACK} (left: {' '.join(format_number(x) for x in state)})"

    def resolve(self, problem: Problem, steps: list[str]) -> list[str] | None:
        """A back step returns to the state on the path that lists the same numbers (the start included)."""
        out: list[str] = []
        for step in steps:
            if not step.startswith(BACK):
                out.append(step)
                continue
            listed = _listed(step)
            if None in listed:
                return None
            target = _key([x for x in listed if x is not None])
            while out and _written_state(out) != target:
                out.pop()
            if not out and target != self._start(problem):
                return None
        return out

    def _start(self, problem: Problem) -> State:
        return _key([Fraction(n) for n in self.numbers(problem)])

    def _replay(self, problem: Problem, steps: list[str]) -> tuple[Counter[Fraction], int, list[str]] | None:
        """Apply the arithmetic steps of the path `steps` end on (up to an answer line) exactly; None at the first
        wrong one. Returns the numbers left, how many of the path's steps are arithmetic, and the path."""
        path = self.resolve(problem, steps)
        if path is None:
            return None
        state = Counter(Fraction(n) for n in self.numbers(problem))
        n_steps = 0
        for step in path:
            if step.lower().startswith("answer:"):
                break
            tokens = step.split()
            parsed = parse_equation(tokens)
            if parsed is None or tokens[5:6] != ["(left:"] or not tokens[-1].endswith(")"):
                return None
            a, op, b, c = parsed
            if apply_op(a, op, b) != c:
                return None
            state[a] -= 1
            state[b] -= 1
            if state[a] < 0 or state[b] < 0:
                return None
            state[c] += 1
            state = +state
            left = _listed(step)
            if None in left or Counter(left) != state:
                return None
            n_steps += 1
        return state, n_steps, path

    def other_error(self, problem: Problem, steps: list[str]) -> str:
        # A true equation: either the numbers used or listed as left are wrong, or 24 is out of reach.
        return "bookkeeping" if self._replay(problem, steps) is None else "dead end"

    def check_step(self, problem: Problem, steps: list[str]) -> bool:
        replay = self._replay(problem, steps)
        if replay is None:
            return False
        state, n_steps, path = replay
        if n_steps < len(path):  # an answer line: it must be the last line and itself correct
            if n_steps != len(path) - 1:
                return False
            return self.grade(problem, self._answer_line(path[-1]))
        return solvable(_key(list(state.elements())))

    def is_final(self, steps: list[str]) -> bool:
        """An answer line, or a last step that leaves a single number."""
        return super().is_final(steps) or (bool(steps) and steps[-1].endswith(")")
                                           and len(steps[-1].partition("(left:")[2].split()) == 1)

    @staticmethod
    def _answer_line(line: str) -> str:
        body = line.split(":", 1)[1]
        return body.split("=")[0].strip()

    def extract_answer(self, problem: Problem, steps: list[str]) -> str | None:
        # The expression the steps build, not the model's own answer line: a tiny model's answer line is
        # occasionally wrong even when its steps are right. The answer line is the fallback.
        arithmetic = [s for s in self.resolve(problem, steps) or steps if not s.lower().startswith("answer:")]
        expr = expression_from_steps(self.numbers(problem), arithmetic) if arithmetic else None
        if expr is not None and evaluate_expression(expr) is not None:
            return expr
        for step in reversed(steps):
            if step.lower().startswith("answer:"):
                return self._answer_line(step)
        return expr

    def answer_key(self, problem: Problem, answer: str | None) -> str | None:
        # Every correct expression is "the same answer": vote on the value and the numbers used.
        result = evaluate_expression(answer) if answer else None
        if result is None:
            return None
        value, leaves = result
        return f"{format_number(value)} from {' '.join(format_number(x) for x in sorted(leaves))}"

    def grade(self, problem: Problem, answer: str | None) -> bool:
        if not answer:
            return False
        result = evaluate_expression(answer)
        if result is None:
            return False
        value, leaves = result
        return value == TARGET and Counter(leaves) == Counter(Fraction(n) for n in self.numbers(problem))
