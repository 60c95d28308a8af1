"""A language model behind an OpenAI-compatible HTTP server: llama.cpp's (or llama-cpp-python's), vLLM,
`transformers serve`, or any other that speaks `/v1/completions`.

`OpenAIServer` sends every request on its own, up to `max_in_flight` at once (the server batches them, or queues
them); a call that meets a 429, a 5xx or a failed connection is retried with exponential back-off and jitter (a
`Retry-After` header, up to a minute, is waited instead); one that gets no answer within `timeout` is not (the
server may still be working on it). An unreachable server, a refused request or a timeout raises `ServerError`
with the server's message. The HTTP client belongs to the event loop it was made in: a new loop
(every `asyncio.run`) gets a new one.

Endpoints:
- `completions` (the default): the prompt goes as raw text, so the model continues exactly that text. Every search
  method needs this: a step-level search continues a partial solution.
- `chat`: the prompt goes as one user message and the server applies its chat template. An assistant message
  cannot be continued through it, so it serves whole-solution methods (cot, self_consistency, best_of_n) only; a
  prompt that extends an earlier prompt (a partial solution) raises ValueError. `chat_prompt` is then None, so
  that tasks send plain questions.

Sampling: temperature, top-p, max tokens and seed are OpenAI fields. min-p and top-k are not: they are sent as
`min_p` and `top_k` (0, no top-k, unless the request sets one) with `repeat_penalty: 1.0` (llama-cpp-python's
server otherwise applies top-k 40, min-p 0.05 and a repeat penalty of 1.1; vLLM reads the first two and ignores the
third). A server that rejects those fields is sent them as a `generation_config` instead (`transformers serve`,
which also samples only when that config says `do_sample`), and one that rejects that too gets plain OpenAI fields
(its own top-k and min-p then apply).
At most 4 stop strings go to the server (the OpenAI limit); the text is cut at the first of all of them here.
Seeds go as 31-bit integers; a server that honours them (llama.cpp's) gives the same text for the same seed.

`n` > 1 asks for n different completions. Over HTTP they are n samples, which may repeat (the callers merge equal
steps). `n` is sent once; a server that answers with fewer choices (llama.cpp's, `transformers serve`) gets n
separate requests from then on, their seeds derived from the request's. At temperature 0 one completion comes
back: a server decodes greedily and has no beam search to give the n likeliest.

A completion's `wall_seconds` is the wall time of its HTTP call (shared among a response's choices), the wait in
the server's queue included: concurrent calls overlap, so their sum exceeds the time the search took. Its compute
`seconds` stay 0: a server does not say what share of its batches a request took, and wall time is no stand-in
for it (a `next_token` answer likewise). `logprob`
(MCTS's priors) needs `logprobs=True`, off by default: llama-cpp-python's server then computes log-probabilities
over its whole context and sorts the vocabulary for every token, in Python (a second or more a request here).

`count_tokens` (a step-level search's budget, `ponder.search.base.room`) asks the server's tokenizer, which the
OpenAI API lacks: vLLM's and SGLang's `/tokenize`, then llama-cpp-python's `/extras/tokenize`, the first that
answers kept; the count is that of the text less that of "" (servers that add a BOS token count it in both). A
server with neither (`transformers serve`) gives None, and each step may then take the whole `max_tokens`.

`next_token` asks /completions for one greedy token and its top 20 log-probabilities; a word's probability is
that of its first token, found without the server's tokenizer (see `_first_token`).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import math
import os
import random
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from ponder.errors import ConfigError, PonderError
from ponder.lm.base import Completion, ContextLengthError, LanguageModel, Message, NextToken, Request, SamplingParams

log = logging.getLogger(__name__)
MAX_STOP = 4  # stop strings the OpenAI API accepts
TOP_LOGPROBS = 20  # the most the OpenAI API gives
MAX_RETRY_AFTER = 60.0
# connection errors; not a read timeout: the server may still be working on the request (or queueing it)
RETRIED = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


class ServerError(PonderError, RuntimeError):
    """The server cannot be reached, or refused a request (`status`: its HTTP status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# Tokenizer endpoints outside the OpenAI API, at the server's root (module docstring): path and request body.
TOKENIZERS: tuple[tuple[str, Callable[[str, str], dict[str, Any]]], ...] = (
    ("tokenize", lambda model, text: {"model": model, "prompt": text}),
    ("extras/tokenize", lambda model, text: {"model": model, "input": text}),
)
COUNTED = 4096  # token counts remembered (a state's proposals share its prefix)


# Sampling fields outside the OpenAI schema, in the order tried (module docstring).
DIALECTS: tuple[Callable[[SamplingParams], dict[str, Any]], ...] = (
    lambda p: {"min_p": p.min_p, "top_k": p.top_k, "repeat_penalty": 1.0},
    lambda p: {"generation_config": json.dumps({"do_sample": p.temperature > 0, "top_k": p.top_k,
                                                "min_p": p.min_p or None})},
    lambda p: {},
)


class OpenAIServer(LanguageModel):
    """`base_url`: `http://127.0.0.1:8000/v1` (or without `/v1`). `model`: the name the server knows it by; None
    takes the only one it lists. `api_key`: sent as a bearer token (default: `$OPENAI_API_KEY`). `template_from`: a
    GGUF file or transformers directory whose chat template renders `chat_prompt` (the client cannot see the
    server's)."""

    def __init__(self, base_url: str, model: str | None = None, endpoint: str = "completions", max_in_flight: int = 32,
                 timeout: float = 120, retries: int = 4, api_key: str | None = None, logprobs: bool = False,
                 template_from: str | None = None) -> None:
        if endpoint not in ("completions", "chat"):
            raise ConfigError(f"endpoint is 'completions' or 'chat', not {endpoint!r}")
        if max_in_flight < 1 or retries < 0 or timeout <= 0:
            raise ConfigError(f"need max_in_flight >= 1, retries >= 0, timeout > 0; got {max_in_flight}, {retries}, "
                              f"{timeout}")
        if endpoint == "chat" and template_from:
            raise ConfigError("the chat endpoint applies the server's own chat template: template_from is for "
                              "the completions endpoint")
        base_url = base_url.rstrip("/")
        self.root = re.sub(r"/v\d+$", "", base_url)  # the server's own paths (its tokenizer) live here
        self.base_url = base_url if base_url != self.root else f"{base_url}/v1"
        self.model, self.endpoint, self.max_in_flight = model, endpoint, max_in_flight
        self.timeout, self.retries, self.logprobs = timeout, retries, logprobs
        self.name = model or self.base_url
        key = api_key or os.environ.get("OPENAI_API_KEY")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._template = load_chat_template(template_from) if template_from else None
        self._resolved = False  # the model checked against the server's list
        self._dialect = 0  # index into DIALECTS
        self._tokenizer: int | None = 0  # index into TOKENIZERS still to try first; None: the server has none
        self._counts: dict[str, int] = {}  # token counts of recent texts, oldest first
        self._n_ok: bool | None = None  # whether the server answers `n` with n choices
        self._chat_prompts: set[str] = set()
        self._session: _Session | None = None

    # -- the LanguageModel interface -------------------------------------------------------------------------------

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        if self.endpoint == "chat":
            for r in requests:
                self._check_whole(r.prompt)
        return list(await asyncio.gather(*(self._complete(r) for r in requests)))

    def chat_prompt(self, messages: list[Message]) -> str | None:
        return self._template(messages) if self._template else None

    async def next_token(self, prompts: list[str], words: list[str]) -> list[NextToken]:
        return list(await asyncio.gather(*(self._next_token(p, words) for p in prompts)))

    async def count_tokens(self, text: str) -> int | None:
        if text not in self._counts:
            if "" not in self._counts:
                empty = await self._tokenize("")
                if empty is None:
                    return None
                self._counts[""] = empty
            n = await self._tokenize(text)
            if n is None:
                return None
            self._counts[text] = n
            while len(self._counts) > COUNTED:
                del self._counts[next(k for k in self._counts if k)]
        return self._counts[text] - self._counts[""]

    async def _tokenize(self, text: str) -> int | None:
        """How many tokens the server's tokenizer makes of `text` (special tokens it adds included); None when it
        has no tokenize endpoint."""
        while (i := self._tokenizer) is not None:
            path, body = TOKENIZERS[i]
            try:
                answer, _ = await self._call(path, body(await self._model(), text), root=True)
            except ServerError as err:
                if err.status not in (400, 404, 405, 422):
                    raise
                if self._tokenizer == i:  # (concurrent calls may have moved on already)
                    self._tokenizer = i + 1 if i + 1 < len(TOKENIZERS) else None
                continue
            count = answer.get("count", len(answer.get("tokens") or [])) if isinstance(answer, dict) else None
            if not isinstance(count, int):
                raise ServerError(f"{self.base_url}: its /{path} answered without a token count: {answer!r:.200}")
            return count
        return None

    # -- requests --------------------------------------------------------------------------------------------------

    async def _complete(self, r: Request) -> list[Completion]:
        n = 1 if r.params.temperature == 0 else r.n
        seeds = [_seed(r.params.seed, i) for i in range(n)]
        if n == 1 or self._n_ok is False:
            return [c for out in await asyncio.gather(*(self._sample(r, 1, s) for s in seeds)) for c in out]
        first = await self._sample(r, n, seeds[0])
        self._n_ok = len(first) >= n
        rest = await asyncio.gather(*(self._sample(r, 1, s) for s in seeds[len(first):]))
        return [*first[:n], *(c for out in rest for c in out)]

    async def _sample(self, r: Request, n: int, seed: int | None) -> list[Completion]:
        p, chat = r.params, self.endpoint == "chat"
        body: dict[str, Any] = {"model": await self._model(), "max_tokens": p.max_tokens, "temperature": p.temperature,
                                "top_p": p.top_p}
        body.update({"messages": [{"role": "user", "content": r.prompt}]} if chat else {"prompt": r.prompt})
        if p.stop:
            body["stop"] = list(p.stop[:MAX_STOP])
        if seed is not None:
            body["seed"] = seed
        if n > 1:
            body["n"] = n
        if self.logprobs:
            body["logprobs"] = True if chat else 0
        while True:
            dialect = self._dialect
            extra = DIALECTS[dialect](p)
            try:
                answer, seconds = await self._call("chat/completions" if chat else "completions", body | extra)
                break
            except ServerError as err:
                if err.status not in (400, 422) or not any(k in str(err) for k in extra):
                    raise
                if self._dialect == dialect:  # the server rejects these fields: try the next way of sending them
                    self._dialect += 1
                    if self._dialect == len(DIALECTS) - 1 and p.min_p:
                        log.warning("%s takes no min_p: its own min-p and top-k apply", self.base_url)
        return _completions(answer, p, seconds, chat)

    async def _next_token(self, prompt: str, words: list[str]) -> NextToken:
        body = {"model": await self._model(), "prompt": prompt, "max_tokens": 1, "temperature": 0,
                "logprobs": TOP_LOGPROBS}
        answer, seconds = await self._call("completions", body)
        top = ((_choices(answer)[0].get("logprobs") or {}).get("top_logprobs") or [None])[0]
        if not top:
            raise ServerError(f"{self.base_url} gave no top log-probabilities: it does not support `logprobs` on "
                              "/completions, so it cannot give next-token probabilities")
        tokens, probs = zip(*(_first_token(top, w) for w in words)) if words else ((), ())
        return NextToken(list(probs), list(tokens), (answer.get("usage") or {}).get("prompt_tokens", 0),
                         wall_seconds=seconds)

    def _check_whole(self, prompt: str) -> None:
        """A chat endpoint starts a new assistant message: a prompt that extends an earlier one (a partial solution
        of a step-level search) cannot be continued through it."""
        if any(len(q) < len(prompt) and prompt.startswith(q) for q in self._chat_prompts):
            raise ConfigError("the chat endpoint sends a prompt as a new user message and cannot continue a partial "
                              "solution (this prompt extends an earlier one): step-level searches need "
                              "endpoint='completions'")
        self._chat_prompts.add(prompt)

    async def _model(self) -> str:
        """The model's name, checked once against the server's list."""
        if self._resolved:
            return str(self.model)
        async with self._current().resolving:
            if not self._resolved:
                answer, _ = await self._call("models")
                served = [m["id"] for m in answer.get("data", [])]
                if self.model is None and len(served) != 1:
                    raise ServerError(f"server {self.base_url} serves {', '.join(served) or 'no model'}: name one")
                if self.model is not None and self.model not in served:
                    raise ServerError(f"server {self.base_url} serves {', '.join(served) or 'no model'}; "
                                      f"not {self.model}")
                self.model = self.model or served[0]
                self.name, self._resolved = self.model, True
        return str(self.model)

    async def _call(self, path: str, body: dict[str, Any] | None = None,
                    root: bool = False) -> tuple[dict[str, Any], float]:
        """GET (no body) or POST `path` (under the API's URL, or the server's `root`), retried; the answer and the
        wall seconds of the call that gave it."""
        session = self._current()
        client, url = session.client, f"{self.root if root else self.base_url}/{path}"
        for attempt in range(self.retries + 1):
            wait = None
            try:
                async with session.slots:
                    start = time.perf_counter()
                    response = await (client.get(url) if body is None else client.post(url, json=body))
                    seconds = time.perf_counter() - start
            except httpx.TransportError as err:
                if isinstance(err, httpx.TimeoutException) and not isinstance(err, httpx.ConnectTimeout):
                    raise ServerError(f"{url} gave no answer within {self.timeout:g} s ({type(err).__name__}): a "
                                      "server that queues requests counts the wait; raise timeout or lower "
                                      "max_in_flight") from err
                if not isinstance(err, RETRIED) or attempt == self.retries:
                    raise ServerError(f"cannot reach {self.base_url}: {error_reason(err)}") from err
            else:
                if response.is_success:
                    try:
                        return response.json(), seconds
                    except ValueError as err:
                        raise ServerError(f"{url} answered {response.status_code} with no JSON: "
                                          f"{response.text[:200]!r}", response.status_code) from err
                status, message = response.status_code, error_message(response)
                if (status != 429 and status < 500) or attempt == self.retries:
                    if status == 400 and re.search(r"context (length|window)", message, re.IGNORECASE):
                        raise ContextLengthError(f"{url}: {message}")
                    raise ServerError(f"{url} answered {status}: {message}", status)
                wait = _retry_after(response)
            await asyncio.sleep(wait if wait is not None else random.uniform(0.5, 1.0) * min(30.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    def _current(self) -> _Session:
        """The running loop's session: a search under a new `asyncio.run` gets a new one."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.loop is not loop:
            client = httpx.AsyncClient(timeout=self.timeout, headers=self._headers, limits=httpx.Limits(
                max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight))
            self._session = _Session(loop, client, asyncio.Semaphore(self.max_in_flight), asyncio.Lock())
        return self._session


@dataclass(frozen=True)
class _Session:
    """What belongs to one event loop: the client and its connections, the bound on calls in flight, and the lock
    that resolves the model name once."""

    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient
    slots: asyncio.Semaphore
    resolving: asyncio.Lock


def _completions(answer: dict[str, Any], p: SamplingParams, seconds: float, chat: bool) -> list[Completion]:
    """A response's choices as completions: usage shared among them, texts cut at the first stop string."""
    choices = sorted(_choices(answer), key=lambda c: c.get("index", 0))
    usage = answer.get("usage") or {}
    prompt, generated = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    out = []
    for i, choice in enumerate(choices):
        text = (choice["message"].get("content") if chat else choice.get("text")) or ""
        logprobs = choice.get("logprobs") or {}
        token_logprobs = ([t.get("logprob") for t in logprobs.get("content") or []] if chat
                          else logprobs.get("token_logprobs") or [])
        cuts = [text.find(s) for s in p.stop if s in text]
        reason = "length" if choice.get("finish_reason") == "length" and not cuts else "stop"
        out.append(Completion(
            text=text[: min(cuts)] if cuts else text, prompt_tokens=prompt, finish_reason=reason,
            generated_tokens=len(token_logprobs) or generated // len(choices) + (i < generated % len(choices)),
            wall_seconds=seconds / len(choices), cached_tokens=cached if i == 0 else prompt,  # the others shared it
            logprob=math.fsum(x for x in token_logprobs if x is not None) if token_logprobs else None))
    return out


def _choices(answer: Any) -> list[dict[str, Any]]:
    """A completion answer's choices; an answer with none is the server's error, not an empty completion."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not choices or not all(isinstance(c, dict) for c in choices):
        raise ServerError(f"the server answered a completion request without choices: {answer!r:.200}")
    return choices


def _first_token(top: dict[str, float], word: str) -> tuple[str, float]:
    """The word's first token and its probability, from a top log-probability list, without the server's tokenizer:
    the longest listed token that begins the word, or begins the word after a space (how a tokenizer writes a word
    that follows other text); of the two, the likelier. A token that is all whitespace never counts. A word with
    neither form listed has probability 0 and is named by itself (no listed token can have its text). The rule can
    take a shorter token than the tokenizer would when the right one is not among the top 20 (and so unlikely)."""
    best = (word, 0.0)
    for form in (word,) if word[:1].isspace() else (word, " " + word):
        hits = [t for t in top if t.strip() and form.startswith(t)]
        if hits:
            token = max(hits, key=len)
            best = max(best, (token, math.exp(top[token])), key=lambda x: x[1])
    return best


def _seed(seed: int | None, i: int) -> int | None:
    """The i-th sample's seed, 31 bits (servers read seeds as 32-bit integers, some signed)."""
    if seed is None:
        return None
    if i == 0:
        return seed & 0x7FFFFFFF
    return int.from_bytes(hashlib.blake2b(f"{seed}|{i}".encode(), digest_size=4).digest(), "big") & 0x7FFFFFFF


def error_reason(err: BaseException) -> str:
    """What went wrong underneath httpx's wrapping ("All connection attempts failed")."""
    if isinstance(err, httpx.ConnectTimeout):
        return "no connection within the timeout"
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the host ({cause})"
        cause = cause.__cause__ or cause.__context__
    return str(err) or type(err).__name__


def error_message(response: httpx.Response) -> str:
    """The error message of a refused request: OpenAI's `{"error": {"message"}}`, FastAPI's `{"detail"}`, or text."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    error = data.get("error", data.get("detail", data)) if isinstance(data, dict) else data
    if isinstance(error, dict) and "message" in error:
        error = error["message"]
    return error if isinstance(error, str) else json.dumps(error)[:500]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


# -- chat templates ----------------------------------------------------------------------------------------------


def load_chat_template(path: str) -> Callable[[list[Message]], str]:
    """The chat template of a GGUF file (`tokenizer.chat_template`) or a transformers directory
    (`chat_template.jinja` or `tokenizer_config.json`), rendered with jinja2 as transformers renders it, ending
    where the assistant's reply starts."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    where = Path(path).expanduser()
    if where.suffix == ".gguf" and where.is_file():
        from gguf import GGUFReader

        fields = GGUFReader(where).fields
        source = fields["tokenizer.chat_template"].contents() if "tokenizer.chat_template" in fields else None
        special = {f"{name}_token": fields["tokenizer.ggml.tokens"].contents(fields[key].contents())
                   for name in ("bos", "eos") if (key := f"tokenizer.ggml.{name}_token_id") in fields}
    elif where.is_dir():
        config_file = where / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        jinja = where / "chat_template.jinja"
        source = jinja.read_text() if jinja.is_file() else config.get("chat_template")
        if isinstance(source, list):  # named templates
            source = next((t["template"] for t in source if t.get("name") == "default"), None)
        special = {key: token["content"] if isinstance(token, dict) else token
                   for key in ("bos_token", "eos_token") if (token := config.get(key))}
    else:
        raise ConfigError(f"template_from: {path} is neither a .gguf file nor a model directory")
    if not source:
        raise ConfigError(f"template_from: {path} has no chat template")

    def raise_exception(message: str) -> None:
        raise ConfigError(f"chat template of {path}: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    template = env.from_string(source)
    return lambda messages: template.render(messages=messages, add_generation_prompt=True, **special)
