"""Small, version-tolerant helpers around Hugging Face KV caches (crop, keep rows, repeat rows, keep a tree's path),
dynamic ones and static, position-indexed ones (`new_static_cache`)."""
from __future__ import annotations

import inspect
from functools import lru_cache

import torch

from ..runtime import attention_backends


@lru_cache(maxsize=None)
def _cache_kwarg(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def forward(model: torch.nn.Module, ids: torch.Tensor, cache, **kw):
    """Run a causal LM on ids [B, T] on top of its cache (the keyword changed name across transformers versions),
    with the attention backends of `runtime.attention_backends`."""
    with attention_backends(ids.device):
        return model(ids, use_cache=True, **{_cache_kwarg(type(model)): cache}, **kw)


def new_cache():
    """An empty dynamic cache."""
    from transformers import DynamicCache

    return DynamicCache()


def new_static_cache(config, capacity: int):
    """An empty static cache (transformers' `StaticCache`) of `capacity` positions per layer, allocated on its
    first call: calls write their positions in place and a crop only moves its length (gpt-fast's layout)."""
    from transformers import StaticCache

    return StaticCache(config=config, max_cache_len=capacity)


def is_static(cache) -> bool:
    """Whether the cache is position-indexed (preallocated, written in place)."""
    return hasattr(cache, "max_cache_len") or any(hasattr(layer, "max_cache_len") for layer in getattr(cache, "layers", ()))


def capacity(cache) -> int:
    """Positions a static cache holds (its smallest layer's)."""
    return min(layer.max_cache_len for layer in cache.layers)


def grown(cache, config, new_capacity: int):
    """A static cache of `new_capacity` positions holding the same positions as `cache` (copied once)."""
    out = new_static_cache(config, new_capacity)
    n = int(cache.get_seq_length())
    for old, new in zip(cache.layers, out.layers):
        if getattr(old, "is_initialized", False):
            new.lazy_initialization(old.keys, old.values)
            new.keys[:, :, :n] = old.keys[:, :, :n]
            new.values[:, :, :n] = old.values[:, :, :n]
            new.cumulative_length.fill_(n)
    return out


def crop(cache, length: int) -> None:
    """Keep the first `length` positions (a negative count removes tokens in every transformers version)."""
    extra = int(cache.get_seq_length()) - length
    if extra > 0:
        cache.crop(-extra)


def keep_row(cache, row: int) -> None:
    """Keep one batch row of the cache."""
    cache.batch_select_indices(torch.tensor([row]))


def repeat_rows(cache, k: int) -> None:
    """Repeat a one-row cache k times (one row per draft)."""
    if k > 1:
        cache.batch_repeat_interleave(k)


def keep_path(cache, start: int, path: torch.Tensor) -> None:
    """Keep positions [0, start) and then the positions `path` (ascending, all ≥ start) of every layer: the
    accepted path through a token tree. The path is moved down in place; the context is not copied (a static
    cache keeps its tensors and moves its length back)."""
    end = start + len(path)
    static = is_static(cache)

    def moved(t: torch.Tensor) -> torch.Tensor:
        t[:, :, start:end] = t[:, :, path]  # the gather copies first, so overlapping ranges are safe
        return t if static else t[:, :, :end]  # a static cache keeps its tensors (its length moves below)

    layers = getattr(cache, "layers", None)
    if layers is not None:
        for layer in layers:
            if getattr(layer, "is_initialized", True):  # a static layer no call has written yet holds nothing
                layer.keys, layer.values = moved(layer.keys), moved(layer.values)
    else:  # older transformers keep per-layer lists
        for i in range(len(cache.key_cache)):
            cache.key_cache[i], cache.value_cache[i] = moved(cache.key_cache[i]), moved(cache.value_cache[i])
    if static:
        crop(cache, end)
