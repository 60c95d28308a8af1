"""Search served as an OpenAI-compatible model: `ponder serve`.

A model name picks a serving recipe (`ponder.serve.recipes`): task, policy, search method, verifier, budget and
knobs. Endpoints (OpenAI's shapes):

- `GET /v1/models`: the recipes served.
- `POST /v1/chat/completions`: the last user message is the question; `stream: true` answers with server-sent
  events (`data: {chunk}` lines, then `data: [DONE]`): the role at once, the chosen solution's steps once the
  search ends, then the finish reason.
- `POST /v1/completions`: the prompt is the question, or the task's own prompt for a question (what Ponder's HTTP
  backend sends when a search runs over this server: search served as a model, consumed by search).
- `GET /stats`: searches running and waiting, and each loaded policy's engine rows.

A question is read as `ponder solve` reads it (`Task.from_text`: a game24 puzzle, an arith or gsm8k test index, a
question of your own). Each of the request's `n` choices is one search, seeded `seed + i` (`seed`: the request's,
else the recipe's), so an answer equals `ponder.solve`'s for the same settings and seed. OpenAI's sampling fields
(temperature, top_p) do not apply: the recipe's search samples. `max_tokens` is a solution's token budget. A
request may override the method, budget and knobs in a `ponder` field (the `openai` client's `extra_body`):
`{"ponder": {"method": "beam", "budget": 8, "knobs": {"width": 2}, "return_trace": true}}`; `return_trace` puts
each search's tree and usage in the reply (`ponder.traces`). `usage` counts what the searches cost:
`completion_tokens` every token generated, `completion_tokens_details.reasoning_tokens` those not in the returned
texts, `prompt_tokens` every prompt token asked for (`prompt_tokens_details.cached_tokens` read from the prefix
cache).

Limits (`Limits`, set by the server): the body's bytes (413), the question's prompt tokens, `n`, `max_tokens` and
the budget (400). At most `max_searches` searches run at once; up to `max_waiting` more wait their turn in arrival
order; a request whose searches would not fit gets 429 with `Retry-After`. An API key, when set, is required as a
bearer token (401). Every refusal is OpenAI's error JSON (`{"error": {"message", "type", "param", "code"}}`) saying
what is wrong. A client that disconnects (mid-stream too) cancels its searches; their rows leave the engine at its
next step. A backend failure is a 500 for the requests whose searches it hit; the engine drops their rows and the
server goes on serving.

All clients share one engine per policy and one verifier engine per learned verifier (`shared_model`,
`shared_verifier`), so concurrent requests batch. `create_app` builds the app and takes more routers (a viewer's,
a scoring endpoint's); `serve` runs it under uvicorn until SIGINT/SIGTERM, finishing the requests in flight.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Any

from ponder.errors import ConfigError, PonderError
from ponder.lm.engine import Engine, EngineClosedError
from ponder.lm.load import clear_models
from ponder.search import get_method, search
from ponder.serve.requests import Ask, HTTPError, Limits, read_ask, read_body
from ponder.serve.served import Served
from ponder.trace import Trace, Usage

try:
    from fastapi import APIRouter, Depends, FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as err:  # pragma: no cover  (the serve extra is missing)
    from ponder.errors import MissingExtra

    raise MissingExtra("ponder serve", "fastapi and uvicorn", "serve") from err

log = logging.getLogger(__name__)


class Gate:
    """At most `slots` searches run at once, the others wait in arrival order; a request whose searches would take
    the waiting searches past `queue` is refused (429)."""

    def __init__(self, slots: int, queue: int) -> None:
        self.slots, self.queue = slots, queue
        self.held = 0  # searches admitted: running or waiting
        self.running = 0
        self._slots: asyncio.Semaphore | None = None

    def admit(self, n: int) -> None:
        if self.held + n > self.slots + self.queue:
            raise HTTPError(429, f"the server is busy: {self.running} searches running and {self.held - self.running}"
                                 f" waiting (at most {self.slots} + {self.queue}); retry later",
                            kind="rate_limit_error", headers={"Retry-After": "1"})
        self.held += n

    async def run(self, work: Callable[[], Awaitable[Trace]]) -> Trace:
        """Run one admitted search when a slot is free."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.slots)
        try:
            async with self._slots:
                self.running += 1
                try:
                    return await work()
                finally:
                    self.running -= 1
        finally:
            self.held -= 1


