"""Self-consistency (Wang et al., 2023, "Self-Consistency Improves Chain of Thought Reasoning in Language
Models"): sample `n` solutions and return the answer most of them reach (`select` "majority"; answers compared by
`Task.answer_key`, so differently written forms of one answer vote together).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ponder.lm.base import LanguageModel
from ponder.search.base import MethodConfig, SearchConfig, method_knobs, record_solutions, register, sample_solutions
from ponder.search.select import answer
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.base import Verifier


@dataclass(frozen=True)
class SelfConsistencyConfig(MethodConfig):
    """Self-consistency has no knobs."""

    budget: ClassVar[str] = "the solutions sampled, which vote"


@register("self_consistency", config=SelfConsistencyConfig)
async def self_consistency(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                           cfg: SearchConfig) -> Trace:
    method_knobs(cfg, SelfConsistencyConfig)
    trace = Trace(problem.id, "self_consistency")
    solutions = await sample_solutions(task, problem, lm, cfg, n=cfg.n, temperature=cfg.temperature, tag="sample")
    return answer(trace, task, problem, record_solutions(trace, task, problem, solutions), "majority")
