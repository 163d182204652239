"""Sampled verification: keep a draft only if it is the target's own sample (the simple lossless rule engines use).

The target draws its token y ~ p as if there were no drafts; a draft equal to y is kept, so the output is y and
its law is p whatever the drafts' law (no ratio p/q is read: q may be unknown, as for a draft that gives no
probabilities). Written as a rule over k drafts tried in order, the draft i that is new (not an earlier draft)
passes with probability p(d_i) / (mass of p not on earlier drafts), a repeated draft never, and after every
draft failed the residual is p off the drafts, renormalised. With k i.i.d. drafts the acceptance is
Σ_y p(y)·(1 − (1 − q(y))^k) (Σ p·q for one draft), never above Σ min(p, q) for one draft nor α* for k.

It is recursive rejection sampling (RRS) with every draft's q taken one-hot: the verification with sampling of
Lookahead decoding (Fu et al., ICML 2024), whose n-gram drafts carry no probabilities, and what engines do for a
draft that proposes tokens only. Against speculative sampling's Σ min(p, q) for one draft: Leviathan et al. 2023.
"""
from __future__ import annotations

import torch

from .dists import check_pair, normalise


def sampled_pass(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor):
    """Pass probabilities [B, k] of drafts [B, k] in trial order under sampled verification, and a function
    returning the residual [B, V] (p with every draft's token removed, renormalised). p, q: [B, V] (q unused)."""
    B, k = drafts.shape
    drafted = torch.zeros(B, k, p.shape[-1], dtype=torch.bool, device=p.device).scatter_(-1, drafts[..., None], True)
    before = torch.nn.functional.pad(drafted.cumsum(1)[:, :-1], (0, 0, 1, 0)) > 0  # tokens drafted before trial i
    left = (p[:, None, :] * ~before).sum(-1)  # mass of p not on earlier drafts, as a sum (never 1 − drafted mass)
    repeat = before.gather(-1, drafts[..., None])[..., 0]
    a = torch.where(repeat, torch.zeros_like(left), p.gather(-1, drafts) / left.clamp_min(1e-300)).clamp(max=1.0)
    return a, lambda: normalise(p.masked_fill(drafted.any(1), 0.0), p)


def sampled_first_pass_row(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, u: torch.Tensor):
    """Sampled verification for one row (p, q [V] float64 on the CPU, drafts [k], uniforms [k]): the index of
    the first passing draft (U·left < p(d), the same decisions as `sampled_pass`) or −1, and residual() -> [V]."""
    off = torch.zeros_like(p, dtype=torch.bool)
    for i, x in enumerate(drafts.tolist()):
        if not off[x]:
            left = float(p.masked_fill(off, 0.0).sum()) if off.any() else float(p.sum())
            if float(u[i]) * left < float(p[x]):
                return i, None
            off[x] = True
    return -1, lambda: normalise(p.masked_fill(off, 0.0), p)


def sampled_acceptance(p, q, k: int):
    """Exact acceptance of sampled verification with k i.i.d. drafts from q, batched over [..., V]:
    Σ_y p(y)·(1 − (1 − q(y))^k). ValueError for invalid p, q or k (one integer ≥ 1)."""
    if isinstance(k, torch.Tensor):
        raise ValueError("sampled_acceptance takes one integer k (loop over k for several)")
    p, q = check_pair(p, q, k)
    acc = (p * (1 - (1 - q) ** int(k))).sum(-1)
    return float(acc) if acc.ndim == 0 else acc