class Server:
    """What the endpoints share: the served recipes by name, the limits, the gate and the API key."""

    def __init__(self, served: Sequence[Served], limits: Limits, api_key: str | None) -> None:
        self.models = {s.name: s for s in served}
        if len(self.models) != len(served):
            raise ConfigError("two recipes have the same model name")
        self.limits, self.api_key = limits, api_key
        self.gate = Gate(limits.max_searches, limits.max_waiting)

    def authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(key.strip().encode(), self.api_key.encode()):
            raise HTTPError(401, "a valid API key is required (Authorization: Bearer KEY)", kind="authentication_error",
                            headers={"WWW-Authenticate": "Bearer"})

    def start(self, ask: Ask) -> list[asyncio.Task[Trace]]:
        """The request's searches, admitted (or 429) and started: choice i seeded `seed + i`."""
        self.gate.admit(ask.n)
        return [asyncio.create_task(self.gate.run(lambda i=i: self._search(ask, i))) for i in range(ask.n)]

    async def _search(self, ask: Ask, i: int) -> Trace:
        served = ask.served
        lm = await asyncio.to_thread(served.policy, ask.method)
        judge = await asyncio.to_thread(served.judge, ask.method, lm)
        return await search(served.task, ask.problem, lm, judge, get_method(ask.method),
                            replace(ask.cfg, seed=ask.cfg.seed + i))

    def stats(self) -> dict[str, Any]:
        """Searches running and waiting; per served model, the rows its policies' engines run now and the decoding
        steps they have taken (engines shared between models count in each)."""
        models = {}
        for s in self.models.values():
            engines = [lm for lm in s.loaded.values() if isinstance(lm, Engine)]
            models[s.name] = {"active_rows": sum(e.active_rows for e in engines),
                              "decoding_steps": sum(e.stats.batches for e in engines)}
        return {"searches_running": self.gate.running, "searches_waiting": self.gate.held - self.gate.running,
                "models": models}


def _cut(text: str, stop: list[str]) -> tuple[str, str]:
    """The text cut at its first stop string, and the finish reason."""
    cuts = [text.find(s) for s in stop if s in text]
    return (text[:min(cuts)], "stop") if cuts else (text, "stop")


async def _usage(ask: Ask, traces: list[Trace], texts: list[str]) -> dict[str, Any]:
    total = Usage()
    for t in traces:
        total.add(t.usage)
    lm = ask.served.policy(ask.method)
    shown = sum([await lm.count_tokens(t) or 0 for t in texts])
    return {"prompt_tokens": total.prompt_tokens, "completion_tokens": total.generated_tokens,
            "total_tokens": total.prompt_tokens + total.generated_tokens,
            "prompt_tokens_details": {"cached_tokens": total.prompt_tokens - total.computed_prompt_tokens},
            "completion_tokens_details": {"reasoning_tokens": max(0, total.generated_tokens - shown)}}


def _ponder(ask: Ask, traces: list[Trace]) -> dict[str, Any]:
    """What the reply says of the searches beside OpenAI's fields: the method, budget and seed, each choice's
    answer and usage, and the traces when asked."""
    out: dict[str, Any] = {"recipe": ask.served.name, "method": ask.method, "budget": ask.cfg.n, "seed": ask.cfg.seed,
                           "answers": [t.answer for t in traces], "usage": [vars(t.usage) for t in traces]}
    if ask.return_trace:
        out["traces"] = [t.to_dict() for t in traces]
    return out


async def _gather(searches: list[asyncio.Task[Trace]]) -> list[Trace]:
    """The searches' traces; a search that fails fails the request (a 500 naming the backend's error, a 503 while
    the server shuts down), the others cancelled."""
    try:
        return list(await asyncio.gather(*searches))
    except EngineClosedError as err:
        raise HTTPError(503, f"the server is shutting down: {err}", kind="server_error") from err
    except PonderError as err:
        raise HTTPError(500, f"the search failed: {err}", kind="server_error") from err
    except Exception as err:
        log.exception("a search failed")
        raise HTTPError(500, f"the search failed: the backend raised {type(err).__name__}: {err}",
                        kind="server_error") from err
    finally:
        for s in searches:
            s.cancel()


