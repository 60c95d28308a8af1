"""A verifier behind an HTTP server, so that the policy and the PRM can live on different machines (the way OpenR
and Hugging Face's search-and-learn deploy a PRM: the policy on one server, the reward model on another).

`--verifier URL` picks the protocol by the URL's path:

- `http://HOST:PORT` (or `.../v1/score`): Ponder's scoring endpoint (`ponder.serve.score`), which serves any Ponder
  verifier (a learned PRM or ORM, a judge, the oracle). A request carries one verifier call: the task's name, the
  problem, the prompt the policy was given and the solutions as step lists; the answer is the per-step scores and
  the tokens the server's verifier judged. `?verifier=NAME` picks one of the server's verifiers (default: its first).
- `http://HOST:PORT/pooling`: the pooling API that vLLM serves for process reward models (`vllm serve MODEL
  --runner pooling` with a `STEP` pooler: `step_tag_id` the step tag's token, `returned_token_ids` the labels' tokens;
  vLLM's `PoolingRequest` / `PoolingResponse`, `vllm/entrypoints/pooling/pooling/protocol.py`). Each solution goes
  as one text in `input`: the prompt, then each step on its own line ending with the step tag; the answer's
  `data[i].data` holds, per step tag, the probabilities of the returned tokens, and the step's score is the one at
  index `good`. Query options: `model` (the served model's name; vLLM's only model when left out), `step_tag`
  (default ` ки`, Math-Shepherd's, as Ponder's step-tag PRMs use; `<extra_0>` for Qwen2.5-Math-PRM), `good` (default
  0: Math-Shepherd's `returned_token_ids` list `+` first; 1 for a two-label classifier such as Qwen2.5-Math-PRM).

One verifier call (one problem's solutions or prefixes) is one HTTP request, and the calls of all running searches
go concurrently, up to `max_in_flight` at once, so the server can batch them. A server that requires an API key is
sent `$PONDER_API_KEY` as a bearer token. Nothing is retried: an unreachable
server, a refusal, a timeout or a reply that is not scores raises `ServerError` (or `VerifierError` for scores that
do not fit the solutions) with the server's message, and the search becomes an error row. An outcome model asked
about prefixes is refused by Ponder's server and raises `PrefixError` here, as it would in process.

Accounting (docs/METHODOLOGY.md): the verifier tokens are those the server reports (Ponder's: the tokens judged and
computed; vLLM's: `usage.prompt_tokens`, less `prompt_tokens_details.cached_tokens` for the computed ones); the wall
time of each request goes to `verifier_http_seconds`, and the compute seconds stay 0.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from ponder.errors import ConfigError
from ponder.lm.openai_http import ServerError, error_message, error_reason
from ponder.tasks.base import Problem, Task
from ponder.trace import METER
from ponder.verifiers.base import PrefixError, Verifier, one_line
from ponder.verifiers.learned import VerifierError

MATH_SHEPHERD_TAG = " ки"


def remote_verifier(url: str, timeout: float = 120, max_in_flight: int = 32) -> RemoteVerifier:
    """The verifier behind `url`: vLLM's pooling protocol where the path ends in `/pooling`, else Ponder's scoring
    endpoint (module docstring); options in the query string."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    path = parts.path.rstrip("/")
    if path.endswith("/pooling"):
        known = {"model", "step_tag", "good"}
        cls: type[RemoteVerifier] = PoolingVerifier
    else:
        known = {"verifier"}
        path = path.removesuffix("/v1/score").removesuffix("/v1") + "/v1/score"
        cls = RemoteVerifier
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"verifier URL {url}: unknown option {', '.join(unknown)}; it takes "
                          f"{', '.join(sorted(known))}")
    endpoint = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return cls(endpoint, options, name=url, timeout=timeout, max_in_flight=max_in_flight)


