"""The token-level transport problem: the membership-cost LP (cvxpy), its closed-form optimum α*, k = 1 coupling."""
from __future__ import annotations

import itertools

import numpy as np
import torch

from .dists import check_pair

LP_MAX_VARIABLES = 200_000


def optimal_acceptance(p, q, k: int):
    """α*(p, q^⊗k) = min over H of p(H) + 1 − q(H)^k, by sorted prefixes of p/q; batched over [..., V]."""
    p, q = check_pair(p, q, k)
    ratio = torch.where(q > 0, p / q.clamp_min(1e-300), torch.full_like(p, float("inf")))
    order = ratio.argsort(dim=-1, stable=True)  # the optimal H is a prefix of this order (q = 0 tokens last)
    P = torch.nn.functional.pad(p.gather(-1, order).cumsum(-1), (1, 0))  # P[j] = p(first j tokens), j = 0..V
    Q = torch.nn.functional.pad(q.gather(-1, order).cumsum(-1), (1, 0)).clamp(max=1.0)
    alpha = (P + 1 - Q**k).min(-1).values.clamp(0.0, 1.0)
    return float(alpha) if alpha.ndim == 0 else alpha


def _lp_problem(p, q, k: int):
    import cvxpy as cp

    p_t, q_t = check_pair(p, q, k)
    if p_t.ndim != 1:
        raise ValueError("the LP takes one pair of 1-D distributions; use optimal_acceptance for batches")
    p, q = p_t.numpy(), q_t.numpy()
    V = len(p)
    n_var = V ** (k + 1)
    if n_var > LP_MAX_VARIABLES:
        raise ValueError(
            f"the LP would have |V|^(k+1) = {V}^{k + 1} = {n_var:,} variables (limit {LP_MAX_VARIABLES:,}): "
            f"use optimal_acceptance(p, q, k), the closed form, which gives the same optimum in O(|V| log |V|)"
        )
    tuples = list(itertools.product(range(V), repeat=k))
    draft_law = np.array([np.prod(q[list(t)]) for t in tuples])  # q^⊗k(x_1..x_k)
    member = np.zeros((len(tuples), V))  # 1 where the output y is one of the drafts
    for row, t in enumerate(tuples):
        member[row, list(set(t))] = 1.0
    pi = cp.Variable((len(tuples), V), nonneg=True)
    constraints = [cp.sum(pi, axis=1) == draft_law, cp.sum(pi, axis=0) == p]
    problem = cp.Problem(cp.Maximize(cp.sum(cp.multiply(member, pi))), constraints)
    return problem, pi, V


def optimal_acceptance_lp(p, q, k: int) -> float:
    """α* by solving the membership-cost optimal-transport LP with cvxpy (small V and k only)."""
    problem, _, _ = _lp_problem(p, q, k)
    problem.solve()
    return float(problem.value)


def optimal_coupling_lp(p, q, k: int) -> np.ndarray:
    """An optimal coupling π(x_1, …, x_k, y) of q^⊗k and p, shape (V,)*k + (V,), from the cvxpy LP."""
    problem, pi, V = _lp_problem(p, q, k)
    problem.solve()
    return np.clip(pi.value, 0.0, None).reshape((V,) * (k + 1))


def maximal_coupling(p, q) -> np.ndarray:
    """The k = 1 optimum π(x, y): keep min(p, q) on the diagonal, move the rest; acceptance 1 − TV(p, q)."""
    p, q = (t.numpy() for t in check_pair(p, q, 1))
    common = np.minimum(p, q)
    excess_q, excess_p = q - common, p - common
    tv = excess_q.sum()
    pi = np.diag(common)
    if tv > 0:
        pi = pi + np.outer(excess_q, excess_p) / tv
    return pi
