"""The language-model interface every search method talks to.

`LanguageModel.generate` is async: a search awaits its model calls, and the engine underneath gathers the
calls of every running search into one batch. Search code never batches by hand.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from ponder.errors import ConfigError, PonderError
from ponder.trace import Usage


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_k: int = 0  # keep the k likeliest tokens only (0: all)
    top_p: float = 1.0
    min_p: float = 0.0  # drop tokens less likely than min_p times the likeliest (Nguyen et al., 2024)
    max_tokens: int = 256
    stop: tuple[str, ...] = ()  # the text ends before the first; one inside the leading whitespace does not stop
    seed: int | None = None  # per request, so a request samples the same text whatever batch it lands in

    def __post_init__(self) -> None:
        bad = [f"{name} {value} (must be {rule})" for name, value, ok, rule in (
            ("temperature", self.temperature, self.temperature >= 0, ">= 0; 0 is greedy"),
            ("top_k", self.top_k, self.top_k >= 0, ">= 0; 0 keeps every token"),
            ("top_p", self.top_p, 0 < self.top_p <= 1, "in (0, 1]"),
            ("min_p", self.min_p, 0 <= self.min_p < 1, "in [0, 1)"),
            ("max_tokens", self.max_tokens, self.max_tokens >= 1, ">= 1")) if not ok]
        if bad:
            raise ConfigError(f"bad sampling parameters: {', '.join(bad)}")


@dataclass(frozen=True)
class Request:
    """One prompt. `n` > 1 asks for n *different* completions, drawn without replacement from the model's
    distribution at the request's temperature (fewer when fewer exist); temperature 0 then gives the n most
    likely completions (beam search)."""

    prompt: str
    params: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"a request asks for at least one completion, got n={self.n}")


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    generated_tokens: int
    finish_reason: str  # "stop" (stop string or end of sequence) or "length"
    seconds: float = 0.0  # this request's share of the backend's compute time (0 from a server: it does not say)
    wall_seconds: float = 0.0  # the wall time of the HTTP call that gave it, the server's queue included (shared
    # among a response's choices); 0 in process
    cached_tokens: int = 0  # prompt tokens read from a cache instead of computed (of the n of a request, all but
    # the first count the whole prompt as cached: it was computed once for all of them)
    logprob: float | None = None  # log-probability of the generated tokens under the model (temperature 1, before
    # top-p or min-p), where the backend gives it


@dataclass(frozen=True)
class NextToken:
    """What a model gives for the token after a prompt: for each word asked about, the probability that the next
    token is that word's first token (a judge reads P("Yes")) and which token that is (its id or text: words that
    start with the same token share it); the prompt tokens read, the compute seconds charged to this prompt (its
    share of the forward pass that answered it, by prompt length; 0 from a server) and, from a server, the wall time
    of the HTTP call."""

    probs: list[float]
    tokens: list[str]
    prompt_tokens: int
    seconds: float = 0.0
    wall_seconds: float = 0.0


Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}


class ContextLengthError(PonderError, ValueError):
    """A prompt that leaves the model no room to generate: this request fails, the others go on."""


def prompt_ids(encode: Callable[[str], Sequence[int]], prompt: str, positions: int,
               name: str) -> Sequence[int] | Exception:
    """A prompt's token ids, or the error that keeps it out of a backend: it does not tokenize, it is empty, or it
    leaves no room to generate in a context of `positions`."""
    try:
        ids = encode(prompt)
    except (TypeError, ValueError, RuntimeError, UnicodeError) as err:
        return ValueError(f"cannot tokenize the prompt: {err}")
    if not ids:
        return ValueError("an empty prompt gives the model nothing to continue")
    if len(ids) >= positions:
        return ContextLengthError(f"a prompt of {len(ids)} tokens leaves no room to generate in {name}'s context of "
                                  f"{positions} positions")
    return ids


def _single(requests: list[Request], outs: list[list[Completion]]) -> list[Completion]:
    if any(r.n != 1 for r in requests):
        raise ValueError("generate returns one completion per request: use generate_many for requests with n > 1")
    return [c for [c] in outs]


class LanguageModel(ABC):
    """Anything that turns prompts into completions."""

    name: str = "model"

    @abstractmethod
    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        """Each request's completions: one, or up to `n` different ones."""

    async def generate(self, requests: list[Request]) -> list[Completion]:
        """One completion per request (every request has n = 1)."""
        return _single(requests, await self.generate_many(requests))

    def chat_prompt(self, messages: list[Message]) -> str | None:
        """These messages through the model's chat template, ending where the assistant's reply starts: the text
        a search continues. None when the model has no chat template (prompts are then plain text)."""
        return None

    async def next_token(self, prompts: list[str], words: list[str]) -> list[NextToken]:
        """For each prompt, the probability of each word's first token coming next."""
        raise NotImplementedError(f"{self.name} does not give next-token probabilities")

    async def count_tokens(self, text: str) -> int | None:
        """How many tokens `text` takes in this model (no special tokens); None when the model cannot tell."""
        return None


class Wrapper(LanguageModel):
    """A model around another one (metering, remembering, recording its calls): what it does not change, it
    passes on."""

    def __init__(self, lm: LanguageModel) -> None:
        self.lm = lm
        self.name = lm.name

    def chat_prompt(self, messages: list[Message]) -> str | None:
        return self.lm.chat_prompt(messages)

    async def next_token(self, prompts: list[str], words: list[str]) -> list[NextToken]:
        return await self.lm.next_token(prompts, words)

    async def count_tokens(self, text: str) -> int | None:
        return await self.lm.count_tokens(text)


