"""Exact quantities of the rules that came after SpecTr, by enumeration (small vocabularies and blocks only).

- Accepted length of one draft block of γ tokens under token-level verification (speculative sampling,
  Leviathan et al. 2023) and block verification (Sun et al., "Block Verification Accelerates Speculative
  Decoding", ICLR 2025, arXiv 2403.10444, Algorithm 2), computed without uniforms: for every draft block the
  law of the accepted length τ in closed form, weighted by the block's probability under q.
- The ideal: the largest expected common prefix of a draft block X ~ q and a target block Y ~ p over all
  couplings of the two block laws (a linear program), and the upper bound Σ_i (1 − TV(q_{≤i}, p_{≤i})).
- SpecHub's acceptance in closed form (real vocabularies), and the optimal acceptance of any token-level draft law (i.i.d., without replacement, SpecHub's hub pairs):
  max P(Y ∈ drafts) over couplings = min over token sets H of p(H) + 1 − P(every draft lies in H) (max-flow
  min-cut; for i.i.d. drafts it is α* of SpecTr, Sun et al. 2023, §3).

A context-dependent law (target p or draft q) is given as one of: a callable prefix -> [V] probabilities
(prefix a tuple of token ids), a dict {prefix tuple: [V]}, or a single [V] vector used at every position
(i.i.d. positions).
"""
from __future__ import annotations

import itertools
from typing import Callable, Mapping

import numpy as np
import torch

from .block import block_weights
from .dists import as_tensor, check_distribution, check_pair, is_int

MAX_BLOCKS = 100_000  # V^γ draft blocks enumerated at most
LP_MAX_VARIABLES = 200_000  # V^(2γ) coupling variables of the ideal's LP at most
RULES = ("token", "block")


def prefix_law(law, vocab_size: int | None = None) -> Callable[[tuple], torch.Tensor]:
    """A function prefix (tuple of ids) -> next-token probabilities [V] (float64), from a callable, a dict
    {prefix: [V]} or a [V] vector (the same at every position). Each returned row is checked (ValueError for
    negative entries, sums off 1, a vocabulary of the wrong size, a prefix missing from a dict)."""
    if callable(law):
        fn = law
    elif isinstance(law, Mapping):
        table = {tuple(int(t) for t in key): value for key, value in law.items()}

        def fn(prefix):
            if prefix not in table:
                raise ValueError(f"the table has no distribution for the prefix {prefix}: give every prefix "
                                 f"of length 0..γ (γ + 1 levels for the target)")
            return table[prefix]
    else:
        row = as_tensor(law)
        if row.ndim != 1:
            raise ValueError(f"a law is a callable, a dict of prefixes or one [V] vector; got shape {tuple(row.shape)}")
        check_distribution(row, "law")
        return lambda prefix: row
    cache: dict[tuple, torch.Tensor] = {}

    def checked(prefix: tuple) -> torch.Tensor:
        if prefix not in cache:
            row = as_tensor(fn(prefix))
            if row.ndim != 1 or (vocab_size is not None and len(row) != vocab_size):
                raise ValueError(f"the law at prefix {prefix} must be a [V] vector (V = {vocab_size}), "
                                 f"got shape {tuple(row.shape)}")
            check_distribution(row, f"law at prefix {prefix}")
            cache[prefix] = row
        return cache[prefix]

    return checked


def _setup(p, q, gamma: int, vocab_size: int | None):
    if not is_int(gamma) or gamma < 1:
        raise ValueError(f"gamma (draft tokens per block) must be an integer ≥ 1, got {gamma!r}")
    if vocab_size is None:
        for law in (q, p):
            if not callable(law) and not isinstance(law, Mapping):
                vocab_size = len(as_tensor(law))
                break
        else:  # both callables or tables: ask the draft at the empty prefix
            first = q(()) if callable(q) else q[()]
            vocab_size = len(as_tensor(first))
    if vocab_size**gamma > MAX_BLOCKS:
        raise ValueError(f"enumerating V^γ = {vocab_size}^{gamma} = {vocab_size**gamma:,} draft blocks is too many "
                         f"(limit {MAX_BLOCKS:,}): use a smaller vocabulary or block")
    return prefix_law(p, vocab_size), prefix_law(q, vocab_size), int(gamma), vocab_size


def _block_prob(law: Callable, block: tuple) -> float:
    return float(np.prod([float(law(block[:i])[block[i]]) for i in range(len(block))]))


