"""K-SEQ, SpecTr's token-level selection (Sun et al., NeurIPS 2023, §4): β(ρ), ρ*, p_acc and the residual.

β(ρ) = Σ_x min(q(x), p(x)/ρ) is the chance that one draft passes; ρ* is the root of
f(ρ) = 1 − (1 − β(ρ))^k − ρ·β(ρ) on [1, k]; each draft passes with probability min(1, p(x)/(ρ*·q(x))) and, when
all k fail, the output is drawn from p_res ∝ p − γ·min(q, p/ρ*) with γ = p_acc/β(ρ*). Every function here is
batched over [..., V] and checks its inputs.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .dists import as_tensor, check_pair, is_real, normalise


def check_rho(rho, p: torch.Tensor) -> torch.Tensor:
    """ρ as a tensor on p's device, refusing values that are not finite numbers ≥ 1 (K-SEQ's ρ lies in [1, k])."""
    if not isinstance(rho, torch.Tensor) and not is_real(rho):
        raise ValueError(f"rho must be a number ≥ 1 (or a tensor of them), got {rho!r}")
    rho = as_tensor(rho).to(p.device)
    if not torch.isfinite(rho).all() or (rho < 1).any():
        raise ValueError(f"rho must be finite and ≥ 1 (K-SEQ's ρ lies in [1, k]), got {rho}")
    return rho


def beta(p, q, rho) -> torch.Tensor:
    """β(ρ) = Σ_x min(q(x), p(x)/ρ) [...]: the probability that one draft passes K-SEQ's test (SpecTr §4)."""
    p, q = check_pair(p, q)
    return _beta(p, q, check_rho(rho, p))


