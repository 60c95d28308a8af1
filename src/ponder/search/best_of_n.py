"""Best-of-N (Cobbe et al., 2021, "Training Verifiers to Solve Math Word Problems"; Lightman et al., 2023):
sample `n` solutions, score each with a verifier, return the best.

Vanilla (`select` "best") picks the single highest-scoring solution. Weighted (`select` "weighted"; Li et al., 2023
and Snell et al., 2024) sums the scores of solutions that reach the same answer and
picks the answer with the largest total, which mixes the verifier with self-consistency. Where the verifier's
scores carry no information on the problem (`ponder.search.guard`), the answer is the majority vote instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ponder.errors import ConfigError
from ponder.lm.base import LanguageModel
from ponder.search.base import (
    SearchConfig,
    knob,
    method_knobs,
    record_solutions,
    register,
    sample_solutions,
)
from ponder.search.guard import Guard, GuardConfig
from ponder.search.select import SELECTIONS, answer
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.aggregate import aggregate
from ponder.verifiers.base import Verifier


@dataclass(frozen=True)
class BestOfNConfig(GuardConfig):
    """Best-of-N's knobs."""

    budget: ClassVar[str] = "N, the solutions sampled and scored"
    select: str = knob("best", "best: the best-scored solution (vanilla); weighted: the answer whose solutions' "
                               "scores sum highest; majority: self-consistency", choices=SELECTIONS)


@register("best_of_n", config=BestOfNConfig, needs_verifier=True)
async def best_of_n(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                    cfg: SearchConfig) -> Trace:
    if verifier is None:
        raise ConfigError("best_of_n needs a verifier (e.g. --verifier oracle or --verifier vote)")
    trace = Trace(problem.id, "best_of_n", extra={"verifier": verifier.name})
    solutions = await sample_solutions(task, problem, lm, cfg, n=cfg.n, temperature=cfg.temperature, tag="sample")
    scores = [aggregate(s, cfg.aggregate) for s in await verifier.score(task, problem, solutions)]
    finished = record_solutions(trace, task, problem, solutions, scores)
    knobs = method_knobs(cfg, BestOfNConfig)
    guard = Guard(knobs, trace, verifier.name, fallback="a majority vote of the samples instead")
    guard.observe(scores)
    return answer(trace, task, problem, finished, guard.select(knobs.select))
