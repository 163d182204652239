"""The optimal token-level rule for k i.i.d. drafts: its acceptance is α*(p, q^⊗k), the optimal-transport value,
on a small vocabulary; on a real one the same construction on 128 elements (the 64 tokens of largest p + q, and
64 runs of the other tokens), exact with an acceptance a little below α*. Notebook 06, §6, walks through it on an
example.

Sources: α* and its closed form as a minimum over the prefixes of the tokens sorted by p/q, Hu et al., "Towards
Optimal Multi-draft Speculative Decoding", ICLR 2025; the canonical decomposition (select one of the drafts, then
single-draft speculative sampling from its law to p), Khisti et al., ICLR 2025 (arXiv 2410.18234); an optimal rule
by convex minimisation (Global Resolution), Thomas & Pal, ICLR 2026 (arXiv 2511.15898). The construction here is
this library's own, proven by enumeration in tests/test_optimal.py:

1. **The selection law r.** Selecting one draft gives its token a law r, and speculative sampling from r to p
   accepts Σ min(p, r). The laws a selection can give are those with r(A) ≤ g(A) = 1 − (1 − q(A))^k for every
   set A of tokens (a draft must land in A) and r(all) = 1: the base polytope of g. Its lexicographically optimal
   base for the weights p (Fujishige 1980) reaches α*: along the tokens sorted by p/q, falling, it is the greatest
   convex minorant of the points (p(A_j), g(A_j)) of the prefixes A_j, and r = λ·p on a segment of slope λ. The
   segments of λ < 1 make a set A with r(A) = g(A) and r ≥ p elsewhere, so Σ min(p, r) = g(A) + p(not A), which
   is at least α* (the minimum of such sums over the prefixes) and at most α* (no lossless rule keeps more).
2. **Reaching r exactly.** Each token owns a part of [0, 1) of length q(x); a draft of x draws a rank uniformly
   in its token's part and the draft of least rank is selected. The least of k uniform ranks has density
   w(t) = k(1 − t)^(k − 1), so x is selected with probability W(part of x), the w-mass of its part. A segment's
   tokens share the segment's interval [q(A_{j−1}), q(A_j)) (a set with r(A) = g(A) takes the lowest ranks);
   inside it, tokens in falling r/q order each take a window — an interval of the ranks not yet taken, which may
   jump over the parts of earlier tokens — whose w-mass is exactly r(x). Such a window exists as long as every
   first-n tokens of what is left need no more mass than the lowest ranks left can give them (r is majorised by
   w); that holds on the segment (step 1's r(A) ≤ g(A)), and taking a window keeps it for the rest.
3. **The decision.** For given drafts the probability that draft i holds the least rank is an integral of a
   piecewise polynomial (Gauss–Legendre, exact); draft i is output with that probability times min(1, p/r) of
   its token, and after a rejection the output is drawn from (p − r)_+, normalised. The law is p whatever r is, as
   long as r is the selection's law; r is therefore recomputed from the parts themselves.

On a real vocabulary the construction places elements instead of tokens (`elements`): each of the TOP tokens of
largest p + q is one, and the other tokens, in falling p/q order, are cut into GROUPS runs of about equal q mass.
A run is placed as one token of its total p and q; the drafts of its tokens all draw their ranks in the run's parts,
so a token of the run is selected with q(x)/Q(run) of the run's probability (proportional to q inside the run, as
speculative sampling would). The law is exact whatever the elements; the acceptance, in closed form by
`optimal_iid_acceptance`, is α* when every token is its own element (top=None, or at most TOP tokens with q > 0)
and a little below it otherwise. One limit of floats: an element whose q is below the resolution where its part
lies (q ≲ 1e-16, as in a peaked draft) gets a point for a part, its drafts rank there and are never accepted
(r = 0); the law then departs from p by at most such elements' q.
"""
from __future__ import annotations

import bisect
import math
from functools import lru_cache

import numpy as np
import torch

from .dists import check_drafts, check_pair, normalise
from .optimal_law import GROUPS, TOP, check_sizes, elements, selection_law, w_mass

__all__ = ["GROUPS", "TOP", "RankParts", "check_sizes", "elements", "optimal_iid_acceptance", "optimal_iid_pass",
           "selection_law", "w_mass"]


