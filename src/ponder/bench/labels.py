"""`ponder bench labels`: label accuracy against the exact oracle versus rollouts spent, for Math-Shepherd
Monte-Carlo labels (N rollouts per step) and OmegaPRM (rollout budget per problem), on the same solutions.

The policy samples solutions for training-split problems; every step of every solution gets the oracle's
label (can this prefix still reach a correct answer?) and each labeller's hard label. MC at smaller N reuses
the first N of the rollouts drawn for the largest N (same seeds), so the rows differ only in N. OmegaPRM's
root rollouts are the same solutions; a step its tree says nothing about takes the solution's outcome.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ponder.collect.mc import exact_labels, rollout
from ponder.collect.omegaprm import OmegaConfig, omegaprm, solution_labels
from ponder.collect.run import distinct_samples
from ponder.lm.engine import Engine
from ponder.lm.hf import HFBackend
from ponder.search.base import SearchConfig
from ponder.tasks import get_task
from ponder.tasks.base import Problem


def score_labels(predicted: list[list[float]], truth: list[list[float]], outcomes: list[bool]) -> dict[str, float]:
    pairs = [(p > 0, t > 0, ok) for ps, ts, ok in zip(predicted, truth, outcomes) for p, t in zip(ps, ts)]
    wrong = [(p, t) for p, t, ok in pairs if not ok]
    return {"accuracy": sum(p == t for p, t, _ in pairs) / len(pairs),
            "accuracy_wrong_solutions": sum(p == t for p, t in wrong) / max(1, len(wrong))}


def labels_benchmark(task_name: str = "game24", problems: int = 100, samples: int = 4,
                     ns: tuple[int, ...] = (1, 4, 16), budgets: tuple[int, ...] = (4, 8, 16, 32), k: int = 4,
                     model: str = "", seed: int = 0, max_batch: int = 512) -> dict[str, Any]:
    task = get_task(task_name)
    lm = Engine(HFBackend(model or f"{task_name}-policy"), max_rows=max_batch)
    cfg = SearchConfig(temperature=0.8, max_tokens=task.max_tokens, seed=seed)
    chosen = task.problems("train", limit=problems)

    async def main() -> dict[str, Any]:
        sampled = await asyncio.gather(*(distinct_samples(task, p, lm, cfg, samples) for p in chosen))
        work: list[tuple[Problem, int, list[str]]] = [(p, i, s) for p, sols in zip(chosen, sampled)
                                                      for i, s in enumerate(sols)]
        truth = [exact_labels(task, p, s) for p, _, s in work]
        outcomes = [bool(t[-1]) and task.is_final(s) for (_, _, s), t in zip(work, truth)]
        rows = []
        start = time.perf_counter()
        n_max = max(ns)
        per_prefix = await asyncio.gather(*(asyncio.gather(*(rollout(task, p, lm, s[: i + 1], n_max, cfg, idx, i)
                                                             for i in range(len(s))))
                                            for p, idx, s in work))
        mc_seconds = time.perf_counter() - start
        for n in ns:
            labels, spent = [], 0
            for results in per_prefix:
                labels.append([sum(r.correct[:n]) / len(r.correct[:n]) for r in results])
                spent += sum(min(n, r.spent) for r in results)
            rows.append({"method": f"mc N={n}", "rollouts": spent, **score_labels(labels, truth, outcomes)})
        for budget in budgets:
            omega = OmegaConfig(k=k, budget=budget)
            trees = await asyncio.gather(*(omegaprm(task, p, lm, cfg, omega, root=sols)
                                           for p, sols in zip(chosen, sampled)))
            by_problem = {p.id: tree for p, tree in zip(chosen, trees)}
            labels = [solution_labels(by_problem[p.id], s, ok) for (p, _, s), ok in zip(work, outcomes)]
            rows.append({"method": f"omegaprm budget={budget} k={k}", "rollouts": sum(t.spent for t in trees),
                         "states": sum(len(t.states) for t in trees), **score_labels(labels, truth, outcomes)})
        baseline = next(r["rollouts"] for r in rows if r["method"] == f"mc N={n_max}")
        for r in rows:
            r["rollouts_per_solution"] = r["rollouts"] / len(work)
            r["vs_mc_max"] = r["rollouts"] / baseline
        return {"task": task_name, "problems": len(chosen), "solutions": len(work),
                "steps": sum(len(t) for t in truth), "bad_steps": sum(x == 0 for t in truth for x in t),
                "solved_share": sum(outcomes) / len(work), "mc_seconds": round(mc_seconds, 1), "rows": rows}

    return asyncio.run(main())
