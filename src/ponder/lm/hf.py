"""In-process Hugging Face backend: a local transformers directory, a `.gguf` file, or a shipped tiny policy.

Its own decoding loop rather than `model.generate`, because one batch mixes rows from different searches: each
row has its own temperature, top-p, token limit, stop strings and seed; requests join the running batch between
decoding steps (continuous batching, Yu et al., 2022, "Orca") and a row that finishes leaves it. Prompts are read
from a prefix cache as far as another request has computed them (`ponder.lm.prefix_cache`).

The running batch lives on the model's device: its logits, mask and positions; sampling and the first test of the
stop checks run there too (`ponder.lm.sampling`), so a decoding step copies to the host only what it chose (each
row's token, its log-probability and whether it may have stopped: one small copy), whatever the vocabulary.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import itertools
import json
import os
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gguf import GGUFReader, Keys
from tokenizers import Tokenizer
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from ponder.errors import ConfigError, ModelLoadError
from ponder.lm.base import Backend, Completion, Message, OnBackend, Request, prompt_ids
from ponder.lm.kv import cache_argument, concat_rows, left_pad, new_cache, prefill_inputs, row_kv
from ponder.lm.prefix_cache import KV, PrefixCache, common_length
from ponder.lm.sampling import (
    Distinct,
    Knobs,
    completion,
    draws,
    finish_reason,
    sample,
    share_time,
    stop_candidates,
    truncate,
)

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@contextlib.contextmanager
def loading_quietly() -> Iterator[None]:
    """transformers' progress bars off while a model loads, and as they were after: the process's other
    transformers users keep theirs."""
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


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


GGUF_VERIFIER = "ponder.verifier"  # a GGUF key: a verifier checkpoint's `ponder_verifier` head, as JSON


def checkpoint_config(directory: Path, gguf_file: str | None = None) -> dict[str, Any]:
    """A checkpoint's config.json (empty when it has none); for a GGUF file, the `ponder_verifier` head that
    `ponder export --gguf` stores in it, when there is one."""
    if gguf_file:
        field = GGUFReader(directory / gguf_file).get_field(GGUF_VERIFIER)
        return {} if field is None else {"ponder_verifier": json.loads(field.contents())}
    path = directory / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def load_tokenizer(directory: Path, gguf_file: str | None = None) -> PreTrainedTokenizerBase:
    """A checkpoint's tokenizer. From a GGUF file, the Hugging Face tokenizer stored in it under
    `tokenizer.huggingface.json` when it has one (`ponder export --gguf` stores it: transformers rebuilds a GGUF's
    tokenizer from llama.cpp's vocabulary with that model's defaults, and for the character tokenizer's Unigram
    vocabulary they add a space prefix and drop newlines), else transformers' rebuild."""
    if gguf_file:
        reader = GGUFReader(directory / gguf_file)
        stored = reader.get_field(Keys.Tokenizer.HF_JSON)
        if stored is not None:
            core = Tokenizer.from_str(stored.contents())
            special = {}
            for name, key in (("bos_token", Keys.Tokenizer.BOS_ID), ("eos_token", Keys.Tokenizer.EOS_ID),
                              ("unk_token", Keys.Tokenizer.UNK_ID), ("pad_token", Keys.Tokenizer.PAD_ID)):
                field = reader.get_field(key)
                if field is not None:
                    special[name] = core.id_to_token(int(field.contents()))
            return PreTrainedTokenizerFast(tokenizer_object=core, clean_up_tokenization_spaces=False, **special)
    return AutoTokenizer.from_pretrained(directory, **({"gguf_file": gguf_file} if gguf_file else {}))


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


@dataclass(eq=False)
class _Live:
    """An admitted request: its prompt, its sampling state and what it has cost so far."""

    request: Request
    prompt: list[int]
    uniforms: list[float] | None  # n = 1: the request's own uniforms, one per token it may generate
    group: Distinct | None  # n > 1
    cached: int = 0  # prompt tokens read from a cache
    seconds: float = 0.0


