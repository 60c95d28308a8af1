"""Sequential revisions (Snell et al., 2024, "Scaling LLM Test-Time Compute Optimally can be More Effective than
Scaling Model Parameters", §6): a policy trained to revise sees its earlier attempts (`Task.revision_prompt`) and
writes a new one.

The budget of `n` attempts is spent as n / `sequential` parallel chains of `sequential` attempts each (the paper's
sequential-to-parallel ratio: `sequential` = n is purely sequential, 1 is best-of-n); each attempt of a chain sees
the chain's last `context` (4) attempts before it. The verifier scores every attempt, and the answer is chosen as
the paper's hierarchical selection does: the best-scored attempt of each chain (among those that give an answer),
then among the chains' picks by `select` (`weighted`: the verifier-weighted vote; `final: all` chooses among every
attempt instead).

Knobs (`cfg.options`): `sequential` (4), `context` (4), `select` (weighted), `final` (hierarchical or all).
"""

from __future__ import annotations

import asyncio

from ponder.errors import ConfigError
from ponder.lm.base import LanguageModel
from ponder.search.base import SearchConfig, record_solutions, register, sample_solutions
from ponder.search.select import Finished, answer, check_selection, select
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.aggregate import aggregate
from ponder.verifiers.base import Verifier

FINALS = ("hierarchical", "all")


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


@register("revisions", needs_verifier=True)
async def revisions(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                    cfg: SearchConfig) -> Trace:
    if verifier is None:
        raise ConfigError("revisions needs a verifier to choose among the attempts (e.g. --verifier game24-prm)")
    o = cfg.options
    length, context = int(o.get("sequential", 4)), int(o.get("context", 4))
    how, final = str(o.get("select", "weighted")), str(o.get("final", "hierarchical"))
    check_selection(how)
    if final not in FINALS:
        raise ConfigError(f"unknown revisions final {final!r}; choose from {', '.join(FINALS)}")
    if not 1 <= length <= cfg.n or context < 0:
        raise ConfigError(f"revisions needs 1 <= sequential <= n and context >= 0; got {length}, n={cfg.n}, {context}")
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