class RemoteVerifier(Verifier):
    """A verifier that Ponder's scoring endpoint serves (`ponder.serve.score`): one POST per call."""

    def __init__(self, endpoint: str, options: dict[str, str], name: str, timeout: float = 120,
                 max_in_flight: int = 32) -> None:
        if max_in_flight < 1 or timeout <= 0:
            raise ConfigError(f"need max_in_flight >= 1 and timeout > 0; got {max_in_flight}, {timeout}")
        self.endpoint, self.options, self.name = endpoint, options, name
        self.timeout, self.max_in_flight = timeout, max_in_flight
        self._session: _Session | None = None

    async def score(self, task: Task, problem: Problem, solutions: list[list[str]]) -> list[list[float]]:
        return await self._scored(task, problem, solutions, prefixes=False)

    async def score_prefixes(self, task: Task, problem: Problem, prefixes: list[list[str]]) -> list[list[float]]:
        return await self._scored(task, problem, prefixes, prefixes=True)

    async def _scored(self, task: Task, problem: Problem, solutions: list[list[str]],
                      prefixes: bool) -> list[list[float]]:
        if not solutions:
            return []
        answer, seconds = await self._post(self.request(task, problem, solutions, prefixes))
        try:
            scores, tokens, computed, generated = self.read(answer, solutions)
        except VerifierError:
            raise
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as err:
            raise ServerError(f"{self.endpoint} answered with no scores ({type(err).__name__}: {err}): "
                              f"{answer!r:.200}") from err
        check_scores(self.endpoint, scores, solutions)
        meter = METER.get()
        if meter is not None:
            meter.judged(tokens=tokens, computed=computed, seconds=0.0, http_seconds=seconds, generated=generated)
        return scores

    def request(self, task: Task, problem: Problem, solutions: list[list[str]], prefixes: bool) -> dict[str, Any]:
        """The body of one call: the problem as the server's task rebuilds it, and the prompt the policy was given
        (so a PRM on the server reads what the one in process would, whatever chat template renders it)."""
        return {"verifier": self.options.get("verifier"), "task": task.name, "prompt": task.prompt(problem),
                "problem": {"id": problem.id, "question": problem.question, "answer": problem.answer},
                "solutions": solutions, "prefixes": prefixes}

    def read(self, answer: Any, solutions: list[list[str]]) -> tuple[list[list[float]], int, int, int]:
        """The scores and the verifier tokens (judged, computed, generated) in an answer."""
        usage = answer.get("usage") or {}
        return (answer["scores"], int(usage.get("verifier_tokens", 0)), int(usage.get("computed_verifier_tokens", 0)),
                int(usage.get("verifier_generated_tokens", 0)))

    async def _post(self, body: dict[str, Any]) -> tuple[Any, float]:
        """POST `body`; the JSON answer and the call's wall seconds. An error answer whose type is `PrefixError`
        is raised as one."""
        client, slots = self._current()
        async with slots:
            start = time.perf_counter()
            try:
                response = await client.post(self.endpoint, json=body)
            except httpx.TimeoutException as err:
                raise ServerError(f"{self.endpoint} gave no answer within {self.timeout:g} s "
                                  f"({type(err).__name__})") from err
            except httpx.TransportError as err:
                raise ServerError(f"cannot reach {self.endpoint}: {error_reason(err)}") from err
            seconds = time.perf_counter() - start
        return _answer(response, self.endpoint), seconds

    def _current(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        """The running event loop's client and bound on requests in flight (a new `asyncio.run` gets new ones)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.loop is not loop:
            limits = httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight)
            self._session = _Session(loop, httpx.AsyncClient(timeout=self.timeout, limits=limits, headers=_headers()),
                                     asyncio.Semaphore(self.max_in_flight))
        return self._session.client, self._session.slots


class PoolingVerifier(RemoteVerifier):
    """A process reward model behind vLLM's pooling API (`POST /pooling`, a `STEP` pooler): one text per solution,
    one probability pair per step tag."""

    def __init__(self, endpoint: str, options: dict[str, str], name: str, timeout: float = 120,
                 max_in_flight: int = 32) -> None:
        super().__init__(endpoint, options, name, timeout, max_in_flight)
        self.tag = options.get("step_tag", MATH_SHEPHERD_TAG)
        if not self.tag.strip():
            raise ConfigError(f"verifier URL {name}: step_tag must be a token's text, not {self.tag!r}")
        good = options.get("good", "0")
        if not good.isdigit():
            raise ConfigError(f"verifier URL {name}: good is the index of the good label's probability, not {good!r}")
        self.good = int(good)

    def request(self, task: Task, problem: Problem, solutions: list[list[str]], prefixes: bool) -> dict[str, Any]:
        """Each solution as one text: the prompt, then each step on its own line ending with the step tag."""
        prompt = task.prompt(problem)
        texts = [prompt + "".join(f"{one_line(s, self.tag)}{self.tag}\n" for s in steps) for steps in solutions]
        return {"input": texts} | ({"model": self.options["model"]} if "model" in self.options else {})

    def read(self, answer: Any, solutions: list[list[str]]) -> tuple[list[list[float]], int, int, int]:
        rows = sorted(answer["data"], key=lambda d: d["index"])
        if len(rows) != len(solutions):
            raise VerifierError(f"{self.endpoint} answered {len(rows)} rows for {len(solutions)} texts")
        scores = [[float(pair[self.good]) for pair in row["data"]] for row in rows]
        usage = answer.get("usage") or {}
        tokens = int(usage.get("prompt_tokens", 0))
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        return scores, tokens, tokens - cached, 0


class _Session:
    """What belongs to one event loop: the HTTP client and the bound on requests in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient, slots: asyncio.Semaphore) -> None:
        self.loop, self.client, self.slots = loop, client, slots


