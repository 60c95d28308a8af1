"""`ponder serve` on 127.0.0.1 with the shipped game24 policy and PRM: the official `openai` client (models, chat,
completions, streaming), Ponder's own HTTP backend running a search over a served search, answers equal to
in-process `ponder.solve` for the same seeds, and abuse (malformed JSON, an unknown model, an oversized body or
prompt, a huge n, a negative budget, a wrong API key, a client that leaves mid-stream or mid-request, too many
searches at once, a backend that raises) each refused or cleaned up while the server goes on serving."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import ponder
from ponder.bench.http import free_port
from ponder.lm.base import Completion, Request, SamplingParams
from ponder.lm.engine import Engine
from ponder.lm.hf import HFBackend
from ponder.lm.openai_http import OpenAIServer
from ponder.serve.app import Limits, Served, create_app, running
from ponder.serve.recipes import Recipe, load_recipes, shipped_recipes

KEY = "sk-test-ponder"
PUZZLE = "4 5 6 10"
BEAM = Recipe("game24-beam", task="game24", method="beam", budget=4, verifier="game24-prm", knobs={"width": 2})
SC = Recipe("game24-sc", task="game24", method="self_consistency", budget=2)


class FailingPolicy(HFBackend):
    """The shipped game24 policy, whose next decoding step raises once `fail` is set (then clears it): a backend
    failure in the middle of the searches running on it."""

    fail = False

    def _step(self) -> dict[int, list[Completion]]:
        if self.fail:
            self.fail = False
            raise RuntimeError("injected decoding fault")
        return super()._step()


@pytest.fixture(scope="module")
def failing() -> FailingPolicy:
    return FailingPolicy("game24-policy")


@pytest.fixture(scope="module")
def url(failing: FailingPolicy) -> Iterator[str]:
    engine = Engine(failing)
    served = [Served(BEAM), Served(SC), Served(Recipe("game24-failing", task="game24", method="self_consistency",
                                                      budget=2), lm=engine)]
    with running(create_app(served, Limits(max_n=4, max_budget=16, max_body_bytes=4096), api_key=KEY)) as base:
        yield base
    engine.close()


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=300)


def _post(url: str, path: str, body: Any, key: str | None = KEY, timeout: Any = 300) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/{path}", content=content, headers=headers, timeout=timeout)


def _stats(url: str) -> dict[str, Any]:
    return httpx.get(url.removesuffix("/v1") + "/stats", headers={"Authorization": f"Bearer {KEY}"}).json()


def _chat(model: str, extra: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": PUZZLE}], **({"ponder": extra} if extra else {}),
            **more}


def test_shipped_recipes_load_and_check() -> None:
    recipes = shipped_recipes()
    assert {r.task for r in recipes} == {"game24", "arith", "gsm8k"}
    for r in recipes:
        if r.task != "gsm8k":  # (gsm8k's checks are the same; its task reads the data set, slower)
            Served(r)


def test_bad_recipe_files(tmp_path: Path) -> None:
    cases = {"a: [1, 2]": "not a mapping of fields", "a: {task: game24, budgett: 3}": "unknown field 'budgett'",
             "a: {method: cot}": "names no task", "a: {task: game24, budget: many}": "budget='many'",
             "a: {task: [": "not valid YAML"}
    for text, message in cases.items():
        path = tmp_path / "recipes.yaml"
        path.write_text(text)
        with pytest.raises(ponder.ConfigError, match=message):
            load_recipes(path)
    with pytest.raises(ponder.ConfigError, match="beam: unknown knob 'wide'"):
        Served(Recipe("x", task="game24", method="beam", knobs={"wide": 2}))


def test_openai_client_models_chat_completions_stream(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["game24-beam", "game24-sc", "game24-failing"]
    expected = ponder.solve(PUZZLE, method="beam", budget=4, verifier="game24-prm", width=2, seed=3)
    chat = client.chat.completions.create(model="game24-beam", messages=[{"role": "user", "content": PUZZLE}], seed=3,
                                          extra_body={"ponder": {"return_trace": True}})
    assert chat.choices[0].message.content == expected.solution
    extra = chat.model_extra["ponder"]
    assert extra["answers"] == [expected.answer] and extra["method"] == "beam"
    [tree] = extra["traces"]
    assert len(tree["nodes"]) == len(expected.nodes) and tree["usage"]["generated_tokens"] > 0
    assert chat.usage.completion_tokens == expected.usage.generated_tokens
    assert chat.usage.completion_tokens_details.reasoning_tokens < chat.usage.completion_tokens

    # completions: the prompt is the question; n choices are searches seeded seed, seed + 1
    done = client.completions.create(model="game24-sc", prompt=PUZZLE, n=2, seed=5, max_tokens=120)
    for i, choice in enumerate(done.choices):
        assert choice.text == ponder.solve(PUZZLE, method="self_consistency", budget=2, seed=5 + i,
                                           max_tokens=120).solution

    # streaming: the role first, the solution's lines, a finish reason, [DONE]
    chunks = list(client.chat.completions.create(model="game24-beam", messages=[{"role": "user", "content": PUZZLE}],
                                                 seed=3, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.solution
    assert chunks[-1].choices[0].finish_reason == "stop"
    streamed = list(client.completions.create(model="game24-sc", prompt=PUZZLE, seed=5, stream=True, max_tokens=120))
    assert "".join(c.choices[0].text for c in streamed) == done.choices[0].text


def test_overrides_method_budget_knobs(client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(
        model="game24-sc", messages=[{"role": "user", "content": PUZZLE}], seed=1,
        extra_body={"ponder": {"method": "beam", "budget": 2, "knobs": {"width": 1}}})
    expected = ponder.solve(PUZZLE, method="beam", budget=2, verifier="game24-prm", width=1, seed=1)
    assert chat.choices[0].message.content == expected.solution
    assert chat.model_extra["ponder"]["method"] == "beam" and "traces" not in chat.model_extra["ponder"]


def test_ponder_http_backend_against_ponder_serve(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Search served as a model, consumed by search: Ponder's OpenAI backend sends the task's own prompt; each
    completion is a served beam search, equal to one in process for the request's seed."""
    lm = OpenAIServer(url, model="game24-beam", api_key=KEY)
    params = [SamplingParams(temperature=0.8, max_tokens=160, seed=s) for s in (11, 12)]
    outs = asyncio.run(lm.generate([Request(f"Input: {PUZZLE}\n", p) for p in params]))
    for out, p in zip(outs, params):
        assert out.text == ponder.solve(PUZZLE, method="beam", budget=4, verifier="game24-prm", width=2,
                                        seed=p.seed).solution
        assert out.generated_tokens > 0
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    trace = ponder.solve(PUZZLE, model=f"{url}#game24-beam", method="self_consistency", budget=3)
    leaves = [n for n in trace.nodes if n.terminal]  # three served beam searches, voted on by the client
    assert len(leaves) == 3 and all(len(trace.path(n.id)) == 3 for n in leaves) and trace.answer