class RankParts:
    """The parts of [0, 1) each token's drafts draw their ranks in (step 2), and the selection law they give.

    `parts(x)` -> [n, 2] intervals, shared by the tokens of one element, cut when first asked for (a segment's
    windows up to that element: each window depends only on those before it). `r` [V]: the law of the selected
    token, a token's share q(x)/Q(e) of its element's w-mass: the mass its parts reach where they are cut, the
    target of step 1 elsewhere (the windows reach it to ~1e-15). Built from p, q [V] (float64 numpy) and k; `top`,
    `groups` as in `elements`.
    """

    def __init__(self, p: np.ndarray, q: np.ndarray, k: int, top: int | None = TOP, groups: int = GROUPS):
        check_sizes(top, groups)
        self.k, self._q = k, q
        _, R, self._segments, (self._elem, _, self._Q) = selection_law(p, q, k, top, groups)
        self._target = R
        self._reached = R.copy()  # each element's w-mass: its parts' once they are cut
        self._pieces = [None] * len(R)  # per element: its parts [n, 2]
        self._where = {}  # element -> (its segment, its place in it)
        self._cut = [0] * len(self._segments)  # elements of each segment cut so far
        self._gaps = [[(a, b)] for a, b, _ in self._segments]  # what each segment has left
        for i, (_, _, members) in enumerate(self._segments):
            for j, e in enumerate(members.tolist()):
                self._where[e] = (i, j)

    def parts(self, x: int) -> np.ndarray:
        e = int(self._elem[x])
        if self._pieces[e] is None:
            i, j = self._where[e]
            members = self._segments[i][2]
            for jj in range(self._cut[i], j + 1):
                m = int(members[jj])
                if jj == len(members) - 1:
                    window, self._gaps[i] = self._gaps[i] or [(self._segments[i][1],) * 2], []
                elif not self._gaps[i]:  # the segment is used up to the float resolution: a point at its end
                    window = [(self._segments[i][1],) * 2]
                else:
                    window, self._gaps[i] = _window(self._gaps[i], float(self._Q[m]), float(self._target[m]), self.k)
                self._pieces[m] = np.array(window)
                self._reached[m] = w_mass(self._pieces[m][:, 0], self._pieces[m][:, 1], self.k).sum()
            self._cut[i] = j + 1
        return self._pieces[e]

    def r_at(self, x: np.ndarray) -> np.ndarray:
        """`r` of the tokens x [n] (each with q > 0) only: the decision's share of the work."""
        e = self._elem[x]
        return self._reached[e] * self._q[x] / self._Q[e]

    @property
    def r(self) -> np.ndarray:
        r = np.zeros(len(self._q))
        support = np.flatnonzero(self._elem >= 0)
        r[support] = self.r_at(support)
        return r

    def cut_all(self) -> "RankParts":
        """Cut every element's parts (for checks: `r` is then the parts' law everywhere)."""
        for x in np.flatnonzero(self._elem >= 0):
            self.parts(int(x))
        return self

    def win_probabilities(self, drafts) -> np.ndarray:
        """P(draft i holds the least rank) [k] for draft tokens [k] (each with q > 0): exact, by Gauss–Legendre on
        every interval between the parts' ends, where each survival function is linear. A token whose parts have
        no length in floats (q below the resolution where it is placed) draws the rank at its point; ties between
        points go to the earlier draft."""
        parts = [self.parts(int(x)) for x in drafts]
        n = len(parts)
        length = np.array([(pc[:, 1] - pc[:, 0]).sum() for pc in parts])
        point = length <= 0
        T = np.unique(np.concatenate([pc.ravel() for pc in parts]))
        M = len(T) - 1
        density = np.zeros((n, M))
        for i in np.flatnonzero(~point):
            for s, e in parts[i]:
                density[i, np.searchsorted(T, s):np.searchsorted(T, e)] = 1.0 / length[i]
        width = np.diff(T)
        survive = 1.0 - np.concatenate([np.zeros((n, 1)), np.cumsum(density * width, 1)], 1)  # at each T [n, M + 1]
        at = np.array([parts[i][0, 0] if point[i] else np.nan for i in range(n)])
        for i in np.flatnonzero(point):  # a point survives until its rank
            survive[i] = (T < at[i]).astype(float)
        win = np.zeros(n)
        if M > 0:
            nodes, weights = _gauss(n)
            S = survive[:, :-1, None] - density[:, :, None] * (width[:, None] * nodes)[None]  # [n, M, nodes]
            ones = np.ones((1,) + S.shape[1:])
            before = np.cumprod(np.concatenate([ones, S[:-1]]), 0)
            after = np.cumprod(np.concatenate([ones, S[::-1][:-1]]), 0)[::-1]
            others = np.clip(before * after, 0.0, None)  # Π over the other drafts of their survival
            win = (density * width * (others * weights).sum(-1)).sum(-1)
        for i in np.flatnonzero(point):
            m = np.searchsorted(T, at[i])
            alive = [survive[j, m] if not point[j] else float(at[j] > at[i] or (at[j] == at[i] and j > i))
                     for j in range(n) if j != i]
            win[i] = float(np.prod(alive))
        return win


