"""The exact expected number of accepted drafts in a round of k i.i.d. drafts of length L, for any token-level rule
decided along the drafts (theory/path.py), by enumerating every draft set (small vocabularies only).

The round is SpecTr's (Sun et al., NeurIPS 2023, §4, Algorithm 4) with any rule of theory/selection.py whose drafts
are i.i.d.: each draft is a chain x_1..x_L drawn from q(· | prefix); at depth i the rule decides among the tokens of
the drafts still valid, and the round goes on while its output is one of them (a residual draw that equals a
valid draft's token continues the walk too, as `select_path` does). For each draft set the law of the walk is
computed from the rule's pass probabilities, without uniforms, so the expectation is exact; compare it with
`enumeration.expected_accepted_length` for one draft (token and block verification).
"""
from __future__ import annotations

import itertools

import torch

from .dists import is_int
from .enumeration import _setup
from .exact import decision_law
from .selection import RULES, _pass_probabilities, check_rule

MAX_DRAFT_SETS = 20_000  # V^(k·L) draft sets enumerated at most


def expected_round_accepted(rule: str, p, q, k: int, L: int, vocab_size: int | None = None) -> float:
    """E[accepted drafts] of one round of k i.i.d. drafts of length L under `rule` (tokens per round = this + 1).

    p: the target at prefixes of length 0..L, q: the draft at prefixes of length 0..L − 1, in any form of
    `enumeration.prefix_law` (a callable prefix -> [V], a dict of prefixes, or one [V] vector for i.i.d. positions).
    Raises ValueError for a rule whose drafts are not i.i.d. or that takes another k, k or L < 1, or
    V^(k·L) > MAX_DRAFT_SETS.
    """
    check_rule(rule, k)
    if not RULES[rule].iid:
        raise ValueError(f"{rule!r} draws its drafts without replacement or as hub pairs: enumerated here are i.i.d. "
                         f"drafts only (kseq, rrs, sampled, optimal; sps with k = 1)")
    if not is_int(L) or L < 1:
        raise ValueError(f"L (draft length) must be an integer ≥ 1, got {L!r}")
    p, q, L, V = _setup(p, q, L, vocab_size)
    if V ** (k * L) > MAX_DRAFT_SETS:
        raise ValueError(f"enumerating V^(k·L) = {V}^{k * L} = {V ** (k * L):,} draft sets is too many (limit "
                         f"{MAX_DRAFT_SETS:,}): use a smaller vocabulary, k or L")
    chains = [c for c in itertools.product(range(V), repeat=L) if _chain_prob(q, c) > 0]
    total = 0.0
    for drafts in itertools.product(chains, repeat=k):
        weight = 1.0
        for chain in drafts:
            weight *= _chain_prob(q, chain)
        total += weight * _walk(rule, p, q, torch.tensor(drafts), list(range(k)), 0, (), L)
    return total


def _chain_prob(q, chain: tuple) -> float:
    prob = 1.0
    for i, x in enumerate(chain):
        prob *= float(q(chain[:i])[x])
    return prob


def _walk(rule: str, p, q, tokens: torch.Tensor, valid: list, depth: int, prefix: tuple, L: int) -> float:
    """Expected accepted drafts from `depth` on, the drafts `valid` sharing `prefix`."""
    if depth == L:
        return 0.0
    rule_i = rule if depth == 0 else (RULES[rule].deeper or rule)
    column = tokens[valid, depth]
    P, Q = p(prefix), q(prefix)
    a, residual = _pass_probabilities(rule_i, P[None], Q[None], column[None])
    out = decision_law(a, residual(), column[None])[0]  # the output's law [V]
    expected = 0.0
    for y in set(column.tolist()):
        if out[y] > 0:
            rows = [r for r in valid if int(tokens[r, depth]) == y]
            expected += float(out[y]) * (1.0 + _walk(rule, p, q, tokens, rows, depth + 1, prefix + (y,), L))
    return expected
