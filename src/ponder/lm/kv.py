"""The running batch's key-value cache: rows of keys and values that grow in place.

transformers' `DynamicLayer` concatenates the whole cache with each new token, so every decoding step copies
every row's keys and values (a fifth of a step's time on the tiny policies). `Growing` keeps one buffer per layer
with spare columns and spare rows: a step writes its token into a spare column, rows that join the batch are
written into spare rows (`append_rows`), and the buffer is reallocated, half again as large, only when it is full.
`batch_select_indices` and `keep_columns` compact it.

Only the columns a row's mask reads need defined values, but every column an attention reads must be finite
(a masked weight is exactly 0, and 0 times NaN is NaN), so the padding of joining rows is zeroed.
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ponder.lm.prefix_cache import KV


def _room(n: int) -> int:
    return n + n // 2 + 16


class Growing(DynamicLayer):
    rows = 0
    length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object,
               **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.device, self.is_initialized = key_states.device, True
            self.rows, self.length = key_states.shape[0], 0
            self._k = self._v = key_states.new_empty((self.rows, key_states.shape[1], 0, key_states.shape[3]))
        need = self.length + key_states.shape[2]
        if need > self._k.shape[2]:
            self._realloc(max(self.rows, self._k.shape[0]), _room(need))
        self._k[: self.rows, :, self.length : need] = key_states
        self._v[: self.rows, :, self.length : need] = value_states
        self.length = need
        return self._views()

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys = self._k[: self.rows, :, : self.length]
        self.values = self._v[: self.rows, :, : self.length]
        return self.keys, self.values

    def _realloc(self, rows: int, columns: int, shift: int = 0) -> None:
        """New buffers of `rows` x `columns`; the live rows are copied `shift` columns to the right (zeros left)."""
        for name in ("_k", "_v"):
            old = getattr(self, name)
            new = old.new_empty((rows, old.shape[1], columns, old.shape[3]))
            new[: self.rows, :, :shift] = 0
            new[: self.rows, :, shift : shift + self.length] = old[: self.rows, :, : self.length]
            setattr(self, name, new)
        self.length += shift

    def append_rows(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Rows that join the batch, right-aligned with the others (whichever is shorter is padded on the left)."""
        n, width = keys.shape[0], keys.shape[2]
        shift = max(0, width - self.length)
        if shift or self.rows + n > self._k.shape[0]:
            self._realloc(_room(self.rows + n), max(self._k.shape[2], _room(self.length + shift)), shift)
        pad = self.length - width
        for buffer, new in ((self._k, keys), (self._v, values)):
            buffer[self.rows : self.rows + n, :, :pad] = 0
            buffer[self.rows : self.rows + n, :, pad : self.length] = new
        self.rows += n
        self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            live = (self._k[: self.rows, :, : self.length], self._v[: self.rows, :, : self.length])
            n = len(indices)
            for name, old in zip(("_k", "_v"), live):
                new = old.new_empty((_room(n), old.shape[1], self._k.shape[2], old.shape[3]))
                torch.index_select(old, 0, indices, out=new[:n, :, : self.length])
                setattr(self, name, new)
            self.rows = n
            self._views()

    def keep_columns(self, columns: torch.Tensor) -> None:
        """Keep only these positions (the columns no row reads any more are dropped)."""
        for name in ("_k", "_v"):
            old = getattr(self, name)[: self.rows, :, : self.length]
            new = old.new_empty((self._k.shape[0], old.shape[1], _room(len(columns)), old.shape[3]))
            torch.index_select(old, 2, columns, out=new[: self.rows, :, : len(columns)])
            setattr(self, name, new)
        self.length = len(columns)
        self._views()


class Concatenating(Growing):
    """transformers' `DynamicLayer` way, the whole cache copied with every token: the simple decoding loop, kept to
    measure against (`HFBackend(grow_in_place=False)`)."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object,
               **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            return super().update(key_states, value_states)
        self._k = torch.cat([self._k[: self.rows, :, : self.length], key_states], dim=2)
        self._v = torch.cat([self._v[: self.rows, :, : self.length], value_states], dim=2)
        self.length = self._k.shape[2]
        return self._views()


def new_cache(layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None, grow: bool = True) -> DynamicCache:
    """A cache of `Growing` (or `Concatenating`) layers, filled with the given [rows, heads, columns, head_dim] keys
    and values."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = Growing if grow else Concatenating
    for i, (k, v) in enumerate(layers or []):
        cache.update(k, v, i)
    return cache


def left_pad(t: torch.Tensor, width: int) -> torch.Tensor:
    """Pad the column axis (dim 1 of a mask) on the left with zeros up to `width`."""
    missing = width - t.shape[1]
    return torch.cat([t.new_zeros((t.shape[0], missing)), t], dim=1) if missing else t


def concat_rows(a: DynamicCache, b: DynamicCache) -> DynamicCache:
    """`a` with the rows of `b` added (in `a`'s buffers where they have room), right-aligned."""
    for x, y in zip(a.layers, b.layers):
        x.append_rows(y.keys, y.values)
    return a


def prefill_inputs(prompts: list[list[int]], hits: list[tuple[int, KV]],
                   pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, KV]:
    """The inputs of one forward pass over `prompts` whose first `hits[i][0]` tokens come with cached keys and
    values (per layer [heads, tokens, head_dim], as `PrefixCache.match` gives them): (ids [n, width] of the
    uncached rest, left-padded; mask [n, past + width], with a hole where a row's cached prefix is shorter than the
    longest; positions [n, width]; the past keys and values per layer [n, heads, past, head_dim])."""
    past = max(c for c, _ in hits)
    width = max(len(p) - c for p, (c, _) in zip(prompts, hits))
    n = len(prompts)
    ids = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, past + width), dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    for j, (prompt, (c, _)) in enumerate(zip(prompts, hits)):
        rest = len(prompt) - c
        ids[j, width - rest :] = torch.tensor(prompt[c:])
        positions[j, width - rest :] = torch.arange(c, len(prompt))
        mask[j, past - c : past] = 1
        mask[j, past + width - rest :] = 1
    layers = []
    if past:
        for layer, (k0, _) in enumerate(next(kv for c, kv in hits if c)):
            keys = k0.new_zeros((n, k0.shape[0], past, k0.shape[2]))
            values = torch.zeros_like(keys)
            for j, (c, kv) in enumerate(hits):
                if c:
                    keys[j, :, past - c :] = kv[layer][0]
                    values[j, :, past - c :] = kv[layer][1]
            layers.append((keys, values))
    return ids, mask, positions, layers


def row_kv(cache: DynamicCache, mask: torch.Tensor, j: int) -> KV:
    """The keys and values row j of a batch reads, in order, on the CPU: [heads, tokens, head_dim] per layer."""
    cols = mask[j].nonzero().squeeze(-1).to(cache.layers[0].keys.device)
    return [(layer.keys[j].index_select(1, cols).cpu(), layer.values[j].index_select(1, cols).cpu())
            for layer in cache.layers]


def cache_argument(model: torch.nn.Module) -> str:
    """The name of the forward argument that takes a cache: transformers 5.x renamed `past_key_values` to
    `cache`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
