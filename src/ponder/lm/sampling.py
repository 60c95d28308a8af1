"""Choosing the next token: temperature, top-k, nucleus and min-p truncation, inverse-CDF sampling from a request's own
uniforms, and `Distinct` groups (n completions without replacement); and when a row stops. Shared by the in-process
backends, so that a seed means the same draws in each.

Everything here runs on the logits' device and reads nothing back to the host: what the host needs to know to
branch (is every row greedy, does any truncate) comes with the rows' parameters (`Knobs`), and the truncations take
the k likeliest tokens (`torch.topk`) before sorting anything, so no step sorts the whole vocabulary unless a
nucleus reaches past `CANDIDATES` tokens.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ponder.lm.base import Completion, Request, SamplingParams

CANDIDATES = 256  # the likeliest tokens a nucleus (top-p) is looked for among before the whole vocabulary is sorted


@dataclass(frozen=True)
class Knobs:
    """The sampling parameters of a batch's rows as [rows] tensors on the logits' device (one copy there), with what
    the host knows of them, so that sampling branches without reading the device."""

    temperature: torch.Tensor  # float64
    top_k: torch.Tensor  # int64, 0: no top-k
    top_p: torch.Tensor  # float64
    min_p: torch.Tensor  # float64
    greedy: bool  # every row has temperature 0
    k: int  # the candidates to take before sorting: the largest top-k, CANDIDATES if a row has top-p alone; 0: none
    min_p_used: bool
    top_p_used: bool

    @classmethod
    def of(cls, params: Sequence[SamplingParams], device: torch.device | str = "cpu") -> Knobs:
        table = torch.tensor([[p.temperature, p.top_k, p.top_p, p.min_p] for p in params],
                             dtype=torch.float64).to(device)
        top_p_alone = any(p.top_p < 1 and not p.top_k for p in params)
        k = max([p.top_k for p in params] + [CANDIDATES if top_p_alone else 0])
        return cls(table[:, 0], table[:, 1].long(), table[:, 2], table[:, 3],
                   greedy=all(p.temperature == 0 for p in params), k=k,
                   min_p_used=any(p.min_p > 0 for p in params), top_p_used=any(p.top_p < 1 for p in params))


def sample(logits: torch.Tensor, knobs: Knobs, u: torch.Tensor) -> torch.Tensor:
    """Temperature, top-k, nucleus (top-p) and min-p sampling by inverse CDF over the token ids in order, with the
    given uniforms (one per row); temperature 0 is greedy."""
    greedy = logits.argmax(-1)
    if knobs.greedy:
        return greedy
    scaled = truncate(logits.double() / knobs.temperature.clamp(min=1e-5)[:, None], knobs)
    cdf = scaled.softmax(-1).cumsum(-1)
    sampled = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(-1).clamp(max=logits.shape[-1] - 1)
    return torch.where(knobs.temperature == 0, greedy, sampled)


def truncate(scaled: torch.Tensor, knobs: Knobs) -> torch.Tensor:
    """Logits with -inf for the tokens each row drops: those less likely than min_p times the row's likeliest
    (min-p sampling, Nguyen et al., 2024), those outside its top_k likeliest, and those outside the smallest set of
    the rest whose mass is >= top_p (nucleus sampling, Holtzman et al., 2020). `knobs` rows broadcast over
    `scaled`'s."""
    if knobs.min_p_used:  # p < min_p * p_max  <=>  logit < max logit + log(min_p)
        low = scaled < scaled.max(-1, keepdim=True).values + knobs.min_p.log()[:, None]
        scaled = scaled.masked_fill(low, float("-inf"))
    if not knobs.k:
        return scaled
    values, ids = _candidates(scaled, knobs)
    ranked = torch.full_like(scaled, float("-inf")).scatter(-1, ids, values)
    truncates = ((knobs.top_k > 0) | (knobs.top_p < 1))[:, None]
    return torch.where(truncates, ranked, scaled)


