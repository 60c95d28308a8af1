"""Sequential revisions (Snell et al., 2024, "Scaling LLM Test-Time Compute Optimally can be More Effective than
Scaling Model Parameters", §6): a policy trained to revise sees its earlier attempts (`Revisable.revision_prompt`) and
writes a new one.

The budget of `n` attempts is spent as n / `sequential` parallel chains of `sequential` attempts each (the paper's
sequential-to-parallel ratio: `sequential` = n is purely sequential, 1 is best-of-n); each attempt of a chain sees
the chain's last `context` (4) attempts before it. The verifier scores every attempt, and the answer is chosen as
the paper's hierarchical selection does: the best-scored attempt of each chain (among those that give an answer),
then among the chains' picks by `select` (`weighted`: the verifier-weighted vote; `final: all` chooses among every
attempt instead).

Knobs: `RevisionsConfig`. It needs a policy trained to revise: on game24, `game24-revision-policy`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

from ponder.errors import ConfigError
from ponder.lm.base import LanguageModel
from ponder.search.base import (
    MethodConfig,
    SearchConfig,
    knob,
    method_knobs,
    record_solutions,
    register,
    sample_solutions,
)
from ponder.search.select import SELECTIONS, Finished, answer, select
from ponder.tasks import Revisable, require
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.aggregate import aggregate
from ponder.verifiers.base import Verifier

FINALS = ("hierarchical", "all")


@dataclass(frozen=True)
class RevisionsConfig(MethodConfig):
    """Sequential revisions' knobs."""

    budget: ClassVar[str] = "attempts in all: n/sequential chains of sequential attempts each; n >= sequential"
    sequential: int = knob(4, "attempts per chain, the sequential part of the paper's sequential-to-parallel ratio "
                              "(n: purely sequential; 1: best-of-n)", low=1)
    context: int = knob(4, "earlier attempts of its chain an attempt sees (0: none)", low=0)
    select: str = knob("weighted", "how the answer is chosen among the chains' picks", choices=SELECTIONS)
    final: str = knob("hierarchical", "hierarchical: each chain's best-scored attempt first (the paper's); all: "
                                      "choose among every attempt", choices=FINALS)

    def check(self, n: int) -> None:
        super().check(n)
        if n < self.sequential:
            self.fail(f"the budget n={n} is below sequential={self.sequential} (a chain has sequential attempts)")


async def chain(task: Task, problem: Problem, lm: LanguageModel, cfg: SearchConfig, c: int, length: int,
                context: int) -> list[list[str]]:
    """One chain: a first attempt, then `length` - 1 revisions, each seeing the last `context` attempts."""
    attempts: list[list[str]] = []
    for k in range(length):
        [attempt] = await sample_solutions(task, problem, lm, cfg, 1, cfg.temperature, ("revision", c, k),
                                           attempts=attempts[-context:] if context else [])
        attempts.append(attempt)
    return attempts


def answered(task: Task, problem: Problem, attempts: list[Finished]) -> list[Finished]:
    """The attempts that give an answer (a chain's pick must), or all of them when none does."""
    return [f for f in attempts if task.extract_answer(problem, f.steps) is not None] or attempts


@register("revisions", config=RevisionsConfig, needs_verifier=True, policies={"game24": "game24-revision-policy"},
          requires=(Revisable,))
async def revisions(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                    cfg: SearchConfig) -> Trace:
    if verifier is None:
        raise ConfigError("revisions needs a verifier to choose among the attempts (e.g. --verifier game24-prm)")
    require(task, Revisable, "the revisions method")
    knobs = method_knobs(cfg, RevisionsConfig)
    length, context, how, final = knobs.sequential, knobs.context, knobs.select, knobs.final
    trace = Trace(problem.id, "revisions", extra={"verifier": verifier.name, "sequential": length,
                                                  "chains": cfg.n // length, "context": context})
    chains = await asyncio.gather(*(chain(task, problem, lm, cfg, c, length, context) for c in range(cfg.n // length)))
    attempts = [a for attempts in chains for a in attempts]
    scores = [aggregate(s, cfg.aggregate) for s in await verifier.score(task, problem, attempts)]
    finished = record_solutions(trace, task, problem, attempts, scores)
    for i, f in enumerate(finished):
        trace.nodes[f.node].extra.update({"chain": i // length, "attempt": i % length})
    if final == "all":
        return answer(trace, task, problem, finished, how)
    picks = [select(task, problem, answered(task, problem, finished[c * length:(c + 1) * length]), "best")
             for c in range(len(chains))]
    return answer(trace, task, problem, [p for p in picks if p is not None], how)