@dataclass(eq=False)
class _Rows:
    """Rows of a KV cache: left-padded, with holes where a cached prefix meets the rest of a prompt (the mask says
    which columns each row reads). `pos` is the position of each row's next token and `logits` its distribution; the
    tensors are on the model's device, the token lists on the host."""

    cache: DynamicCache
    mask: torch.Tensor  # [rows, columns]
    pos: torch.Tensor  # [rows]
    logits: torch.Tensor  # [rows, vocabulary] (on the host with `sample_on_host`)
    owner: list[int]  # the request key of each row
    outs: list[list[int]]  # the tokens each row has generated
    logp: list[float]  # their log-probability under the model (temperature 1, nothing truncated)
    dead: list[bool]  # rows of finished samples, left in place until enough are dead to compact

    def __len__(self) -> int:
        return len(self.owner)


MEMORY_ENV = "PONDER_MEMORY_MB"  # the memory a process's engines size their caches by (`memory_share`)
PASS_POSITIONS = 1 << 14  # padded positions in one next-token pass (SmolLM2: 0.75 GB of keys and values)


def _passes(prompts: list[list[int]], positions: int) -> list[list[int]]:
    """The prompts' indices, shortest first, in groups whose rows times longest prompt stay within `positions` (a
    prompt longer than that goes alone)."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * len(prompts[i]) <= positions:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class HFBackend(Backend):
    """`prefix_cache_mb` > 0 keeps the keys and values of every sequence read in a radix tree of that many MiB,
    and prompts that share a prefix in one admission compute it once; 0 computes every prompt from scratch; None
    (the default) gives it a sixth of the memory free at load, as the running batch gets (a fixed 256 MiB held
    only 5,800 of SmolLM2's positions: 64 GSM8K searches with a few-shot header evicted each other's judge
    questions between steps, and the judge recomputed them).
    `grow_in_place=False` copies the whole cache with every token, as transformers' own cache does, and
    `sample_on_host=True` copies every step's logits to the host, samples there and decodes every row's stop strings
    (both to measure against)."""

    def __init__(self, spec: str, threads: int | None = None, device: str = "cpu",
                 prefix_cache_mb: float | None = None, grow_in_place: bool = True,
                 sample_on_host: bool = False) -> None:
        super().__init__()
        directory, gguf = resolve_model(spec)
        if threads:
            torch.set_num_threads(threads)
        kwargs = {"gguf_file": gguf} if gguf else {}
        self.name = Path(spec).stem if gguf else Path(spec).name
        with loading_quietly():
            self.tokenizer = load_tokenizer(directory, gguf)
            self.model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, **kwargs)
        self.model.to(device).eval()
        self.device = device
        free = self._free_memory()
        self._cache_positions = max(1, free // 6 // self._bytes_per_position())
        self.eos = {t for t in [self.tokenizer.eos_token_id, self.model.config.eos_token_id]
                    if isinstance(t, int)}
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos)
        self.max_positions = getattr(self.model.config, "max_position_embeddings", 2048)
        budget = free // 6 if prefix_cache_mb is None else int(prefix_cache_mb * 2**20)
        self.prefixes = PrefixCache(budget) if budget > 0 else None
        self.pass_positions = PASS_POSITIONS
        self.grow_in_place = grow_in_place
        self.sample_on_host = sample_on_host
        self._texts: list[str] | None = None  # what each token adds to a text (`stop_candidates`), read once
        self._stop_tables: dict[frozenset[str], torch.Tensor] = {}
        self._rng = random.Random(0)
        # the engine sizes a request (`cost`) just before admitting it: both read one tokenization
        self._token_ids = functools.lru_cache(maxsize=4096)(
            lambda text: tuple(self.tokenizer(text, add_special_tokens=False).input_ids))
        self._next_key = itertools.count()
        self._live: dict[int, _Live] = {}
        self._rows: _Rows | None = None
        self._clock = _ForwardClock(device)
        self._cache_arg = cache_argument(self.model)
        forward_args = inspect.signature(self.model.forward).parameters
        # only the last position's logits are needed: skip the (rows x prompt x vocabulary) prefill logits
        self._extra = {"logits_to_keep": 1} if "logits_to_keep" in forward_args else {}

    def encode(self, text: str) -> list[int]:
        return list(self._token_ids(text))

    @property
    def forward_seconds(self) -> float:
        """Time in the model's forward passes alone (prefill and decoding)."""
        return self._clock.seconds

    @property
    def keys(self) -> list[int]:
        return list(self._live)

    def cost(self, request: Request) -> int:
        """Each of the request's rows holds its own copy of the prompt's keys and values."""
        return request.n * (len(self.encode(request.prompt)) + request.params.max_tokens)

    def cache_positions(self) -> int:
        return self._cache_positions

    def close(self) -> None:
        self.prefixes = None  # the cached keys and values, the largest thing the backend holds beside its weights

    def _free_memory(self) -> int:
        """The memory free at load time; the running batch's cap is a sixth of it, in positions of this model's
        keys and values: the batch is a padded rectangle whose buffer keeps half again as many columns to grow into,
        and a reallocation holds the old buffer beside the new one (a SmolLM2 eval capped at a third of 20 GB
        reached 13 GB). Taken once, at load: later the process's own batches would count against it. At most
        `PONDER_MEMORY_MB` MiB when that is set: several runs sharing a machine each size themselves by their share,
        not by all that is free when each starts."""
        free = torch.cuda.mem_get_info(torch.device(self.device))[0] if self.device.startswith("cuda") \
            else _available_memory()
        return min(free, memory_share())

    def _bytes_per_position(self) -> int:
        cfg = self.model.config
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return 2 * cfg.num_hidden_layers * heads * head_dim * 4  # keys and values, float32

    def admit(self, requests: list[Request]) -> list[int | Exception]:
        out: list[int | Exception] = []
        new: list[int] = []
        for request in requests:
            ids = prompt_ids(self.encode, request.prompt, self.max_positions, self.name)
            if isinstance(ids, Exception):
                out.append(ids)
                continue
            key = next(self._next_key)
            uniforms, group = draws(request, self._rng)
            self._live[key] = _Live(request, list(ids), None if uniforms is None else uniforms.tolist(), group)
            out.append(key)
            new.append(key)
        if new:
            try:
                with torch.inference_mode():
                    self._prefill(new)
            except BaseException:  # a failed prefill leaves nothing behind: the running rows go on as they were
                self.drop(new)
                raise
        return out

    @torch.inference_mode()
    def next_token_logits(self, prompts: list[str]) -> torch.Tensor:
        """[prompts, vocabulary]: the model's logits for the token after each prompt, cached prefixes reused (and
        the prompts cached in turn). The prompts go by length, in passes of at most `pass_positions` padded
        positions: a pass holds its rows' cached keys and values twice (gathered, then grown), and 64 of a MATH
        judge's 1,500-token questions in one pass took 10 GB."""
        ids = [self.encode(p) for p in prompts]
        out: list[torch.Tensor | None] = [None] * len(ids)
        with self.lock:
            for group in _passes(ids, self.pass_positions):
                rows = self._forward([ids[i] for i in group], [self._cached(ids[i][:-1], None) for i in group],
                                     keys=None, store=self.prefixes)
                for i, logits in zip(group, rows.logits):
                    out[i] = logits
                if self.prefixes is not None:
                    self.prefixes.evict()
        return torch.stack(out)  # type: ignore[arg-type]

    def chat_prompt(self, messages: list[Message]) -> str | None:
        if not getattr(self.tokenizer, "chat_template", None):
            return None
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def drop(self, keys: Iterable[int]) -> None:
        gone = {k for k in keys if self._live.pop(k, None) is not None}
        if gone and self._rows is not None:
            self._select([b for b, o in enumerate(self._rows.owner) if o not in gone])

    # -- prefill -------------------------------------------------------------------------------------------------

    def _prefill(self, keys: list[int]) -> None:
        """One row per new request (a group's beams branch from it later), its prompt read from the prefix cache
        as far as it is cached, the rest computed; the rows then join the running batch."""
        prompts = [self._live[k].prompt for k in keys]
        local = None
        if self.prefixes is not None:  # prompts of this admission that share a prefix compute it once
            shared = [(p, hit) for p in _shared_prefixes(prompts) for hit in [self._cached(p, None)] if hit[0] < len(p)]
            if shared:
                local = PrefixCache(budget_bytes=2**62)
                self._forward([p for p, _ in shared], [hit for _, hit in shared], keys=None, store=local)
        hits = [self._cached(p[:-1], local) for p in prompts]  # at least the last token is computed: its logits
        rows = self._forward(prompts, hits, keys=keys, store=self.prefixes)
        self._merge(rows)
        if self.prefixes is not None:
            self.prefixes.evict()

    def _cached(self, ids: list[int], local: PrefixCache | None) -> tuple[int, KV]:
        if self.prefixes is None:
            return 0, []
        best = self.prefixes.match(ids)
        if local is not None:
            other = local.match(ids)
            best = other if other[0] > best[0] else best
        return best

    def _forward(self, prompts: list[list[int]], hits: list[tuple[int, KV]], keys: list[int] | None,
                 store: PrefixCache | None) -> _Rows:
        """Prefill `prompts` whose first `hits[i][0]` tokens come with cached keys and values; each prompt's keys
        and values go into `store`. `keys`: the requests the rows belong to, charged the time and cached tokens."""
        start = time.perf_counter()
        ids, mask, positions, past = prefill_inputs(prompts, hits, self.pad)
        layers = [(k.to(self.device), v.to(self.device)) for k, v in past]
        n = len(prompts)
        cache = new_cache(layers, grow=self.grow_in_place)
        mask = mask.to(self.device)
        logits = self._timed_forward(input_ids=ids.to(self.device), attention_mask=mask,
                                     position_ids=positions.to(self.device), use_cache=True,
                                     **{self._cache_arg: cache}, **self._extra)
        rows = _Rows(cache, mask, torch.tensor([len(p) for p in prompts], device=self.device), logits, list(keys or []),
                     [[] for _ in prompts], [0.0] * n, [False] * n)
        if store is not None:
            seen: set[tuple[int, ...]] = set()
            for j, prompt in enumerate(prompts):
                if tuple(prompt) not in seen:
                    seen.add(tuple(prompt))
                    store.insert(prompt, self._row_kv(rows, j))
        if keys is not None:
            computed = [len(p) - c for p, (c, _) in zip(prompts, hits)]
            seconds = time.perf_counter() - start
            for key, (c, _), work in zip(keys, hits, computed):
                self._live[key].cached = c
                self._live[key].seconds += seconds * work / sum(computed)
        return rows

    def _timed_forward(self, **inputs: Any) -> torch.Tensor:
        """The last position's logits, on the device (on the host with `sample_on_host`); the pass's time goes to
        `forward_seconds`."""
        with self._clock:
            logits = self.model(**inputs).logits[:, -1].float().contiguous()  # (not a view holding every position)
        return logits.cpu() if self.sample_on_host else logits

    def _row_kv(self, rows: _Rows, j: int) -> KV:
        return row_kv(rows.cache, rows.mask, j)

    # -- the running batch -----------------------------------------------------------------------------------------

    def _merge(self, new: _Rows) -> None:
        """Add new rows to the running batch; the narrower cache is padded on the left."""
        old = self._rows
        if old is None or not len(old):
            self._rows = new
            return
        width = max(old.mask.shape[1], new.mask.shape[1])
        cache = concat_rows(old.cache, new.cache)
        mask = torch.cat([left_pad(old.mask, width), left_pad(new.mask, width)])
        self._rows = _Rows(cache, mask, torch.cat([old.pos, new.pos]), torch.cat([old.logits, new.logits]),
                           old.owner + new.owner, old.outs + new.outs, old.logp + new.logp, old.dead + new.dead)

    def _select(self, keep: list[int]) -> None:
        """Keep these rows (in this order), and drop the columns no row reads any more."""
        rows = self._rows
        assert rows is not None
        if keep == list(range(len(rows))):
            return
        if not keep:
            self._rows = None
            return
        index = torch.tensor(keep, device=self.device)
        rows.cache.batch_select_indices(index)
        rows.mask, rows.pos, rows.logits = rows.mask[index], rows.pos[index], rows.logits[index.to(rows.logits.device)]
        rows.owner = [rows.owner[b] for b in keep]
        rows.outs = [rows.outs[b] for b in keep]
        rows.logp = [rows.logp[b] for b in keep]
        rows.dead = [rows.dead[b] for b in keep]
        used = rows.mask.any(0)
        if int(used.sum()) < 0.75 * used.numel():  # late joiners and finished rows leave unread columns
            cols = used.nonzero().squeeze(-1)
            rows.mask = rows.mask[:, cols]
            for layer in rows.cache.layers:
                layer.keep_columns(cols)

    def step(self) -> dict[int, list[Completion]]:
        try:
            return self._step()
        except BaseException:  # the rows may be half-updated: every request is forgotten (the engine fails them)
            self._live.clear()
            self._rows = None
            raise

    @torch.inference_mode()
    def _step(self) -> dict[int, list[Completion]]:
        rows = self._rows
        if rows is None:
            return {}
        start = time.perf_counter()
        finished: dict[int, list[Completion]] = {}
        live = self._live
        sampled = [b for b, k in enumerate(rows.owner) if not rows.dead[b] and live[k].group is None]
        nxt: dict[int, int] = {}  # the next token of each sample row that goes on
        if sampled:
            lvs = [live[rows.owner[b]] for b in sampled]
            params = [lv.request.params for lv in lvs]
            logits = rows.logits if len(sampled) == len(rows) else rows.logits[sampled]
            u = torch.tensor([lv.uniforms[min(len(rows.outs[b]), len(lv.uniforms) - 1)]
                              for b, lv in zip(sampled, lvs) if lv.uniforms is not None], dtype=torch.float64)
            tokens = sample(logits, Knobs.of(params, logits.device), u.to(logits.device))
            picked = self._read_back(logits, tokens, {p.stop for p in params})
            for b, lv, token, gain, may_stop in zip(sampled, lvs, *picked):
                key = rows.owner[b]
                out = rows.outs[b]
                out.append(token)
                rows.logp[b] += gain  # for each completion's log-probability (a policy's prior in MCTS)
                reason = self._finished(out, lv, may_stop)
                if reason is None:
                    nxt[b] = token
                else:
                    rows.dead[b] = True
                    self._remember(rows, b, out)
                    finished[key] = [self._complete(out, rows.logp[b], lv, reason, cached=lv.cached)]
        beams: list[tuple[int, list[int], float]] = []  # (parent row, tokens, log-probability) of the next beams
        for key in dict.fromkeys(k for b, k in enumerate(rows.owner) if not rows.dead[b] and live[k].group is not None):
            lv = live[key]
            group = lv.group
            assert group is not None
            members = [b for b, o in enumerate(rows.owner) if o == key]
            p = lv.request.params  # temperature 0: beam search on the model's own log-probabilities
            logits = rows.logits[members]
            scaled = truncate(logits.double() / (p.temperature or 1.0), Knobs.of([p], logits.device))
            chosen = group.step(scaled.log_softmax(-1), noisy=p.temperature > 0)
            parents = [parent for parent, _ in chosen]
            picked = self._read_back(logits[parents], torch.tensor([t for _, t in chosen], device=logits.device),
                                     {p.stop}) if chosen else ([], [], [])
            outcomes = []
            for parent, token, gain, may_stop in zip(parents, *picked):
                b = members[parent]
                out, logp = [*rows.outs[b], token], rows.logp[b] + gain
                reason = self._finished(out, lv, may_stop)
                outcomes.append(((out, logp), reason))
                if reason is None:
                    beams.append((b, out, logp))
                else:
                    self._remember(rows, b, out)
            group.advance(outcomes)
            if group.done:  # the first drawn computed the prompt; the others shared it
                for b in members:
                    rows.dead[b] = True
                finished[key] = [self._complete(out, logp, lv, reason, cached=lv.cached if i == 0 else len(lv.prompt))
                                 for i, ((out, logp), reason) in enumerate(group.completions())]
        # Dead sample rows stay in the cache until a quarter of it is dead (copying the cache at every finish would
        # cost more than the rows it saves); beams always need their parents' rows.
        n_dead = sum(rows.dead)
        if beams or n_dead >= max(1, len(rows) // 4):
            outs = [*(rows.outs[b] for b in nxt), *(out for _, out, _ in beams)]
            logp = [*(rows.logp[b] for b in nxt), *(lp for _, _, lp in beams)]
            self._select([*nxt, *(b for b, _, _ in beams)])
            rows = self._rows
            if rows is not None:
                rows.outs, rows.logp = outs, logp
        if rows is None:
            self._charge(finished, start, [])
            return finished
        tokens = [out[-1] if out and not dead else 0 for out, dead in zip(rows.outs, rows.dead)]
        rows.mask = torch.cat([rows.mask, rows.mask.new_ones((len(rows), 1))], dim=1)
        rows.logits = self._timed_forward(input_ids=torch.tensor(tokens)[:, None].to(self.device),
                                          attention_mask=rows.mask, position_ids=rows.pos[:, None], use_cache=True,
                                          **{self._cache_arg: rows.cache})
        rows.pos = rows.pos + 1
        self._charge(finished, start, [rows.owner[b] for b in range(len(rows)) if not rows.dead[b]])
        return finished

    def _read_back(self, logits: torch.Tensor, tokens: torch.Tensor,
                   stops: set[tuple[str, ...]]) -> tuple[list[int], list[float], list[bool]]:
        """The chosen tokens of these rows, their log-probabilities under the model (temperature 1, nothing
        truncated) and whether the row may have stopped with them (an end-of-sequence token, or one that can end
        one of `stops`: `stop_candidates`), in one copy from the device."""
        gains = logits.log_softmax(-1).gather(-1, tokens[:, None]).squeeze(-1)
        picked = [tokens.double(), gains.double()]
        if not self.sample_on_host:
            picked.append(self._stop_table(frozenset(s for group in stops for s in group), logits.shape[-1],
                                           logits.device)[tokens].double())
        values = torch.stack(picked).tolist()
        flags = [bool(f) for f in values[2]] if len(values) > 2 else [True] * len(values[0])
        return [int(t) for t in values[0]], values[1], flags

    def _stop_table(self, stops: frozenset[str], width: int, device: torch.device) -> torch.Tensor:
        """[vocabulary] booleans on the device: the end-of-sequence tokens and the tokens that can end one of
        `stops` (`stop_candidates`), made once per set of stop strings."""
        table = self._stop_tables.get(stops)
        if table is None:
            if self._texts is None:  # what each token adds after a text, read by decoding it after another token
                anchor = self.encode("a")
                base = self.tokenizer.decode(anchor, skip_special_tokens=True)
                decoded = self.tokenizer.batch_decode([[*anchor, t] for t in range(min(width, len(self.tokenizer)))],
                                                      skip_special_tokens=True)
                self._texts = [d[len(base):] if d.startswith(base) else "" for d in decoded]
            texts = self._texts + [""] * (width - len(self._texts))  # ids the tokenizer lacks: candidates
            flags = stop_candidates(texts, stops) if stops else [False] * width
            for t in self.eos:
                if t < width:
                    flags[t] = True
            table = self._stop_tables[stops] = torch.tensor(flags, device=device)
        return table

    def _charge(self, finished: dict[int, list[Completion]], start: float, going: list[int]) -> None:
        """Split the step's time among the rows that decoded; forget finished requests."""
        share_time(self._live, finished, time.perf_counter() - start, going)
        if self._rows is not None and not any(k in self._live for k in self._rows.owner):
            self._rows = None

    def _remember(self, rows: _Rows, b: int, out: list[int]) -> None:
        """Cache what a finished row read (its prompt and all but its last token): the next step of a search
        extends exactly this text."""
        if self.prefixes is not None and len(out) > 1:
            self.prefixes.insert(self._live[rows.owner[b]].prompt + out[:-1], self._row_kv(rows, b))
            self.prefixes.evict()

    def _finished(self, out: list[int], lv: _Live, may_stop: bool) -> str | None:
        return finish_reason(out, lv.request.params, self.eos,
                             lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True),
                             self.max_positions - len(lv.prompt), may_stop)

    def _complete(self, out: list[int], logprob: float, lv: _Live, reason: str, cached: int) -> Completion:
        return completion(self.tokenizer.decode(out, skip_special_tokens=True), len(out), len(lv.prompt),
                          lv.request.params.stop, reason, cached, logprob)


