"""Self-consistency (Wang et al., 2023, "Self-Consistency Improves Chain of Thought Reasoning in Language
Models"): sample `n` solutions and return the answer most of them reach.

Answers are compared by `Task.answer_key`, so differently written forms of one answer vote together.
"""

from __future__ import annotations

from collections import Counter

from ponder.lm.base import LanguageModel
from ponder.search.base import SearchConfig, record_solutions, register, sample_solutions
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.base import Verifier


@register("self_consistency")
async def self_consistency(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                           cfg: SearchConfig) -> Trace:
    trace = Trace(problem.id, "self_consistency")
    solutions = await sample_solutions(task, problem, lm, cfg, n=cfg.n, temperature=cfg.temperature, tag="sample")
    answers = record_solutions(trace, task, problem, solutions)
    keys = [task.answer_key(problem, a) for a in answers]
    votes = Counter(k for k in keys if k is not None)
    if votes:
        top = max(votes.values())
        winner = next(i for i, k in enumerate(keys) if k is not None and votes[k] == top)  # first to reach top
        trace.answer, trace.solution = answers[winner], task.join_steps(solutions[winner])
        trace.extra["votes"] = {k: v for k, v in votes.most_common()}
    return trace
