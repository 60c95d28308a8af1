"""The running batch's key-value cache: rows of keys and values that grow in place.

transformers' `DynamicLayer` concatenates the whole cache with each new token, so every decoding step copies
every row's keys and values (a fifth of a step's time on the tiny policies). `Growing` writes the new token into
spare capacity instead and grows by half when it is full; `batch_select_indices` and `keep_columns` compact it.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class Growing(DynamicLayer):
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object,
               **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.device, self.is_initialized, self.length = key_states.device, True, 0
            self._k = key_states.new_empty((*key_states.shape[:2], 0, key_states.shape[3]))
            self._v = value_states.new_empty((*value_states.shape[:2], 0, value_states.shape[3]))
        need = self.length + key_states.shape[2]
        if need > self._k.shape[2]:
            capacity = max(need + 16, self._k.shape[2] * 3 // 2)
            self._k, self._v = (_widen(t, self.length, capacity) for t in (self._k, self._v))
        self._k[:, :, self.length : need] = key_states
        self._v[:, :, self.length : need] = value_states
        self.length = need
        return self._views()

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._k, self._v = self._k[indices], self._v[indices]
            self._views()

    def keep_columns(self, columns: torch.Tensor) -> None:
        """Keep only these positions (the columns no row reads any more are dropped)."""
        self._k = self._k[:, :, : self.length].index_select(2, columns)
        self._v = self._v[:, :, : self.length].index_select(2, columns)
        self.length = len(columns)
        self._views()


class Concatenating(Growing):
    """transformers' `DynamicLayer` way, the whole cache copied with every token: step 1's decoding loop, kept to
    measure against (`HFBackend(grow_in_place=False)`)."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object,
               **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            return super().update(key_states, value_states)
        self._k = torch.cat([self._k[:, :, : self.length], key_states], dim=2)
        self._v = torch.cat([self._v[:, :, : self.length], value_states], dim=2)
        self.length = self._k.shape[2]
        return self._views()


def _widen(t: torch.Tensor, length: int, capacity: int) -> torch.Tensor:
    out = t.new_empty((*t.shape[:2], capacity, t.shape[3]))
    out[:, :, :length] = t[:, :, :length]
    return out


def new_cache(layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None, grow: bool = True) -> DynamicCache:
    """A cache of `Growing` (or `Concatenating`) layers, filled with the given [rows, heads, columns, head_dim] keys
    and values."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = Growing if grow else Concatenating
    for i, (k, v) in enumerate(layers or []):
        cache.update(k, v, i)
    return cache


def left_pad(t: torch.Tensor, width: int) -> torch.Tensor:
    """Pad the column axis (dim 1 of a mask, dim 2 of keys/values) on the left with zeros up to `width`."""
    axis = 1 if t.dim() == 2 else 2
    missing = width - t.shape[axis]
    if not missing:
        return t
    shape = list(t.shape)
    shape[axis] = missing
    return torch.cat([t.new_zeros(shape), t], dim=axis)


def concat_rows(a: DynamicCache, b: DynamicCache, width: int, spare: int = 16) -> DynamicCache:
    """The rows of `a` then those of `b`, each left-padded to `width` columns, copied once into new buffers with
    `spare` columns to grow into."""
    cache = new_cache()
    for x, y in zip(a.layers, b.layers):
        layer = Growing()
        layer.device, layer.is_initialized, layer.length = x.keys.device, True, width
        for name in ("_k", "_v"):
            xs, ys = getattr(x, name)[:, :, : x.length], getattr(y, name)[:, :, : y.length]
            buffer = xs.new_zeros((xs.shape[0] + ys.shape[0], xs.shape[1], width + spare, xs.shape[3]))
            buffer[: xs.shape[0], :, width - xs.shape[2] : width] = xs
            buffer[xs.shape[0] :, :, width - ys.shape[2] : width] = ys
            setattr(layer, name, buffer)
        layer._views()
        cache.layers.append(layer)
    return cache
