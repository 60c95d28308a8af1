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
    def generate_batch(self, requests: list[Request]) -> list[Completion]:
        prompts = [self.encode(r.prompt) for r in requests]
        results: list[Completion | None] = [None] * len(requests)
        rows = []
        for i, ids in enumerate(prompts):
            if not ids or len(ids) >= self.max_positions:  # nothing left to generate into
                results[i] = Completion("", len(ids), 0, "length")
            else:
                rows.append(i)
        start = time.perf_counter()
        if rows:
            self._decode(requests, prompts, rows, results)
        done = [r for r in results if r is not None]
        # Each row is charged its share of the batch's time, by tokens processed: compute, not latency.
        seconds = time.perf_counter() - start
        total = sum(c.prompt_tokens + c.generated_tokens for c in done) or 1
        return [replace(c, seconds=seconds * (c.prompt_tokens + c.generated_tokens) / total) for c in done]

    def _decode(self, requests: list[Request], prompts: list[list[int]], rows: list[int],
                results: list[Completion | None]) -> None:
        width = max(len(prompts[i]) for i in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, i in enumerate(rows):  # left padding, so every row's next token is in the last column
            ids[j, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[j, width - len(prompts[i]) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        params = [requests[i].params for i in rows]
        # Each row draws all its uniforms up front from its own seeded generator: sampling is then one
        # vectorised inverse-CDF lookup per step, and a request gives the same text in any batch.
        longest = max(p.max_tokens for p in params)
        uniforms = torch.ones((len(params), longest), dtype=torch.float64)
        for j, p in enumerate(params):  # a row's stream depends only on its own seed and token limit
            seed = p.seed if p.seed is not None else self._rng.getrandbits(63)
            uniforms[j, : p.max_tokens] = torch.rand(p.max_tokens, generator=torch.Generator().manual_seed(seed),
                                                     dtype=torch.float64)
        temps = torch.tensor([p.temperature for p in params])
        top_p = torch.tensor([p.top_p for p in params])
        out_ids: list[list[int]] = [[] for _ in rows]
        batch = list(range(len(rows)))  # which request each cache row holds, in batch order
        alive = [True] * len(rows)
        cache = DynamicCache()
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                            position_ids=positions.to(self.device), use_cache=True,
                            **{self._cache_arg: cache}, **self._extra).logits[:, -1].float().cpu()
        last_pos = positions[:, -1]
        while True:
            rows_t = torch.tensor(batch)
            steps_t = torch.tensor([len(out_ids[j]) for j in batch]).clamp(max=longest - 1)
            tokens = self._sample(logits, temps[rows_t], top_p[rows_t], uniforms[rows_t, steps_t])
            for b, j in enumerate(batch):
                if not alive[j]:
                    continue
                out_ids[j].append(int(tokens[b]))
                reason = self._finished(out_ids[j], params[j], len(prompts[rows[j]]))
                if reason is not None:
                    alive[j] = False
                    results[rows[j]] = self._complete(out_ids[j], params[j], len(prompts[rows[j]]), reason)
            keep = [b for b, j in enumerate(batch) if alive[j]]
            if not keep:
                return
            # Finished rows leave the batch and its cache once a quarter of it is done: copying the cache
            # at every single finish would cost more than the rows it saves.
            if len(batch) - len(keep) >= max(1, len(batch) // 4):
                index = torch.tensor(keep)
                cache.batch_select_indices(index.to(self.device))
                mask, last_pos, tokens = mask[index], last_pos[index], tokens[index]
                batch = [batch[b] for b in keep]
            mask = torch.cat([mask, torch.ones((len(batch), 1), dtype=torch.long)], dim=1)
            last_pos = last_pos + 1
            logits = self.model(input_ids=tokens[:, None].to(self.device), attention_mask=mask.to(self.device),
                                position_ids=last_pos[:, None].to(self.device), use_cache=True,
                                **{self._cache_arg: cache}).logits[:, -1].float().cpu()

    @staticmethod
    def _sample(logits: torch.Tensor, temps: torch.Tensor, top_p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Temperature and nucleus (top-p) sampling by inverse CDF with the given uniforms; temperature 0 is
        greedy."""
        greedy = logits.argmax(-1)
        if bool((temps == 0).all()):
            return greedy
        scaled = logits.double() / temps.clamp(min=1e-5).double()[:, None]
        if bool((top_p < 1).any()):  # drop tokens outside the smallest set with mass >= top_p
            sorted_logits, order = scaled.sort(-1, descending=True)
            probs_sorted = sorted_logits.softmax(-1)
            drop = probs_sorted.cumsum(-1) - probs_sorted >= top_p.double()[:, None]
            sorted_logits[drop] = float("-inf")
            scaled = torch.full_like(scaled, float("-inf")).scatter(-1, order, sorted_logits)
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


class Direct(LanguageModel):
    """A backend used without the engine: each `generate` call is its own batch."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name

    async def generate(self, requests: list[Request]) -> list[Completion]:
        return self.backend.generate_batch(requests)
