"""Step 1 of the optimal rule for i.i.d. drafts (theory/optimal.py): the elements it places and the law of the
pick that reaches α* — the lexicographically optimal base of the coverage polytope {r(A) ≤ 1 − (1 − q(A))^k} for
the weights p (Fujishige 1980), the greatest convex minorant along the elements sorted by P/Q, falling. Sources and
the whole construction: theory/optimal.py's docstring.
"""
from __future__ import annotations

import numpy as np

from .dists import is_int

TOP = 64  # tokens (largest p + q) that are elements of their own, each optimised
GROUPS = 64  # the other tokens, in falling p/q order, make this many elements of about equal q mass


def check_sizes(top, groups) -> None:
    """top: None or an integer ≥ 0; groups: an integer ≥ 1 (ValueError saying what to pass)."""
    if top is not None and (not is_int(top) or top < 0):
        raise ValueError(f"top (tokens that are elements of their own) must be None (every token) or an integer ≥ 0, "
                         f"got {top!r}")
    if not is_int(groups) or groups < 1:
        raise ValueError(f"groups (runs the other tokens are cut into) must be an integer ≥ 1, got {groups!r}")


def w_mass(a, b, k: int):
    """∫_a^b k(1 − t)^(k−1) dt = (1 − a)^k − (1 − b)^k for 0 ≤ a ≤ b ≤ 1, accurate for short intervals."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    left = np.clip(1.0 - a, 0.0, None)
    frac = np.where(left > 0, (b - a) / np.where(left > 0, left, 1.0), 1.0)
    with np.errstate(divide="ignore"):
        return left**k * -np.expm1(k * np.log1p(-np.clip(frac, 0.0, 1.0)))


def elements(p: np.ndarray, q: np.ndarray, top: int | None = TOP, groups: int = GROUPS):
    """The elements the construction places: the `top` tokens of largest p + q one each, the rest of q's support
    in falling p/q order cut into `groups` runs of about equal q mass (top None: every token one element).
    Returns elem [V] (the element of each token, −1 where q = 0), P [E] and Q [E], the elements' masses."""
    support = np.flatnonzero(q > 0)
    elem = np.full(len(p), -1)
    if top is None or len(support) <= top:
        elem[support] = np.arange(len(support))
    else:
        chosen = np.zeros(len(support), dtype=bool)
        chosen[np.argpartition(-(p[support] + q[support]), top - 1)[:top]] = True  # O(V), ties in any order
        own, rest = support[chosen], support[~chosen]
        elem[own] = np.arange(top)
        rest = rest[np.argsort(-(p[rest] / q[rest]))]
        mass = np.cumsum(q[rest])
        run = np.minimum((groups * (mass - 0.5 * q[rest]) / mass[-1]).astype(np.int64), groups - 1)
        elem[rest] = top + np.concatenate([[0], np.cumsum(np.diff(run) > 0)])  # runs renumbered: none empty
    n = int(elem.max()) + 1 if len(support) else 0
    return elem, np.bincount(elem[support], p[support], n), np.bincount(elem[support], q[support], n)


def selection_law(p: np.ndarray, q: np.ndarray, k: int, top: int | None = TOP, groups: int = GROUPS):
    """Step 1 on the elements (`elements`): the selection law r [V] (a grouped token x gets q(x)/Q(e) of its
    element's), the elements' laws R [E], the segments in rank order, a list of (start, end, elements in falling
    P/Q order), and (elem, P, Q). Elements of P = 0 take one interval each after the segments, as one-element
    segments. p, q [V] float64 numpy."""
    elem, P, Q = elements(p, q, top, groups)
    R = np.zeros(len(P))
    segments = []
    chain = np.argsort(-(P / Q), kind="stable")
    liked = chain[P[chain] > 0]
    edges = np.concatenate([[0.0], np.cumsum(Q[liked])])
    gain = w_mass(edges[:-1], edges[1:], k)  # g(A_j) − g(A_{j−1}) per element, never as a difference of rounded sums
    blocks = []  # the greatest convex minorant of (P(A_j), g(A_j)) by pooling adjacent elements: [gain, P, first, end]
    for j, (dg, pj) in enumerate(zip(gain.tolist(), P[liked].tolist())):
        blocks.append([dg, pj, j, j + 1])
        while len(blocks) >= 2 and blocks[-2][0] * blocks[-1][1] >= blocks[-1][0] * blocks[-2][1]:
            g2, p2, _, e2 = blocks.pop()
            blocks[-1][0] += g2
            blocks[-1][1] += p2
            blocks[-1][3] = e2
    for dg, pb, i0, i1 in blocks:
        members = liked[i0:i1]
        R[members] = dg * P[members] / pb  # λ·P with λ = the block's slope
        segments.append((float(edges[i0]), float(edges[i1]), members))
    start = edges[-1]
    for e in chain[P[chain] == 0].tolist():  # elements the target never says: one interval each, last
        segments.append((float(start), float(start + Q[e]), np.array([e])))
        R[e] = float(w_mass(start, start + Q[e], k))
        start += Q[e]
    r = np.zeros(len(p))
    support = elem >= 0
    r[support] = R[elem[support]] * q[support] / Q[elem[support]]
    return r, R, segments, (elem, P, Q)