@pytest.mark.parametrize(("body", "status", "says"), [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (_chat("game24-nope"), 404, "'game24-nope' does not exist; this server serves game24-beam"),
    (_chat("game24-sc", n=1000), 400, "n=1000 is out of range: 1 to 4"),
    (_chat("game24-sc", n="2"), 400, "n must be an integer"),
    (_chat("game24-sc", {"budget": -3}), 400, "ponder.budget=-3 is out of range: 1 to 16"),
    (_chat("game24-sc", {"budget": 10_000}), 400, "ponder.budget=10000 is out of range"),
    (_chat("game24-sc", {"method": "magic"}), 400, "unknown search method 'magic'"),
    (_chat("game24-sc", {"knobs": {"width": 0}}), 400, "unknown knob 'width'"),
    (_chat("game24-sc", {"temperature": 2}), 400, "ponder.temperature is not an option"),
    (_chat("game24-sc", max_tokens=-1), 400, "max_tokens=-1 is out of range"),
    ({"model": "game24-sc", "messages": []}, 400, "messages must be a non-empty list"),
    ({"model": "game24-sc", "messages": [{"role": "system", "content": "hi"}]}, 400, "no user message"),
    ({"messages": [{"role": "user", "content": PUZZLE}]}, 400, "names no model"),
    ({"model": "game24-sc", "messages": [{"role": "user", "content": "1 2 3"}]}, 400, "four non-negative integers"),
    ({"model": "game24-sc", "messages": [{"role": "user", "content": "9 " * 3000}]}, 413, "at most 4096"),
])
def test_bad_requests_are_4xx_saying_what_is_wrong(url: str, body: Any, status: int, says: str) -> None:
    response = _post(url, "chat/completions", body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert says in error["message"] and error["code"] == status


def test_api_key_required(url: str, client: openai.OpenAI) -> None:
    for key in (None, "sk-wrong"):
        response = _post(url, "chat/completions", _chat("game24-sc"), key=key)
        assert response.status_code == 401 and "API key" in response.json()["error"]["message"]
    assert httpx.get(f"{url}/models").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="sk-wrong", max_retries=0).models.list()


def test_oversized_prompt_and_busy_server() -> None:
    """A prompt over the token limit is refused; with one search slot and no queue a second request at once gets
    429 (with Retry-After) while the first is served."""
    with running(create_app([Served(SC)], Limits(max_prompt_tokens=8, max_searches=1, max_waiting=0))) as base:
        response = _post(base, "chat/completions", _chat("game24-sc"), key=None)
        assert response.status_code == 400 and "the prompt has" in response.json()["error"]["message"]
    with running(create_app([Served(SC)], Limits(max_searches=1, max_waiting=0))) as base:
        async def both() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=300) as http:
                first = asyncio.ensure_future(http.post(f"{base}/chat/completions",
                                                        json=_chat("game24-sc", {"budget": 64})))
                root = base.removesuffix("/v1")
                for _ in range(600):  # the first request's search holds the one slot (a fixed sleep raced it)
                    if (await http.get(f"{root}/stats")).json()["searches_running"] == 1:
                        break
                    await asyncio.sleep(0.01)
                second = await http.post(f"{base}/chat/completions", json=_chat("game24-sc", n=1))
                return [await first, second]

        first, second = asyncio.run(both())
        assert first.status_code == 200
        assert second.status_code == 429 and second.headers["retry-after"] == "1"
        assert "busy" in second.json()["error"]["message"]


