"""Exact output laws and acceptance of every rule, by enumerating draft tuples (small vocabularies only)."""
from __future__ import annotations

import itertools

import numpy as np
import torch

from .dists import check_pair
from .selection import RULES, _pass_probabilities, _trial_order, check_rule

MAX_TUPLES = 100_000


def draft_tuples(rule: str, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every draft tuple with positive probability under the rule's draft law [N, k], and that probability [N]."""
    V = q.shape[-1]
    if V**k > MAX_TUPLES:
        raise ValueError(f"enumerating |V|^k = {V}^{k} = {V**k:,} draft tuples is too many (limit {MAX_TUPLES:,}): "
                         f"use a smaller vocabulary, or kseq_acceptance / optimal_acceptance for real vocabularies")
    tuples = torch.tensor(list(itertools.product(range(V), repeat=k)), dtype=torch.long).reshape(-1, k)
    weight = RULES[rule].tuple_law(q, tuples)
    keep = weight > 0
    return tuples[keep], weight[keep]


def decision_law(a: torch.Tensor, residual: torch.Tensor, drafts: torch.Tensor) -> torch.Tensor:
    """The law [N, V] of the output of decisions taken by pass probabilities a [N, k] for drafts [N, k] in trial
    order: draft i with probability Π_{j<i}(1 − a_j)·a_i, else a draw from residual [N, V] (or one [V] for all)."""
    fail_before = torch.nn.functional.pad((1 - a).cumprod(-1), (1, 0), value=1.0)  # [N, k+1]
    return (fail_before[:, -1:] * residual).scatter_add(-1, drafts, fail_before[:, :-1] * a)


def _laws(rule: str, p, q, k: int):
    p, q = check_pair(p, q, k)
    if p.ndim != 1:
        raise ValueError("exact laws take 1-D p and q (one vocabulary); loop over rows for batches")
    check_rule(rule, k)
    if int((q > 0).sum()) < RULES[rule].min_support(k):
        raise ValueError(f"{rule!r} draws {k} distinct drafts, but q has fewer tokens with q > 0")
    tuples, weight = draft_tuples(rule, q, k)
    N, V = len(tuples), p.shape[-1]
    a, residual = _pass_probabilities(rule, p.expand(N, V), q.expand(N, V), tuples)
    return tuples, weight, decision_law(a, residual(), _trial_order(rule, tuples))


def output_distribution(rule: str, p, q, k: int) -> np.ndarray:
    """The exact law of the rule's output token (should equal p for every lossless rule)."""
    _, weight, out = _laws(rule, p, q, k)
    return (weight[:, None] * out).sum(0).numpy()


def acceptance(rule: str, p, q, k: int) -> float:
    """Exact P(output ∈ drafts) under the rule's own draft law."""
    tuples, weight, out = _laws(rule, p, q, k)
    member = torch.zeros_like(out).scatter(-1, tuples, 1.0)
    return float((weight * (out * member).sum(-1)).sum())


def naive_independent_law(p, q, k: int) -> np.ndarray:
    """Output law of the WRONG rule 'k independent single-draft tests, first pass wins, else SpS residual'."""
    p, q = check_pair(p, q, k)
    tuples, weight = draft_tuples("kseq", q, k)
    a = (p[tuples] / q[tuples]).clamp(max=1.0)  # each draft tested alone against min(1, p/q)
    residual = (p - q).clamp_min(0)
    residual = residual / residual.sum() if residual.sum() > 0 else p
    return (weight[:, None] * decision_law(a, residual, tuples)).sum(0).numpy()
