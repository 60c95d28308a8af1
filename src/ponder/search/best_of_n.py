"""Best-of-N (Cobbe et al., 2021, "Training Verifiers to Solve Math Word Problems"; Lightman et al., 2023):
sample `n` solutions, score each with a verifier, return the best.

Vanilla picks the single highest-scoring solution. Weighted (`options.weighted`, Li et al., 2023 and
Snell et al., 2024) sums the scores of solutions that reach the same answer and picks the answer with the
largest total, which mixes the verifier with self-consistency.
"""

from __future__ import annotations

from collections import defaultdict

from ponder.lm.base import LanguageModel
from ponder.search.base import SearchConfig, record_solutions, register, sample_solutions
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.aggregate import aggregate
from ponder.verifiers.base import Verifier


@register("best_of_n", needs_verifier=True)
async def best_of_n(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                    cfg: SearchConfig) -> Trace:
    if verifier is None:
        raise ValueError("best_of_n needs a verifier (e.g. --verifier oracle or --verifier vote)")
    trace = Trace(problem.id, "best_of_n", extra={"verifier": verifier.name})
    solutions = await sample_solutions(task, problem, lm, cfg, n=cfg.n, temperature=cfg.temperature, tag="sample")
    step_scores = await verifier.score(task, problem, solutions)
    scores = [aggregate(s, cfg.aggregate) for s in step_scores]
    answers = record_solutions(trace, task, problem, solutions, scores)
    if cfg.options.get("weighted"):
        totals: dict[str, float] = defaultdict(float)
        for answer, score in zip(answers, scores):
            key = task.answer_key(problem, answer)
            if key is not None:
                totals[key] += score
        if not totals:
            return trace
        best_key = max(totals, key=lambda k: totals[k])
        best = next(i for i, a in enumerate(answers) if task.answer_key(problem, a) == best_key)
    else:
        best = max(range(len(solutions)), key=lambda i: scores[i])
    trace.answer, trace.solution = answers[best], task.join_steps(solutions[best])
    return trace
