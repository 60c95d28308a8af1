"""The language-model interface every search method talks to.

`LanguageModel.generate` is async: a search awaits its model calls, and the engine underneath gathers the
calls of every running search into one batch. Search code never batches by hand.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ponder.trace import Usage


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0
    min_p: float = 0.0  # drop tokens less likely than min_p times the likeliest (Nguyen et al., 2024)
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None  # per request, so a request samples the same text whatever batch it lands in

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or not 0 <= self.min_p < 1 or self.max_tokens < 1:
            raise ValueError(f"bad sampling parameters: {self}")


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
            raise ValueError(f"a request asks for at least one completion, got n={self.n}")


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    generated_tokens: int
    finish_reason: str  # "stop" (stop string or end of sequence) or "length"
    seconds: float = 0.0  # this request's share of the backend's compute time


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


class Backend(ABC):
    """A synchronous batch generator (one forward pass serves many rows); the engine drives it."""

    name: str = "backend"

    @abstractmethod
    def generate_many(self, requests: list[Request]) -> list[list[Completion]]: ...

    def generate_batch(self, requests: list[Request]) -> list[Completion]:
        return _single(requests, self.generate_many(requests))


class Metered(LanguageModel):
    """Counts calls and tokens into one problem's `Usage`: every search method is metered the same way."""

    def __init__(self, lm: LanguageModel, usage: Usage) -> None:
        self.lm = lm
        self.usage = usage
        self.name = lm.name

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        outs = await self.lm.generate_many(requests)
        completions = [c for out in outs for c in out]
        self.usage.model_calls += len(requests)
        self.usage.prompt_tokens += sum(c.prompt_tokens for c in completions)
        self.usage.generated_tokens += sum(c.generated_tokens for c in completions)
        self.usage.seconds += sum(c.seconds for c in completions)
        return outs
