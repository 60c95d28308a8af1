"""Evaluation runs: resumable after SIGKILL, reproducible from the seed, clear about bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from ponder.errors import ConfigError
from ponder.evaluate import EvalConfig, run_eval
from ponder.jsonl import ResumableJsonl, check_config
from ponder.lm.engine import Engine
from ponder.tasks import TaskError, get_task

ARGS = ["--limit", "24", "--methods", "cot,self_consistency,best_of_n", "--budgets", "8",
        "--concurrency", "2", "--seed", "3", "--no-ceiling"]


def comparable(rows: list[dict]) -> list[dict]:
    """Rows without the wall-clock fields and the tokens a cache saved (they depend on what the
    process computed before), in a fixed order. Verifier scores to 4 decimals: a PRM that reads on from its prefix
    cache sums in another order than one that reads the text whole (differences of about 1e-7)."""
    out = []
    for r in rows:
        r = json.loads(json.dumps(r))
        r.pop("latency")
        for key in ("seconds", "verifier_seconds", "computed_prompt_tokens", "computed_verifier_tokens"):
            r["usage"].pop(key)
        for node in r["trace"]["nodes"]:
            for key in ("score", "value"):
                if isinstance(node[key], float):
                    node[key] = round(node[key], 4)
        out.append(r)
    return sorted(out, key=lambda r: (r["method"], r["budget"], r["problem_id"]))


def read_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def cfg_from_args(seed: int = 3) -> EvalConfig:
    return EvalConfig(task="game24", limit=24, methods=["cot", "self_consistency", "best_of_n"], budgets=[8],
                      concurrency=2, seed=seed)


@pytest.mark.slow
def test_sigkill_mid_eval_then_resume_gives_the_uninterrupted_rows(tmp_path, game24_backend, sigkill_after_lines):
    whole = tmp_path / "whole"
    run_eval(cfg_from_args(), whole, lm=Engine(game24_backend), show_progress=False)
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "ponder.cli", "eval", *ARGS, "--out", str(killed)]
    sigkill_after_lines(cmd, killed / "results.jsonl", 8)
    partial = len(read_rows(killed))
    assert 8 <= partial < 24 * 3
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    resumed = read_rows(killed)
    assert len(resumed) == 24 * 3
    assert comparable(resumed) == comparable(read_rows(whole))


def test_same_seed_same_results_and_other_seed_differs(tmp_path, game24_backend):
    small = dict(task="game24", limit=6, methods=["self_consistency"], budgets=[4], concurrency=3)
    a = run_eval(EvalConfig(**small, seed=1), tmp_path / "a", lm=Engine(game24_backend), show_progress=False)
    run_eval(EvalConfig(**small, seed=1), tmp_path / "b", lm=Engine(game24_backend), show_progress=False)
    run_eval(EvalConfig(**small, seed=2), tmp_path / "c", lm=Engine(game24_backend), show_progress=False)
    assert comparable(read_rows(tmp_path / "a")) == comparable(read_rows(tmp_path / "b"))
    texts = lambda d: [n["text"] for r in comparable(read_rows(d)) for n in r["trace"]["nodes"]]  # noqa: E731
    assert texts(tmp_path / "a") != texts(tmp_path / "c")
    assert a[0]["problems"] == 6 and json.loads((tmp_path / "a" / "config.json").read_text())["seed"] == 1


def test_resuming_with_another_config_is_refused(tmp_path, game24_backend):
    small = dict(task="game24", limit=2, methods=["cot"], concurrency=2)
    run_eval(EvalConfig(**small), tmp_path, lm=Engine(game24_backend), show_progress=False)
    with pytest.raises(ConfigError, match="another config"):
        run_eval(EvalConfig(**small, seed=9), tmp_path, lm=Engine(game24_backend), show_progress=False)
    # how it is scheduled is not what it computes: another concurrency or batch cap resumes it
    again = run_eval(EvalConfig(**small | {"concurrency": 1}, max_batch=8), tmp_path, lm=Engine(game24_backend),
                     show_progress=False)
    assert again[0]["problems"] == 2 and json.loads((tmp_path / "config.json").read_text())["concurrency"] == 2


def test_an_option_added_since_a_run_began_resumes_it_at_its_default(tmp_path):
    saved = {k: v for k, v in asdict(EvalConfig(task="gsm8k")).items() if k != "template_from"}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    check_config(tmp_path, EvalConfig(task="gsm8k"))  # the new option at its default: the same run
    with pytest.raises(ConfigError, match="template_from"):
        check_config(tmp_path, EvalConfig(task="gsm8k", template_from="smollm2"))


def test_an_option_added_inside_a_nested_config_resumes_it_at_its_default(tmp_path):
    from ponder.improve.recipe import ImproveRecipe, SearchPhase

    recipe = ImproveRecipe(name="r", task="game24", policy="game24-policy")
    saved = asdict(recipe)
    del saved["search"]["fresh"], saved["distil"]["train"]["compile"]  # options newer than the run
    (tmp_path / "config.json").write_text(json.dumps(saved))
    check_config(tmp_path, recipe)
    with pytest.raises(ConfigError, match="search"):
        check_config(tmp_path, ImproveRecipe(name="r", task="game24", policy="game24-policy",
                                             search=SearchPhase(fresh=True)))


def test_torn_last_line_is_dropped_and_rows_never_duplicate(tmp_path):
    path = tmp_path / "results.jsonl"
    row = {"method": "cot", "budget": 1, "problem_id": "p1", "correct": True}
    path.write_text(json.dumps(row) + "\n" + '{"method": "cot", "bud')
    results = ResumableJsonl(path)
    assert results.done == {("cot", 1, "p1")}
    assert path.read_text() == json.dumps(row) + "\n"
    results.append(row)
    results.append({**row, "problem_id": "p2"})
    assert len(ResumableJsonl(path).rows) == 2


def test_malformed_results_file_names_the_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"method": "cot", "budget": 1, "problem_id": "p1"}\nnot json\n')
    with pytest.raises(TaskError, match=r"results.jsonl:2: not a results row"):
        ResumableJsonl(path)


def test_cli_solves_impossible_puzzle_with_a_clear_verdict():
    proc = subprocess.run([sys.executable, "-m", "ponder.cli", "solve", "1 1 1 1"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0
    assert "has no solution" in proc.stdout and "wrong" in proc.stdout


def test_cli_solve_default_method_solves_4_5_6_10_given_either_way():
    """Rank 901, the puzzle whose good first moves the policy's own samples never hold: the default search
    (distinct proposals, judged by the shipped PRM) finds one; the numbers work quoted or as separate words."""
    outs = [subprocess.run([sys.executable, "-m", "ponder.cli", "solve", *args], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "COLUMNS": "200"})
            for args in (["4 5 6 10"], ["4", "5", "6", "10"])]
    assert all(o.returncode == 0 for o in outs)
    assert "->  correct" in outs[0].stdout and "tot_bfs" in outs[0].stdout
    assert outs[0].stdout == outs[1].stdout


def test_eval_config_fingerprints_a_learned_verifier_without_loading_it():
    from ponder.lm.hf import fingerprint

    learned = EvalConfig(verifier="game24-prm", methods=["best_of_n"]).resolved()
    assert learned.verifier_fingerprint == fingerprint("game24-prm") != fingerprint("game24-orm")
    assert EvalConfig(verifier="oracle").resolved().verifier_fingerprint == ""
    with pytest.raises(ValueError, match="unknown verifier 'nope'"):
        EvalConfig(verifier="nope").resolved()


def test_eval_token_limits_default_to_the_task_and_refuse_negatives():
    assert EvalConfig(task="gsm8k").resolved().max_tokens == 512
    assert EvalConfig(task="gsm8k", max_tokens=64, max_step_tokens=16).resolved().max_step_tokens == 16
    with pytest.raises(ConfigError, match="max_step_tokens are positive"):
        EvalConfig(max_step_tokens=-1).resolved()


def test_arithmetic_benchmark_grades_every_first_move_by_its_own_result(tmp_path):
    from ponder.bench.arithmetic import arithmetic_benchmark
    from ponder.tasks import get_task
    from ponder.train.sft import ModelShape, new_model
    from ponder.train.tokenizer import char_tokenizer

    tok = char_tokenizer()  # an untrained model writes noise after the `=`
    new_model(ModelShape(hidden=32, layers=1, heads=2, intermediate=64), tok).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    task = get_task("game24")
    result = arithmetic_benchmark(["game24-policy", str(tmp_path)], "game24", problems=2)
    assert result["moves"] == sum(len(task.moves(p, [])) for p in task.problems("test", limit=2))
    trained, untrained = result["rows"]
    assert set(trained) >= {"model", "all", "+", "-", "*", "/"}
    assert trained["all"] > 0.9 and untrained["all"] < 0.1  # the shipped policy computes right; noise does not
    arith = arithmetic_benchmark(["arith-policy"], "arith", problems=4)  # cut after the relation and the values
    assert arith["moves"] == 4 and arith["rows"][0]["all"] >= 0.75

    with pytest.raises(TaskError, match="task 'gsm8k' has no exact step oracle"):  # no moves to cut
        arithmetic_benchmark(["arith-policy"], "gsm8k", problems=1)


def test_a_run_takes_the_problems_named_by_id_or_after_an_offset_in_the_splits_order():
    task = get_task("game24")
    test = task.problems("test")
    named = EvalConfig(ids=[test[7].id, test[2].id, test[5].id], offset=1)
    assert named.problems(task) == [test[5], test[7]]  # the split's order, then the offset
    assert EvalConfig(offset=3, limit=2).problems(task) == test[3:5]
    with pytest.raises(ConfigError, match="1 of the problem ids are not in game24 'test'"):
        EvalConfig(ids=[test[0].id, "game24-no-such"]).resolved()
    with pytest.raises(ConfigError, match="offset"):
        EvalConfig(offset=-1).resolved()
