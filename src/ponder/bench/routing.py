"""`ponder bench routing`: fit compute-optimal routing tables on the training split and measure them on the test
split against the best single fixed strategy at equal generated tokens (Snell et al., 2024, report about 4x fewer
tokens than best-of-N for the same accuracy).

1. Every strategy of the grid (methods x budgets) runs on `train` training problems, and best-of-n at the probe's
   n, whose recorded scores are the probe (`compute_optimal.probe` draws the same samples).
2. Bins: quantiles of the training problems' probe scores. For each token budget, the table is the choice of one
   strategy per bin with the best training accuracy whose mean tokens per problem, probe included, stay within it
   (every combination is tried: a grid of 12 strategies and 4 bins is 20,736).
3. On the test split: the grid again (the fixed strategies), and `compute_optimal` with each table. Printed per
   budget: the routed accuracy and tokens; the best fixed strategy within the routed tokens; and the tokens the
   cheapest fixed strategy needs to reach the routed accuracy.
4. Cross-fitted on the test split (`cross_fit`, from the same grid rows, no new model calls): a policy trained on
   its training split solves it with every strategy, so a table fitted there carries no difficulty; tables fitted
   on one half of the test split and measured on the other half show what routing can do with unseen problems.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError
from ponder.evaluate.runner import EvalConfig, run_eval
from ponder.jsonl import ResumableJsonl
from ponder.search import typed_options
from ponder.search.compute_optimal import RoutingTable, Strategy
from ponder.tasks import TaskError


def _grid_rows(cfg: EvalConfig, out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Per strategy name, per problem id: the results row."""
    run_eval(cfg, out, show_progress=True)
    results = ResumableJsonl(out / "results.jsonl")
    if results.errors:
        raise TaskError(f"{len(results.errors)} problems of {out} failed (error rows in results.jsonl): rerun to "
                        "retry them; routing needs every strategy's row of every problem")
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results.rows:
        name = Strategy(r["method"], r["budget"], cfg.options.get(r["method"], {})).name
        rows.setdefault(name, {})[r["problem_id"]] = r
    return rows