def accepted_length_law(p, q, gamma: int, rule: str = "block", vocab_size: int | None = None):
    """For every draft block x with q(x) > 0: blocks [N, γ], their probability under q [N], and the exact law of
    the accepted length τ given the block [N, γ + 1] (column t: P(τ = t | x)).

    rule "token": speculative sampling, position by position, stopping at the first rejection:
    P(τ ≥ t | x) = Π_{i ≤ t} min(1, p(x_i | x_<i) / q(x_i | x_<i)).
    rule "block": block verification (arXiv 2403.10444, Algorithm 2): with h_i from `block.block_weights`,
    τ = the largest i with η_i < h_i, so P(τ = t | x) = h_t · Π_{j > t} (1 − h_j) (h_0 = 1).
    p: the target at prefixes of length 0..γ; q: the draft at prefixes of length 0..γ − 1 (see the module's
    docstring for the forms). Raises ValueError for an unknown rule, γ < 1, V^γ > MAX_BLOCKS or a bad law.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}: choose 'token' (speculative sampling) or 'block' (block verification)")
    p, q, gamma, V = _setup(p, q, gamma, vocab_size)
    blocks, probs, laws = [], [], []
    for x in itertools.product(range(V), repeat=gamma):
        prob = _block_prob(q, x)
        if prob <= 0:
            continue
        P = torch.stack([p(x[:i]) for i in range(gamma + 1)])  # [γ + 1, V]
        Q = torch.stack([q(x[:i]) for i in range(gamma)])  # [γ, V]
        if rule == "token":
            a = torch.tensor([min(1.0, float(P[i, x[i]] / Q[i, x[i]])) for i in range(gamma)], dtype=torch.float64)
            reach = torch.cat([torch.ones(1, dtype=torch.float64), a.cumprod(0)])  # P(τ ≥ t), t = 0..γ
            law = (reach - torch.cat([reach[1:], torch.zeros(1, dtype=torch.float64)])).clamp_min(0.0)
        else:
            _, h = block_weights(P, Q, torch.tensor(x))
            h = torch.cat([torch.ones(1, dtype=torch.float64), h])  # h_0 = 1
            survive = torch.cat([(1 - h[1:]).flip(0).cumprod(0).flip(0), torch.ones(1, dtype=torch.float64)])
            law = (h * survive).clamp_min(0.0)  # P(τ = t) = h_t Π_{j > t} (1 − h_j)
        blocks.append(x)
        probs.append(prob)
        laws.append(law)
    return (torch.tensor(blocks, dtype=torch.long).reshape(-1, gamma), torch.tensor(probs, dtype=torch.float64),
            torch.stack(laws))


def expected_accepted_length(p, q, gamma: int, rule: str = "block", vocab_size: int | None = None) -> float:
    """E[τ], the expected number of accepted draft tokens of one block of γ (tokens per round = E[τ] + 1), exactly:
    Σ_x q(x) Σ_t t · P(τ = t | x) from `accepted_length_law`. Same arguments and errors."""
    _, probs, laws = accepted_length_law(p, q, gamma, rule, vocab_size)
    return float((probs[:, None] * laws * torch.arange(gamma + 1, dtype=torch.float64)).sum())


def prefix_overlap_bound(p, q, gamma: int, vocab_size: int | None = None) -> float:
    """Σ_{i=1..γ} Σ_{x_1..x_i} min(q(x_≤i), p(x_≤i)): an upper bound on the expected common prefix of a draft block
    and a target block under ANY coupling (each prefix length coupled on its own; P(X_≤i = Y_≤i) ≤ 1 − TV)."""
    p, q, gamma, V = _setup(p, q, gamma, vocab_size)
    total = 0.0
    for i in range(1, gamma + 1):
        for x in itertools.product(range(V), repeat=i):
            total += min(_block_prob(q, x), _block_prob(p, x))
    return total


def ideal_accepted_length(p, q, gamma: int, vocab_size: int | None = None) -> float:
    """max over couplings π of (X ~ q, Y ~ p) blocks of E_π[common prefix length of X and Y], by a linear program
    (cvxpy; V^(2γ) ≤ LP_MAX_VARIABLES). No verifier reaches it in general: it may pair a draft block with a
    target block that differs from it after the first mismatch, tokens the target never scored. p must be
    given at every prefix (not only along drafts). Raises ValueError for sizes past the limits or bad laws."""
    import cvxpy as cp

    p, q, gamma, V = _setup(p, q, gamma, vocab_size)
    if V ** (2 * gamma) > LP_MAX_VARIABLES:
        raise ValueError(f"the LP would have V^(2γ) = {V ** (2 * gamma):,} variables (limit {LP_MAX_VARIABLES:,})")
    blocks = list(itertools.product(range(V), repeat=gamma))
    qx = np.array([_block_prob(q, x) for x in blocks])
    py = np.array([_block_prob(p, y) for y in blocks])
    lcp = np.array([[next((i for i in range(gamma) if x[i] != y[i]), gamma) for y in blocks] for x in blocks], float)
    pi = cp.Variable((len(blocks), len(blocks)), nonneg=True)
    problem = cp.Problem(cp.Maximize(cp.sum(cp.multiply(lcp, pi))), [cp.sum(pi, axis=1) == qx, cp.sum(pi, axis=0) == py])
    problem.solve()
    return float(problem.value)


def optimal_acceptance_of_law(p, tuples: torch.Tensor, weight: torch.Tensor) -> float:
    """The largest P(Y ∈ drafts) over couplings of a draft law (tuples [N, k] with probabilities weight [N]) and
    Y ~ p [V]: min over token sets H ⊆ V of p(H) + 1 − P(every draft of the tuple lies in H) (max-flow min-cut
    on tuples -> tokens). Enumerates the 2^V sets, so V ≤ 16. For i.i.d. drafts this is α*(p, q^⊗k)
    (`ot.optimal_acceptance`); for another draft law (without replacement, SpecHub's hub pairs, from
    `exact.draft_tuples`) it is that law's own optimum. Raises ValueError for bad shapes or V > 20."""
    p = as_tensor(p)
    check_distribution(p, "p (target)")
    tuples, weight = torch.as_tensor(tuples, dtype=torch.long), as_tensor(weight)
    V = len(p)
    if p.ndim != 1 or tuples.ndim != 2 or weight.shape != (len(tuples),):
        raise ValueError(f"pass p [V], tuples [N, k], weight [N]; got {tuple(p.shape)}, {tuple(tuples.shape)}, "
                         f"{tuple(weight.shape)}")
    if V > 16:
        raise ValueError(f"enumerating the 2^V token sets needs V ≤ 16, got V = {V}")
    if len(tuples) and (tuples.min() < 0 or tuples.max() >= V):
        raise ValueError(f"draft ids must lie in [0, {V})")
    if abs(float(weight.sum()) - 1) > 1e-6 or (weight < 0).any():
        raise ValueError(f"the tuple probabilities must be ≥ 0 and sum to 1, got sum {float(weight.sum()):.6g}")
    masks = torch.arange(2**V)[:, None].bitwise_right_shift(torch.arange(V)).bitwise_and(1).bool()  # [2^V, V]
    p_of = (masks.to(p.dtype) * p).sum(-1)  # p(H)
    inside = masks[:, tuples].all(-1).to(p.dtype)  # [2^V, N]: every draft of the tuple in H
    return float((p_of + 1 - inside @ weight).min().clamp(0.0, 1.0))


