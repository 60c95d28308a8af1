"""`ponder bench verifiers`: how well learned verifiers judge steps, against the exact oracle, on the held-out
test split.

The policy samples solutions to the test problems; the oracle labels every step. For each verifier:
step-level AUROC (does a good step outscore a bad one?), first-wrong-step accuracy (the first step scored
below 0.5 is the first wrong step, or none is when the solution is right throughout) and best-of-N accuracy
when the verifier picks among the same samples (aggregation `min`, and `last`). AUROC is also given per kind of
bad step (good steps against one kind at a time): the task's kinds of first error (`StepOracle.error_kind`: arithmetic,
bookkeeping, dead end, ...) and steps after an earlier error, which are most of a weak policy's bad steps.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from ponder.collect.mc import exact_labels
from ponder.collect.run import distinct_samples
from ponder.collect.states import state_walks
from ponder.errors import ConfigError
from ponder.evaluate.metrics import auroc, first_wrong
from ponder.lm.engine import Engine
from ponder.lm.hf import HFBackend
from ponder.search.base import SearchConfig
from ponder.tasks import StepOracle, get_task, require
from ponder.tasks.base import Problem, Task
from ponder.verifiers import aggregate, get_verifier, verifier_fingerprint


def verifiers_benchmark(verifiers: list[str], task_name: str = "game24", problems: int = 100, samples: int = 8,
                        model: str = "", seed: int = 0, max_batch: int = 512, source: str = "policy",
                        max_tokens: int = 0) -> dict[str, Any]:
    """`source` "policy": the policy's solutions (what a verifier judges in search: for a stream of search, the path
    it ends on, `Task.judged`), `max_tokens` a sample (0: the task's); "walks": `samples` random walks
    through each test problem's states (`ponder collect states` on the test split), no policy involved. Walks stop
    anywhere, so on them best-of-N is not measured and the `oracle` verifier, which calls an unfinished solution's
    last step bad, is no longer exact."""
    task = require(get_task(task_name), StepOracle, "`ponder bench verifiers` (the oracle labels every step)")
    for name in verifiers:
        verifier_fingerprint(name)  # an unknown verifier fails before any sampling
    chosen = task.problems("test", limit=problems)
    if source == "walks":
        sampled = [[r.steps for r in state_walks(task, p, samples, seed)] for p in chosen]
    elif source == "policy":
        drawn = sample_policy(task, chosen, model or f"{task_name}-policy", samples, seed, max_batch,
                              max_tokens or task.max_tokens)
        sampled = [[task.judged(p, s) for s in sols] for p, sols in zip(chosen, drawn)]
    else:
        raise ConfigError(f"unknown source {source!r}: policy or walks")
    truth = [[exact_labels(task, p, s) for s in sols] for p, sols in zip(chosen, sampled)]
    flat_truth = [x for per in truth for t in per for x in t]
    kinds = [step_kind(task, p, s, t, i) for p, sols, per in zip(chosen, sampled, truth) for s, t in zip(sols, per)
             for i in range(len(s))]
    rows = []
    for name in verifiers:
        verifier = get_verifier(name)
        start = time.perf_counter()
        scores = [asyncio.run(verifier.score(task, p, sols)) for p, sols in zip(chosen, sampled)]
        seconds = time.perf_counter() - start
        flat = [x for per in scores for s in per for x in s]
        firsts = [first_wrong(s) == first_wrong(t) for per_s, per_t in zip(scores, truth)
                  for s, t in zip(per_s, per_t)]
        good = [x for x, k in zip(flat, kinds) if k == "good"]
        by_kind = {kind: auroc(good + [x for x, k in zip(flat, kinds) if k == kind],
                               [True] * len(good) + [False] * kinds.count(kind))
                   for kind in sorted(set(kinds) - {"good"})}
        row = {"verifier": name, "auroc": auroc(flat, [t > 0 for t in flat_truth]), "auroc_by_kind": by_kind,
               "first_wrong_accuracy": sum(firsts) / len(firsts), "seconds": round(seconds, 1)}
        for how in ("min", "last"):
            if source == "walks":  # walks stop anywhere: there is no solution to pick
                row[f"bon_{how}"] = None
                continue
            picked = [max(range(len(sols)), key=lambda i, s=per: aggregate(s[i], how)) if sols else None
                      for sols, per in zip(sampled, scores)]
            row[f"bon_{how}"] = sum(i is not None and task.solves(p, sols[i])
                                    for p, sols, i in zip(chosen, sampled, picked)) / len(chosen)
        rows.append(row)
    n_solutions = sum(len(s) for s in sampled)
    return {"task": task_name, "problems": len(chosen), "solutions": n_solutions, "steps": len(flat_truth),
            "bad_steps": sum(x == 0 for x in flat_truth), "kinds": dict(Counter(kinds)),
            "pass_at_n": sum(any(task.solves(p, s) for s in sols) for p, sols in zip(chosen, sampled)) / len(chosen),
            "rows": rows}


def sample_policy(task: Task, chosen: list[Problem], model: str, samples: int, seed: int,
                  max_batch: int, max_tokens: int) -> list[list[list[str]]]:
    lm = Engine(HFBackend(model), max_rows=max_batch)
    cfg = SearchConfig(temperature=0.8, max_tokens=max_tokens, seed=seed)

    async def draw() -> list[list[list[str]]]:
        return list(await asyncio.gather(*(distinct_samples(task, p, lm, cfg, samples) for p in chosen)))

    return asyncio.run(draw())


def step_kind(task: StepOracle, problem: Problem, steps: list[str], labels: list[float], i: int) -> str:
    """`good`, `after an error`, or the kind of first error step i makes."""
    if labels[i] > 0:
        return "good"
    if i > 0 and labels[i - 1] == 0:
        return "after an error"
    return task.error_kind(problem, steps[: i + 1])