class Backend(ABC):
    """Rows that a model decodes one token at a time, one forward pass for all of them; requests join between
    steps and leave when they finish. The engine drives it from one thread at a time (`lock`: re-entrant, so that
    the engine's compute thread, which holds it while rows run, can ask `next_token` between steps)."""

    name: str = "backend"

    def __init__(self) -> None:
        self.lock = threading.RLock()

    @abstractmethod
    def admit(self, requests: list[Request]) -> list[int | Exception]:
        """Start these requests (prefill their prompts): a key for each, or the error that keeps it out."""

    @abstractmethod
    def step(self) -> dict[int, list[Completion]]:
        """One decoding step of every running row; the completions of the requests that finished, by key."""

    @abstractmethod
    def drop(self, keys: Iterable[int]) -> None:
        """Stop these requests and free their rows (a cancelled search, or a step that failed)."""

    @abstractmethod
    def cost(self, request: Request) -> int:
        """The most cache positions the request can hold: its prompt plus n times its token limit."""

    def cache_positions(self) -> int:
        """The cache positions the engine may fill at once (its default `max_tokens`): what memory allows."""
        return 1 << 18

    def close(self) -> None:  # noqa: B027  (a hook: most backends hold nothing to free)
        """Free what the backend holds beyond its Python objects (native contexts, caches); nothing runs after."""

    @property
    @abstractmethod
    def keys(self) -> list[int]:
        """The requests running now."""

    def chat_prompt(self, messages: list[Message]) -> str | None:
        """As `LanguageModel.chat_prompt`."""
        return None

    def next_token(self, prompts: list[str], words: list[str]) -> list[NextToken]:
        """As `LanguageModel.next_token`, one batch, on the calling thread (the engine calls it on its compute
        thread between decoding steps; it must leave the running rows as they are). Each prompt is charged the
        pass's seconds in proportion to its length."""
        start = time.perf_counter()
        logits = self.next_token_logits(prompts)
        seconds = time.perf_counter() - start
        firsts = [self.first_token(w) for w in words]
        probs = torch.softmax(logits.double(), dim=-1)[:, firsts].tolist()
        lengths = [len(self.encode(p)) for p in prompts]
        total = sum(lengths) or 1
        return [NextToken(p, [str(t) for t in firsts], n, seconds * n / total) for p, n in zip(probs, lengths)]

    def next_token_logits(self, prompts: list[str]) -> torch.Tensor:
        """[prompts, vocabulary]: the logits for the token after each prompt (leaving the running rows as they
        are)."""
        raise NotImplementedError(f"{self.name} does not give next-token probabilities")

    def encode(self, text: str) -> Sequence[int]:
        """The token ids of `text` (no special tokens added)."""
        raise NotImplementedError(f"{self.name} has no tokenizer")

    def first_token(self, word: str) -> int:
        """The token a word starts with."""
        ids = self.encode(word)
        if not ids:
            raise ValueError(f"the tokenizer encodes {word!r} to nothing")
        return ids[0]

    def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        """The requests as one batch run to its end, nothing joining it (the whole-batch engine and direct use)."""
        with self.lock:
            admitted = self.admit(requests)
            keys = [k for k in admitted if isinstance(k, int)]
            try:
                failed = next((k for k in admitted if isinstance(k, Exception)), None)
                if failed is not None:
                    raise failed
                results: dict[int, list[Completion]] = {}
                while len(results) < len(keys):
                    results.update(self.step())
            except BaseException:
                self.drop(keys)
                raise
            return [results[k] for k in keys]

    def generate_batch(self, requests: list[Request]) -> list[Completion]:
        return _single(requests, self.generate_many(requests))


class OnBackend(LanguageModel):
    """A model that drives a backend itself (the engines; a backend used directly)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name

    def chat_prompt(self, messages: list[Message]) -> str | None:
        return self.backend.chat_prompt(messages)

    async def next_token(self, prompts: list[str], words: list[str]) -> list[NextToken]:
        return self.backend.next_token(prompts, words)

    async def count_tokens(self, text: str) -> int | None:
        try:
            return len(self.backend.encode(text))
        except NotImplementedError:
            return None


class Metered(Wrapper):
    """Counts calls, tokens and seconds into one problem's `Usage` (as its accounting contract says), and the token
    counts the model could not give (`uncounted_budgets`): every search method is metered the same way."""

    def __init__(self, lm: LanguageModel, usage: Usage) -> None:
        super().__init__(lm)
        self.usage = usage

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        outs = await self.lm.generate_many(requests)
        completions = [c for out in outs for c in out]
        self.usage.model_calls += len(requests)
        self.usage.prompt_tokens += sum(c.prompt_tokens for c in completions)
        self.usage.computed_prompt_tokens += sum(c.prompt_tokens - c.cached_tokens for c in completions)
        self.usage.generated_tokens += sum(c.generated_tokens for c in completions)
        self.usage.seconds += sum(c.seconds for c in completions)
        self.usage.http_seconds += sum(c.wall_seconds for c in completions)
        return outs

    async def count_tokens(self, text: str) -> int | None:
        count = await self.lm.count_tokens(text)
        if count is None:
            self.usage.uncounted_budgets += 1
        return count
