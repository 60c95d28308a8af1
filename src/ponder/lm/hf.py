"""In-process Hugging Face backend: a local transformers directory, a `.gguf` file, or a shipped tiny policy.

Its own decoding loop (KV cache, left padding) rather than `model.generate`, because one batch mixes rows
from different searches: each row has its own temperature, top-p, token limit, stop strings and seed, and a
row that finishes leaves the batch so the rest run faster.
"""

from __future__ import annotations

import hashlib
import inspect
import random
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.utils import logging as hf_logging

from ponder.lm.base import Backend, Completion, LanguageModel, Request

ASSETS = Path(__file__).resolve().parent.parent / "assets"


class ModelLoadError(ValueError):
    pass


def resolve_model(spec: str) -> tuple[Path, str | None]:
    """A shipped policy name (`game24-policy`), a model directory, or a `.gguf` file -> (dir, gguf file)."""
    if (ASSETS / spec).is_dir():
        return ASSETS / spec, None
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"no GGUF file at {path}")
        return path.parent, path.name
    if path.is_dir() and (path / "config.json").is_file():
        return path, None
    shipped = sorted(p.name for p in ASSETS.iterdir() if p.is_dir()) if ASSETS.is_dir() else []
    raise ModelLoadError(
        f"model {spec!r} is not a shipped model ({', '.join(shipped) or 'none'}), a directory with "
        "config.json, or a .gguf file"
    )


