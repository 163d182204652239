"""Few-row products on a CPU with the weight packed once into oneDNN's blocked layout.

A verification call multiplies a handful of rows of activations by every large weight of the target (and its
output head). On some CPUs the BLAS behind `F.linear` runs those few-row products far below the machine's speed,
while oneDNN's product on a weight packed once for it runs them 2-4x faster (which products: the rule
`matmul_order.packed_rows`, by dtype, CPU and weight size). This is the product `torch.compile` emits for a
frozen linear layer on a CPU (inductor's mkldnn weight prepacking: `torch.ops.mkldnn._reorder_linear_weight` and
`torch.ops.mkldnn._linear_pointwise`), used here without compiling the model. Only the summation order differs
(float rounding). The packed copy costs the weight's memory once more; it is made on first use and made again
when the weight changes (its version, its storage, or 16 of its entries for edits through `.data`, which no
counter sees), and used only where no gradient is needed.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.weak import WeakIdKeyDictionary

_PACKED = WeakIdKeyDictionary()  # weight -> ((data_ptr, version), sampled entries, their sum, packed weight)
_USABLE: dict[torch.dtype, bool] = {}
PACK_HINT = 16  # the row count oneDNN's layout is chosen for; any count runs on it


def usable(dtype: torch.dtype) -> bool:
    """Whether this torch build and CPU run oneDNN's packed product in `dtype` (tried once per dtype on a small
    weight: bfloat16 needs AVX-512 or AVX-NE-CONVERT, and a build may lack oneDNN)."""
    if dtype not in _USABLE:
        try:
            w, x = torch.ones(8, 8, dtype=dtype), torch.ones(2, 8, dtype=dtype)
            y = torch.ops.mkldnn._linear_pointwise(x, torch.ops.mkldnn._reorder_linear_weight(w, PACK_HINT), None,
                                                   "none", [], "")
            _USABLE[dtype] = bool(torch.equal(y, x @ w.T))
        except (RuntimeError, AttributeError, NotImplementedError):
            _USABLE[dtype] = False
    return _USABLE[dtype]


def needs_grad(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether autograd would track this product (the packed product is for inference only)."""
    return torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)


_BITS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _sampled_entries(weight: torch.Tensor):
    """A view sharing the weight's memory of 16 entries spread over it, as integers (their bits), or None for a
    weight that is not contiguous: reading it costs a few µs, where summing the entries with torch ops cost ~20 µs."""
    if not weight.is_contiguous() or weight.element_size() not in _BITS:
        return None
    flat = weight.detach().view(-1).view(_BITS[weight.element_size()]).numpy()
    return flat, np.arange(0, flat.size, max(1, flat.size // 16))[:16]


def _sample_sum(weight: torch.Tensor, sampled) -> int:
    """The sum of the sampled entries' bits (an edit through `.data` that changes one of them changes it)."""
    if sampled is None:
        flat = weight.detach().reshape(-1)
        return hash(tuple(flat[:: max(1, flat.numel() // 16)][:16].tolist()))
    flat, index = sampled
    return int(flat[index].astype(np.int64).sum())


def packed_weight(weight: torch.Tensor) -> torch.Tensor:
    """The weight [out, in] in oneDNN's layout for few-row products: made once, made again after the weight
    changed in place (its version counter), moved (its storage) or was edited through `.data`, which bypasses the
    version counter, in one of 16 entries spread over it (read through a view kept with the copy: ~5 µs a product).
    An edit through `.data` that misses those 16 entries goes unseen: `forget(weight)` then, or edit in place
    without `.data` (`with torch.no_grad(): weight.copy_(...)`, which the version counter sees)."""
    key = (weight.data_ptr(), weight._version)
    hit = _PACKED.get(weight)
    if hit is None or hit[0] != key or _sample_sum(weight, hit[1]) != hit[2]:
        sampled = _sampled_entries(weight)
        hit = (key, sampled, _sample_sum(weight, sampled),
               torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_HINT))
        _PACKED[weight] = hit
    return hit[3]


def forget(weight: torch.Tensor) -> None:
    """Drop the packed copy of `weight` (the next product packs it again)."""
    _PACKED.pop(weight, None)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., in] @ weight.T (+ bias) → [..., out] with the packed weight: the value of `F.linear(x, weight,
    bias)` up to float rounding. For CPU tensors of a dtype `usable` accepts, outside autograd."""
    y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), packed_weight(weight), bias, "none", [], "")
    return y.reshape(*x.shape[:-1], weight.shape[0])
