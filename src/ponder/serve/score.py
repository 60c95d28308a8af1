"""The scoring endpoints: Ponder's verifiers served over HTTP, for a search whose policy runs elsewhere
(`--verifier http://HOST:PORT`, `ponder.verifiers.remote`).

- `GET /v1/verifiers`: the verifiers served (`id`, the name a request gives; `name`; `fingerprint`, the weights'
  hash; `pooling`, whether `/pooling` serves it).
- `POST /v1/score`: one verifier call. Body: `verifier` (optional: the first served), `task` (a task name the
  server knows), `problem` (`id`, `question`, `answer`), `prompt` (the text the policy was given; default: the
  server's task's prompt), `solutions` (lists of steps), `prefixes` (true: judge partial solutions, as a step-level
  search asks). Answer: `scores` (per solution, one score in [0, 1] per step), `verifier`, and `usage`: the tokens
  the verifier judged, computed and generated, and its compute seconds, under the accounting contract
  (docs/METHODOLOGY.md). Any Ponder verifier: a learned PRM or ORM, a judge, the oracle, the vote.
- `POST /pooling`: vLLM's pooling API as vLLM serves a process reward model with a `STEP` pooler (its
  `PoolingRequest` / `PoolingResponse`: `model`, `input` a text or a list; `data[i].data` one probability list per
  step tag; `usage.prompt_tokens`), for the step-tag and token-classification PRMs among the served verifiers. Each
  input is the prompt (ending with a newline), then each step on its own line ending with the PRM's marker; per
  step the answer holds the pair vLLM's pooler returns: for a step-tag PRM (P(good), P(bad)), Math-Shepherd's
  `returned_token_ids` order, for a token-classification PRM (P(label 0), P(label 1)). A step's probability is the
  verifier's own step score (a step-tag PRM with `check_after` includes its check of the step's result, which
  vLLM's pooler does not compute), so a search gets the same scores through either endpoint as in process.

Errors answer `{"error": {"message", "type"}}`: 400 for a bad request (an unknown task or verifier, a malformed
input), 422 with type `PrefixError` for an outcome verifier asked about prefixes, 500 for a verifier that fails,
and the server goes on serving. Calls from many clients share the verifier engine (`ponder.batcher`), so
concurrent requests are scored in shared forward passes.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ponder.errors import PonderError
from ponder.tasks import get_task
from ponder.tasks.base import Problem, Task
from ponder.trace import Usage
from ponder.verifiers import ASKING, Verifier, shared_verifier, verifier_fingerprint
from ponder.verifiers.base import MeteredVerifier, PrefixError
from ponder.verifiers.learned import LearnedVerifier

log = logging.getLogger(__name__)
POOLED_KINDS = ("step_tag", "token_classification")  # the heads that read a score at a marker after each step


class ProblemIn(BaseModel):
    id: str
    question: str
    answer: str | None = None


class ScoreRequest(BaseModel):
    verifier: str | None = None
    task: str
    problem: ProblemIn
    prompt: str | None = None
    solutions: list[list[str]]
    prefixes: bool = False


class PoolingRequest(BaseModel):
    model: str | None = None
    input: str | list[str] = Field(min_length=1)


class RequestError(PonderError):
    """A request the server cannot serve as asked (answered 400 with the message)."""


def score_router(verifiers: Mapping[str, Verifier]) -> APIRouter:
    """The scoring endpoints (module docstring) for `verifiers`, by the name a request gives; the first is the
    default. The server chooses them: a request cannot load a checkpoint of its own. Mounted in an app that holds
    a `ponder serve` server (`app.state.server`), they require its API key too."""
    served = dict(verifiers)
    default = next(iter(served), "")
    pooled = {k: v for k, v in served.items() if isinstance(v, LearnedVerifier) and v.head.kind in POOLED_KINDS}
    router = APIRouter(dependencies=[Depends(_authorized)])

    def pick(name: str | None, among: Mapping[str, Verifier]) -> tuple[str, Verifier]:
        name = name or (default if default in among else next(iter(among), ""))
        if name not in among:
            raise RequestError(f"this server serves {', '.join(among) or 'no such verifier'}; not {name!r}")
        return name, among[name]

    @router.get("/v1/verifiers")
    def listing() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": k, "name": v.name, "fingerprint": _fingerprint(k),
                                            "pooling": k in pooled} for k, v in served.items()]}

    @router.post("/v1/score", response_model=None)
    async def score(request: ScoreRequest) -> dict[str, Any] | JSONResponse:
        try:
            _, verifier = pick(request.verifier, served)
            task = _posed(_task(request.task), request.prompt)
            problem = _problem(task, request.problem)
            usage = Usage()
            metered = MeteredVerifier(verifier, usage)
            judge = metered.score_prefixes if request.prefixes else metered.score
            scores = await judge(task, problem, request.solutions)
        except Exception as err:  # every failure is an answer; the server goes on
            return _error(err)
        return {"verifier": verifier.name, "scores": scores,
                "usage": {k: getattr(usage, k) for k in ("verifier_tokens", "computed_verifier_tokens",
                                                         "verifier_generated_tokens", "verifier_seconds")}}

    @router.post("/pooling", response_model=None)
    async def pooling(request: PoolingRequest) -> dict[str, Any] | JSONResponse:
        try:
            name, verifier = pick(request.model, pooled)
            assert isinstance(verifier, LearnedVerifier)
            texts = [request.input] if isinstance(request.input, str) else request.input
            judged = await verifier.judge([_split(t, verifier.head.marker) for t in texts])
        except Exception as err:
            return _error(err)
        first_good = verifier.head.kind == "step_tag"
        tokens = sum(j.tokens for j in judged)
        return {"id": f"pool-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": name,
                "data": [{"index": i, "object": "pooling",
                          "data": [[s, 1.0 - s] if first_good else [1.0 - s, s] for s in j.scores]}
                         for i, j in enumerate(judged)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0,
                          "prompt_tokens_details": {"cached_tokens": tokens - sum(j.computed for j in judged)}}}

    return router


def scoring_verifiers(names: Sequence[str], device: str = "cpu") -> dict[str, Verifier]:
    """The verifiers `names` names, on `device`, loaded once and shared with the server's own searches
    (`shared_verifier`), so that scoring requests and searches batch in one verifier engine. A judge needs its model
    named (`judge:MODEL`): the scoring server has no policy of its own to ask."""
    return {name: shared_verifier(name, device=device) for name in dict.fromkeys(names)}


def learned_or_built_in(names: Sequence[str]) -> list[str]:
    """Those of `names` that need no policy to judge (not a bare `judge` or `consistency`, which ask the policy):
    what `ponder serve` serves for scoring unless told."""
    return [n for n in dict.fromkeys(names) if n not in ASKING]


def _authorized(request: Request) -> None:
    """The API key of the app that mounts the router, where it requires one (`ponder serve --api-key`)."""
    server = getattr(request.app.state, "server", None)
    if server is not None:
        server.authorize(request)


@functools.cache
def _task(name: str) -> Task:
    return get_task(name)


@functools.cache
def _fingerprint(name: str) -> str:
    """The weights' hash of the verifier a name loads; "" for one no name loads (a verifier made in code)."""
    try:
        return verifier_fingerprint(name)
    except PonderError:
        return ""


