"""Few-row products on a CPU with the weight packed once into oneDNN's blocked layout.

A verification call multiplies a handful of rows of activations by every large weight of the target (and its
output head). On some CPUs the BLAS behind `F.linear` runs those few-row products far below the machine's speed,
while oneDNN's product on a weight packed once for it runs them 2-4x faster (which products: the rule
`matmul_order.packed_rows`, by dtype, CPU and weight size). This is the product `torch.compile` emits for a
frozen linear layer on a CPU (inductor's mkldnn weight prepacking: `torch.ops.mkldnn._reorder_linear_weight` and
`torch.ops.mkldnn._linear_pointwise`), used here without compiling the model. Only the summation order differs
(float rounding). The packed copy costs the weight's memory once more; it is made on first use and made again
when the weight changes (its version or storage; an edit through `.data`, which no counter sees, at the next
`revalidate`, which every generation calls first), and used only where no gradient is needed.
"""
from __future__ import annotations

import torch
from torch.utils.weak import WeakIdKeyDictionary

_PACKED = WeakIdKeyDictionary()  # weight -> ((data_ptr, version), fingerprint, packed weight)
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


def _fingerprint(weight: torch.Tensor) -> float:
    """A sum of 16 entries spread over the weight: changes that bypass its version counter (edits through `.data`,
    a dtype round trip that lands on the same address) change it."""
    flat = weight.detach().reshape(-1)
    return float(flat[:: max(1, flat.numel() // 16)][:16].sum())


def packed_weight(weight: torch.Tensor) -> torch.Tensor:
    """The weight [out, in] in oneDNN's layout for few-row products: made once, made again after the weight
    changed in place (its version counter) or moved (kept while the weight lives). A product checks only those two
    (a few attribute reads: a verification call runs ~150 products); an edit through `.data`, which bypasses the
    version counter, is seen by `revalidate` (16 entries of each weight), or dropped by `forget(weight)`."""
    key = (weight.data_ptr(), weight._version)
    hit = _PACKED.get(weight)
    if hit is None or hit[0] != key:
        hit = (key, _fingerprint(weight), torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_HINT))
        _PACKED[weight] = hit
    return hit[2]


def revalidate() -> int:
    """Drop the packed copies of weights edited through `.data` since they were packed (16 of their entries
    changed; an edit that misses those 16 needs `forget`); returns how many. Generation calls it first (~20 µs a
    weight), so edits between generations are always seen; products within a call trust their copies."""
    stale = [weight for weight, (_, fingerprint, _) in list(_PACKED.items()) if _fingerprint(weight) != fingerprint]
    for weight in stale:
        _PACKED.pop(weight, None)
    return len(stale)


def forget(weight: torch.Tensor) -> None:
    """Drop the packed copy of `weight` (the next product packs it again)."""
    _PACKED.pop(weight, None)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., in] @ weight.T (+ bias) → [..., out] with the packed weight: the value of `F.linear(x, weight,
    bias)` up to float rounding. For CPU tensors of a dtype `usable` accepts, outside autograd."""
    y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), packed_weight(weight), bias, "none", [], "")
    return y.reshape(*x.shape[:-1], weight.shape[0])
