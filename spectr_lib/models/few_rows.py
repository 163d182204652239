"""The models' linear layers with a few rows multiplied in the order a CPU's BLAS runs fastest.

A verification call scores a handful of positions, so every linear layer of the target multiplies a few rows
of activations by a large weight. On some CPUs the BLAS product with those few rows on the left is much slower
than the same work with them on the right, (W @ x.T).T: on a 2-core AVX2 CPU, a target call scoring 2-4
positions took 0.76-0.81x the time transposed (`matmul_order.body_transposed_rows`), and oneDNN's product on a
packed weight (models/packed.py, `matmul_order.packed_rows`) is faster still for the large weights. Only the
summation order differs (float rounding), as in the output head's `matmul_order.head_matmul`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import packed
from .matmul_order import body_transposed_rows, transposed_matmul, uses_packed


class FewRowsLinear(torch.nn.Linear):
    """`nn.Linear` whose forward, for x [..., in] with a few rows on a CPU, runs on oneDNN's packed weight (which
    counts and weights: `matmul_order.packed_rows`) or computes (W @ x.T).T + b (`matmul_order.body_transposed_rows`);
    everywhere else it is `F.linear(x, W, b)`.
    Made from an existing `nn.Linear` in place by `use_few_rows_order` (same parameters, hooks and ties)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = input
        if x.device.type != "cpu" or x.dim() < 2:
            return F.linear(x, self.weight, self.bias)
        if uses_packed(x, self.weight):
            return packed.linear(x, self.weight, self.bias)
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        span = body_transposed_rows(x.dtype)
        if span is None or not span[0] <= rows <= span[1]:
            return F.linear(x, self.weight, self.bias)
        y = transposed_matmul(x, self.weight)
        return y + self.bias if self.bias is not None else y


def use_few_rows_order(model: torch.nn.Module) -> int:
    """Turn every plain `nn.Linear` of a model on a CPU (not its subclasses, e.g. quantized layers) into a
    `FewRowsLinear`, in place; returns how many. A model with parameters off the CPU is left as it is (0). Where
    the rule is off the layers run `F.linear` as before."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        return 0
    n = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = FewRowsLinear
            n += 1
    return n
