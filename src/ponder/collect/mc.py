"""Step labels from Monte-Carlo rollouts (Math-Shepherd: Wang et al., 2024, "Math-Shepherd: Verify and
Reinforce LLMs Step-by-step without Human Annotations"), and the exact oracle's labels to score them against.

For every prefix of a solution the policy writes N completions (`rollouts`); the *soft* label is the share
that reach a correct answer, the *hard* label whether any does. A prefix that is already complete needs no
rollout: its label is whether its own answer is right.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ponder.collect.records import StepRecord
from ponder.lm.base import LanguageModel
from ponder.search.base import SearchConfig, sample_solutions
from ponder.tasks import StepOracle, require
from ponder.tasks.base import Problem, Task


@dataclass
class Rollouts:
    """Completions of one prefix: their steps (prefix excluded), whether each reached a correct answer, and
    how many model rollouts that took (none for a prefix that is already a complete solution)."""

    continuations: list[list[str]]
    correct: list[bool]
    spent: int

    @property
    def value(self) -> float:
        return sum(self.correct) / len(self.correct) if self.correct else 0.0


async def rollout(task: Task, problem: Problem, lm: LanguageModel, prefix: list[str], k: int, cfg: SearchConfig,
                  *seed_parts: object) -> Rollouts:
    """k completions of `prefix` at the config's temperature, each graded by the task."""
    if task.is_final(prefix):
        return Rollouts([[]], [task.solves(problem, prefix)], 0)
    continuations = await sample_solutions(task, problem, lm, cfg, k, cfg.temperature, ("rollout", *seed_parts),
                                           prefix=prefix)
    return Rollouts(continuations, [task.solves(problem, prefix + c) for c in continuations], k)


def new_record(task: Task, problem: Problem, steps: list[str], labels: list[float | None], source: str,
               rollouts: int, **meta: object) -> StepRecord:
    return StepRecord(question=problem.question, steps=steps, labels=labels, task=task.name, problem_id=problem.id,
                      answer=problem.answer, outcome=task.solves(problem, steps), source=source, rollouts=rollouts,
                      meta=dict(meta))


async def mc_labels(task: Task, problem: Problem, lm: LanguageModel, solution: list[str], n: int,
                    cfg: SearchConfig, index: int) -> StepRecord:
    """Math-Shepherd labels for every step of one solution, N rollouts per prefix (all prefixes at once)."""
    results = await asyncio.gather(*(rollout(task, problem, lm, solution[: i + 1], n, cfg, index, i)
                                     for i in range(len(solution))))
    spent = sum(r.spent for r in results)
    return new_record(task, problem, solution, [r.value for r in results], "mc", spent, sample=index, n=n)


def exact_labels(task: Task, problem: Problem, solution: list[str]) -> list[float]:
    """The exact oracle's labels: a step is good while its prefix can still reach a correct answer."""
    return require(task, StepOracle, "the oracle labeller (mc and omegaprm need none)").step_labels(problem, solution)


def oracle_labels(task: Task, problem: Problem, solution: list[str], index: int) -> StepRecord:
    return new_record(task, problem, solution, exact_labels(task, problem, solution), "oracle", 0, sample=index)
