"""A round of K drafts of length L decided position by position along the drafts' prefix tree.

At depth i the drafts that agree with the tokens emitted so far are still valid; one token-level rule decides
among their tokens at that depth, and the round goes on only while the emitted token is one of them. This is
K-SEQ applied along the drafts (SpecTr, Sun et al., NeurIPS 2023, §4, Algorithm 4), and the same walk serves
every token-level rule whose `Rule.first_draw` says how a round's drafts are drawn: at depth 1 the rule itself
decides (on the distinct tokens when its drafts are drawn without replacement); deeper, the drafts sharing a
prefix continued i.i.d. and `Rule.deeper` decides.
"""
from __future__ import annotations

from typing import Callable

import torch

from .dists import sample_rows
from .selection import RULES, sample


def select_path(rule: str, p, q: torch.Tensor, tokens: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, int, int]:
    """Walk the K drafts position by position with the shrinking set of valid drafts.

    rule: a name in RULES whose record has a `first_draw`. p: [k, L+1, V] target probabilities, or a function
    (row, position) -> p row [V], so that only the rows on the path are computed. q [k, L, V] and tokens [k, L]:
    the drafts and the distributions they came from. Returns (new tokens [n + 1], a draft row holding the
    accepted prefix, n accepted draft tokens). Rows with the same prefix share p and q, so row valid[0] speaks
    for all. Inputs are not checked (the decoder's hot path).
    """
    p_at: Callable = p if callable(p) else (lambda r, i: p[r, i])
    record = RULES[rule]
    k, L = tokens.shape
    valid = torch.arange(k, device=tokens.device)
    out = []
    for i in range(L):
        r = int(valid[0])
        column = tokens[valid, i]
        rule_i = rule if i == 0 else (record.deeper or rule)
        candidates = column if RULES[rule_i].iid else _distinct(column)
        y, _ = sample(rule_i, p_at(r, i)[None], q[r, i][None], candidates[None], generator, check=False)
        out.append(y[0])
        match = column == y[0]
        if not match.any():
            return torch.stack(out), r, i  # a residual sample: the correction token ends the round
        valid = valid[match]
    r = int(valid[0])
    bonus = sample_rows(p_at(r, L), generator)  # every draft position hit: one more for free
    return torch.stack(out + [bonus]), r, L


def decide_path(rule: str, logits, warp: Callable, q: torch.Tensor, tokens: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, int, int]:
    """`select_path` on the target's logits [k, L+1, V] (read row by row, so a lazy head computes only the rows on
    the path) warped to probabilities by `warp`: a round of a path-decided method (engine/methods.py)."""
    return select_path(rule, lambda r, i: warp(logits[r, i]), q, tokens, generator)


def _distinct(column: torch.Tensor) -> torch.Tensor:
    """The distinct tokens of column [n] in the order they first appear (draws without replacement, then repeats)."""
    return torch.tensor(list(dict.fromkeys(column.tolist())), device=column.device)
