"""Chain-of-thought, greedy (Wei et al., 2022, "Chain-of-Thought Prompting Elicits Reasoning in Large
Language Models"): one solution at temperature 0. The baseline every other method has to beat."""

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
class CoTConfig(MethodConfig):
    """Greedy chain-of-thought has no knobs."""

    budget: ClassVar[str] = "nothing: one greedy solution (an eval runs it at n = 1)"


@register("cot", config=CoTConfig)
async def cot(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
              cfg: SearchConfig) -> Trace:
    method_knobs(cfg, CoTConfig)
    trace = Trace(problem.id, "cot")
    solutions = await sample_solutions(task, problem, lm, cfg, n=1, temperature=0.0, tag="cot")
    return answer(trace, task, problem, record_solutions(trace, task, problem, solutions), "best")
