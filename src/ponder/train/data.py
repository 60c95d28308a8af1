"""What SFT trains a policy on: (prompt, solution) examples drawn from the solutions a task's solver writes.

Two ways to draw a solution of a problem (`walk` in a recipe):
- `paths`: every solver solution equally likely, epoch after epoch (a puzzle with many solutions is seen often,
  and a first move that starts many solutions is written often);
- `moves`: a problem uniformly, then each next step uniformly among the solver's next steps from the state
  reached so far (a walk down the trie of its solutions). A policy trained so spreads its samples evenly over the
  moves that keep the answer reachable, which is what makes 16 proposals contain a right one (proposal recall,
  `ponder bench proposals`);
- `actions`: the task's solutions written with rStar's actions at random (`RStarActions.action_solution`: a rephrased
  question, sub-questions and their answers among plain steps), which teaches a policy the formats rStar asks for;
- `revisions`: revision pairs for a policy that revises (Snell et al., 2024, §6): one to three wrong attempts
  (`wrong_attempt`: random walks through the task's own candidate steps, legal moves and slips) shown in the
  prompt (`Revisable.revision_prompt`), then a right solution that keeps the last attempt's right steps, so the policy
  learns to mend from the first wrong one; a `plain` share of examples has no attempt (the first of a chain);
- `streams`: a depth-first search over the solver's moves written as one solution (`search_stream`; the symbolic
  searches of Gandhi et al., 2024, "Stream of Search"), dead ends and back steps included, so the policy learns to
  search in its own chain of thought. Each stream can carry `repeat_marks`: where it could retry a move it already
  backed out of, for unlikelihood training (`SFTRecipe.unlikelihood`); how it orders a state's tries is a
  `StreamDraw`: a `detour` share of its states tries a dead move first, so that more streams teach what to write
  after a back step, and the `order` of the other tries is drawn afresh or follows the task's listing.

Several splits can be mixed with weights (game24's `synthetic` puzzles beside its `train` split). Every stream
is deterministic for its seed, so a training run killed and resumed sees the same examples.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from ponder.tasks import Backtracking, Hintable, ReferenceSolver, Revisable, RStarActions, StepOracle, require
from ponder.tasks.base import Problem, Task, TaskError

Trie = dict[str, "Trie"]
Marks = list[tuple[int, str]]  # (offset in a solution's text, a character not to write there): `repeat_marks`
Example = tuple[str, str] | tuple[str, str, Marks]  # (prompt, solution), with the solution's marks where asked
T = TypeVar("T")
WALKS = ("paths", "moves", "actions", "revisions", "streams")
TRIES = (4, 3)  # a stream's children tried per state, by depth (the last for any deeper)
LEAN = 0.5  # how much a stream's order favours the moves that keep the answer reachable (their keys are drawn from
# U(0, 1) less LEAN: one comes before a dead move with probability 1 - (1 - LEAN)^2 / 2 = 0.875)
ORDERS = ("drawn", "listed", "dead-listed")  # how a stream orders a state's tries (`StreamDraw.order`)
PLAIN = 0.3  # the share of revision examples without an attempt
MAX_ATTEMPTS = 3


def check_walk(walk: str) -> None:
    if walk not in WALKS:
        raise TaskError(f"walk must be one of {', '.join(WALKS)}; got {walk!r}")


def _solve(task: ReferenceSolver, problems: list[Problem]) -> list[list[list[str]]]:
    return [task.solutions(p) for p in problems]


def all_solutions(task: Task, problems: list[Problem]) -> list[list[list[str]]]:
    """`task.solutions` of every problem, in order; on every core when there are many problems."""
    task = require(task, ReferenceSolver, "training on the solver's solutions")
    workers = min(os.cpu_count() or 1, 16)
    if len(problems) < 2000 or workers == 1:
        return _solve(task, problems)
    size = -(-len(problems) // (workers * 4))
    chunks = [problems[i : i + size] for i in range(0, len(problems), size)]
    with ProcessPoolExecutor(workers) as pool:
        return [found for part in pool.map(_solve, [task] * len(chunks), chunks) for found in part]


def solver_pairs(task: Task, problems: list[Problem], hinted: bool = False) -> list[tuple[str, str]]:
    """(prompt, solution) for every solver solution; `hinted` adds each again behind a prompt that gives its answer
    (what STaR's rationalization asks the policy to read)."""
    hinting = require(task, Hintable, "STaR's hinted examples") if hinted else None
    pairs = []
    for problem, found in zip(problems, all_solutions(task, problems)):
        for steps in found:
            pairs.append((task.prompt(problem), task.join_steps(steps)))
            if hinting:
                hint = hinting.answer_hint(problem, steps)
                pairs.append((hinting.hinted_prompt(problem, hint), task.join_steps(steps)))
    return pairs


def endless(pairs: list[tuple[str, str]], seed: int) -> Iterator[tuple[str, str]]:
    """The pairs over and over, reshuffled each epoch."""
    return endless_items(pairs, random.Random(seed))


def endless_items(items: list[T], rng: random.Random) -> Iterator[T]:
    """The items over and over, reshuffled each epoch; a TaskError, not an endless wait, when there are none."""
    if not items:
        raise TaskError("nothing to draw training examples from: no problem here has a solution to learn")
    return reshuffled(list(items), rng)


def reshuffled(items: list[T], rng: random.Random) -> Iterator[T]:
    while True:
        rng.shuffle(items)
        yield from items


def trie(solutions: list[list[str]]) -> Trie:
    """The solutions as a tree of steps: each key is a next step from the state its path reaches."""
    root: Trie = {}
    for steps in solutions:
        node = root
        for step in steps:
            node = node.setdefault(step, {})
    return root


def move_walks(task: Task, problems: list[Problem], seed: int) -> Iterator[tuple[str, str]]:
    """A problem uniformly, then every next step uniformly among the solver's next steps (see the module doc)."""
    tries = [(p, trie(found)) for p, found in zip(problems, all_solutions(task, problems)) if found]
    if not tries:
        raise TaskError(f"{task.name}: the solver solves none of these {len(problems)} problems")
    rng = random.Random(seed)
    while True:
        problem, node = tries[rng.randrange(len(tries))]
        steps = []
        while node:
            step = rng.choice(list(node))
            steps.append(step)
            node = node[step]
        yield task.prompt(problem), task.join_steps(steps)


def action_walks(task: Task, problems: list[Problem], seed: int) -> Iterator[tuple[str, str]]:
    """The problems over and over, reshuffled each epoch, each solved with actions drawn afresh (see the module
    doc)."""
    acting = require(task, RStarActions, "the SFT walk 'actions'")
    rng = random.Random(seed)
    for problem in endless_items(problems, rng):
        yield task.prompt(problem), task.join_steps(acting.action_solution(problem, rng))


def wrong_attempt(task: StepOracle, problem: Problem, rng: random.Random) -> list[str] | None:
    """A walk to a final step, each step a legal move or (half the time) any candidate, slips included; None when
    it went right or ran into a dead end without finishing."""
    steps: list[str] = []
    while not task.is_final(steps) and len(steps) < task.max_steps:
        moves = task.moves(problem, steps) if rng.random() < 0.5 else None
        candidates = moves or task.step_candidates(problem, steps)
        if not candidates:
            return None
        steps.append(rng.choice(candidates))
    return None if not task.is_final(steps) or task.solves(problem, steps) else steps


def revision_target(task: StepOracle, problem: Problem, solutions: list[list[str]], attempt: list[str],
                    rng: random.Random) -> list[str]:
    """A solver solution that starts with the attempt's longest right prefix (a shorter one where none does)."""
    right = next(i for i in range(len(attempt), -1, -1) if task.check_step(problem, attempt[:i]))
    for keep in range(right, -1, -1):
        matching = [s for s in solutions if s[:keep] == attempt[:keep]]
        if matching:
            return rng.choice(matching)
    raise AssertionError("keep = 0 matches every solution")


def revision_walks(task: Task, problems: list[Problem], seed: int) -> Iterator[tuple[str, str]]:
    """Revision pairs (see the module doc), over the solvable problems reshuffled each epoch."""
    oracle = require(task, StepOracle, "the SFT walk 'revisions' (its wrong attempts walk through the task's states)")
    revising = require(task, Revisable, "the SFT walk 'revisions'")
    solved = [(p, found) for p, found in zip(problems, all_solutions(task, problems)) if found]
    if not solved:
        raise TaskError(f"{task.name}: the solver solves none of these {len(problems)} problems")
    rng = random.Random(seed)
    for problem, found in endless_items(solved, rng):
        attempts = [] if rng.random() < PLAIN else [wrong_attempt(oracle, problem, rng)
                                                    for _ in range(rng.randint(1, MAX_ATTEMPTS))]
        attempts = [a for a in attempts if a]
        target = revision_target(oracle, problem, found, attempts[-1], rng) if attempts else rng.choice(found)
        yield revising.revision_prompt(problem, attempts), task.join_steps(target)


@dataclass(frozen=True)
class StreamDraw:
    """How a stream of search orders the tries at a state (`search_stream`).

    `order`: `drawn`, each state's moves sorted by a key drawn from U(0, 1) less `LEAN` for a move that keeps the
    answer reachable, afresh for every stream; `listed`, the same with the move's rank in the task's listing
    (`StepOracle.moves`, over the number of moves) in place of the drawn key, so that a state's tries always come
    in the same order and a policy can tell which move comes after the one it backed out of (drawn orders leave
    it many equally likely ones, and a small policy's greedy choice among them is the move it just wrote);
    `dead-listed`, listed at a state with no live move (where the lean has nothing to favour: the state the stream
    enters after a dead move), drawn elsewhere.
    `detour`: the probability that a state with both kinds of move first tries a dead one (drawn uniformly, or
    the first dead one listed), on top of its tries, so that the stream backs out of it."""

    detour: float = 0.0
    order: str = "drawn"

    def __post_init__(self) -> None:
        if not 0 <= self.detour <= 1:
            raise TaskError(f"detour is a probability, in [0, 1]; got {self.detour}")
        if self.order not in ORDERS:
            raise TaskError(f"unknown stream order {self.order!r}; choose one of {', '.join(ORDERS)}")


def search_stream(task: Task, problem: Problem, rng: random.Random,
                  draw: StreamDraw = StreamDraw()) -> list[str] | None:
    """A depth-first search over the oracle's moves written as one stream: from each state at most `TRIES` children,
    in an order (`draw`) that favours (`LEAN`) but does not always put first the ones that keep the answer
    reachable, a back step before every child of a state the stream is not in, and at a state with a finishing move
    that solves the problem that move, which ends it. None when the tries run out first. The oracle orders the moves
    only: the dead ends are found by going into them, as a search that does not know them would. A dead last state
    is left without writing a finish that misses (streams that wrote one trained no better policy,
    docs/RESULTS.md)."""
    oracle = require(task, StepOracle, "the SFT walk 'streams' (its searches walk through the task's moves)")
    backing = require(task, Backtracking, "the SFT walk 'streams'")
    lines: list[str] = []
    here: list[str] = []  # the path of the state the stream is in

    def visit(steps: list[str], move: str) -> list[str]:
        """Write `move` from the state after `steps`, with a back step first if the stream is elsewhere."""
        nonlocal here
        if here != steps:
            lines.append(backing.back_step(problem, steps))
        lines.append(move)
        here = [*steps, move]
        return here

    def dfs(steps: list[str]) -> bool:
        moves = oracle.moves(problem, steps)
        done = [m for m in moves if task.is_final([*steps, m])]
        right = [m for m in done if task.solves(problem, [*steps, m])]
        if right:
            lines.append(right[0])
            return True
        going = [m for m in moves if m not in done]
        live = {m: oracle.check_step(problem, [*steps, m]) for m in going}
        listed = draw.order == "listed" or (draw.order == "dead-listed" and not any(live.values()))
        key = {m: k / len(going) for k, m in enumerate(going)} if listed else {m: rng.random() for m in going}
        going.sort(key=lambda m: key[m] - LEAN * live[m])
        tries = going[: TRIES[min(len(steps), len(TRIES) - 1)]]
        dead = [m for m in going if not live[m]]  # listed: in the listing's order
        if draw.detour and 0 < len(dead) < len(going) and rng.random() < draw.detour:
            first = dead[0] if listed else rng.choice(dead)
            tries = [first, *(m for m in tries if m != first)]
        return any(dfs(visit(steps, move)) for move in tries)  # in order, up to the first that solves

    return lines if dfs([]) else None


def tried_moves(task: Task, problem: Problem, steps: list[str]) -> list[list[str]]:
    """For each step of a stream of search, the moves the stream took earlier from the state that step leaves:
    what a policy searching in its chain of thought should not try again there. Empty for a state's first move and
    for a back step; a state is the path that reaches it (`Backtracking.resolve`)."""
    backing = require(task, Backtracking, "the moves a stream already tried")
    taken: dict[tuple[str, ...], list[str]] = {}
    out: list[list[str]] = []
    for i, step in enumerate(steps):
        before, after = backing.resolve(problem, steps[:i]), backing.resolve(problem, steps[: i + 1])
        if before is None or after != [*before, step]:  # a back step, or a stream gone astray
            out.append([])
            continue
        out.append(list(taken.get(tuple(before), [])))
        taken.setdefault(tuple(before), []).append(step)
    return out


def repeat_marks(task: Task, problem: Problem, steps: list[str]) -> Marks:
    """Where a stream's text could start to repeat a move it already tried from the same state (`tried_moves`): for
    each such move, (the offset in `task.join_steps(steps)` of the first character where the tried move's text
    leaves the step actually written, the character the tried move has there). Unlikelihood training (Welleck et
    al., 2020) pushes those characters down, so that a policy's greedy search stops retrying a dead end."""
    marks: set[tuple[int, str]] = set()
    offset = 0
    for step, tried in zip(steps, tried_moves(task, problem, steps)):
        written = step + task.step_end
        for move in tried:
            other = move + task.step_end
            same = next((k for k, (a, b) in enumerate(zip(written, other)) if a != b), None)
            if same is not None:
                marks.add((offset + same, other[same]))
        offset += len(written)
    return sorted(marks)


def stream_walks(task: Task, problems: list[Problem], seed: int, marked: bool = False,
                 draw: StreamDraw = StreamDraw()) -> Iterator[Example]:
    """The problems over and over, reshuffled each epoch, each searched afresh (`search_stream` with `draw`); a
    search that runs out of tries gives no example. `marked`: each example also carries its `repeat_marks`."""
    rng = random.Random(seed)
    failed = 0
    for problem in endless_items(problems, rng):
        stream = search_stream(task, problem, rng, draw)
        failed = 0 if stream else failed + 1
        if failed > len(problems):
            raise TaskError(f"{task.name}: a whole round of these {len(problems)} problems gave no stream that solves")
        if stream and marked:
            yield task.prompt(problem), task.join_steps(stream), repeat_marks(task, problem, stream)
        elif stream:
            yield task.prompt(problem), task.join_steps(stream)


def mixture(streams: list[Iterator[Example]], weights: list[float], seed: int) -> Iterator[Example]:
    """Each example from one stream, drawn with probability proportional to its weight."""
    if len(streams) == 1:
        return streams[0]
    rng = random.Random(seed)

    def draw() -> Iterator[Example]:
        while True:
            yield next(rng.choices(streams, weights)[0])

    return draw()


def walks(task: Task, problems: list[Problem], walk: str, seed: int, marked: bool = False,
          draw: StreamDraw = StreamDraw()) -> Iterator[Example]:
    """Endless examples from the solver's solutions to `problems`, drawn by `walk` (see the module doc); walk
    `streams` only: `marked`, each example carries its `repeat_marks`; `draw`, as in `search_stream`."""
    check_walk(walk)
    if walk == "paths":
        return endless(solver_pairs(task, problems), seed)
    if walk == "actions":
        return action_walks(task, problems, seed)
    if walk == "revisions":
        return revision_walks(task, problems, seed)
    if walk == "streams":
        return stream_walks(task, problems, seed, marked, draw)
    return move_walks(task, problems, seed)


def hinted_walks(task: Task, problems: list[Problem], walk: str, seed: int,
                 draw: StreamDraw = StreamDraw()) -> Iterator[Example]:
    """`walks`, each example given twice: behind the plain prompt and behind one that hints the answer its own
    solution reaches (what STaR's rationalization asks a policy to read; `solver_pairs(hinted=True)` for a walk)."""
    hinting = require(task, Hintable, "STaR's hinted examples")
    by_prompt = {task.prompt(p): p for p in problems}
    for prompt, text, *_ in walks(task, problems, walk, seed, draw=draw):
        problem = by_prompt[prompt]
        yield prompt, text
        yield hinting.hinted_prompt(problem, hinting.answer_hint(problem, task.split_steps(text))), text


def solver_examples(task: Task, splits: dict[str, float], walk: str, seed: int, limit: int | None = None,
                    marked: bool = False, draw: StreamDraw = StreamDraw()) -> Iterator[Example]:
    """Endless examples from the solver's solutions to the problems of `splits` (split -> weight), drawn by
    `walk` (`walks`); `limit` caps the problems taken from each split (generated tasks have as many as asked for)."""
    check_walk(walk)
    if "test" in splits or "all" in splits:
        raise TaskError("SFT never trains on the test split")
    streams = [walks(task, task.problems(split, limit=limit), walk, seed + k, marked, draw)
               for k, split in enumerate(splits)]
    return mixture(streams, list(splits.values()), seed)