def fingerprint(spec: str) -> str:
    """A short hash of a model's weights and config (size and mtime for files over 256 MB)."""
    directory, gguf = resolve_model(spec)
    files = [directory / gguf] if gguf else sorted(
        p for p in directory.iterdir() if p.suffix in (".safetensors", ".bin", ".json") and p.is_file())
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        stat = path.stat()
        if stat.st_size > 256 << 20:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        else:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class HFBackend(Backend):
    def __init__(self, spec: str, threads: int | None = None, device: str = "cpu") -> None:
        directory, gguf = resolve_model(spec)
        hf_logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)
        kwargs = {"gguf_file": gguf} if gguf else {}
        self.name = Path(spec).stem if gguf else Path(spec).name
        self.tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, **kwargs)
        self.model.to(device).eval()
        self.device = device
        self.eos = {t for t in [self.tokenizer.eos_token_id, self.model.config.eos_token_id]
                    if isinstance(t, int)}
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos)
        self.max_positions = getattr(self.model.config, "max_position_embeddings", 2048)
        self._rng = random.Random(0)
        # transformers 5.x renamed the forward argument `past_key_values` to `cache`
        forward_args = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"
        # only the last position's logits are needed: skip the (rows x prompt x vocabulary) prefill logits
        self._extra = {"logits_to_keep": 1} if "logits_to_keep" in forward_args else {}

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    @torch.inference_mode()
    def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        prompts = [self.encode(r.prompt) for r in requests]
        results: list[list[Completion]] = [[] for _ in requests]
        live = []
        for i, ids in enumerate(prompts):
            if not ids or len(ids) >= self.max_positions:  # nothing left to generate into
                results[i] = [Completion("", len(ids), 0, "length")]
            else:
                live.append(i)
        start = time.perf_counter()
        if live:
            self._decode(requests, prompts, live, results)
        # Each completion is charged its share of the batch's time, by tokens processed: compute, not latency.
        seconds = time.perf_counter() - start
        total = sum(c.prompt_tokens + c.generated_tokens for out in results for c in out) or 1
        return [[replace(c, seconds=seconds * (c.prompt_tokens + c.generated_tokens) / total) for c in out]
                for out in results]

    def _decode(self, requests: list[Request], prompts: list[list[int]], live: list[int],
                results: list[list[Completion]]) -> None:
        """One decoding loop for the whole batch. A cache row is a sample of a request with n = 1, or one beam
        of a request with n > 1 (`Distinct`); every request's prompt is prefilled once, in one row."""
        width = max(len(prompts[i]) for i in live)
        ids = torch.full((len(live), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(live), width), dtype=torch.long)
        for j, i in enumerate(live):  # left padding, so every row's next token is in the last column
            ids[j, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[j, width - len(prompts[i]) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        params = [r.params for r in requests]
        # A request with n = 1 draws all its uniforms up front from its own seeded generator: sampling is then
        # one vectorised inverse-CDF lookup per step, and a request gives the same text in any batch.
        longest = max(params[i].max_tokens for i in live)
        uniforms = torch.ones((len(requests), longest), dtype=torch.float64)
        groups: dict[int, Distinct] = {}
        for i in live:
            seed = params[i].seed if params[i].seed is not None else self._rng.getrandbits(63)
            if requests[i].n > 1:
                groups[i] = Distinct(requests[i].n, seed)
            else:  # a row's stream depends only on its own seed and token limit
                uniforms[i, : params[i].max_tokens] = torch.rand(
                    params[i].max_tokens, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        temps = torch.tensor([p.temperature for p in params])
        top_p = torch.tensor([p.top_p for p in params])
        min_p = torch.tensor([p.min_p for p in params])
        owner = list(live)  # the request of each cache row
        outs: list[list[int]] = [[] for _ in live]  # the tokens each cache row has generated
        dead = [False] * len(live)  # rows of finished samples, left in the cache until it is compacted
        cache = DynamicCache()
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                            position_ids=positions.to(self.device), use_cache=True,
                            **{self._cache_arg: cache}, **self._extra).logits[:, -1].float().cpu()
        last_pos = positions[:, -1]
        while True:
            sampled = [b for b, i in enumerate(owner) if i not in groups]
            nxt: dict[int, int] = {}  # the next token of each sample row that goes on
            if sampled:
                rows_t = torch.tensor(sampled)
                owners_t = torch.tensor([owner[b] for b in sampled])
                steps_t = torch.tensor([len(outs[b]) for b in sampled]).clamp(max=longest - 1)
                tokens = self._sample(logits[rows_t], temps[owners_t], top_p[owners_t], min_p[owners_t],
                                      uniforms[owners_t, steps_t])
                for b, token in zip(sampled, tokens.tolist()):
                    if dead[b]:
                        continue
                    out = [*outs[b], token]
                    i = owner[b]
                    reason = self._finished(out, params[i], len(prompts[i]))
                    if reason is None:
                        nxt[b] = token
                    else:
                        dead[b] = True
                        results[i] = [self._complete(out, params[i], len(prompts[i]), reason)]
            beams: list[tuple[int, int, int]] = []  # (parent row, token, request) of the groups' next beams
            for i, group in groups.items():
                rows = [b for b, o in enumerate(owner) if o == i]
                if not rows:
                    continue
                temp = temps[i].item()  # temperature 0: beam search on the model's own log-probabilities
                scaled = _truncate(logits[rows].double() / (temp or 1.0), top_p[i].item(), min_p[i].item())
                chosen = group.step(scaled.log_softmax(-1), noisy=temp > 0)
                outcomes = []
                for parent, token in chosen:
                    out = [*outs[rows[parent]], token]
                    reason = self._finished(out, params[i], len(prompts[i]))
                    outcomes.append((out, reason))
                    if reason is None:
                        beams.append((rows[parent], token, i))
                group.advance(outcomes)
                if group.done:
                    results[i] = [self._complete(out, params[i], len(prompts[i]), reason)
                                  for out, reason in group.completions()]
            if not nxt and not beams:
                return
            # Dead sample rows stay in the cache until a quarter of it is dead (copying the cache at every
            # finish would cost more than the rows it saves); beams always need their parents' rows.
            keep = len(sampled) - len(nxt) < max(1, len(owner) // 4) and not groups
            parents = list(range(len(owner))) if keep else [*nxt, *(b for b, _, _ in beams)]
            step_tokens = [nxt.get(b, 0) for b in parents] if keep else [*nxt.values(), *(t for _, t, _ in beams)]
            if not keep:
                index = torch.tensor(parents)
                cache.batch_select_indices(index.to(self.device))
                mask, last_pos = mask[index], last_pos[index]
                outs = [outs[b] for b in parents]
                dead = [dead[b] for b in parents]
                owner = [owner[b] for b in parents]
            for b, token in enumerate(step_tokens):
                if not dead[b]:
                    outs[b] = [*outs[b], token]
            tokens = torch.tensor(step_tokens)
            mask = torch.cat([mask, torch.ones((len(owner), 1), dtype=torch.long)], dim=1)
            last_pos = last_pos + 1
            logits = self.model(input_ids=tokens[:, None].to(self.device), attention_mask=mask.to(self.device),
                                position_ids=last_pos[:, None].to(self.device), use_cache=True,
                                **{self._cache_arg: cache}).logits[:, -1].float().cpu()

    @staticmethod
    def _sample(logits: torch.Tensor, temps: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor,
                u: torch.Tensor) -> torch.Tensor:
        """Temperature, nucleus (top-p) and min-p sampling by inverse CDF with the given uniforms; temperature 0
        is greedy."""
        greedy = logits.argmax(-1)
        if bool((temps == 0).all()):
            return greedy
        scaled = _truncate(logits.double() / temps.clamp(min=1e-5).double()[:, None], top_p, min_p)
        cdf = scaled.softmax(-1).cumsum(-1)
        sampled = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(-1).clamp(max=logits.shape[-1] - 1)
        return torch.where(temps == 0, greedy, sampled)

    def _finished(self, out: list[int], p, n_prompt: int) -> str | None:
        if out[-1] in self.eos:
            return "stop"
        if p.stop:
            longest = max(len(s) for s in p.stop)
            tail = self.tokenizer.decode(out[-longest - 1 :], skip_special_tokens=True)
            if any(s in tail for s in p.stop):
                return "stop"
        if len(out) >= p.max_tokens or n_prompt + len(out) >= self.max_positions:
            return "length"
        return None

    def _complete(self, out: list[int], p, n_prompt: int, reason: str) -> Completion:
        text = self.tokenizer.decode(out, skip_special_tokens=True)
        cuts = [text.find(s) for s in p.stop if s in text]
        if cuts:  # like the OpenAI API: the text ends before the first stop string
            text = text[: min(cuts)]
        return Completion(text=text, prompt_tokens=n_prompt, generated_tokens=len(out), finish_reason=reason)


def _truncate(scaled: torch.Tensor, top_p: torch.Tensor | float, min_p: torch.Tensor | float) -> torch.Tensor:
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
        self.finished: list[tuple[float, list[int], str]] = []  # (key, tokens, finish reason)
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

    def advance(self, outcomes: list[tuple[list[int], str | None]]) -> None:
        """The chosen children's tokens and finish reasons (None: it goes on), in the order `step` gave them."""
        going = []
        for (phi, key), (tokens, reason) in zip(self._chosen, outcomes):
            if reason is None:
                going.append((phi, key))
            else:
                self.finished.append((key, tokens, reason))
        self.phi = torch.tensor([p for p, _ in going], dtype=torch.float64)
        self.key = torch.tensor([k for _, k in going], dtype=torch.float64)
        self.done = not going

    def completions(self) -> list[tuple[list[int], str]]:
        return [(tokens, reason) for _, tokens, reason in sorted(self.finished, key=lambda f: -f[0])]


class Direct(LanguageModel):
    """A backend used without the engine: each `generate` call is its own batch."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        return self.backend.generate_many(requests)
