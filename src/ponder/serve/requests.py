"""What a request to `ponder serve` may ask, read and checked before any search starts: the body (JSON, up to
the server's size limit), the model it names, its question, `n`, `max_tokens`, `seed`, `stop` and the `ponder`
field's method, budget and knobs, each within the server's `Limits`. Every refusal is an `HTTPError` that answers
with OpenAI's error JSON saying what is wrong."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ponder.errors import ConfigError, PonderError
from ponder.search import SearchConfig
from ponder.serve.served import Served, question_of
from ponder.tasks.base import Problem

try:
    from fastapi import Request
    from fastapi.responses import JSONResponse
except ImportError as err:  # pragma: no cover  (the serve extra is missing)
    from ponder.errors import MissingExtra

    raise MissingExtra("ponder serve", "fastapi and uvicorn", "serve") from err


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server, and how many searches run at once."""

    max_body_bytes: int = 64 * 1024
    max_prompt_tokens: int = 1024  # the question's prompt, as the policy tokenizes it
    max_n: int = 8  # choices a request asks for (one search each)
    max_tokens: int = 2048  # a solution's token budget
    max_budget: int = 64  # the method's n
    max_searches: int = 32  # searches running at once
    max_waiting: int = 128  # searches waiting for a turn; beyond: 429

    def __post_init__(self) -> None:
        bad = [f"{k}={v}" for k, v in vars(self).items() if v < (0 if k == "max_waiting" else 1)]
        if bad:
            raise ConfigError(f"server limits must be positive: {', '.join(bad)}")


class HTTPError(PonderError):
    """A refused request: its HTTP status, OpenAI's error type, the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.kind, self.headers = status, param, kind, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": str(self), "type": self.kind, "param": self.param,
                                       "code": self.status}}, status_code=self.status, headers=self.headers)


@dataclass
class Ask:
    """One request, checked: the searches it runs and how it wants the answer."""

    served: Served
    problem: Problem
    prompt_tokens: int
    method: str
    cfg: SearchConfig
    n: int
    stream: bool
    return_trace: bool
    stop: list[str] = field(default_factory=list)


async def read_body(request: Request, limit: int) -> dict[str, Any]:
    """The request's JSON object, read up to `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"the body has {declared} bytes; this server takes at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"the body has more than {limit} bytes, the most this server takes")
        chunks.append(chunk)
    try:
        data = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as err:
        raise HTTPError(400, f"the body is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise HTTPError(400, "the body must be a JSON object")
    return data


async def read_ask(models: Mapping[str, Served], limits: Limits, data: dict[str, Any], chat: bool) -> Ask:
    """Check a request against the served recipes and the limits: every refusal is an HTTPError saying what
    is wrong."""
    name = _field(data, "model", str, required=True)
    served = models.get(name)
    if served is None:
        raise HTTPError(404, f"the model {name!r} does not exist; this server serves {', '.join(models)}",
                        param="model", kind="not_found_error")
    text = _chat_question(data) if chat else _prompt(data)
    n = _field(data, "n", int, default=1)
    if not 1 <= n <= limits.max_n:
        raise HTTPError(400, f"n={n} is out of range: 1 to {limits.max_n} on this server", param="n")
    max_tokens = _field(data, "max_tokens", int, default=None)
    if chat and max_tokens is None:
        max_tokens = _field(data, "max_completion_tokens", int, default=None)
    if max_tokens is not None and not 1 <= max_tokens <= limits.max_tokens:
        raise HTTPError(400, f"max_tokens={max_tokens} is out of range: 1 to {limits.max_tokens} on this server",
                        param="max_tokens")
    seed = _field(data, "seed", int, default=served.recipe.seed)
    stop = _stop(data)
    extra = _field(data, "ponder", dict, default={})
    unknown = sorted(set(extra) - {"method", "budget", "knobs", "return_trace"})
    if unknown:
        raise HTTPError(400, f"ponder.{unknown[0]} is not an option; the ponder field takes method, budget, knobs "
                             "and return_trace", param=f"ponder.{unknown[0]}")
    method = _field(extra, "method", str, default=served.method, where="ponder.")
    budget = _field(extra, "budget", int, default=served.recipe.budget, where="ponder.")
    if not 1 <= budget <= limits.max_budget:
        raise HTTPError(400, f"ponder.budget={budget} is out of range: 1 to {limits.max_budget} on this server",
                        param="ponder.budget")
    knobs = _field(extra, "knobs", dict, default=served.recipe.knobs if method == served.method else {},
                   where="ponder.")
    try:
        cfg = served.check(method, budget, knobs)
        lm = await asyncio.to_thread(served.policy, method)
        problem = served.task.from_text(question_of(served, text))
    except PonderError as err:
        raise HTTPError(400, str(err), param="ponder" if extra else None) from err
    tokens = await lm.count_tokens(served.task.prompt(problem))
    if tokens is not None and tokens > limits.max_prompt_tokens:
        raise HTTPError(400, f"the prompt has {tokens} tokens; this server takes at most {limits.max_prompt_tokens}",
                        param="messages" if chat else "prompt")
    cfg = replace(cfg, seed=seed, max_tokens=max_tokens or cfg.max_tokens)
    return Ask(served, problem, tokens or 0, method, cfg, n, _field(data, "stream", bool, default=False),
               _field(extra, "return_trace", bool, default=False, where="ponder."), stop)


_TYPES = {str: "a string", int: "an integer", bool: "true or false", dict: "an object", list: "an array"}


def _field(data: dict[str, Any], key: str, kind: type, default: Any = None, required: bool = False,
           where: str = "") -> Any:
    if key not in data or (data[key] is None and not required):
        if required:
            raise HTTPError(400, f"the request names no {key}", param=key)
        return default
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HTTPError(400, f"{where}{key} must be {_TYPES[kind]}, got {json.dumps(value)[:80]}", param=where + key)
    return value


def _text(content: object, where: str) -> str:
    """A message's content: a string, or OpenAI's list of parts, whose text parts are joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise HTTPError(400, f"{where} must be a string or a list of text parts", param=where)


def _chat_question(data: dict[str, Any]) -> str:
    messages = _field(data, "messages", list, required=True)
    if not messages or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise HTTPError(400, "messages must be a non-empty list of objects with a role and content", param="messages")
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise HTTPError(400, "messages has no user message: the last one is the question", param="messages")
    return _text(messages[users[-1]].get("content"), f"messages[{users[-1]}].content")


def _prompt(data: dict[str, Any]) -> str:
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise HTTPError(400, "prompt must be a string (one prompt a request)", param="prompt")
    return prompt


def _stop(data: dict[str, Any]) -> list[str]:
    stop = data.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
        raise HTTPError(400, "stop must be a string or a list of at most 4 non-empty strings", param="stop")
    return stops
