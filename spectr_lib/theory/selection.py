"""Token-level selection rules: SpS, K-SEQ (SpecTr), RRS with and without replacement, SpecHub-style hub rule.

Every rule sees a target p and a draft q over one vocabulary ([B, V] tensors) and k draft tokens [B, k]
drawn from the rule's own draft law (`draw_drafts`), and returns one token per row whose law is exactly p.
Every public function checks its inputs (ValueError saying what to pass); `sample(..., check=False)` is the
decoder's hot path for inputs it built itself. A uniform U ∈ [0, 1) accepts with probability a when U < a,
so a token of p = 0 (a = 0) is never accepted, not even when U is exactly 0.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .dists import as_tensor, check_distribution, check_drafts, check_k, check_pair, is_real, sample_rows

RULES = ("sps", "kseq", "rrs", "rrs_wor", "spechub")
IID_RULES = ("sps", "kseq", "rrs")  # drafts i.i.d. from q: their acceptance is bounded by α*(p, q^⊗k)


def check_rule(rule: str, k: int | None = None) -> None:
    """Refuse unknown rule names and a k that the rule does not support."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}: choose one of {', '.join(RULES)}")
    if k is not None:
        check_k(k)
        if rule == "sps" and k != 1:
            raise ValueError(f"'sps' (standard speculative sampling) uses one draft, got k = {k}: use 'kseq' or 'rrs'")
        if rule == "spechub" and k != 2:
            raise ValueError(f"'spechub' is defined for k = 2 drafts, got k = {k}")


# ---------------------------------------------------------------- K-SEQ: β(ρ), ρ*, p_acc, residual

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
    if p.device.type == "cpu" and p.numel() == p.shape[-1]:  # one row (the decoder): numpy's small-array calls are cheaper
        return torch.from_numpy(np.asarray(_illinois(p.numpy(), q.numpy(), k.to(p.dtype).numpy(), tol, max_iter, np)))
    return _illinois(p, q, k.to(p.dtype), tol, max_iter, torch)


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