def _wait_idle(url: str, seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stats = _stats(url)
        if stats["searches_running"] == 0 and all(m["active_rows"] == 0 for m in stats["models"].values()):
            return stats
        time.sleep(0.05)
    raise AssertionError(f"the server did not go idle: {stats}")


def _wait_rows(url: str) -> None:
    deadline = time.monotonic() + 60
    while not _stats(url)["models"]["game24-beam"]["active_rows"]:
        assert time.monotonic() < deadline, f"the search never reached the engine: {_stats(url)}"
        time.sleep(0.01)


def test_disconnect_mid_stream_frees_engine_rows(url: str, client: openai.OpenAI,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ponder.serve")
    long = _chat("game24-beam", {"budget": 16, "knobs": {"width": 4}}, stream=True, seed=7)
    with httpx.stream("POST", f"{url}/chat/completions", json=long, timeout=300,
                      headers={"Authorization": f"Bearer {KEY}"}) as response:
        lines = response.iter_lines()  # (kept: a dropped iterator closes the connection)
        first = next(lines)
        assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["role"] == "assistant"
        _wait_rows(url)
        left = time.monotonic()
    steps = _wait_idle(url)["models"]["game24-beam"]["decoding_steps"]
    assert time.monotonic() - left < 10
    time.sleep(0.5)
    assert _stats(url)["models"]["game24-beam"]["decoding_steps"] == steps  # nothing decodes for it any more
    assert "the client disconnected mid-stream; 1 searches cancelled" in caplog.text
    # a request that leaves before its answer (no stream): the same; four searches (n=4), so that it is still
    # searching when the client leaves after 0.5 s even on a quiet machine (one takes 0.8 s there)
    with pytest.raises(httpx.ReadTimeout):
        _post(url, "chat/completions", {**long, "stream": False, "n": 4}, timeout=httpx.Timeout(300, read=0.5))
    _wait_idle(url)
    assert "the client disconnected; 4 searches cancelled" in caplog.text
    assert client.chat.completions.create(model="game24-sc", messages=[{"role": "user", "content": PUZZLE}])


def test_backend_failure_is_500_then_served(url: str, client: openai.OpenAI, failing: FailingPolicy) -> None:
    failing.fail = True
    response = _post(url, "chat/completions", _chat("game24-failing"))
    assert response.status_code == 500
    assert "injected decoding fault" in response.json()["error"]["message"]
    failing.fail = True
    with httpx.stream("POST", f"{url}/completions", timeout=300, headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "game24-failing", "prompt": PUZZLE, "stream": True}) as response:
        chunks = [line for line in response.iter_lines() if line]
    assert "injected decoding fault" in json.loads(chunks[-2].removeprefix("data: "))["error"]["message"]
    assert chunks[-1] == "data: [DONE]"
    answer = client.chat.completions.create(model="game24-failing", messages=[{"role": "user", "content": PUZZLE}])
    assert answer.choices[0].message.content
    _wait_idle(url)


@pytest.mark.slow
def test_ponder_serve_command_serves_and_shuts_down_gracefully(tmp_path: Path) -> None:
    """`ponder serve` answers; on SIGTERM the request in flight still gets its answer, the engines close and the
    process ends."""
    recipes = tmp_path / "recipes.yaml"
    recipes.write_text("game24-sc:\n  task: game24\n  method: self_consistency\n  budget: 2\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ponder.cli", "-v", "serve", "--port", str(port), "--recipes",
                             str(recipes), "--grace", "600"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout and proc.stdout.read()
            try:
                if httpx.get(f"{base}/models").is_success:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        answer = _post(base, "completions", {"model": "game24-sc", "prompt": PUZZLE}, key=None).json()
        assert answer["choices"][0]["text"] == ponder.solve(PUZZLE, method="self_consistency", budget=2).solution
        with ThreadPoolExecutor(1) as pool:
            late = pool.submit(_post, base, "completions", {"model": "game24-sc", "prompt": PUZZLE, "seed": 1}, None)
            while not httpx.get(f"{base.removesuffix('/v1')}/stats").json()["searches_running"]:
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert late.result().status_code == 200, late.result().text
        assert proc.wait(60) in (0, -signal.SIGTERM)  # (uvicorn ends by the signal it caught, once shut down)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read() if proc.stdout else ""
    assert "serving game24-sc" in log and "engines closed" in log


def test_serve_command_refuses_bad_settings(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "ponder.cli", "serve", "--port", "0"]
    for args, says in ((["--models", "game24-nope"], "no recipe named game24-nope"),
                       (["--recipes", str(tmp_path / "none.yaml")], "cannot read recipes")):
        done = subprocess.run(run + args, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and says in done.stderr and len(done.stderr.strip().splitlines()) == 1