def check_scores(where: str, scores: Any, solutions: list[list[str]]) -> None:
    """Scores that fit the solutions: one list per solution, one probability per step; else `VerifierError`."""
    if not isinstance(scores, list) or len(scores) != len(solutions):
        raise VerifierError(f"{where} gave {len(scores) if isinstance(scores, list) else 'no'} score lists for "
                            f"{len(solutions)} solutions")
    for row, steps in zip(scores, solutions):
        if not isinstance(row, list) or len(row) != len(steps):
            raise VerifierError(f"{where} gave {row!r:.80} for a solution of {len(steps)} steps")
        if not all(isinstance(s, int | float) and 0.0 <= s <= 1.0 for s in row):
            raise VerifierError(f"{where} gave scores that are not probabilities: {row!r:.80}")


def remote_fingerprint(url: str, timeout: float = 30) -> str:
    """The weights' hash Ponder's scoring server reports for the verifier `url` names (`GET /v1/verifiers`), so
    that a resumed run notices a retrained one behind the same URL; "" behind vLLM's pooling API (it reports none).
    An unreachable server or a verifier it does not serve fails here, before any model loads."""
    verifier = remote_verifier(url)
    if isinstance(verifier, PoolingVerifier):
        return ""
    listing = verifier.endpoint.removesuffix("/score") + "/verifiers"
    try:
        response = httpx.get(listing, timeout=timeout, headers=_headers())
    except httpx.TransportError as err:
        raise ServerError(f"cannot reach {listing}: {error_reason(err)}") from err
    served = {v["id"]: v for v in _answer(response, listing)["data"]}
    name = verifier.options.get("verifier") or next(iter(served), "")
    if name not in served:
        raise ConfigError(f"{url}: the server serves {', '.join(served) or 'no verifier'}; not {name!r}")
    return str(served[name].get("fingerprint", ""))


def _headers() -> dict[str, str]:
    """The bearer token a server that requires an API key is sent: `$PONDER_API_KEY` (`ponder serve --api-key`)."""
    key = os.environ.get("PONDER_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def _answer(response: httpx.Response, where: str) -> Any:
    """A response's JSON; a refusal raises `ServerError` with the server's message (`PrefixError` where Ponder's
    server says the verifier cannot judge prefixes)."""
    if not response.is_success:
        message = error_message(response)
        if _error_type(response) == PrefixError.__name__:
            raise PrefixError(f"{where}: {message}")
        raise ServerError(f"{where} answered {response.status_code}: {message}", response.status_code)
    try:
        return response.json()
    except ValueError as err:
        raise ServerError(f"{where} answered {response.status_code} with no JSON: {response.text[:200]!r}",
                          response.status_code) from err


def _error_type(response: httpx.Response) -> str | None:
    """The error's type in Ponder's error answer (`{"error": {"message", "type"}}`), where it says one."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    return error.get("type") if isinstance(error, dict) else None
