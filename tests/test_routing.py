"""Compute-optimal routing: the table, its fit on training rows, and the method that follows it."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from ponder.bench.routing import apply, cross_fit, fit
from ponder.lm.engine import Engine
from ponder.lm.hf import HFBackend
from ponder.search import SearchConfig, get_method, search
from ponder.search.compute_optimal import ComputeOptimalConfig, RoutingTable, Strategy
from ponder.tasks import get_task
from ponder.verifiers import get_verifier

CHEAP, DEAR = Strategy("best_of_n", 4), Strategy("beam", 8, {"width": 2})


def _row(correct: bool, tokens: int, leaf_scores: list[float] | None = None) -> dict:
    nodes = [{"terminal": True, "score": s} for s in leaf_scores or []]
    return {"correct": correct, "usage": {"generated_tokens": tokens}, "trace": {"nodes": nodes}}


def test_fit_gives_each_bin_the_best_strategy_within_the_budget():
    # easy problems (high probe score) are solved by the cheap strategy; hard ones only by the dear one
    easy, hard = [f"e{i}" for i in range(4)], [f"h{i}" for i in range(4)]
    rows = {
        CHEAP.name: {**{p: _row(True, 100) for p in easy}, **{p: _row(False, 100) for p in hard}},
        DEAR.name: {p: _row(True, 500) for p in easy + hard},
    }
    rows["probe"] = {**{p: _row(False, 50, [0.9, 0.8]) for p in easy}, **{p: _row(False, 50, [0.1, 0.2]) for p in hard}}
    thresholds, chosen, accuracy, tokens = fit([CHEAP, DEAR], rows, "probe", bins=2, budget=400)
    assert chosen == [DEAR, CHEAP] and accuracy == 1.0 and tokens == 50 + (4 * 500 + 4 * 100) / 8
    assert 0.15 < thresholds[0] < 0.86  # between the hard and the easy probe scores
    _, chosen, accuracy, _ = fit([CHEAP, DEAR], rows, "probe", bins=2, budget=200)  # too tight for the dear one
    assert chosen == [CHEAP, CHEAP] and accuracy == 0.5
    with pytest.raises(ValueError, match="probe alone"):
        fit([CHEAP, DEAR], rows, "probe", bins=2, budget=100)


def test_cross_fitting_measures_each_half_with_the_table_of_the_other():
    easy, hard = [f"e{i}" for i in range(8)], [f"h{i}" for i in range(8)]
    rows = {
        CHEAP.name: {**{p: _row(True, 100) for p in easy}, **{p: _row(False, 100) for p in hard}},
        DEAR.name: {p: _row(True, 500) for p in easy + hard},
        "probe": {**{p: _row(False, 50, [0.9]) for p in easy}, **{p: _row(False, 50, [0.1]) for p in hard}},
    }
    thresholds, chosen, _, _ = fit([CHEAP, DEAR], rows, "probe", bins=2, budget=400)
    assert apply(thresholds, chosen, rows, "probe", easy + hard) == (1.0, 50 + (8 * 500 + 8 * 100) / 16)
    # seed 0 halves the problems 4 easy + 4 hard each: each half's table sends hard to the dear strategy
    assert cross_fit([CHEAP, DEAR], rows, "probe", bins=2, budget=400, seed=0) == (1.0, 350.0)
    # seed 1 splits them unevenly: a half's median bin mixes easy and hard, and the budget keeps that bin cheap
    accuracy, tokens = cross_fit([CHEAP, DEAR], rows, "probe", bins=2, budget=400, seed=1)
    assert 0.5 < accuracy < 1.0 and tokens < 350
    # a probe that says nothing: the hard problems score like the easy ones, and no table finds them
    rows["probe"] = {p: _row(False, 50, [0.5]) for p in easy + hard}
    accuracy, _ = cross_fit([CHEAP, DEAR], rows, "probe", bins=2, budget=200, seed=0)
    assert accuracy == 0.5


def test_routing_table_checks_itself_and_round_trips(tmp_path):
    table = RoutingTable("game24", 4, "min", [0.5], [DEAR, CHEAP])
    assert table.bin(0.2) == 0 and table.bin(0.5) == 1 and table.bin(0.9) == 1
    table.save(tmp_path / "t.json")
    assert RoutingTable.load(tmp_path / "t.json") == table
    with pytest.raises(ValueError, match="one strategy per bin"):
        RoutingTable("game24", 4, "min", [0.5], [CHEAP])
    with pytest.raises(ValueError, match="cannot be routed"):
        RoutingTable("game24", 4, "min", [], [Strategy("nonsense", 4)])
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="cannot read the routing table"):
        RoutingTable.load(tmp_path / "bad.json")


def test_compute_optimal_probes_then_runs_the_bins_strategy(tmp_path):
    task = get_task("game24")
    problem = task.problems(limit=1)[0]
    lm, prm = Engine(HFBackend("game24-policy")), get_verifier("game24-prm")
    path = tmp_path / "table.json"
    for threshold, expected in ((2.0, DEAR), (-1.0, CHEAP)):  # every probe score lands in bin 0, then in bin 1
        RoutingTable("game24", 2, "min", [threshold], [DEAR, CHEAP]).save(path)
        cfg = SearchConfig(n=1, max_tokens=task.max_tokens, aggregate="min",
                           knobs=ComputeOptimalConfig(table=str(path)))
        trace = asyncio.run(search(task, problem, lm, prm, get_method("compute_optimal"), cfg))
        assert trace.extra["routed_to"] == expected.name and 0.0 <= trace.extra["probe_score"] <= 1.0
        assert trace.method == "compute_optimal" and trace.usage.model_calls > 2  # the probe's two samples and more
    # routed to best-of-4, the probe's two samples are its first two: generated once, counted once
    alone = asyncio.run(search(task, problem, lm, prm, get_method("best_of_n"), replace(cfg, n=4, knobs=None)))
    assert trace.usage.model_calls == 4 and trace.usage.generated_tokens == alone.usage.generated_tokens
    assert trace.answer == alone.answer and CHEAP.reuses_probe(2) and not DEAR.reuses_probe(2)
    RoutingTable("arith", 2, "min", [0.5], [DEAR, CHEAP]).save(path)
    with pytest.raises(ValueError, match="fitted on arith"):
        asyncio.run(search(task, problem, lm, prm, get_method("compute_optimal"), cfg))
