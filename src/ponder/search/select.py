"""Choosing the one final answer among a search's finished solutions, the same way for every method.

- `majority`: the answer most solutions reach (self-consistency, Wang et al., 2023); ties go to the answer
  reached first.
- `weighted`: the answer whose solutions' scores sum highest (verifier-weighted vote; Li et al., 2023; Snell et
  al., 2024 call it "weighted best-of-N").
- `best`: the single best-scored solution (best-of-N; Cobbe et al., 2021; Lightman et al., 2023).

Answers are compared by `Task.answer_key`, so differently written forms of one answer count together; a solution
without an answer never wins a vote. The chosen answer is written as its best-scored (or first) solution wrote it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ponder.errors import ConfigError
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace

SELECTIONS = ("majority", "weighted", "best")


@dataclass(frozen=True)
class Finished:
    """A finished solution: its steps, its trace leaf and its aggregated score (None where nothing scored it)."""

    steps: list[str]
    node: int
    score: float | None = None


def check_selection(how: str) -> None:
    if how not in SELECTIONS:
        raise ConfigError(f"unknown answer selection {how!r}; choose from {', '.join(SELECTIONS)}")


def select(task: Task, problem: Problem, finished: list[Finished], how: str) -> Finished | None:
    """The solution that carries the chosen answer, or None when there is nothing to choose."""
    keys = [task.answer_key(problem, task.extract_answer(problem, f.steps)) for f in finished] if how != "best" else []
    i = choose(keys or [None] * len(finished), [f.score for f in finished], how)
    return None if i is None else finished[i]


def choose(keys: list[object], scores: list[float | None], how: str) -> int | None:
    """The index of the chosen solution, given each one's answer key (None: no answer) and score (None: unscored)."""
    check_selection(how)
    if not scores:
        return None
    rank = [s if s is not None else float("-inf") for s in scores]
    if how == "best":
        return max(range(len(rank)), key=lambda i: rank[i])
    totals: dict[object, float] = defaultdict(float)
    for key, score in zip(keys, scores):
        if key is not None:
            totals[key] += 1.0 if how == "majority" else (score or 0.0)
    if not totals:
        return None
    top = max(totals.values())
    winner = next(k for k in keys if k is not None and totals[k] == top)  # the first answer to reach the top
    return max((i for i, k in enumerate(keys) if k == winner), key=lambda i: rank[i])


def answer(trace: Trace, task: Task, problem: Problem, finished: list[Finished], how: str) -> Trace:
    """Write the selected solution's answer into the trace (left empty when nothing finished), and its node as
    `extra["chosen"]` (the tree viewer highlights the path to it)."""
    chosen = select(task, problem, finished, how)
    trace.extra["select"] = how
    if chosen is not None:
        trace.extra["chosen"] = chosen.node
        trace.answer = task.extract_answer(problem, chosen.steps)
        trace.solution = task.join_steps(chosen.steps)
    return trace
