"""The data engine: oracle, Math-Shepherd MC and OmegaPRM labels on tiny runs, and resuming a killed run."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from ponder.collect.mc import exact_labels
from ponder.collect.omegaprm import OmegaConfig, omegaprm
from ponder.collect.records import read_records
from ponder.collect.run import CollectConfig, run_collect
from ponder.collect.states import state_walks
from ponder.errors import ConfigError
from ponder.lm.engine import Engine
from ponder.search.base import SearchConfig
from ponder.tasks import get_task
from ponder.tasks.base import TaskError

SMALL = dict(task="game24", limit=6, samples=4, n=4)


def test_mc_labels_never_call_a_dead_prefix_good_and_count_their_rollouts(tmp_path, game24_backend):
    summary = run_collect(CollectConfig(labeller="mc", **SMALL), tmp_path, lm=Engine(game24_backend),
                          show_progress=False)
    task = get_task("game24")
    problems = {p.id: p for p in task.problems("train", limit=6)}
    records = read_records(tmp_path / "records.jsonl")
    assert records and summary["records"] == len(records)
    assert {r.problem_id for r in records} <= set(problems)
    alive, agree = 0, 0
    for r in records:
        truth = exact_labels(task, problems[r.problem_id], r.steps)
        # a rollout that reaches 24 shows its prefix can, unless a later slip cancels an earlier one
        # (`10 + 2 = 13` then `13 + 2 = 14`, `14 + 10 = 24` rebuilds to ((10 + 2) + 2) + 10 = 24): rare
        alive += sum(m > 0 for m in r.labels)
        agree += sum(m > 0 and t == 1.0 for m, t in zip(r.labels, truth))
        complete = task.is_final(r.steps)
        assert r.rollouts == 4 * (len(r.steps) - complete)  # a finished solution needs no rollout
        if complete:
            assert r.labels[-1] == float(r.outcome)
    assert alive and agree >= 0.9 * alive
    assert json.loads((tmp_path / "config.json").read_text())["n"] == 4


def test_oracle_labels_match_the_exact_checker(tmp_path, game24_backend):
    run_collect(CollectConfig(labeller="oracle", **SMALL), tmp_path, lm=Engine(game24_backend), show_progress=False)
    task = get_task("game24")
    problems = {p.id: p for p in task.problems("train", limit=6)}
    records = read_records(tmp_path / "records.jsonl")
    bad = sum(x == 0 for r in records for x in r.labels)
    assert records and bad and all(r.rollouts == 0 for r in records)
    for r in records:
        assert r.labels == exact_labels(task, problems[r.problem_id], r.steps)
        assert r.labels == sorted(r.labels, reverse=True)  # once a prefix is dead it stays dead


def test_search_labels_every_path_the_search_explored(tmp_path, game24_backend):
    cfg = CollectConfig(labeller="search", task="game24", limit=2, samples=4)
    run_collect(cfg, tmp_path, lm=Engine(game24_backend), show_progress=False)
    task = get_task("game24")
    problems = {p.id: p for p in task.problems("train", limit=2)}
    records = read_records(tmp_path / "records.jsonl")
    written = json.loads((tmp_path / "config.json").read_text())
    assert (written["method"], written["verifier"], written["aggregate"]) == ("tot_bfs", "game24-prm", "min")
    assert {r.problem_id for r in records} == set(problems)
    for r in records:
        assert r.labels == exact_labels(task, problems[r.problem_id], r.steps)
    # tot_bfs keeps 5 states a step and each proposes at most 4: at most 4 + 3 x 20 leaves, and the paths are
    # distinct (a leaf is recorded once, its prefixes inside it)
    for pid in problems:
        mine = [tuple(r.steps) for r in records if r.problem_id == pid]
        assert len(mine) == len(set(mine)) <= 64
        assert not any(a != b and b[: len(a)] == a for a in mine for b in mine)
    with pytest.raises(ValueError, match="unknown search method"):
        run_collect(CollectConfig(labeller="search", method="guess"), tmp_path / "x")


def test_omegaprm_binary_search_finds_first_errors_within_budget(game24_backend):
    task = get_task("game24")
    cfg = SearchConfig(temperature=0.8, max_tokens=160, seed=0)
    omega = OmegaConfig(k=4, budget=24)

    async def trees():
        # test puzzles: the shipped policy solves nearly every training puzzle, and a binary search needs mistakes
        # (nothing is trained on these labels)
        problems = task.problems("test", limit=12)
        lm = Engine(game24_backend)
        return problems, await asyncio.gather(*(omegaprm(task, p, lm, cfg, omega) for p in problems))

    problems, built = asyncio.run(trees())
    states, agree, dead = 0, 0, 0
    for problem, tree in zip(problems, built):
        assert tree.spent <= omega.budget + omega.k - 1  # it stops once the budget is spent
        for prefix, state in tree.states.items():
            if prefix:  # MC > 0 should mean the oracle finds the prefix alive, MC = 0 dead
                states += 1
                agree += (state.value > 0) == (exact_labels(task, problem, list(prefix))[-1] == 1.0)
                dead += state.value == 0
    assert dead, "no binary search located a wrong step"
    assert states >= 20 and agree >= 0.85 * states


def test_collecting_from_the_test_split_or_with_an_unknown_labeller_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="train split"):
        run_collect(CollectConfig(labeller="mc", split="test"), tmp_path)
    with pytest.raises(ConfigError, match="unknown labeller"):
        run_collect(CollectConfig(labeller="guess"), tmp_path)


@pytest.mark.slow
def test_sigkill_mid_collection_then_resume_loses_and_duplicates_nothing(tmp_path, game24_backend,
                                                                        sigkill_after_lines):
    # Two problems at a time, so the kill lands between waves of problems, not after the last one.
    args = ["--task", "game24", "--limit", "8", "--samples", "4", "--n", "4", "--concurrency", "2"]
    whole = tmp_path / "whole"
    run_collect(CollectConfig(labeller="mc", task="game24", limit=8, samples=4, n=4, concurrency=2), whole,
                lm=Engine(game24_backend), show_progress=False)
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "ponder.cli", "collect", "mc", *args, "--out", str(killed)]
    records = killed / "records.jsonl"
    sigkill_after_lines(cmd, records, 3)
    partial = records.read_text().count("\n")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    resumed = [json.loads(x) for x in records.read_text().splitlines()]
    expected = [json.loads(x) for x in (whole / "records.jsonl").read_text().splitlines()]
    key = lambda r: (r["problem_id"], r["steps"])  # noqa: E731
    assert partial < len(expected)
    assert len({json.dumps(key(r)) for r in resumed}) == len(resumed)  # no duplicates
    assert sorted(resumed, key=key) == sorted(expected, key=key)  # nothing lost, nothing changed


def test_state_walks_give_exact_labels_of_both_kinds_without_a_policy(tmp_path):
    summary = run_collect(CollectConfig(labeller="states", task="game24", limit=5, samples=6), tmp_path,
                          lm=object(), show_progress=False)  # no model is called
    task = get_task("game24")
    problems = {p.id: p for p in task.problems("train", limit=5)}
    records = read_records(tmp_path / "records.jsonl")
    assert summary["records"] == len(records) >= 10
    last = [r.labels[-1] for r in records]
    assert 0 < sum(last) < len(last)  # good steps and bad ones
    for r in records:
        assert r.labels == exact_labels(task, problems[r.problem_id], r.steps)
    # walks also go on after a wrong step, as a policy does: those steps are recorded, all labelled bad
    after_error = [r for r in records if len(r.steps) > 1 and r.labels[-2] == 0]
    assert after_error and all(r.labels[-1] == 0 for r in after_error)
    arith = get_task("arith")
    walked = state_walks(arith, arith.make(4, 5), walks=6, seed=0)
    assert any(r.labels[-1] == 0 for r in walked) and any(arith.is_final(r.steps) for r in walked)
    assert all(r.labels == exact_labels(arith, arith.make(4, 5), r.steps) for r in walked)

    gsm8k = get_task("gsm8k")  # no step oracle: no states to walk through
    with pytest.raises(TaskError, match="task 'gsm8k' has no exact step oracle"):
        state_walks(gsm8k, gsm8k.from_text("0"), walks=1, seed=0)
