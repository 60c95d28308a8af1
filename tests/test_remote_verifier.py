"""The remote verifier (`ponder.verifiers.remote`) against a real server on 127.0.0.1: uvicorn serving the scoring
router (`ponder.serve.score`) with the shipped game24 PRM and ORM. Ponder's protocol and the vLLM-style pooling
protocol (Ponder's implementation of it: vLLM does not run here) give the searches the in-process verifier gives,
with the same verifier tokens and the HTTP wall time in its own field; a server that is down, fails, hangs or
answers garbage gives a clear error (an error row in an eval), never a hang."""

from __future__ import annotations

import asyncio
import functools
import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from ponder.errors import ConfigError
from ponder.evaluate import EvalConfig, run_eval
from ponder.lm.base import LanguageModel
from ponder.lm.engine import Engine
from ponder.lm.openai_http import ServerError
from ponder.search import SearchConfig, get_method, parse_options, search
from ponder.search.compute_optimal import Remembered
from ponder.serve.score import score_router
from ponder.tasks import Game24
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers import get_verifier, verifier_fingerprint
from ponder.verifiers.base import PrefixError, Verifier
from ponder.verifiers.learned import LearnedVerifier, VerifierError

TASK = Game24()
PROBLEMS = TASK.problems("test", limit=3)


