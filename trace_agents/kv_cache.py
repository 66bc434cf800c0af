"""The KV cache that :class:`trace_agents.policy.HFPolicy` keeps between turns and grows in place.

A multi-turn rollout re-sends the whole conversation every turn. ``HFPolicy`` keeps each
slot's cache (:class:`SlotCache`) and prefills only the new tokens; row groups prefilled
apart are merged right-aligned (:func:`merged_cache`), and every layer is a
:func:`roomy_layer` with spare positions, so decoding writes each token in place instead of
concatenating (``DynamicLayer.update`` copies the whole cache per token). transformers is
imported on first use: it is an optional extra.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class SlotCache:
    """One slot's KV cache between turns: per-layer (kv_heads, length, head_dim) tensors."""

    ids: list[int]
    adapter: str | None
    keys: list[Any]
    values: list[Any]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@functools.cache
def roomy_layer() -> type:
    """``RoomyLayer(keys, values, length, room)``: a ``DynamicLayer`` whose buffers hold ``length``
    entries and spare room after them (they grow by ``room`` when full).

    ``DynamicLayer.update`` concatenates, copying the whole cache at every decoded token;
    a layer with room writes each new entry into place instead. (Built on first use:
    transformers is an optional extra.)
    """
    from transformers.cache_utils import DynamicLayer

    class RoomyLayer(DynamicLayer):
        def __init__(self, keys: Any, values: Any, length: int, room: int) -> None:
            super().__init__()
            self.device, self.is_initialized, self.room = keys.device, True, room
            self._keys, self._values, self._length = keys, values, length
            self._view()

        def _grow(self, extra: int) -> None:
            def bigger(t: Any) -> Any:
                out = t.new_empty((*t.shape[:-2], t.shape[-2] + extra, t.shape[-1]))
                out[..., : self._length, :] = t[..., : self._length, :]
                return out

            self._keys, self._values = bigger(self._keys), bigger(self._values)
            self._view()

        def _view(self) -> None:
            self.keys = self._keys[..., : self._length, :]
            self.values = self._values[..., : self._length, :]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            n = key_states.shape[-2]
            if self._length + n > self._keys.shape[-2]:
                self._grow(max(n, self.room))
            self._keys[..., self._length : self._length + n, :] = key_states
            self._values[..., self._length : self._length + n, :] = value_states
            self._length += n
            self._view()
            return self.keys, self.values

        def batch_select_indices(self, indices: Any) -> None:
            indices = indices.to(self._keys.device)  # layers of a sharded model sit on several devices
            self._keys, self._values = self._keys[indices], self._values[indices]
            self._view()

    return RoomyLayer


def right_aligned(keys: list[Any], values: list[Any], width: int, room: int) -> Any:
    """A :func:`roomy_layer` layer from row blocks (``[rows, ..., length, dim]`` each, stacked in order).

    Each block is right-aligned at ``width``: positions before its start are zeros, masked
    out. ``room`` more positions follow, so decoding writes in place.
    """

    def stacked(blocks: list[Any]) -> Any:
        head = blocks[0]
        # Only the padding before each block is zeroed: the room after ``width`` is outside
        # the layer's view until decoding writes it.
        out = head.new_empty((sum(b.shape[0] for b in blocks), *head.shape[1:-2], width + room, head.shape[-1]))
        row = 0
        for b in blocks:
            start = width - b.shape[-2]
            out[row : row + b.shape[0], ..., :start, :] = 0
            out[row : row + b.shape[0], ..., start:width, :] = b
            row += b.shape[0]
        return out

    return roomy_layer()(stacked(keys), stacked(values), width, room)


def cache_of(layers: list[Any]) -> Any:
    """A ``DynamicCache`` holding ``layers``."""
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.layers = layers
    return cache


def merged_cache(parts: list[tuple[Any, Any]], room: int) -> tuple[Any, Any]:
    """One cache and mask from the ``(cache, mask)`` of row groups prefilled apart, with room to grow.

    Each group's rows are right-aligned in the merged layout (positions before a row's
    own start are masked out), and every layer gets room for ``room`` more tokens, so
    decoding writes in place (one copy per call, not one per token).
    """
    import torch
    from transformers.cache_utils import DynamicLayer

    roomy = roomy_layer()
    if len(parts) == 1 and all(isinstance(layer, roomy) for layer in parts[0][0].layers):
        return parts[0]  # built with room by HFPolicy._batched_past
    width = max(mask.shape[1] for _, mask in parts)
    mask = torch.cat([torch.nn.functional.pad(m, (width - m.shape[1], 0)) for _, m in parts])
    layers = []
    for depth in range(len(parts[0][0].layers)):
        group = [cache.layers[depth] for cache, _ in parts]
        if any(type(layer) not in (DynamicLayer, roomy) for layer in group):  # sliding windows, ...: as built
            if len(parts) > 1:
                raise ValueError("row groups can only be merged for full-attention caches")
            layers.append(group[0])
        else:
            layers.append(right_aligned([la.keys for la in group], [la.values for la in group], width, room))
    return cache_of(layers), mask


def row_order(live: list[int], device: Any) -> Any:
    """Batch positions sorted by row index, as a tensor; None when the batch is already in row order."""
    import torch

    order = sorted(range(len(live)), key=live.__getitem__)
    return None if order == list(range(len(live))) else torch.tensor(order, device=device)


def prefill_groups(lengths: list[int], overhead: int = 64) -> list[list[int]]:
    """Rows split in at most two groups by how many new tokens they prefill, when that saves work.

    A batch prefills as wide as its longest row: one tool result of 300 tokens would pad
    every other row to 300. Splitting off the long rows costs one more forward pass,
    counted as ``overhead`` token positions.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    n, longest = len(order), lengths[order[-1]] if order else 0
    best, cut = n * longest, n
    for k in range(1, n):
        cost = k * lengths[order[k - 1]] + (n - k) * longest + overhead
        if cost < best:
            best, cut = cost, k
    return [sorted(order[:cut]), sorted(order[cut:])] if cut < n else [list(range(n))]
