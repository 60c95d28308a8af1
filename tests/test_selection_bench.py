"""`ponder bench selection` on a few problems: every rule is bounded by the oracle ceiling, N = pool is one draw,
and the plot is written."""

from __future__ import annotations

from ponder.bench.selection import plot, selection_benchmark


def test_selection_benchmark_rules_stay_under_the_oracle_and_plot(tmp_path):
    result = selection_benchmark("game24", ["game24-prm", "vote"], problems=6, pool=8, ns=[1, 2, 8], draws=4, seed=0)
    by = {(r["n"], r["rule"]): r["accuracy"] for r in result["rows"]}
    rules = result["rules"]
    assert rules[0] == "majority" and rules[-1] == "oracle (ceiling)" and "best step_tag:game24-prm" in rules
    for n in (1, 2, 8):
        assert all(0 <= by[(n, r)] <= by[(n, "oracle (ceiling)")] + 1e-9 for r in rules)
    assert by[(1, "majority")] == by[(1, "best step_tag:game24-prm")]  # one solution: every rule picks it
    assert by[(8, "oracle (ceiling)")] >= by[(1, "oracle (ceiling)")]
    plot(result, tmp_path / "selection.png")
    assert (tmp_path / "selection.png").stat().st_size > 10_000