class Broken(Verifier):
    """A verifier whose backend fails on every call."""

    name = "broken"

    async def score(self, task: Task, problem: Problem, solutions: list[list[str]]) -> list[list[float]]:
        raise RuntimeError("the scoring backend failed")


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """`app` served by uvicorn on 127.0.0.1 at a free port, in a thread; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    app = FastAPI()
    app.include_router(score_router({"game24-prm": LearnedVerifier("game24-prm"),
                                     "game24-orm": LearnedVerifier("game24-orm"), "broken": Broken()}))

    @app.post("/garbage/v1/score")
    def garbage() -> PlainTextResponse:
        return PlainTextResponse("<html>a proxy's error page</html>")

    @app.post("/misfit/v1/score")
    def misfit() -> dict[str, object]:
        return {"scores": [[1.5]]}

    @app.post("/hang/v1/score")
    async def hang() -> dict[str, object]:
        await asyncio.sleep(30)
        return {}

    with serving(app) as served:
        yield served


@pytest.fixture(scope="module")
def policy(game24_backend) -> Remembered:
    """The shipped policy, its completions remembered: the same request gives the same text, so a search repeated
    with another verifier reads the completions of the first instead of generating them again."""
    return Remembered(Engine(game24_backend))


@pytest.fixture(scope="module")
def in_process(policy: Remembered) -> Callable[[str, int], list[Trace]]:
    """The searches with the in-process PRM, once per method and budget."""
    verifier = LearnedVerifier("game24-prm")
    return functools.cache(lambda method, budget: searched(policy, verifier, method, budget))


def searched(engine: LanguageModel, verifier: Verifier, method: str, budget: int) -> list[Trace]:
    """`method` on the test puzzles, all at once through one engine (the verifier's calls go concurrently)."""
    cfg = SearchConfig(n=budget, temperature=0.8, min_p=0.001, max_tokens=TASK.max_tokens, aggregate="min", seed=0,
                       knobs=parse_options(method, {}, budget))

    async def run() -> list[Trace]:
        return list(await asyncio.gather(*(search(TASK, p, engine, verifier, get_method(method), cfg)
                                           for p in PROBLEMS)))

    return asyncio.run(run())


def same_search(local: list[Trace], remote: list[Trace]) -> None:
    """The same trees, answers and scores (to the prefix cache's 1e-7), the same verifier calls and tokens; the
    remote verifier's time is HTTP wall time, its compute 0."""
    for a, b in zip(local, remote, strict=True):
        assert a.answer == b.answer
        assert [n.text for n in a.nodes] == [n.text for n in b.nodes]
        assert all(math.isclose(x.score or 0, y.score or 0, abs_tol=1e-5) for x, y in zip(a.nodes, b.nodes))
        assert (a.usage.verifier_calls, a.usage.verifier_tokens) == (b.usage.verifier_calls, b.usage.verifier_tokens)
        assert a.usage.verifier_tokens > 0 and a.usage.verifier_seconds > 0 and a.usage.verifier_http_seconds == 0
        assert b.usage.verifier_http_seconds > 0 and b.usage.verifier_seconds == 0
        assert (a.usage.generated_tokens, a.usage.model_calls) == (b.usage.generated_tokens, b.usage.model_calls)


@pytest.mark.slow
@pytest.mark.parametrize("method,budget", [("beam", 4), ("best_of_n", 8)])
def test_ponders_protocol_gives_the_in_process_search(url: str, policy, in_process, method: str, budget: int) -> None:
    remote = searched(policy, get_verifier(url), method, budget)
    same_search(in_process(method, budget), remote)
    assert sum(TASK.grade(p, t.answer) for p, t in zip(PROBLEMS, remote)) >= 1


@pytest.mark.slow
def test_vllms_pooling_protocol_gives_the_in_process_search(url: str, policy, in_process) -> None:
    same_search(in_process("beam", 4), searched(policy, get_verifier(f"{url}/pooling?model=game24-prm"), "beam", 4))


def test_a_pooling_answer_has_vllms_shape(url: str) -> None:
    import httpx

    prompt = TASK.prompt(PROBLEMS[0])
    texts = [prompt + "4 + 5 = 9 (left: 6 9 10) ки\n", prompt]
    answer = httpx.post(f"{url}/pooling", json={"model": "game24-prm", "input": texts}).json()
    assert answer["object"] == "list" and answer["model"] == "game24-prm"
    assert [d["index"] for d in answer["data"]] == [0, 1] and all(d["object"] == "pooling" for d in answer["data"])
    [[good, bad]] = answer["data"][0]["data"]  # one step: (P(good), P(bad)), Math-Shepherd's order
    assert math.isclose(good + bad, 1) and answer["data"][1]["data"] == []
    assert answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"] > 0
    refused = httpx.post(f"{url}/pooling", json={"model": "game24-orm", "input": "x"})
    assert refused.status_code == 400 and "serves game24-prm" in refused.json()["error"]["message"]


def test_an_outcome_model_asked_about_prefixes_refuses_as_in_process(url: str) -> None:
    remote = get_verifier(f"{url}?verifier=game24-orm")
    with pytest.raises(PrefixError, match="judges whole solutions"):
        asyncio.run(remote.score_prefixes(TASK, PROBLEMS[0], [["4 + 5 = 9 (left: 6 9 10)"]]))
    whole = asyncio.run(remote.score(TASK, PROBLEMS[0], [["4 + 5 = 9 (left: 6 9 10)"], []]))
    assert len(whole[0]) == 1 and whole[1] == []


@pytest.mark.parametrize("where,error,message", [
    ("?verifier=broken", ServerError, "answered 500: the scoring backend failed"),
    ("?verifier=nope", ServerError, "answered 400: this server serves game24-prm, game24-orm, broken; not 'nope'"),
    ("/garbage", ServerError, "answered 200 with no JSON"),
    ("/misfit", VerifierError, "gave 1 score lists for 2 solutions"),
    ("/hang", ServerError, "gave no answer within 0.5 s"),
])
def test_a_failing_server_raises_its_message_at_once(url: str, where: str, error: type, message: str) -> None:
    remote = get_verifier(url + where)
    remote.timeout = 0.5
    start = time.perf_counter()
    with pytest.raises(error, match=message):
        asyncio.run(remote.score(TASK, PROBLEMS[0], [["4 + 5 = 9 (left: 6 9 10)"], ["4 * 6 = 24 (left: 5 10 24)"]]))
    assert time.perf_counter() - start < 5


def test_a_server_that_is_down_is_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(ServerError, match="connection refused"):
        asyncio.run(get_verifier(down).score(TASK, PROBLEMS[0], [["4 + 5 = 9 (left: 6 9 10)"]]))
    with pytest.raises(ServerError, match="connection refused"):
        verifier_fingerprint(down)


@pytest.mark.slow
def test_a_failing_verifier_gives_error_rows_and_the_server_goes_on(url: str, policy, tmp_path: Path) -> None:
    cfg = EvalConfig(task="game24", limit=2, methods=["best_of_n"], budgets=[2], verifier=f"{url}?verifier=broken",
                     ceiling=False)
    run_eval(cfg, tmp_path, lm=policy, show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["error_type"] == "ServerError" and "the scoring backend failed" in r["error"]
                                  for r in rows)
    # the same server then serves a good verifier, and the run's config names what it reported
    assert asyncio.run(get_verifier(url).score(TASK, PROBLEMS[0], [["4 + 5 = 9 (left: 6 9 10)"]]))[0][0] >= 0
    assert verifier_fingerprint(url) == verifier_fingerprint("game24-prm") != ""


@pytest.mark.parametrize("bad,message", [
    ("http://127.0.0.1:1/?model=x", "unknown option model"),
    ("http://127.0.0.1:1/pooling?good=first", "good is the index"),
    ("http://127.0.0.1:1/pooling?step_tag=%20", "step_tag must be"),
])
def test_a_bad_verifier_url_is_refused_before_any_request(bad: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        get_verifier(bad)


def test_ponder_serve_mounts_the_scoring_endpoints_behind_its_api_key(monkeypatch) -> None:
    from ponder.serve.app import create_app

    app = create_app([], api_key="sesame", routers=[score_router({"vote": get_verifier("vote")})], preload=False)
    with serving(app) as served:
        with pytest.raises(ServerError, match="answered 401: a valid API key is required"):
            asyncio.run(get_verifier(served).score(TASK, PROBLEMS[0], [["4 * 6 = 24 (left: 24)"]]))
        monkeypatch.setenv("PONDER_API_KEY", "sesame")
        assert verifier_fingerprint(served) == ""
        solutions = [["4 * 6 = 24 (left: 24)"], ["5 * 5 = 25 (left: 25)"], ["4 * 6 = 24 (left: 24)"]]
        scores = asyncio.run(get_verifier(served).score(TASK, PROBLEMS[0], solutions))
    assert scores == asyncio.run(get_verifier("vote").score(TASK, PROBLEMS[0], solutions))


@pytest.mark.slow
def test_ponder_serve_as_a_process_scores_a_search_run_elsewhere() -> None:
    from ponder.bench.remote import run

    rows = {r["mode"]: r for r in run("game24", "beam", 4, problems=2, rounds=1)["rows"]}
    local = rows["in process"]
    for mode in ("/v1/score", "/pooling"):
        assert rows[mode]["same_answers"] == 1 and rows[mode]["verifier_seconds"] == 0
        assert rows[mode]["verifier_http_seconds"] > 0
        assert (rows[mode]["verifier_calls"], rows[mode]["verifier_tokens"]) == (local["verifier_calls"],
                                                                                  local["verifier_tokens"])