def spechub_acceptance(p, q):
    """Exact acceptance of the SpecHub-style hub rule (k = 2; Sun et al., EMNLP 2024, arXiv 2411.05289), batched
    over [..., V] in closed form, so real vocabularies need no enumeration: the drafts are (a, x) with a = argmax q
    and x ~ w = q(· | x ≠ a); each pair sends its mass to x up to p(x), and what is left over to the hub a up to
    p(a): Σ_{x ≠ a} min(p(x), w(x)) + min(p(a), Σ_{x ≠ a} (w(x) − p(x))_+). This is the optimum for that draft
    law (`optimal_acceptance_of_law`). Raises ValueError for invalid p, q or a q with a single token of q > 0."""
    p, q = check_pair(p, q)
    if ((q > 0).sum(-1) < 2).any():
        raise ValueError("the hub rule draws 2 distinct drafts, but q has fewer than 2 tokens with q > 0")
    hub = q.argmax(-1, keepdim=True)
    rest = q.scatter(-1, hub, 0.0)
    w = rest / rest.sum(-1, keepdim=True)
    to_x = torch.minimum(p, w).scatter(-1, hub, 0.0).sum(-1)
    excess = (w - p).clamp_min(0).scatter(-1, hub, 0.0).sum(-1)
    acc = to_x + torch.minimum(p.gather(-1, hub)[..., 0], excess)
    return float(acc) if acc.ndim == 0 else acc