def _beta(p: torch.Tensor, q: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    return torch.minimum(q, p / rho[..., None]).sum(-1)


def _rho_star(p: torch.Tensor, q: torch.Tensor, k: torch.Tensor, tol: float = 1e-11, max_iter: int = 200) -> torch.Tensor:
    """Root of f(ρ) = 1 − (1 − β(ρ))^k − ρβ(ρ) on [1, k] by a bracketing secant (Illinois); returns the
    upper end of the final bracket, where f ≤ 0, so the residual is never negative."""
    tol = max(tol, 8 * torch.finfo(p.dtype).eps)  # float32 inputs cannot resolve 1e-11
    if p.device.type == "cpu" and p.numel() == p.shape[-1]:  # one row (the decoder): numpy, no masks
        rho = _rho_star_row(p.reshape(-1).numpy(), q.reshape(-1).numpy(), float(k), tol=tol, max_iter=max_iter)
        return torch.tensor(rho, dtype=p.dtype).reshape(p.shape[:-1])
    return _illinois(p, q, k.to(p.dtype), tol, max_iter, torch)


class _RowF:
    """f(ρ) = 1 − (1 − β(ρ))^k − ρβ(ρ) of one row, each evaluation three vocabulary-wide numpy operations into
    one buffer (numpy's masked indexing costs more than the whole evaluation, so there is none)."""

    def __init__(self, p: np.ndarray, q: np.ndarray, k: float):
        self.p, self.q, self.k, self.buf = p, q, k, np.empty_like(p)

    def __call__(self, rho: float) -> float:
        np.divide(self.p, rho, out=self.buf)
        np.minimum(self.q, self.buf, out=self.buf)
        b = float(self.buf.sum())
        return 1 - max(0.0, 1 - b) ** self.k - rho * b


def _rho_star_row(p: np.ndarray, q: np.ndarray, k: float, lo: float = 1.0, hi: float | None = None,
                  tol: float = 1e-11, max_iter: int = 200, f: _RowF | None = None) -> float:
    """ρ* of one row (p, q [V] float64 numpy) by the Illinois rule inside a bracket [lo, hi] known to hold it
    (default [1, k]); returns the bracket's upper end, where f ≤ 0, so the residual is never negative."""
    hi = float(k) if hi is None else hi
    if hi - lo <= tol * k:  # k = 1 (SpS): ρ* = 1, nothing to solve
        return hi
    f = f or _RowF(p, q, k)
    f_lo, f_hi = f(lo), min(0.0, f(hi))  # f(k) ≤ 0 exactly (Bernoulli): clip rounding noise
    side = 0
    for _ in range(max_iter):
        if hi - lo <= tol * k:
            break
        x = hi - f_hi * (hi - lo) / min(f_hi - f_lo, -1e-300)
        if not lo < x < hi:
            x = (lo + hi) / 2
            if not lo < x < hi:  # lo and hi are adjacent floats: the bracket cannot shrink further
                break
        fx = f(x)
        if fx > 0:
            f_hi, lo, f_lo, side = (f_hi / 2 if side > 0 else f_hi), x, fx, 1
        else:
            f_lo, hi, f_hi, side = (f_lo / 2 if side < 0 else f_lo), x, fx, -1
    return hi


def kseq_first_pass_row(p: np.ndarray, q: np.ndarray, drafts: np.ndarray, u: np.ndarray) -> tuple[int, float]:
    """K-SEQ's choice for one row without computing ρ* unless it must (SpecTr §4, decided lazily).

    p, q [V] float64 numpy, drafts [k] token ids, u [k] uniforms in [0, 1). Draft i passes when
    U_i·ρ*·q(x_i) < p(x_i): a bracket [lo, hi] ∋ ρ* (first [1, k]) settles most tests outright, and an unsettled
    one is settled by the sign of f at t = p(x_i)/(U_i q(x_i)) (f decreases strictly on (1, k], so ρ* < t
    ⟺ f(t) < 0), which also narrows the bracket. The decisions are those under ρ* itself. Returns (index of
    the first passing draft, 0.0), or (−1, ρ̂) when all fail: ρ̂ ≥ ρ* is solved inside the narrowed bracket to
    float64 resolution (tolerance 8 ulp rather than the eager solver's 1e-11), so the residual built with it
    matches the decisions to rounding error; the eager rule uses its own ρ̂ for both, and the two can part
    only on draws that fall between ρ* and the eager ρ̂ (a gap of ~1e-11).
    """
    k = len(drafts)
    lo, hi, f = 1.0, float(k), None
    pd, qd = p[drafts], q[drafts]
    for i in range(k):
        a, b = float(pd[i]), float(u[i]) * float(qd[i])
        if a > b * hi:
            return i, 0.0
        if a <= b * lo:
            continue
        t = a / b
        f = f or _RowF(p, q, float(k))
        if f(t) < 0:
            return i, 0.0
        lo = t
    return -1, _rho_star_row(p, q, float(k), lo, hi, tol=8 * np.finfo(p.dtype).eps, f=f)


def kseq_residual_row(p: np.ndarray, q: np.ndarray, rho: float, k: int) -> np.ndarray:
    """kseq_residual for one row (p, q [V] float64 numpy) in place-friendly numpy: p_res ∝ p − γ·min(q, p/ρ)."""
    m = np.minimum(q, p / rho)
    b = float(m.sum())
    gamma = (1 - max(0.0, 1 - b) ** k) / b if b > 0 else 0.0
    np.multiply(m, -gamma, out=m)
    np.add(m, p, out=m)
    np.maximum(m, 0.0, out=m)
    mass = float(m.sum())
    return m / mass if mass > 0 else p.copy()  # no mass left is reached with probability 0


def _illinois(p, q, kf, tol: float, max_iter: int, xp):
    """The root finder of _rho_star, written once for numpy and torch arrays (xp is the module)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = xp.where(q > 0, p / xp.where(q > 0, q, 1), xp.full_like(p, math.inf))
    # Tokens with p/q ≥ k always contribute q, those with p/q ≤ 1 always p/ρ: only the rest vary with ρ.
    high, low = r >= kf[..., None], r <= 1
    A, B = (q * high).sum(-1), (p * low).sum(-1)
    mid = ~(high | low)
    if math.prod(p.shape[:-1]) == 1:  # one row (numpy or torch): keep only the varying tokens
        pm, qm = p[mid].reshape(p.shape[:-1] + (-1,)), q[mid].reshape(p.shape[:-1] + (-1,))
    else:  # a batch (torch only): gather each row's varying tokens into a [..., m] block, padded with zeros
        m = int(mid.sum(-1).max())
        idx = mid.to(torch.int8).topk(m, dim=-1).indices
        keep = mid.gather(-1, idx)
        pm, qm = p.gather(-1, idx) * keep, q.gather(-1, idx) * keep

    def f(rho):
        b = A + B / rho + xp.minimum(qm, pm / rho[..., None]).sum(-1)
        return 1 - (1 - b).clip(min=0) ** kf - rho * b

    lo, hi = kf * 0 + 1, kf + 0
    f_lo, f_hi = f(lo), f(hi).clip(max=0.0)  # f(k) ≤ 0 holds exactly (Bernoulli); clip rounding noise
    side = kf * 0  # +1: the last move was lo, −1: hi (the Illinois rule halves the stale end)
    for _ in range(max_iter):
        open_ = hi - lo > tol * kf
        if not open_.any():
            break
        x = hi - f_hi * (hi - lo) / (f_hi - f_lo).clip(max=-1e-300)
        x = xp.where((x <= lo) | (x >= hi), (lo + hi) / 2, x)
        fx = f(x)
        up = open_ & (fx > 0)
        down = open_ & ~(fx > 0)
        f_hi = xp.where(up & (side > 0), f_hi / 2, f_hi)
        f_lo = xp.where(down & (side < 0), f_lo / 2, f_lo)
        lo, f_lo = xp.where(up, x, lo), xp.where(up, fx, f_lo)
        hi, f_hi = xp.where(down, x, hi), xp.where(down, fx, f_hi)
        side = xp.where(up, 1.0, xp.where(down, -1.0, side))
    return hi


def kseq_rho(p, q, k):
    """ρ* of K-SEQ: the upper end of the bisection bracket of f(ρ) = 0 on [1, k]; batched over [..., V]."""
    p, q = check_pair(p, q, k)
    k_t = torch.as_tensor(k, device=p.device).expand(p.shape[:-1])
    rho = _rho_star(p, q, k_t)
    return float(rho) if rho.ndim == 0 else rho


def kseq_acceptance(p, q, k):
    """p_acc = 1 − (1 − β(ρ*))^k, the probability that K-SEQ returns one of the k drafts; batched."""
    p, q = check_pair(p, q, k)
    k_t = torch.as_tensor(k, device=p.device).expand(p.shape[:-1])
    acc = 1 - (1 - _beta(p, q, _rho_star(p, q, k_t))) ** k_t.to(p.dtype)
    return float(acc) if acc.ndim == 0 else acc


def kseq_residual(p, q, rho, k) -> torch.Tensor:
    """p_res ∝ p − γ·min(q, p/ρ) with γ = p_acc/β [..., V]: what K-SEQ samples when every draft fails."""
    p, q = check_pair(p, q, k)
    return _kseq_residual(p, q, check_rho(rho, p), k)


def _kseq_residual(p: torch.Tensor, q: torch.Tensor, rho: torch.Tensor, k) -> torch.Tensor:
    b = _beta(p, q, rho)
    p_acc = 1 - (1 - b) ** torch.as_tensor(k, dtype=p.dtype, device=p.device)
    gamma = torch.where(b > 0, p_acc / b.clamp_min(1e-300), torch.zeros_like(b))
    return normalise(p - gamma[..., None] * torch.minimum(q, p / rho[..., None]), p)
