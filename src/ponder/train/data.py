"""What SFT trains a policy on: (prompt, solution) examples drawn from the solutions a task's solver writes.

Two ways to draw a solution of a problem (`walk` in a recipe):
- `paths`: every solver solution equally likely, epoch after epoch (a puzzle with many solutions is seen often,
  and a first move that starts many solutions is written often);
- `moves`: a problem uniformly, then each next step uniformly among the solver's next steps from the state
  reached so far (a walk down the trie of its solutions). A policy trained so spreads its samples evenly over the
  moves that keep the answer reachable, which is what makes 16 proposals contain a right one (proposal recall,
  `ponder bench proposals`).

Several splits can be mixed with weights (game24's `synthetic` puzzles beside its `train` split). Every stream
is deterministic for its seed, so a training run killed and resumed sees the same examples.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

from ponder.tasks.base import Problem, Task, TaskError

Trie = dict[str, "Trie"]
WALKS = ("paths", "moves")


def check_walk(walk: str) -> None:
    if walk not in WALKS:
        raise TaskError(f"walk must be one of {', '.join(WALKS)}; got {walk!r}")


def _solve(task: Task, problems: list[Problem]) -> list[list[list[str]]]:
    return [task.solutions(p) for p in problems]


def all_solutions(task: Task, problems: list[Problem]) -> list[list[list[str]]]:
    """`task.solutions` of every problem, in order; on every core when there are many problems."""
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
    pairs = []
    for problem, found in zip(problems, all_solutions(task, problems)):
        for steps in found:
            pairs.append((task.prompt(problem), task.join_steps(steps)))
            if hinted:
                pairs.append((task.hinted_prompt(problem, task.answer_hint(problem, steps)), task.join_steps(steps)))
    return pairs


def endless(pairs: list[tuple[str, str]], seed: int) -> Iterator[tuple[str, str]]:
    """The pairs over and over, reshuffled each epoch."""
    rng = random.Random(seed)
    pairs = list(pairs)
    while True:
        rng.shuffle(pairs)
        yield from pairs


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


def mixture(streams: list[Iterator[tuple[str, str]]], weights: list[float],
            seed: int) -> Iterator[tuple[str, str]]:
    """Each example from one stream, drawn with probability proportional to its weight."""
    if len(streams) == 1:
        return streams[0]
    rng = random.Random(seed)

    def draw() -> Iterator[tuple[str, str]]:
        while True:
            yield next(rng.choices(streams, weights)[0])

    return draw()


def solver_examples(task: Task, splits: dict[str, float], walk: str, seed: int,
                    limit: int | None = None) -> Iterator[tuple[str, str]]:
    """Endless examples from the solver's solutions to the problems of `splits` (split -> weight), drawn by
    `walk`; `limit` caps the problems taken from each split (generated tasks have as many as asked for)."""
    check_walk(walk)
    if "test" in splits or "all" in splits:
        raise TaskError("SFT never trains on the test split")
    streams = []
    for k, split in enumerate(splits):
        problems = task.problems(split, limit=limit)
        if walk == "paths":
            streams.append(endless(solver_pairs(task, problems), seed + k))
        else:
            streams.append(move_walks(task, problems, seed + k))
    return mixture(streams, list(splits.values()), seed)
