"""Block verification of one draft (Sun, Mendlovic, Leviathan, Aharoni, Beirami, Ro, Suresh, "Block Verification
Accelerates Speculative Decoding", ICLR 2025, arXiv 2403.10444, Algorithm 2).

Same inputs as token-level speculative sampling with one draft X_1..X_γ ~ q, but the block is decided jointly:

    w_0 = 1,  w_i = min(1, w_{i−1} · p(X_i | X_<i) / q(X_i | X_<i))                 prefix weights
    r_i = Σ_x max(0, w_i · p(x | X_≤i) − q(x | X_≤i)),  h_i = r_i / (r_i + 1 − w_i)   (h_i = 1 if 0/0), h_γ = w_γ
    τ = the largest i with η_i < h_i (η_i ~ U[0, 1) independent; τ = 0 when none)
    emit X_1..X_τ, then Y ~ p(· | X_≤γ) if τ = γ, else Y ∝ max(0, w_τ · p(· | X_≤τ) − q(· | X_≤τ))

The output has exactly the target's law, and the expected number of accepted tokens is never below the
token-level rule's (the paper's Theorem 2).
"""
from __future__ import annotations

import torch

from .dists import as_tensor, check_drafts, check_pair, normalise, sample_rows


def block_weights(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefix weights w [γ + 1] (w_0 = 1) and the probabilities h [γ] that the block is cut after position i,
    for p [γ + 1, V] (target at every prefix), q [γ, V] (draft at every prefix) and drafts [γ]."""
    gamma = len(drafts)
    ratio = p[:gamma].gather(-1, drafts[:, None])[:, 0] / q.gather(-1, drafts[:, None])[:, 0]
    w = [torch.ones((), dtype=p.dtype, device=p.device)]
    for i in range(gamma):
        w.append(torch.clamp(w[-1] * ratio[i], max=1.0))
    w = torch.stack(w)
    r = (w[1:gamma, None] * p[1:gamma] - q[1:gamma]).clamp_min(0).sum(-1)  # r_i for i = 1..γ−1
    denom = r + 1 - w[1:gamma]
    h = torch.where(denom > 0, r / denom.clamp_min(1e-300), torch.ones_like(r))
    return w, torch.cat([h, w[gamma:]])


def block_residual(p: torch.Tensor, q: torch.Tensor, w: torch.Tensor, tau: int) -> torch.Tensor:
    """The distribution [V] of the token after X_≤τ: p(· | X_≤γ) when τ = γ, else ∝ (w_τ p − q)_+ at X_≤τ."""
    if tau == len(q):
        return p[tau]
    return normalise(w[tau] * p[tau] - q[tau], p[tau])


def block_verify(p, q, drafts: torch.Tensor, generator: torch.Generator | None = None,
                 uniforms: torch.Tensor | None = None) -> tuple[int, torch.Tensor]:
    """Accepted length τ and the next token Y ([] tensor) for one block: p [γ + 1, V], q [γ, V], drafts [γ]
    sampled from q, optional uniforms [γ] in [0, 1). Emit drafts[:τ] then Y. Raises ValueError for bad inputs."""
    if isinstance(q, torch.Tensor) and q.ndim == 2 and len(q) == 0:
        raise ValueError("block verification needs γ ≥ 1 drafted tokens (q [γ, V] is empty)")
    p, q = check_pair(p, q)
    drafts = torch.as_tensor(drafts)
    if drafts.dtype.is_floating_point or drafts.dtype == torch.bool:
        raise ValueError(f"drafts must be integer token ids, got dtype {drafts.dtype}")
    if p.ndim != 2 or q.ndim != 2 or len(q) < 1 or len(p) != len(q) + 1 or drafts.shape != (len(q),):
        raise ValueError(f"block verification takes p [γ+1, V], q [γ, V], drafts [γ] with γ ≥ 1; got "
                         f"{tuple(p.shape)}, {tuple(q.shape)}, {tuple(drafts.shape)}")
    drafts = drafts.long()
    check_drafts(q, drafts[:, None])
    if uniforms is not None:
        uniforms = as_tensor(uniforms)
        if uniforms.shape != drafts.shape or not ((uniforms >= 0) & (uniforms < 1)).all():
            raise ValueError(f"uniforms must be [γ] = [{len(drafts)}] values in [0, 1), got {uniforms}")
    return _block_verify(p, q, drafts, generator, uniforms)


def decide_block(logits, warp, q: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator):
    """A decoding round of block verification on one draft: logits [1, γ+1, V] of the target (all rows read at once),
    warped by `warp`, q [1, γ, V], tokens [1, γ]. Returns (new tokens [τ + 1], row 0, τ)."""
    n, y = _block_verify(warp(logits[0]), q[0], tokens[0], generator)
    return torch.cat([tokens[0, :n], y.reshape(1)]), 0, n


def _block_verify(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, generator=None, uniforms=None):
    """`block_verify` without the checks (the decoder's hot path)."""
    w, h = block_weights(p, q, drafts)
    if uniforms is None:
        uniforms = torch.rand(len(h), generator=generator, dtype=h.dtype, device=h.device)
    passed = (uniforms < h).nonzero()
    tau = int(passed[-1]) + 1 if len(passed) else 0
    return tau, sample_rows(block_residual(p, q, w, tau), generator)