def _normalise(residual: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Normalise non-negative rows by the sum of their entries, however small; only a row with no mass at all
    (it is reached with probability 0) becomes fallback."""
    residual = residual.clamp_min(0)
    mass = residual.sum(-1, keepdim=True)
    return torch.where(mass > 0, residual / mass.clamp_min(1e-300), fallback)


def kseq_residual(p, q, rho, k) -> torch.Tensor:
    """p_res ∝ p − γ·min(q, p/ρ) with γ = p_acc/β [..., V]: what K-SEQ samples when every draft fails."""
    p, q = check_pair(p, q, k)
    return _kseq_residual(p, q, check_rho(rho, p), k)


def _kseq_residual(p: torch.Tensor, q: torch.Tensor, rho: torch.Tensor, k) -> torch.Tensor:
    b = _beta(p, q, rho)
    p_acc = 1 - (1 - b) ** torch.as_tensor(k, dtype=p.dtype, device=p.device)
    gamma = torch.where(b > 0, p_acc / b.clamp_min(1e-300), torch.zeros_like(b))
    return _normalise(p - gamma[..., None] * torch.minimum(q, p / rho[..., None]), p)


# ---------------------------------------------------------------- per-draft pass probabilities

def pass_probabilities(rule: str, p, q, drafts: torch.Tensor):
    """For drafts [B, k]: the probability that draft i passes given drafts < i failed [B, k], and a function
    returning the residual [B, V] (computed only when asked: most rounds never need it).

    This is the whole rule: the output is draft i with probability Π_{j<i}(1 − a_j)·a_i, else a residual draw.
    Sources: K-SEQ, SpecTr (Sun et al. 2023) §4; RRS, SpecInfer (Miao et al. 2024); RRS without replacement,
    Jeon et al. 2024; the hub rule, SpecHub (Sun et al. 2024).
    """
    p, q, drafts = _checked(rule, p, q, drafts)
    return _pass_probabilities(rule, p, q, drafts)


def _checked(rule: str, p, q, drafts):
    """p, q [B, V] float64 and drafts [B, k] after every check of `sample`."""
    p, q = check_pair(p, q)
    if p.ndim == 1:
        p, q = p[None], q[None]
    if not isinstance(drafts, torch.Tensor):
        drafts = torch.as_tensor(drafts)
    if drafts.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"drafts must be integer token ids, got dtype {drafts.dtype}")
    drafts = drafts.long().reshape(p.shape[0], -1)
    check_rule(rule, drafts.shape[-1])
    check_drafts(q, drafts)
    if rule == "spechub" and ((drafts[:, 0] != q.argmax(-1)) | (drafts[:, 1] == drafts[:, 0])).any():
        raise ValueError("'spechub' drafts are (hub, other): the hub is argmax q and the other differs from it")
    if rule == "rrs_wor" and drafts.shape[-1] > 1 and (drafts.sort(-1).values.diff(dim=-1) == 0).any():
        raise ValueError("'rrs_wor' drafts are drawn without replacement: a row repeats a token")
    return p, q, drafts


def _pass_probabilities(rule: str, p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor):
    k = drafts.shape[-1]
    take = lambda d, i: d.gather(-1, drafts[:, i : i + 1])[:, 0]  # noqa: E731  (value of draft i)
    if rule in ("kseq", "sps"):
        rho = _rho_star(p, q, torch.full(p.shape[:-1], k, device=p.device))
        a = (p.gather(-1, drafts) / (rho[:, None] * q.gather(-1, drafts))).clamp(max=1.0)
        return a, lambda: _kseq_residual(p, q, rho, k)
    if rule == "spechub":
        return _spechub_pass(p, q, drafts)
    p_i, q_i, a = p, q, []
    for i in range(k):
        a.append((take(p_i, i) / take(q_i, i)).clamp(max=1.0))
        p_i = _normalise(p_i - q_i, p_i)  # on rejection: p_{i+1} ∝ (p_i − q_i)_+
        if rule == "rrs_wor":  # the rejected token cannot be drafted again
            q_i = _normalise(q_i.scatter(-1, drafts[:, i : i + 1], 0.0), q_i)
    return torch.stack(a, -1), lambda: p_i


def _spechub_pass(p, q, drafts):
    """Hub rule for drafts (a, x): a = argmax q is in every pair, x ~ q(·|≠a); optimal transport for that law."""
    a_tok, x_tok = drafts[:, 0:1], drafts[:, 1:2]
    rest = q.scatter(-1, a_tok, 0.0)
    w = rest / rest.sum(-1, keepdim=True)  # law of x, the non-hub draft (1 − q(a) as a sum: exact when q(a) ≈ 1)
    to_x = torch.minimum(p, w).scatter(-1, a_tok, 0.0)  # mass each pair {a, x} sends to its own x
    excess = (w - p).clamp_min(0).scatter(-1, a_tok, 0.0).sum(-1, keepdim=True)
    pa = p.gather(-1, a_tok)
    to_a = torch.minimum(pa, excess)  # what is left over in the pairs may go to the hub, up to p(a)
    pass_x = (p.gather(-1, x_tok) / w.gather(-1, x_tok)).clamp(max=1.0)
    pass_a = torch.where(excess > 0, to_a / excess.clamp_min(1e-300), torch.zeros_like(excess))
    accepted = to_x.scatter_add(-1, a_tok, to_a)
    # Try x first, then the hub: drafts are (a, x), so report the columns in that order of trial.
    return torch.cat([pass_x, pass_a], -1), lambda: _normalise(p - accepted, p)


def _trial_order(rule: str, drafts: torch.Tensor) -> torch.Tensor:
    """Drafts in the order the rule tries them (the hub rule tries the non-hub draft first)."""
    return drafts.flip(-1) if rule == "spechub" else drafts


# ---------------------------------------------------------------- draft laws and samplers

def draw_drafts(rule: str, q, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k draft tokens per row of q [B, V] (or [V]) from the rule's own draft law: i.i.d., without replacement,
    or hub; returns [B, k] (or [k]). Raises ValueError for an invalid q, rule or k."""
    check_rule(rule, k)
    q = as_tensor(q)
    check_distribution(q, "q (draft)")
    if q.ndim == 1:
        return draw_drafts(rule, q[None], k, generator)[0]
    if rule == "rrs_wor":
        if (q > 0).sum(-1).min() < k:
            raise ValueError(f"'rrs_wor' draws {k} distinct drafts, but q has fewer tokens with q > 0")
        return torch.multinomial(q, k, replacement=False, generator=generator)
    if rule == "spechub":
        if (q > 0).sum(-1).min() < 2:
            raise ValueError("'spechub' needs a draft distribution with at least 2 tokens of q > 0")
        hub = q.argmax(-1, keepdim=True)
        other = torch.multinomial(q.scatter(-1, hub, 0.0), 1, generator=generator)
        return torch.cat([hub, other], -1)
    return sample_rows(q, generator, n=k)


def sample(rule: str, p, q, drafts: torch.Tensor, generator: torch.Generator | None = None,
           uniforms: torch.Tensor | None = None, *, check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen token [B] and the index of the draft it came from [B] (−1: drawn from the residual).

    p, q [B, V] (or [V]), drafts [B, k] from `draw_drafts`, optional uniforms [B, k] in [0, 1) (one per trial).
    check=False skips every input check: the decoder's hot path, for [B, V] float64 inputs it built itself.
    """
    if check:
        p, q, drafts = _checked(rule, p, q, drafts)
        if uniforms is not None:
            uniforms = as_tensor(uniforms).reshape(drafts.shape)
            if not ((uniforms >= 0) & (uniforms < 1)).all():
                raise ValueError("uniforms must lie in [0, 1)")
        return sample(rule, p, q, drafts, generator, uniforms, check=False)
    if uniforms is None:
        uniforms = torch.rand(drafts.shape, generator=generator, dtype=p.dtype, device=p.device)
    ordered = _trial_order(rule, drafts)
    a, residual = _pass_probabilities(rule, p, q, drafts)
    passed = uniforms.to(a.dtype) < a
    first = torch.where(passed.any(-1), passed.to(torch.int8).argmax(-1), torch.full_like(passed[:, 0], -1, dtype=torch.long))
    token = ordered.gather(-1, first.clamp_min(0)[:, None])[:, 0]
    failed = first < 0
    if failed.any():  # the residual draw is only paid for when every draft failed
        token = torch.where(failed, sample_rows(residual(), generator), token)
    return token, (first if rule != "spechub" else torch.where(first >= 0, 1 - first, first))


def speculative_sampling(p, q, draft: torch.Tensor, uniform: torch.Tensor, generator: torch.Generator | None = None):
    """Textbook single-draft speculative sampling (Leviathan et al. 2023; Chen et al. 2023): accept the draft [B]
    if U < p(x)/q(x) (U [B] in [0, 1)), else sample ∝ (p − q)_+. Returns tokens [B] and accepted [B]."""
    p, q = check_pair(p, q)
    draft = torch.as_tensor(draft)
    if p.ndim == 1:  # one distribution for every draft
        p, q = p.expand(draft.shape + p.shape), q.expand(draft.shape + q.shape)
    check_drafts(q, draft[..., None])
    accept = uniform < (p.gather(-1, draft[..., None]) / q.gather(-1, draft[..., None]))[..., 0]
    residual = _normalise(p - q, p)
    fallback = sample_rows(residual.reshape(-1, p.shape[-1]), generator).reshape(draft.shape)
    return torch.where(accept, draft, fallback), accept