class _ForwardClock:
    """Time in the model's forward passes: wall time on the CPU; on CUDA, events recorded around each pass and read
    once they have run (timing a pass on the host would make the host wait for it)."""

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.done = 0.0
        self._started = 0.0
        self._pending: list[tuple[Any, Any]] = []  # (start, end) events of passes not yet read

    def __enter__(self) -> None:
        if self.cuda:
            self._pending.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
            self._pending[-1][0].record(torch.cuda.current_stream(self.device))
        else:
            self._started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        if not self.cuda:
            self.done += time.perf_counter() - self._started
            return
        self._pending[-1][1].record(torch.cuda.current_stream(self.device))
        while self._pending and self._pending[0][1].query():  # read the passes that have run, without waiting
            self._read()

    def _read(self) -> None:
        start, end = self._pending.pop(0)
        end.synchronize()
        self.done += start.elapsed_time(end) / 1000

    @property
    def seconds(self) -> float:
        while self._pending:
            self._read()
        return self.done


def memory_share() -> int:
    """`PONDER_MEMORY_MB` in bytes (a positive number of MiB), or no limit when unset."""
    raw = os.environ.get(MEMORY_ENV, "")
    if not raw:
        return 2**62
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb > 0:
        raise ConfigError(f"{MEMORY_ENV}={raw!r}: give the MiB of memory this process's engines may size themselves "
                          "by, a positive number")
    return int(mb * 2**20)


def _available_memory() -> int:
    """Bytes the system can give without swapping: MemAvailable on Linux, the free pages elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _shared_prefixes(prompts: list[list[int]]) -> list[list[int]]:
    """The longest prefixes that two or more prompts share (each shorter than its prompts), once each: computed
    once, they serve every prompt that starts with them."""
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    best = [0] * len(prompts)
    for a, b in itertools.pairwise(order):
        n = common_length(prompts[a], prompts[b])
        best[a], best[b] = max(best[a], n), max(best[b], n)
    found = {tuple(prompts[i][: min(best[i], len(prompts[i]) - 1)]) for i in range(len(prompts))}
    return [list(p) for p in sorted(found) if len(p) > 1]


class Direct(OnBackend):
    """A backend used without the engine: each `generate` call is its own batch."""

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        return self.backend.generate_many(requests)