def _probe_scores(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Each problem's mean leaf score in its best-of-n row: the probe's score."""
    out = {}
    for pid, r in rows.items():
        scores = [n["score"] for n in r["trace"]["nodes"] if n.get("terminal") and n.get("score") is not None]
        out[pid] = sum(scores) / len(scores) if scores else 0.0
    return out


def _tokens(strategy: Strategy, rows: dict[str, dict[str, dict[str, Any]]], probe: str, probe_n: int,
            pid: str) -> int:
    """Generated tokens of routing problem `pid` to `strategy`: the probe's and the strategy's, the probe's once
    where the strategy takes the probe's samples over (`Strategy.reuses_probe`)."""
    own = rows[strategy.name][pid]["usage"]["generated_tokens"]
    return own if strategy.reuses_probe(probe_n) else own + rows[probe][pid]["usage"]["generated_tokens"]


def fit(strategies: list[Strategy], rows: dict[str, dict[str, dict[str, Any]]], probe: str, bins: int,
        budget: float, probe_n: int = 0) -> tuple[list[float], list[Strategy], float, float]:
    """(thresholds, one strategy per bin, training accuracy, mean tokens per problem incl. the probe). `probe_n`:
    the probe's samples, which best-of-n and self-consistency of at least as many take over (0: none do)."""
    scores = _probe_scores(rows[probe])
    ordered = sorted(scores.values())
    thresholds = [ordered[len(ordered) * k // bins] for k in range(1, bins)]
    members: list[list[str]] = [[] for _ in range(bins)]
    for pid, s in scores.items():
        members[bisect.bisect_right(thresholds, s)].append(pid)  # as RoutingTable.bin places a question
    probe_tokens = sum(rows[probe][p]["usage"]["generated_tokens"] for p in scores)
    # per bin and strategy: (right answers, generated tokens with the probe's) summed over the bin's problems
    sums = [[(sum(rows[s.name][p]["correct"] for p in m), sum(_tokens(s, rows, probe, probe_n, p) for p in m))
             for s in strategies] for m in members]
    best: tuple[int, int, tuple[int, ...]] | None = None
    for combo in itertools.product(range(len(strategies)), repeat=bins):
        right = sum(sums[b][i][0] for b, i in enumerate(combo))
        tokens = sum(sums[b][i][1] for b, i in enumerate(combo))
        if tokens <= budget * len(scores) and (best is None or (right, -tokens) > (best[0], -best[1])):
            best = (right, tokens, combo)
    if best is None:
        raise ConfigError(f"no routing fits {budget:.0f} tokens per problem (the probe alone takes "
                          f"{probe_tokens / len(scores):.0f})")
    right, tokens, combo = best
    return thresholds, [strategies[i] for i in combo], right / len(scores), tokens / len(scores)


def apply(thresholds: list[float], chosen: list[Strategy], rows: dict[str, dict[str, dict[str, Any]]], probe: str,
          pids: list[str], probe_n: int = 0) -> tuple[float, float]:
    """(accuracy, mean generated tokens incl. the probe) of routing `pids` by a table, read from the grid's rows:
    `compute_optimal` draws the probe's samples and each strategy's with the same seeds, so its results are the
    grid rows of the strategy it routes to (checked against the real runs: identical)."""
    scores = _probe_scores({p: rows[probe][p] for p in pids})
    picked = [(chosen[bisect.bisect_right(thresholds, scores[p])], p) for p in pids]
    right = sum(rows[s.name][p]["correct"] for s, p in picked)
    tokens = sum(_tokens(s, rows, probe, probe_n, p) for s, p in picked)
    return right / len(pids), tokens / len(pids)


def cross_fit(strategies: list[Strategy], rows: dict[str, dict[str, dict[str, Any]]], probe: str, bins: int,
              budget: float, seed: int, probe_n: int = 0) -> tuple[float, float]:
    """Two-fold cross-fitting on one split: tables fitted on a random half measured on the other half, and the
    other way round; (accuracy, tokens) over the whole split. For a policy that has learnt its training split by
    heart, where every strategy solves everything and a fitted table says nothing about difficulty."""
    pids = sorted(rows[probe])
    random.Random(seed).shuffle(pids)
    halves = [pids[: len(pids) // 2], pids[len(pids) // 2 :]]
    right = tokens = 0.0
    for fit_on, measure in (halves, halves[::-1]):
        subset = {name: {p: by_pid[p] for p in fit_on} for name, by_pid in rows.items()}
        thresholds, chosen, _, _ = fit(strategies, subset, probe, bins, budget, probe_n)
        acc, tok = apply(thresholds, chosen, rows, probe, measure, probe_n)
        right, tokens = right + acc * len(measure), tokens + tok * len(measure)
    return right / len(pids), tokens / len(pids)


def routing_benchmark(task: str, methods: list[str], budgets: list[int], token_budgets: list[float],
                      options: dict[str, dict[str, Any]], train: int, test: int, probe_n: int, bins: int,
                      seed: int, out: Path, model: str = "", verifier: str = "") -> dict[str, Any]:
    """`options`: per method, its knobs (as `--set` gives them), the same for every budget of the grid."""
    options = {m: typed_options(m, knobs) for m, knobs in options.items()}  # a strategy's name shows them typed
    base = EvalConfig(task=task, model=model, verifier=verifier, methods=[*methods, "best_of_n"],
                      budgets=sorted({*budgets, probe_n}), options=options, seed=seed, ceiling=False)
    strategies = [Strategy(m, b, options.get(m, {})) for m in methods for b in budgets]
    probe = Strategy("best_of_n", probe_n, options.get("best_of_n", {})).name
    fitted = _grid_rows(replace(base, split="train", limit=train), out / "train-grid")
    tested = _grid_rows(replace(base, split="test", limit=test), out / "test-grid")
    result: dict[str, Any] = {"rows": [], "strategies": [s.name for s in strategies], "train_accuracy": {
        name: sum(r["correct"] for r in by_pid.values()) / len(by_pid) for name, by_pid in fitted.items()}}
    for budget in token_budgets:
        try:
            thresholds, chosen, train_acc, train_tokens = fit(strategies, fitted, probe, bins, budget, probe_n)
        except ValueError as err:
            result["rows"].append({"budget": budget, "error": str(err)})
            continue
        table = RoutingTable(task, probe_n, base.aggregate, thresholds, chosen,
                             {"split": "train", "problems": train, "token_budget": budget, "seed": seed,
                              "accuracy": train_acc, "generated_tokens": train_tokens})
        path = out / f"table-{int(budget)}.json"
        table.save(path)
        # the run folder is named by the table's content: a table refitted since must not resume the old rows
        version = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        cfg = replace(base, split="test", limit=test, methods=["compute_optimal"], budgets=[1],
                      options={"compute_optimal": {"table": str(path)}})
        [routed] = run_eval(cfg, out / f"test-routed-{int(budget)}-{version}", show_progress=True)
        fixed = [(name, sum(r["correct"] for r in rows.values()) / len(rows),
                  sum(r["usage"]["generated_tokens"] for r in rows.values()) / len(rows))
                 for name, rows in tested.items() if name in {s.name for s in strategies}]
        within = [f for f in fixed if f[2] <= routed["generated_tokens"]]
        reaching = [f for f in fixed if f[1] >= routed["accuracy"]]
        best_within = max(within, key=lambda f: (f[1], -f[2]), default=None)
        cheapest = min(reaching, key=lambda f: f[2], default=None)
        try:
            cv_acc, cv_tokens = cross_fit(strategies, tested, probe, bins, budget, seed, probe_n)
            cv_best = max((f for f in fixed if f[2] <= cv_tokens), key=lambda f: (f[1], -f[2]), default=None)
        except ValueError:  # a half's probe alone is over the budget
            cv_acc = cv_tokens = cv_best = None
        result["rows"].append({
            "budget": budget, "table": [s.name for s in chosen], "thresholds": [round(t, 3) for t in thresholds],
            "cv_accuracy": cv_acc, "cv_tokens": cv_tokens, "cv_best_fixed": cv_best and cv_best[0],
            "cv_best_fixed_accuracy": cv_best and cv_best[1], "cv_best_fixed_tokens": cv_best and cv_best[2],
            "train_accuracy": train_acc, "accuracy": routed["accuracy"], "tokens": routed["generated_tokens"],
            "errors": routed["errors"],  # routed problems whose search raised, counted wrong (rerun to retry)
            "best_fixed": best_within and best_within[0], "best_fixed_accuracy": best_within and best_within[1],
            "best_fixed_tokens": best_within and best_within[2],
            "fixed_to_match": cheapest and cheapest[0], "fixed_to_match_tokens": cheapest and cheapest[2],
        })
    return result
