"""`ponder bench selection`: majority vote against verifier-weighted and best-of-N choices, for N = 1 ... 64
(Lightman et al., 2023, "Let's Verify Step by Step", Figure 3: on MATH at best-of-1860, PRM 78.2%, ORM 72.4%, majority
69.6%).

One pool of samples per problem is drawn once; for every N, `draws` random subsets of N solutions are taken from
it (the paper's subsampling), and each rule chooses one answer per subset: `majority`; for each verifier, `best`
(its best-scored solution) and `weighted` (the answer whose solutions' scores sum highest). `oracle` is the ceiling:
some solution of the subset is right. Accuracy is averaged over subsets and problems, per task difficulty too.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError
from ponder.lm.engine import Engine
from ponder.lm.hf import HFBackend
from ponder.search.base import SearchConfig, sample_solutions
from ponder.search.select import choose
from ponder.tasks import get_task
from ponder.verifiers import aggregate, get_verifier, verifier_fingerprint


def selection_benchmark(task_name: str, verifiers: list[str], problems: int, pool: int, ns: list[int], draws: int,
                        seed: int, aggregation: str = "min", model: str = "") -> dict[str, Any]:
    if any(n < 1 or n > pool for n in ns):
        raise ConfigError(f"every N must lie in 1..{pool} (the pool), got {ns}")
    task = get_task(task_name)
    for name in verifiers:
        verifier_fingerprint(name)  # an unknown verifier fails before any sampling
    chosen = task.problems("test", limit=problems)
    lm = Engine(HFBackend(model or f"{task_name}-policy"))
    cfg = SearchConfig(n=pool, temperature=0.8, max_tokens=task.max_tokens, seed=seed)

    async def sample() -> list[list[list[str]]]:
        return list(await asyncio.gather(*(sample_solutions(task, p, lm, cfg, pool, cfg.temperature, "pool")
                                           for p in chosen)))

    solutions = asyncio.run(sample())
    answers = [[task.extract_answer(p, s) for s in sols] for p, sols in zip(chosen, solutions)]
    keys = [[task.answer_key(p, a) for a in ans] for p, ans in zip(chosen, answers)]
    right = [[task.grade(p, a) for a in ans] for p, ans in zip(chosen, answers)]
    scores: dict[str, list[list[float]]] = {}
    for name in verifiers:
        judge = get_verifier(name)
        how = "last" if "orm" in judge.name.split(":")[0] else aggregation  # an ORM's score is its last step's

        async def judged(judge=judge, how=how) -> list[list[float]]:
            per = await asyncio.gather(*(judge.score(task, p, [task.judged(p, s) for s in sols])
                                         for p, sols in zip(chosen, solutions)))
            return [[aggregate(s, how) for s in steps] for steps in per]

        scores[judge.name] = asyncio.run(judged())
    rules = ["majority", *(f"{kind} {v}" for v in scores for kind in ("best", "weighted")), "oracle (ceiling)"]
    rng = random.Random(seed)
    rows = []
    for n in ns:
        hits = {r: [0.0] * len(chosen) for r in rules}
        for i in range(len(chosen)):
            for _ in range(draws if n < pool else 1):
                pick = rng.sample(range(pool), n)
                sub_keys = [keys[i][j] for j in pick]
                outcomes = {"majority": choose(sub_keys, [None] * n, "majority"),
                            "oracle (ceiling)": next((j for j, k in enumerate(pick) if right[i][k]), None)}
                for v, per in scores.items():
                    sub_scores = [per[i][j] for j in pick]
                    outcomes[f"best {v}"] = choose(sub_keys, sub_scores, "best")
                    outcomes[f"weighted {v}"] = choose(sub_keys, sub_scores, "weighted")
                for rule, j in outcomes.items():
                    hits[rule][i] += (j is not None and right[i][pick[j]]) / (draws if n < pool else 1)
        for rule in rules:
            row = {"n": n, "rule": rule, "accuracy": sum(hits[rule]) / len(chosen)}
            by: dict[Any, list[float]] = {}
            for p, h in zip(chosen, hits[rule]):
                by.setdefault(task.difficulty(p), []).append(h)
            if len(by) > 1 or None not in by:
                row["by_difficulty"] = {str(d): sum(v) / len(v) for d, v in sorted(by.items(), key=lambda x: str(x[0]))}
            rows.append(row)
    return {"task": task_name, "problems": len(chosen), "pool": pool, "draws": draws, "rows": rows, "rules": rules}


def plot(result: dict[str, Any], path: Path) -> None:
    """Accuracy against N, one line per rule (and one panel per difficulty when the task grades them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = ["all", *sorted({d for r in result["rows"] for d in r.get("by_difficulty", {})}, key=_order)]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False, sharey=True)
    for ax, group in zip(axes[0], groups):
        for rule in result["rules"]:
            pts = [(r["n"], r["accuracy"] if group == "all" else r["by_difficulty"][group])
                   for r in result["rows"] if r["rule"] == rule]
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=rule,
                    linestyle="--" if rule.startswith("oracle") else "-")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N (solutions per problem)")
        ax.set_title(f"{result['task']}: {group if group == 'all' else f'difficulty {group}'}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _order(d: str) -> tuple[int, str]:
    return (int(d), d) if d.isdigit() else (1 << 30, d)
