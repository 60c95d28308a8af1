"""`ponder serve` under load on 127.0.0.1: 1, 8 and 50 concurrent clients, against the same searches run in one
process.

One served recipe (a game24 search on the shipped policy) answers game24 test puzzles. At each concurrency level
`c`, `c` clients each send chat requests one after another (the `i`-th request: puzzle `i` of the test split,
seed `seed + i`) until the level's requests are sent or its time is up; the level reports requests/s and the p50
and p95 latency. The same searches (same puzzles, seeds, concurrency) then run in process, straight on the same
engine; every served answer must equal its in-process one, and `server / in process` is the wall-time ratio:
what HTTP, JSON and the server's bookkeeping cost. The server runs on a thread of this process (`running`), so the
clients, the server and the engine share one interpreter, as the in-process run shares it with nothing.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import httpx

from ponder.search import get_method, search
from ponder.serve.app import Limits, Served, create_app, running
from ponder.serve.recipes import Recipe
from ponder.tasks.base import Problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeBenchConfig:
    method: str = "self_consistency"
    budget: int = 2
    clients: tuple[int, ...] = (1, 8, 50)
    requests: int = 16  # requests per level (at least one per client)
    seconds: float = 300.0  # a level sends no new request after this
    seed: int = 0


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1] if len(values) > 1 \
        else values[0]


async def _load(url: str, model: str, puzzles: list[Problem], clients: int, seed: int,
                seconds: float) -> tuple[float, list[tuple[int, float, str]]]:
    """`clients` clients sending puzzle i with seed `seed + i`, one request after another each, until every puzzle is
    asked or `seconds` have passed: the wall time and (i, latency, text) per request."""
    queue = list(range(len(puzzles)))
    done: list[tuple[int, float, str]] = []
    start = time.perf_counter()

    async def client(http: httpx.AsyncClient) -> None:
        while queue and time.perf_counter() - start < seconds:
            i = queue.pop(0)
            sent = time.perf_counter()
            response = await http.post(f"{url}/chat/completions", json={
                "model": model, "seed": seed + i, "messages": [{"role": "user", "content": puzzles[i].question}]})
            response.raise_for_status()
            done.append((i, time.perf_counter() - sent, response.json()["choices"][0]["message"]["content"]))

    async with httpx.AsyncClient(timeout=3600, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return time.perf_counter() - start, done


async def _in_process(served: Served, puzzles: list[Problem], asked: list[int], clients: int,
                      seed: int) -> tuple[float, dict[int, str]]:
    """The same searches in process, `clients` at a time: the wall time and each one's solution."""
    lm = served.policy(served.method)
    judge = served.judge(served.method, lm)
    slots = asyncio.Semaphore(clients)
    base = served.check(served.method, served.recipe.budget, served.recipe.knobs)
    out: dict[int, str] = {}

    async def one(i: int) -> None:
        async with slots:
            cfg = replace(base, seed=seed + i)
            trace = await search(served.task, puzzles[i], lm, judge, get_method(served.method), cfg)
            out[i] = trace.solution or ""

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in asked))
    return time.perf_counter() - start, out


def serve_benchmark(cfg: ServeBenchConfig) -> dict[str, Any]:
    """Rows per concurrency level: requests, seconds, requests/s, p50/p95 latency, the in-process seconds, their
    ratio and how many answers equal the in-process ones."""
    recipe = Recipe("game24-bench", task="game24", method=cfg.method, budget=cfg.budget, seed=cfg.seed)
    served = Served(recipe)
    most = max(cfg.clients)
    limits = Limits(max_searches=most, max_waiting=most)
    rows = []
    with running(create_app([served], limits)) as url:
        for clients in cfg.clients:
            # each puzzle as the server reads a question (`from_text`, as `ponder.solve`): its id seeds the search
            puzzles = [served.task.from_text(p.question)
                       for p in served.task.problems("test", limit=max(cfg.requests, clients))]
            wall, done = asyncio.run(_load(url, recipe.name, puzzles, clients, cfg.seed, cfg.seconds))
            asked = sorted(i for i, _, _ in done)
            local, expected = asyncio.run(_in_process(served, puzzles, asked, clients, cfg.seed))
            latencies = [lat for _, lat, _ in done]
            row = {"clients": clients, "requests": len(done), "seconds": wall, "requests_per_s": len(done) / wall,
                   "p50_s": _quantile(latencies, 0.5), "p95_s": _quantile(latencies, 0.95),
                   "in_process_s": local, "ratio": wall / local,
                   "equal": sum(text == expected[i] for i, _, text in done)}
            log.info("%d clients: %d requests in %.1f s, in process %.1f s; %d/%d answers equal", clients,
                     len(done), wall, local, row["equal"], len(done))
            rows.append(row)
    return {"config": {**asdict(cfg), "clients": list(cfg.clients)}, "rows": rows}
