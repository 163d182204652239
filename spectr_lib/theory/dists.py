"""Next-token distributions: input checks shared by every rule, and temperature/top-k/top-p warping."""
from __future__ import annotations

import numpy as np
import torch

SUM_TOL = 1e-6
# Temperatures in (0, MIN_TEMPERATURE) are computed as MIN_TEMPERATURE: float32 logits that differ at all then
# already differ by more than 1e20 after scaling, so the result is the argmax (ties shared) either way.
MIN_TEMPERATURE = 1e-30


def as_tensor(x, dtype=torch.float64) -> torch.Tensor:
    """A numpy array, list or tensor as a tensor (same device for tensors)."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=dtype)


def check_distribution(x: torch.Tensor, name: str) -> None:
    """Refuse entries that are negative, NaN or infinite, and rows whose sum is off 1."""
    if x.ndim == 0 or x.numel() == 0:
        raise ValueError(f"{name} must be a non-empty vector (or a batch [..., V]), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} has NaN or infinite entries: pass probabilities, not logits")
    if (x < 0).any():
        raise ValueError(f"{name} has negative entries (min {x.min().item():.3g}): pass probabilities")
    off = (x.sum(-1) - 1).abs().max().item()
    if off > SUM_TOL:
        raise ValueError(f"{name} sums to 1 ± {off:.3g}, more than {SUM_TOL}: normalise it (e.g. softmax)")


def check_pair(p, q, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a target p and draft q over one vocabulary (and k ≥ 1); return them as float64 tensors."""
    p, q = as_tensor(p), as_tensor(q)
    if p.ndim == 0 or q.ndim == 0:
        raise ValueError("p and q must be vectors over the vocabulary (or batches [..., V]), got a scalar")
    if p.shape[-1] != q.shape[-1]:
        raise ValueError(f"p has {p.shape[-1]} entries but q has {q.shape[-1]}: both must cover one vocabulary")
    check_distribution(p, "p (target)")
    check_distribution(q, "q (draft)")
    if k is not None:
        check_k(k)
    return p, q


def check_k(k) -> None:
    """k, the number of drafts, is a positive integer."""
    if isinstance(k, torch.Tensor):
        if (k < 1).any():
            raise ValueError("k (number of drafts) must be at least 1")
        return
    if not is_int(k) or k < 1:
        raise ValueError(f"k (number of drafts) must be an integer ≥ 1, got {k!r}")


def check_drafts(q: torch.Tensor, drafts: torch.Tensor, in_support: bool = True) -> None:
    """Draft tokens are valid ids and (in_support) each has q > 0 (a draft never contains a token the draft cannot
    emit; a rule that never reads q, as sampled verification, takes drafts from any law: in_support=False)."""
    if drafts.ndim != q.ndim or drafts.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"drafts must be [..., k] matching q [..., V]; got {tuple(drafts.shape)} and {tuple(q.shape)}")
    if drafts.numel() and (drafts.min() < 0 or drafts.max() >= q.shape[-1]):
        raise ValueError(f"draft token ids must lie in [0, {q.shape[-1]})")
    if in_support and (q.gather(-1, drafts) <= 0).any():
        raise ValueError("a draft token has q = 0: drafts must be sampled from q (the draft distribution)")


def warp(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Float64 probabilities from logits [..., V] after temperature, top-k and top-p; temperature 0 is one-hot argmax.

    The row maximum is subtracted before dividing by the temperature, so any temperature > 0, however small,
    gives a finite distribution (below MIN_TEMPERATURE it is the argmax, ties shared). The softmax runs in float32 (fast);
    the result is renormalised in float64 so that every row sums to 1 to float64 precision, as the selection
    rules require.
    """
    logits = logits.float()
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).double()
    if temperature != 1:
        logits = (logits - logits.amax(-1, keepdim=True)) / max(float(temperature), MIN_TEMPERATURE)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if top_p is not None and top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass strictly above each token: keep while < top_p
        keep_sorted = before < top_p
        keep_sorted[..., 0] = True  # the most likely token always stays, however small top_p is
        keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, keep_sorted)
        probs = probs * keep
    probs = probs.double()
    return probs / probs.sum(-1, keepdim=True)


def sample_rows(probs: torch.Tensor, generator: torch.Generator | None = None, n: int | None = None) -> torch.Tensor:
    """One token per row of probs [..., V] (or n i.i.d. tokens per row: [..., n]) by inverting the CDF.

    torch.multinomial draws through an exponential variate per vocabulary entry (~3 ms for 4 rows of 49k
    tokens on a CPU); one cumsum and a binary search per draw cost a tenth of that. Tokens of zero mass are
    never drawn. Raises ValueError for a row that is all zero or holds NaN/inf (it defines no distribution).
    """
    cdf = probs.cumsum(-1)
    total = cdf[..., -1:]
    if not bool(((total > 0) & torch.isfinite(total)).all()):
        raise ValueError("cannot sample from a row of probabilities that is all zero or holds NaN/inf: "
                         "check the temperature, top_k/top_p and the model's logits")
    u = torch.rand(probs.shape[:-1] + (n or 1,), generator=generator, dtype=cdf.dtype, device=cdf.device) * total
    idx = torch.searchsorted(cdf, u, right=True).clamp(max=probs.shape[-1] - 1)
    return idx if n is not None else idx[..., 0]


def is_int(value) -> bool:
    """A Python or numpy integer (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value) -> bool:
    """A Python or numpy real number (not a bool)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_sampling(temperature, top_k, top_p) -> None:
    """Refuse sampling settings that define no distribution: TypeError for a wrong type, ValueError for a wrong
    value (numpy scalars are accepted)."""
    for name, value, ok, what in (("temperature", temperature, is_real, "a finite number ≥ 0 (0 = greedy)"),
                                  ("top_k", top_k, is_int, "an integer ≥ 1 or None"),
                                  ("top_p", top_p, is_real, "a number in (0, 1] or None")):
        if value is not None and not ok(value) or (name == "temperature" and value is None):
            raise TypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number ≥ 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be an integer ≥ 1 or None, got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1] or be None, got {top_p!r}")


def normalise(residual: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Normalise non-negative rows by the sum of their entries, however small; only a row with no mass at all
    (it is reached with probability 0) becomes fallback."""
    residual = residual.clamp_min(0)
    mass = residual.sum(-1, keepdim=True)
    return torch.where(mass > 0, residual / mass.clamp_min(1e-300), fallback)
