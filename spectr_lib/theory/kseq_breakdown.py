"""K-SEQ taken apart on a small vocabulary (SpecTr, Sun et al., NeurIPS 2023, §4): where each token's output
mass comes from, for ρ* or for any other ρ, by enumerating every tuple of k i.i.d. drafts.

The course uses it to show the exactness argument with numbers: each draft passes with probability β(ρ), so the
drafts deliver γ(ρ)·min(q, p/ρ) with γ = (1 − (1 − β)^k)/β, and the residual must supply the rest,
p − γ·min(q, p/ρ), which is non-negative exactly when ρ ≥ ρ*.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .dists import check_pair
from .exact import draft_tuples
from .kseq import _kseq_residual, check_rho, kseq_rho


@dataclass(frozen=True)
class KSeqBreakdown:
    """One K-SEQ step for p, q [V] and k drafts, run with the scale ρ (every array is [V])."""

    k: int
    rho: float  # the scale used in the test U < p(x) / (ρ·q(x))
    rho_star: float  # the smallest ρ that is exact
    beta: float  # β(ρ) = Σ_x min(q(x), p(x)/ρ): probability that one draft passes
    gamma: float  # (1 − (1 − β)^k)/β: the drafts' mass per unit of min(q, p/ρ)
    p_acc: float  # P(the output is one of the drafts), by enumeration
    pass_mass: np.ndarray  # min(q, p/ρ): P(one draft is x and passes)
    from_drafts: np.ndarray  # P(output = x and it came from a draft), by enumeration of the draft tuples
    needed: np.ndarray  # p − from_drafts: what the residual must supply (negative somewhere when ρ < ρ*)
    residual: np.ndarray  # the law K-SEQ samples when every draft fails (negative parts clipped, renormalised)
    law: np.ndarray  # law of the output: from_drafts + (1 − p_acc)·residual

    @property
    def exact(self) -> bool:
        """True when the residual needs no negative mass, i.e. the output law is p."""
        return bool(self.needed.min() >= -1e-12)


def kseq_breakdown(p, q, k: int, rho: float | None = None) -> KSeqBreakdown:
    """Every quantity of one K-SEQ step for p (target) and q (draft) [V], k drafts, scale rho (None: ρ*).

    Enumerates the |V|^k draft tuples (theory.exact.draft_tuples), so it is for small vocabularies: ValueError
    when |V|^k exceeds exact.MAX_TUPLES, for p, q that are not 1-D distributions over one vocabulary, for k < 1
    and for rho < 1. Any ρ ≥ ρ* gives law = p (SpecTr §4 uses ρ ∈ [ρ*, k]); ρ < ρ* does not.
    """
    p_t, q_t = check_pair(p, q, k)
    if p_t.ndim != 1:
        raise ValueError("kseq_breakdown takes one pair of 1-D distributions [V]")
    rho_star = float(kseq_rho(p_t, q_t, k))
    rho_t = check_rho(rho_star if rho is None else rho, p_t).reshape(())
    tuples, weight = draft_tuples("kseq", q_t, k)  # [N, k] and q^⊗k of each tuple [N]
    a = (p_t[tuples] / (rho_t * q_t[tuples])).clamp(max=1.0)  # pass probability of each draft [N, k]
    fail_before = torch.nn.functional.pad((1 - a).cumprod(-1), (1, 0), value=1.0)  # [N, k + 1]
    mass = weight[:, None] * fail_before[:, :-1] * a  # P(tuple, draft i is the first to pass) [N, k]
    from_drafts = torch.zeros_like(p_t).scatter_add(0, tuples.reshape(-1), mass.reshape(-1))
    p_acc = float(from_drafts.sum())
    pass_mass = torch.minimum(q_t, p_t / rho_t)
    b = float(pass_mass.sum())
    residual = _kseq_residual(p_t, q_t, rho_t, k)
    law = from_drafts + (1 - p_acc) * residual
    return KSeqBreakdown(
        k=int(k), rho=float(rho_t), rho_star=rho_star, beta=b,
        gamma=(1 - (1 - b) ** k) / b if b > 0 else float(k), p_acc=p_acc,
        pass_mass=pass_mass.numpy(), from_drafts=from_drafts.numpy(), needed=(p_t - from_drafts).numpy(),
        residual=residual.numpy(), law=law.numpy(),
    )