def _candidates(scaled: torch.Tensor, knobs: Knobs, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` likeliest tokens of each row, likeliest first (`torch.topk`: only they are sorted), their logits -inf
    where top-k or top-p drops them. A row's nucleus is measured in its top-k when it has one, else in the whole
    distribution; a nucleus that reaches past the candidates (one flag read back, on this path only) sorts the whole
    vocabulary."""
    width = scaled.shape[-1]
    k = min(k or knobs.k, width)
    values, ids = scaled.topk(k, dim=-1)
    rank = torch.arange(k, device=scaled.device)
    top_k = knobs.top_k.expand(scaled.shape[0])[:, None]
    values = values.masked_fill((top_k > 0) & (rank >= top_k), float("-inf"))
    if not knobs.top_p_used:
        return values, ids
    total = torch.where(top_k[:, 0] > 0, values.logsumexp(-1), scaled.logsumexp(-1))
    probs = (values - total[:, None]).exp()
    mass = probs.cumsum(-1)
    top_p = knobs.top_p.expand(scaled.shape[0])[:, None]
    if k < width and bool(((top_k[:, 0] == 0) & (mass[:, -1] < top_p[:, 0])).any()):
        return _candidates(scaled, knobs, width)
    return values.masked_fill(mass - probs >= top_p, float("-inf")), ids


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
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)  # moved to the logits' device at the first step
        self.phi = torch.zeros(1, dtype=torch.float64)  # of the live beams, in cache-row order
        self.key = torch.zeros(1, dtype=torch.float64)
        self.finished: list[tuple[float, Any, str]] = []  # (key, the caller's record of it, finish reason)
        self._chosen: list[tuple[float, float]] = []
        self.done = False

    def step(self, logp: torch.Tensor, noisy: bool) -> list[tuple[int, int]]:
        """The (beam, token) children that take the live places among the n best; finished sequences that
        fall out of the n best are dropped."""
        phi = self.phi.to(logp.device)[:, None] + logp
        keys = phi
        if noisy:
            if self.generator.device != logp.device:  # (a CUDA generator draws other numbers than the CPU's)
                self.generator = torch.Generator(device=logp.device).manual_seed(self.seed)
            u = torch.rand(phi.shape, generator=self.generator, dtype=torch.float64, device=logp.device)
            perturbed = phi - torch.log(-torch.log(u))
            top = perturbed.max(-1, keepdim=True).values
            key = self.key.to(logp.device)[:, None]
            v = key - perturbed + _log1mexp(perturbed - top)
            keys = key - v.clamp(min=0) - torch.log1p(torch.exp(-v.abs()))
        flat = keys.flatten()
        best = flat.topk(min(self.n, flat.numel()))
        width = logp.shape[-1]
        # one copy to the host: the best keys, where they are and their log-probabilities
        values, at, logps = torch.stack([best.values, best.indices.double(), phi.flatten()[best.indices]]).tolist()
        children = [(k, divmod(int(j), width), lp) for k, j, lp in zip(values, at, logps) if k > float("-inf")]
        ranked = sorted([(k, True, (c, lp)) for k, c, lp in children] + [(f[0], False, f) for f in self.finished],
                        key=lambda x: -x[0])[: self.n]
        self.finished = [f for _, is_child, f in ranked if not is_child]
        chosen = [(k, c) for k, is_child, c in ranked if is_child]
        self._chosen = [(lp, k) for k, (_, lp) in chosen]
        return [c for _, (c, _) in chosen]

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


def stop_candidates(texts: Sequence[str], stops: Iterable[str]) -> list[bool]:
    """Per token, given the text it adds after other text: whether a stop string can end with it. A stop string that
    a new token completes ends in the text that token adds, so a token whose text holds none of the stop strings' last
    characters cannot complete one; a token whose text alone is not plain text (empty, or part of a character: U+FFFD)
    is a candidate too. Only the candidates need a row's text decoded and searched."""
    lasts = {s[-1] for s in stops if s}
    return [not t or "\ufffd" in t or any(c in t for c in lasts) for t in texts]


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
                  room: int, may_stop: bool = True) -> str | None:
    """Why a row ends with its newest token `out[-1]`: "stop" at an end-of-sequence token or a stop string
    (`find_stop`), "length" at its token limit or when its context has no `room` left after the prompt; None while
    it goes on. `may_stop=False`: the token is known to be neither (`stop_candidates`); only the limits are checked."""
    if may_stop and out[-1] in eos:
        return "stop"
    if may_stop and params.stop:
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
