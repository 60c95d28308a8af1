"""Choosing the next token: temperature, nucleus and min-p truncation, inverse-CDF sampling from a request's own
uniforms, and `Distinct` groups (n completions without replacement); and when a row stops. Shared by the in-process
backends, so that a seed means the same draws in each."""

from __future__ import annotations

import random
from collections.abc import Callable, Container
from dataclasses import replace
from typing import Any

import torch

from ponder.lm.base import Completion, Request, SamplingParams


def sample(logits: torch.Tensor, temps: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor,
           u: torch.Tensor) -> torch.Tensor:
    """Temperature, nucleus (top-p) and min-p sampling by inverse CDF with the given uniforms; temperature 0
    is greedy."""
    greedy = logits.argmax(-1)
    if bool((temps == 0).all()):
        return greedy
    scaled = truncate(logits.double() / temps.clamp(min=1e-5).double()[:, None], top_p, min_p)
    cdf = scaled.softmax(-1).cumsum(-1)
    sampled = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(-1).clamp(max=logits.shape[-1] - 1)
    return torch.where(temps == 0, greedy, sampled)


def truncate(scaled: torch.Tensor, top_p: torch.Tensor | float, min_p: torch.Tensor | float) -> torch.Tensor:
    """Logits with -inf for the tokens outside each row's smallest set of mass >= top_p (nucleus sampling,
    Holtzman et al., 2020) and for those less likely than min_p times the row's likeliest (min-p sampling,
    Nguyen et al., 2024)."""
    min_p = torch.as_tensor(min_p, dtype=torch.float64).expand(scaled.shape[0])
    if bool((min_p > 0).any()):  # p < min_p * p_max  <=>  logit < max logit + log(min_p)
        low = scaled < scaled.max(-1, keepdim=True).values + min_p.log()[:, None]
        scaled = scaled.masked_fill(low, float("-inf"))
    top_p = torch.as_tensor(top_p, dtype=torch.float64).expand(scaled.shape[0])
    if not bool((top_p < 1).any()):
        return scaled
    sorted_logits, order = scaled.sort(-1, descending=True)
    probs_sorted = sorted_logits.softmax(-1)
    sorted_logits[probs_sorted.cumsum(-1) - probs_sorted >= top_p[:, None]] = float("-inf")
    return torch.full_like(scaled, float("-inf")).scatter(-1, order, sorted_logits)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Maechler, 2012)."""
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class Distinct:
    """n different completions of one prompt, drawn without replacement: stochastic beam search (Kool, van Hoof
    and Welling, 2019, "Stochastic Beams and Where to Find Them: The Gumbel-Top-k Trick for Sampling Sequences
    Without Replacement").

    Each beam carries its log-probability phi and a Gumbel key G. A child's key is phi_child plus Gumbel noise,
    conditioned on the largest key among its siblings being its parent's key; the beam keeps the n largest keys
    over children and finished sequences, and the n largest keys over all sequences are n samples without
    replacement, in the order they would be drawn. Without noise (temperature 0) it is beam search: the n most
    likely sequences. The noise comes from the request's own seeded generator, so the result does not depend
    on the batch."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)
        self.phi = torch.zeros(1, dtype=torch.float64)  # of the live beams, in cache-row order
        self.key = torch.zeros(1, dtype=torch.float64)
        self.finished: list[tuple[float, Any, str]] = []  # (key, the caller's record of it, finish reason)
        self._chosen: list[tuple[float, float]] = []
        self.done = False

    def step(self, logp: torch.Tensor, noisy: bool) -> list[tuple[int, int]]:
        """The (beam, token) children that take the live places among the n best; finished sequences that
        fall out of the n best are dropped."""
        phi = self.phi[:, None] + logp
        keys = phi
        if noisy:
            u = torch.rand(phi.shape, generator=self.generator, dtype=torch.float64)
            perturbed = phi - torch.log(-torch.log(u))
            top = perturbed.max(-1, keepdim=True).values
            v = self.key[:, None] - perturbed + _log1mexp(perturbed - top)
            keys = self.key[:, None] - v.clamp(min=0) - torch.log1p(torch.exp(-v.abs()))
        flat = keys.flatten()
        best = flat.topk(min(self.n, flat.numel()))
        width = logp.shape[-1]
        children = [(k, divmod(int(j), width)) for k, j in zip(best.values.tolist(), best.indices.tolist())
                    if k > float("-inf")]
        ranked = sorted([(k, True, c) for k, c in children] + [(f[0], False, f) for f in self.finished],
                        key=lambda x: -x[0])[: self.n]
        self.finished = [f for _, is_child, f in ranked if not is_child]
        chosen = [(k, c) for k, is_child, c in ranked if is_child]
        self._chosen = [(float(phi[b, t]), k) for k, (b, t) in chosen]
        return [c for _, c in chosen]

    def advance(self, outcomes: list[tuple[Any, str | None]]) -> None:
        """The chosen children's records (their tokens, say) and finish reasons (None: it goes on), in the order
        `step` gave them."""
        going = []
        for (phi, key), (tokens, reason) in zip(self._chosen, outcomes):
            if reason is None:
                going.append((phi, key))
            else:
                self.finished.append((key, tokens, reason))
        self.phi = torch.tensor([p for p, _ in going], dtype=torch.float64)
        self.key = torch.tensor([k for _, k in going], dtype=torch.float64)
        self.done = not going

    def completions(self) -> list[tuple[Any, str]]:
        return [(tokens, reason) for _, tokens, reason in sorted(self.finished, key=lambda f: -f[0])]


def find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Where `text` ends at its first stop string, or None. A stop string inside the text's leading whitespace does
    not count: a model that opens its step with a blank line has not ended the step."""
    start = len(text) - len(text.lstrip())
    cuts = [i for stop in stops if (i := text.find(stop, start)) >= 0]
    return min(cuts) if cuts else None


def draws(request: Request, rng: random.Random) -> tuple[torch.Tensor | None, Distinct | None]:
    """A request's randomness, from its seed (from `rng` when it has none). n = 1 draws all its uniforms up front, one
    per token it may generate: sampling is then one vectorised inverse-CDF lookup per step, and the request gives the
    same text in any batch. n > 1 gets a `Distinct` group."""
    p = request.params
    seed = p.seed if p.seed is not None else rng.getrandbits(63)
    if request.n > 1:
        return None, Distinct(request.n, seed)
    return torch.rand(p.max_tokens, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), None


def finish_reason(out: list[int], params: SamplingParams, eos: Container[int], decode: Callable[[list[int]], str],
                  room: int) -> str | None:
    """Why a row ends with its newest token `out[-1]`: "stop" at an end-of-sequence token or a stop string
    (`find_stop`), "length" at its token limit or when its context has no `room` left after the prompt; None while
    it goes on."""
    if out[-1] in eos:
        return "stop"
    if params.stop:
        longest = max(len(s) for s in params.stop)
        tail = decode(out[-longest - 1 :])
        if any(s in tail for s in params.stop) and find_stop(decode(out), params.stop) is not None:
            return "stop"
    if len(out) >= params.max_tokens or len(out) >= room:
        return "length"
    return None


def completion(text: str, generated: int, prompt_tokens: int, stop: tuple[str, ...], reason: str, cached: int,
               logprob: float) -> Completion:
    """A finished row's completion; like the OpenAI API, the text ends before its first stop string."""
    cut = find_stop(text, stop)
    return Completion(text=text if cut is None else text[:cut], prompt_tokens=prompt_tokens, generated_tokens=generated,
                      finish_reason=reason, cached_tokens=cached, logprob=logprob)


def share_time(live: dict[int, Any], finished: dict[int, list[Completion]], seconds: float,
               going: list[int]) -> list[Any]:
    """Split a decoding step's seconds among the rows that decoded (`live[key].seconds`), then give each finished
    request's completions its time by generated tokens. The finished requests leave `live`; returns them."""
    for key in going:
        live[key].seconds += seconds / len(going)
    gone = []
    for key, completions in finished.items():
        lv = live.pop(key)
        gone.append(lv)
        total = sum(c.generated_tokens for c in completions) or 1
        finished[key] = [replace(c, seconds=lv.seconds * c.generated_tokens / total) for c in completions]
    return gone
