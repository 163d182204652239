"""Prompt-lookup mixing: a training-free lift of the draft distribution where the target copies from its context.

When the last n ≥ 2 tokens of the sequence (context, accepted tokens and the draft's own tokens so far) also
occur earlier in it, the token that followed that earlier occurrence is the *lookup token* (prompt lookup
decoding, Saxena 2023; the n-gram drafts of lookahead decoding, Fu et al. 2024). The draft's distribution is then
mixed with a point mass there,

    q'(x) = (1 − λ_n) q(x) + λ_n [x = lookup token],   λ_n = min(0.8, 0.2 + 0.1 n),

longer matches getting more weight. Drafts are sampled from q' and verified against q', so every lossless rule
(speculative sampling, K-SEQ, RRS, block verification) stays exact: they are exact for any draft distribution
(Leviathan et al. 2023, §3; Sun et al. 2023, §4). It pays where a feature draft under-predicts copying: on the
project's held-out prompts the target gave the lookup token p ≈ 0.47–0.53 after 3–4 matched tokens while the
draft gave it q ≈ 0.16–0.18. λ_n was chosen on those held-out prompts (never on a benchmark's).
"""
from __future__ import annotations

import torch

MIN_N, MAX_N = 2, 6  # matched tokens: at least MIN_N for a lookup; longer matches are not told apart


def weight(n: int) -> float:
    """λ_n, the lookup token's share of q' after a match of n tokens (0 below MIN_N)."""
    return 0.0 if n < MIN_N else min(0.8, 0.2 + 0.1 * min(n, MAX_N))


def lookup_next(history: torch.Tensor) -> tuple[int, int]:
    """(lookup token, n) for a sequence history [T]: the token after the most recent earlier occurrence of the
    longest suffix of ≥ MIN_N tokens (up to MAX_N) that occurs earlier; (-1, 0) when there is none."""
    T = len(history)
    if T <= MIN_N:
        return -1, 0
    ends = (history[:-1] == history[-1]).nonzero().flatten()  # earlier positions holding the last token
    if len(ends) == 0:
        return -1, 0
    length = torch.ones_like(ends)
    alive = torch.ones(len(ends), dtype=torch.bool, device=history.device)
    for m in range(1, min(MAX_N, T - 1)):
        idx = ends - m
        alive &= (idx >= 0) & (history[idx.clamp_min(0)] == history[T - 1 - m])
        length += alive
    best = int(length.max())
    if best < MIN_N:
        return -1, 0
    end = ends[(length == best).nonzero().flatten()[-1]]
    return int(history[end + 1]), best


def _mixed(q: torch.Tensor, found: list[tuple[int, int]]) -> torch.Tensor:
    """q' [R, V]: row r of q [R, V] mixed with its lookup found[r] = (token, n) (n = 0: the row as it was)."""
    rows = [r for r, (_, n) in enumerate(found) if n]
    out = q.clone()
    if rows:
        lam = torch.tensor([weight(found[r][1]) for r in rows], dtype=q.dtype, device=q.device)
        idx = torch.tensor(rows, device=q.device)
        out[idx] *= (1.0 - lam)[:, None]
        out[idx, torch.tensor([found[r][0] for r in rows], device=q.device)] += lam
    return out


def mix_rows(q: torch.Tensor, histories: list[torch.Tensor]) -> torch.Tensor:
    """q' [R, V] from draft distributions q [R, V] and each row's sequence so far (a [T_r] tensor per row)."""
    return _mixed(q, [lookup_next(h) for h in histories])


class Mixer:
    """The mixing of one drafting round: `mix(q [R, V], prefix [R, d])` with the round's drafted tokens so far
    (R = 1 or k rows, d = drafting depth) after the sequence `history` [T] (context and accepted tokens)."""

    def __init__(self, history: torch.Tensor):
        self.history = history

    def __call__(self, q: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        return mix_rows(q, [torch.cat([self.history, row.to(self.history.device)]) for row in prefix])


def mix_along(q: torch.Tensor, ids: torch.Tensor, first: int = 0) -> torch.Tensor:
    """Teacher forcing: q' [R, V] for draft distributions q [R, V] where row i is the distribution of the token
    after the prefix ids[:first + i + 1] of ids [T] (first = 0: one row per prefix, R ≤ T)."""
    return _mixed(q, [lookup_next(ids[: first + i + 1]) for i in range(len(q))])