@lru_cache(maxsize=None)
def _gauss(n: int):
    """Gauss–Legendre nodes on [0, 1] and weights summing to 1, exact for polynomials of degree n − 1."""
    x, w = np.polynomial.legendre.leggauss(n // 2 + 1)
    return (x + 1) / 2, w / 2


def _w(a: float, b: float, k: int) -> float:
    """`w_mass` of one interval, in plain floats (the windows' inner loop)."""
    left = 1.0 - a
    if left <= 0.0 or b <= a:
        return 0.0
    return left**k * -math.expm1(k * math.log1p(-min((b - a) / left, 1.0))) if b - a < left else left**k


def _window(gaps: list, c: float, m: float, k: int):
    """The window of length c of the gaps (counted as one interval) whose w-mass is m, and the gaps left. Its start
    is found by scipy's brentq; only the acceptance depends on its precision (r is recomputed from the window)."""
    from scipy.optimize import brentq

    lengths = [e - s for s, e in gaps]
    cum, mass = [0.0], [0.0]
    for (s, e), n in zip(gaps, lengths):
        cum.append(cum[-1] + n)
        mass.append(mass[-1] + _w(s, e, k))
    total = cum[-1]

    def gap_of(z):  # the gap holding the point z of the gaps counted as one interval
        return min(max(bisect.bisect_right(cum, z) - 1, 0), len(gaps) - 1)

    def H(z):  # w-mass of the first z of the gaps
        i = gap_of(z)
        return mass[i] + _w(gaps[i][0], gaps[i][0] + min(z - cum[i], lengths[i]), k)

    def f(x):  # falls with x; the root is the window's start
        return H(x + c) - H(x) - m

    hi = max(total - c, 0.0)
    if f(0.0) <= 0:
        x0 = 0.0
    elif f(hi) >= 0:
        x0 = hi
    else:
        x0 = brentq(f, 0.0, hi, xtol=1e-16, rtol=4 * np.finfo(float).eps, maxiter=100, disp=False)
    x1 = min(x0 + c, total)
    window, left = [], []
    for (s, e), c0 in zip(gaps, cum):
        a, b = s + max(x0 - c0, 0.0), s + min(x1 - c0, e - s)
        if b > a:
            window.append((a, b))
            left += [(s, a)] if a > s else []
            left += [(b, e)] if e > b else []
        else:
            left.append((s, e))
    if not window:  # c below the float resolution at x0: a point there (see RankParts.win_probabilities)
        i = gap_of(x0)
        point = min(gaps[i][0] + (x0 - cum[i]), gaps[i][1])
        return [(point, point)], gaps
    return window, left


def optimal_iid_pass(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, top: int | None = TOP,
                     groups: int = GROUPS):
    """Pass probabilities [B, k] of drafts [B, k] in trial order and residual() -> [B, V] for the optimal rule
    (what `selection.sample("optimal", ...)` runs). p, q [B, V] float64 as `selection.sample` checks them; top,
    groups as in `elements`. Consecutive rows with the same (p, q) share one construction, and the same drafts one
    integral. ValueError for a draft token with q = 0 or bad top / groups."""
    check_drafts(q, drafts)
    B, k = drafts.shape
    P, Q, D = p.detach().cpu().numpy(), q.detach().cpu().numpy(), drafts.detach().cpu().numpy()
    a = np.zeros((B, k))
    rows = []  # the construction of each row, shared by rows with the same (p, q)
    decided = {}
    for b in range(B):
        if not rows or not (np.array_equal(P[b], P[b - 1]) and np.array_equal(Q[b], Q[b - 1])):
            rows.append(RankParts(P[b], Q[b], k, top, groups))
            decided = {}
        else:
            rows.append(rows[-1])
        key = D[b].tobytes()
        if key not in decided:
            win = rows[-1].win_probabilities(D[b])  # cuts the drafts' parts first
            r = rows[-1].r_at(D[b])
            out = win * np.where(r > 0, np.minimum(1.0, P[b, D[b]] / np.where(r > 0, r, 1.0)), 0.0)  # P(draft i out)
            left = 1.0 - np.concatenate([[0.0], np.cumsum(out)[:-1]])
            decided[key] = np.clip(np.where(left > 0, out / np.where(left > 0, left, 1.0), 0.0), 0.0, 1.0)
        a[b] = decided[key]

    def residual():
        laws = {row: row.r for row in dict.fromkeys(rows)}  # one law per construction
        r = np.stack([laws[row] for row in rows])
        return normalise(p - torch.from_numpy(r).to(p), p)

    return torch.from_numpy(a).to(p), residual


def optimal_iid_acceptance(p, q, k: int, top: int | None = TOP, groups: int = GROUPS):
    """Exact acceptance Σ min(p, r) of the optimal rule with k i.i.d. drafts from q, batched over p, q [..., V] of
    one shape; it equals α*(p, q^⊗k) when every token with q > 0 is an element of its own (at most `top` of them,
    or top=None). ValueError for invalid p, q, k (one integer), shapes, top or groups."""
    if isinstance(k, torch.Tensor):
        raise ValueError("optimal_iid_acceptance takes one integer k (loop over k for several)")
    p, q = check_pair(p, q, k)
    check_sizes(top, groups)
    if p.shape != q.shape:
        raise ValueError(f"p {tuple(p.shape)} and q {tuple(q.shape)} must have one shape [..., V] (one q per p row)")
    P, Q = p.reshape(-1, p.shape[-1]).cpu().numpy(), q.reshape(-1, q.shape[-1]).cpu().numpy()
    acc = np.array([np.minimum(P[b], selection_law(P[b], Q[b], int(k), top, groups)[0]).sum() for b in range(len(P))])
    acc = torch.from_numpy(acc).reshape(p.shape[:-1]).to(p)
    return float(acc) if acc.ndim == 0 else acc