async def _until_disconnect(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(0.1)


async def _answer(request: Request, server: Server, chat: bool) -> Any:
    data = await read_body(request, server.limits.max_body_bytes)
    ask = await read_ask(server.models, server.limits, data, chat)
    searches = server.start(ask)
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    created, started = int(time.time()), time.perf_counter()
    obj = "chat.completion" if chat else "text_completion"
    if ask.stream:
        return StreamingResponse(_events(ask, searches, rid, created, chat, started), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    waiter = asyncio.ensure_future(_gather(searches))
    watcher = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not waiter.done():  # the client left: its searches stop, their rows leave the engine
        waiter.cancel()
        log.info("%s: the client disconnected; %d searches cancelled", rid, len(searches))
        return None
    traces = waiter.result()
    texts = [_cut(t.solution or "", ask.stop) for t in traces]
    choices = [{"index": i, "finish_reason": reason, "logprobs": None,
                **({"message": {"role": "assistant", "content": text}} if chat else {"text": text})}
               for i, (text, reason) in enumerate(texts)]
    log.info("%s %s: %d searches (%s, budget %d) in %.2f s", rid, ask.served.name, ask.n, ask.method, ask.cfg.n,
             time.perf_counter() - started)
    return {"id": rid, "object": obj, "created": created, "model": ask.served.name, "choices": choices,
            "usage": await _usage(ask, traces, [t for t, _ in texts]), "ponder": _ponder(ask, traces)}


async def _events(ask: Ask, searches: list[asyncio.Task[Trace]], rid: str, created: int, chat: bool,
                  started: float) -> AsyncIterator[str]:
    """The stream: the role at once, each choice's steps when its search ends, the finish reasons, [DONE]. A
    client that disconnects cancels the generator, and with it the searches."""
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices: list[dict[str, Any]], **more: Any) -> str:
        return "data: " + json.dumps({"id": rid, "object": obj, "created": created, "model": ask.served.name,
                                      "choices": choices, **more}) + "\n\n"

    def piece(i: int, text: str | None, reason: str | None = None, role: bool = False) -> dict[str, Any]:
        if chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
            return {"index": i, "delta": delta, "finish_reason": reason, "logprobs": None}
        return {"index": i, "text": text or "", "finish_reason": reason, "logprobs": None}

    try:
        if chat:
            yield chunk([piece(i, None, role=True) for i in range(ask.n)])
        try:
            traces = await _gather(searches)
        except HTTPError as err:
            yield "data: " + json.dumps({"error": {"message": str(err), "type": err.kind, "code": err.status}}) + "\n\n"
            yield "data: [DONE]\n\n"
            return
        texts = [_cut(t.solution or "", ask.stop) for t in traces]
        for i, (text, _) in enumerate(texts):
            for line in text.splitlines(keepends=True):
                yield chunk([piece(i, line)])
        yield chunk([piece(i, None if chat else "", reason) for i, (_, reason) in enumerate(texts)],
                    usage=await _usage(ask, traces, [t for t, _ in texts]), ponder=_ponder(ask, traces))
        yield "data: [DONE]\n\n"
        log.info("%s %s: %d searches streamed (%s, budget %d) in %.2f s", rid, ask.served.name, ask.n, ask.method,
                 ask.cfg.n, time.perf_counter() - started)
    except asyncio.CancelledError:  # the client left
        log.info("%s: the client disconnected mid-stream; %d searches cancelled", rid,
                 sum(s.cancelled() or not s.done() for s in searches))
        raise
    finally:
        for s in searches:
            s.cancel()


async def _route_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
    """A path or HTTP method the server does not have, as OpenAI's error JSON."""
    return HTTPError(err.status_code, str(err.detail), kind="not_found_error" if err.status_code == 404
                     else "invalid_request_error").response()


def create_app(served: Sequence[Served], limits: Limits | None = None, api_key: str | None = None,
               routers: Iterable[APIRouter] = (), preload: bool = True, close_models: bool = False) -> FastAPI:
    """The app serving `served` (one model name each) under `limits`; `api_key`: the bearer token every request
    must carry (None: none). `routers`: more endpoints mounted beside the API's (a viewer's, a scoring
    endpoint's). `preload`: load every recipe's policy and verifier at start-up, so the first request does not
    wait for them. `close_models`: close the shared engines when the app shuts down (when the process ends with
    it, as under `serve`)."""
    server = Server(served, limits or Limits(), api_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if preload:
            for s in served:
                await asyncio.to_thread(s.load)
                log.info("serving %s: %s, %s, budget %d", s.name, s.task.name, s.method, s.recipe.budget)
        yield
        if close_models:
            await asyncio.to_thread(clear_models)
            log.info("engines closed")

    app = FastAPI(title="Ponder", summary="Test-time search served as an OpenAI-compatible model",
                  lifespan=lifespan)
    app.state.server = server
    app.add_exception_handler(HTTPError, lambda _request, err: err.response())  # type: ignore[arg-type, return-value]
    app.add_exception_handler(StarletteHTTPException, _route_error)  # type: ignore[arg-type]
    api = APIRouter(dependencies=[Depends(server.authorize)])

    @api.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": s.name, "object": "model", "created": 0, "owned_by": "ponder",
             "ponder": {"task": s.task.name, "method": s.method, "budget": s.recipe.budget,
                        "description": s.recipe.description}} for s in served]}

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await _answer(request, server, chat=True)

    @api.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await _answer(request, server, chat=False)

    @api.get("/stats")
    async def stats() -> dict[str, Any]:
        return server.stats()

    app.include_router(api)
    for router in routers:
        app.include_router(router)
    return app


def serve(served: Sequence[Served], host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None,
          api_key: str | None = None, routers: Iterable[APIRouter] = (), grace: float = 30.0) -> None:
    """Run the app under uvicorn until SIGINT or SIGTERM; on either it stops taking connections, gives the requests
    in flight up to `grace` seconds, then closes the engines (uvicorn then ends the process by the same signal)."""
    import uvicorn

    app = create_app(served, limits, api_key, routers, close_models=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=grace)


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0, startup: float = 300.0) -> Iterator[str]:
    """Serve `app` under uvicorn on a thread of this process while the block runs (port 0: a free one); yields the
    API's base URL, `http://HOST:PORT/v1`, once the app has started (its models loaded). On exit the server stops
    as on SIGTERM: no new connections, the requests in flight finished."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="ponder-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server on {host}:{port} did not start (see its log)")
        time.sleep(0.05)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}/v1"
    finally:
        server.should_exit = True
        thread.join()