def _posed(task: Task, prompt: str | None) -> Task:
    """The task with the policy's prompt where the client sent one (a policy's chat template renders it on the
    client's side): a shallow copy whose `prompt` returns it."""
    if prompt is None:
        return task
    posed = copy.copy(task)
    posed.prompt = lambda problem: prompt  # type: ignore[method-assign]
    return posed


def _problem(task: Task, given: ProblemIn) -> Problem:
    """The problem as the task rebuilds it from its id and question (with what its checks need), and the answer
    the client knows."""
    problem = task.rebuild(given.id, given.question)
    return dataclasses.replace(problem, answer=given.answer) if given.answer is not None else problem


def _split(text: str, marker: str) -> tuple[str, list[str]]:
    """A pooling input as (prompt, steps): each step is a line that ends with the marker; the prompt is what comes
    before the first step's line."""
    end = marker + "\n"
    if end not in text:
        return text, []
    head, *steps, tail = text.split(end)
    if tail:
        raise RequestError(f"an input ends with {tail[-40:]!r}: each step is a line that ends with {marker!r}")
    prompt, newline, first = head.rpartition("\n")
    return prompt + newline, [first, *steps]


def _error(err: Exception) -> JSONResponse:
    """A failure as an answer: 400 for a request the server cannot serve, 422 for prefixes an outcome verifier
    cannot judge, 500 (logged with its traceback) for a verifier that fails."""
    if isinstance(err, PrefixError):
        status = 422
    elif isinstance(err, PonderError):
        status = 400
    else:
        status = 500
        log.error("a scoring request failed", exc_info=err)
    return JSONResponse({"error": {"message": str(err) or type(err).__name__, "type": type(err).__name__}},
                        status_code=status)
