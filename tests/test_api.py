"""The short Python API: `ponder.solve`, `ponder.evaluate`, the exported names, `Engine` as a context manager."""

import asyncio
import inspect
import subprocess
import sys
import threading

import pytest

import ponder
from ponder.lm.base import Request, SamplingParams
from ponder.lm.engine import Engine, EngineClosedError
from ponder.lm.hf import HFBackend


def test_import_ponder_is_light_and_every_public_name_resolves() -> None:
    quick = subprocess.run([sys.executable, "-c", "import sys, ponder; print('torch' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert quick.stdout.strip() == "False"  # torch loads on first use of a name that needs it
    for name in ponder.__all__:
        assert getattr(ponder, name) is not None, name
    assert set(ponder.__all__) <= set(dir(ponder))
    with pytest.raises(AttributeError):
        _ = ponder.no_such_name


def test_evaluate_and_search_are_functions_and_subpackages() -> None:
    import ponder.evaluate.runner as runner
    from ponder.search.beam import beam  # noqa: F401  (the subpackage's modules import as ever)

    assert ponder.evaluate.EvalConfig is runner.EvalConfig
    assert ponder.search.SearchConfig is ponder.SearchConfig
    assert "out" in inspect.signature(ponder.evaluate).parameters
    assert "verifier" in inspect.signature(ponder.search).parameters
    assert "summary rows" in ponder.evaluate.__doc__
    assert callable(ponder.evaluate) and callable(ponder.search)


def test_solve_a_test_problem_and_the_model_is_loaded_once() -> None:
    trace = ponder.solve("7", task="arith")  # the task's default method: greedy chain of thought
    assert trace.method == "cot" and trace.correct is True
    assert trace.usage.model_calls == 1 and trace.usage.generated_tokens > 0
    lm = ponder.shared_model("arith-policy")
    assert lm is ponder.shared_model("arith-policy")
    voted = ponder.solve("7", task="arith", model=lm, method="self_consistency", budget=4, temperature=0.5, seed=3)
    assert voted.method == "self_consistency" and voted.correct is True
    assert voted.usage.model_calls == 4  # the budget: four samples
    own = ponder.solve("Tom has 3 apples and buys 4 more. How many does he have?", task="gsm8k", model=lm,
                       method="cot", max_tokens=16)
    assert own.answer is not None and own.correct is None  # a question of one's own has no reference to grade by


def test_solve_bad_names_fail_before_any_model_loads() -> None:
    with pytest.raises(ponder.TaskError, match="unknown task"):
        ponder.solve("1", task="chess")
    with pytest.raises(ValueError, match="unknown search method"):
        ponder.solve("4 5 6 10", method="telepathy")
    with pytest.raises(ValueError, match="aggregat"):
        ponder.solve("4 5 6 10", aggregate="median")
    with pytest.raises(ponder.ConfigError, match="widht"):  # a method's knobs are checked by name
        ponder.solve("4 5 6 10", method="beam", widht=4)
    with pytest.raises(ponder.ConfigError, match="beam"):  # and against the budget: beam keeps width <= n
        ponder.solve("4 5 6 10", method="beam", budget=2, width=4)


@pytest.mark.slow
def test_solve_game24_with_every_default() -> None:
    trace = ponder.solve("4 5 6 10")  # Tree of Thoughts over 32 proposals a state, judged by the shipped PRM
    assert trace.method == "tot_bfs" and trace.correct is True
    assert trace.usage.verifier_calls > 0 and len(trace.nodes) > 4


def test_evaluate_returns_the_summary_rows_and_resumes(tmp_path) -> None:
    rows = ponder.evaluate(tmp_path, task="arith", methods=["cot"], limit=2)
    assert [(r["method"], r["budget"], r["problems"]) for r in rows] == [("cot", 1, 2)]
    assert rows[0]["accuracy"] == 1.0 and rows[0]["generated_tokens"] > 0
    assert (tmp_path / "results.jsonl").read_text().count("\n") == 2
    again = ponder.evaluate(tmp_path, task="arith", methods=["cot"], limit=2)  # resumes: nothing left to run
    assert again == rows
    with pytest.raises(ponder.ConfigError, match=r"unknown settings metods; it takes .*methods"):
        ponder.evaluate(tmp_path, task="arith", metods=["cot"])


def test_engine_as_a_context_manager_frees_its_thread_and_refuses_later_requests() -> None:
    request = Request("Ann has 3 pens.", SamplingParams(max_tokens=8, seed=0))
    with Engine(HFBackend("arith-policy")) as lm:
        [out] = asyncio.run(lm.generate([request]))
        assert out.generated_tokens > 0
    assert lm.backend.prefixes is None  # the backend's cache is freed
    assert not any(t.name == "ponder-compute" for t in threading.enumerate())
    with pytest.raises(EngineClosedError):
        asyncio.run(lm.generate([request]))
