"""k = "auto" and L = "auto": each round takes the (k, L) with the most predicted tokens per second.

Prediction (docs/cheatsheet.md, "Rounds and speed"): a round whose draft position d is accepted with conditional
probability α_d (given positions < d were) yields E = 1 + Σ_{i ≤ L} Π_{d ≤ i} α_d tokens and costs
`Costs.round_ms` (the accepted path visits E positions; the tree form scores 1 + Σ_{d ≤ L} n_d positions,
n_d the distinct draft prefixes at depth d). L = 0 is a plain target step: one token for `ar_ms`.

The calibration is a prior; the generation's own rounds correct it, for acceptance and for time:

- acceptance: the α_d and n_d of each k start from the priors measured at calibration; one factor c (accepted /
  expected under the priors, over every round so far, with 8 pseudo-trials at c = 1) moves the priors of every
  k, since a prompt that is easy for one k is easy for all; then each (k, d) blends its own tries with 4
  pseudo-trials at the moved prior.
- time: each round's and plain step's measured ms over its predicted ms gives a ratio, clipped to [1/3, 3] so
  that one stalled round cannot switch drafting off. The mean ratio of everything timed is the machine's scale
  (1 before anything is timed); the drafted rounds' mean (with one pseudo-round at the machine's scale) is the
  scale of every drafted option, and each (k, L) blends its own ratios with one pseudo-round at that; plain
  steps blend theirs with one pseudo-step at the machine's scale (`AutoConfig.time_scales`). A machine that
  runs uniformly slower or faster than calibrated thus scales every option alike, while a calibration that
  misjudged drafting alone (a round dearer or cheaper than predicted, plain steps as predicted) moves the drafted
  options against plain steps. `time_disagreement` is how far the measured time of the whole generation is from
  the calibration's prediction for the same rounds and steps.
- looks: the first round of a generation drafts (at the best L ≥ 1) whatever the prior says, and after 16 plain
  steps in a row one round is drafted to look again; each look that does not change the choice doubles the
  wait (up to 256 steps), so that a machine where drafting cannot pay loses little to looking, and a prior that
  undervalues drafting is corrected by measured rounds within the generation.

The choice depends only on past rounds (their tokens and their clock), so every round is an exact round of its
rule and the output law is the target's whatever is chosen.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .costs import CALIBRATION_K, Costs, form_name

K_AUTO = CALIBRATION_K  # draft counts "auto" chooses among
L_MAX = 8  # longest draft "auto" considers
EXPLORE_AFTER = 16  # plain steps in a row before one drafted round looks again (doubling after each look)
EXPLORE_MAX = 256
RATIO_CLIP = 3.0  # a round's measured / predicted time is clipped to [1/3, 3] before it is learnt from
LEARN_TIMES = True  # learn costs from measured rounds (tests of the choice under synthetic costs turn it off)


@dataclass(frozen=True)
class Round:
    """One verification round as the stats record it."""

    k: int
    L: int  # tokens drafted per draft
    accepted: int  # accepted draft tokens
    positions: int  # positions the target call scored
    distinct: tuple[int, ...]  # distinct draft prefixes at depths 1..L
    draft_ms: float = 0.0  # drafting, the draft's roll-back included
    verify_ms: float = 0.0  # the target call and the target's roll-back
    select_ms: float = 0.0  # selection, with the target head's rows it reads
    other_ms: float = 0.0  # the rest of the round (book-keeping, prompt-lookup tables, auto's choice of (k, L))

    @property
    def ms(self) -> float:
        """The round's measured wall time (ms); 0 when it was not timed."""
        return self.draft_ms + self.verify_ms + self.select_ms + self.other_ms


def expected_tokens(alpha, L: int) -> float:
    """Tokens per round, 1 + Σ_{i=1..L} Π_{d ≤ i} α_d, for conditional acceptances alpha [≥ L]."""
    return 1.0 + float(np.cumprod(np.asarray(alpha, float)[:L]).sum()) if L > 0 else 1.0


def _prior(table: dict[str, list[float]], k: int, default: float) -> np.ndarray:
    """The calibrated row of the nearest calibrated k, extended to L_MAX depths by its last value."""
    if not table:
        return np.full(L_MAX, default)
    near = min((int(x) for x in table), key=lambda x: (abs(x - k), x))
    row = list(table[str(near)]) or [default]
    return np.array((row + [row[-1]] * L_MAX)[:L_MAX], float)


def predict_tokens_per_second(costs: Costs, k: int, L: int, form: str | None = None, alpha=None, nodes=None, *,
                              tree: bool | None = None) -> float:
    """Predicted tokens/s of rounds of k drafts of length L (L = 0: plain target steps) verified in `form` (a name
    in engine.verifiers.VERIFIERS, e.g. "tree" or "batch") from the costs and conditional acceptances alpha [≥ L]
    (default: the calibrated priors of k) and distinct prefixes per depth nodes [≥ L] (the positions a call
    scores where the form counts them; default: the priors). Raises TypeError / ValueError for costs that are
    not a `Costs`, k not an integer ≥ 1, L not an integer in 0..L_MAX, an unknown form, or alpha / nodes that are
    not 1-D with ≥ L finite values (alpha in [0, 1], nodes ≥ 0). tree=True / False is the form's deprecated
    spelling ("tree" / "batch")."""
    from ..theory.dists import is_int

    if not isinstance(costs, Costs):
        raise TypeError(f"costs must be the pair's calibrated Costs (spectr_lib.pair_costs(pair)), got {type(costs).__name__}")
    if not is_int(k) or k < 1:
        raise ValueError(f"k must be an integer ≥ 1, got {k!r}")
    if not is_int(L) or not 0 <= L <= L_MAX:
        raise ValueError(f"L must be an integer in 0..{L_MAX} (0: a plain target step), got {L!r}")
    if tree is not None:
        if form is not None:
            raise ValueError("pass the verification form once: form='tree' / 'batch' (tree= is its old spelling)")
        form = tree
    if form is None:
        raise ValueError("form must name the verification form the rounds use, e.g. 'tree' or 'batch'")
    form = form_name(form)
    if L == 0:
        return 1e3 / costs.ar_ms
    alpha = _prior(costs.alpha, k, 0.3) if alpha is None else _per_depth("alpha", alpha, L, 1.0)
    nodes = _prior(costs.nodes, k, k) if nodes is None else _per_depth("nodes", nodes, L, np.inf)
    e = expected_tokens(alpha, L)
    positions = 1 + float(np.sum(np.asarray(nodes, float)[:L]))
    return 1e3 * e / costs.round_ms(k, L, form, e, positions)


def _per_depth(name: str, values, L: int, top: float) -> np.ndarray:
    """values as a float array [≥ L] of finite numbers in [0, top]; ValueError otherwise."""
    try:
        arr = np.asarray(values, float)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 1 or len(arr) < L or not np.isfinite(arr).all() or (arr < 0).any() or (arr > top).any():
        raise ValueError(f"{name} must be a 1-D sequence of at least L = {L} finite numbers in [0, {top:g}] (one per "
                         f"depth), got {values!r}")
    return arr


class AutoConfig:
    """Chooses (k, L) for each round and learns acceptance and time from the rounds it sees (see the module
    docstring). `update(round)` after each drafted round, `update_plain(ms)` after each plain step."""

    def __init__(self, costs: Costs, ks: tuple[int, ...], Ls: tuple[int, ...], form: str):
        self.costs, self.ks, self.Ls, self.form = costs, ks, Ls, form_name(form)
        self.prior = {k: _prior(costs.alpha, k, 0.3) for k in ks}
        self.prior_nodes = {k: _prior(costs.nodes, k, k) for k in ks}
        self.acc = {k: np.zeros(L_MAX) for k in ks}
        self.tried = {k: np.zeros(L_MAX) for k in ks}
        self.nodes = {k: np.zeros(L_MAX) for k in ks}
        self.seen = {k: np.zeros(L_MAX) for k in ks}
        self.accepted_total = self.expected_total = 0.0
        # measured / predicted ms, clipped: Σ and count per drafted option [len(ks), L_MAX + 1] (column 0 unused),
        # and of the plain steps
        self.ratio_sum, self.ratio_n = np.zeros((len(ks), L_MAX + 1)), np.zeros((len(ks), L_MAX + 1))
        self.plain_sum, self.plain_n = 0.0, 0
        self.measured_ms = self.predicted_ms = 0.0  # the whole generation, against the calibration's prediction
        self.plain_in_a_row = EXPLORE_AFTER  # the first round looks (and a first look that changes nothing
        self.explore_after, self.explored, self.first = EXPLORE_AFTER, False, True  # does not lengthen the wait)
        self._speeds = None

    def alpha(self, k: int) -> np.ndarray:
        """Current conditional acceptance per depth for k drafts."""
        c = (self.accepted_total + 8.0) / (self.expected_total + 8.0)
        moved = np.clip(self.prior[k] * c, 0.0, 0.99)
        return (self.acc[k] + 4.0 * moved) / (self.tried[k] + 4.0)

    def distinct(self, k: int) -> np.ndarray:
        """Current distinct draft prefixes per depth for k drafts."""
        return (self.nodes[k] + 2.0 * self.prior_nodes[k]) / (self.seen[k] + 2.0)

    def machine_scale(self) -> float:
        """Measured / predicted time of everything timed so far (rounds and plain steps alike; 1 before any): how
        much slower or faster than calibrated this machine runs now."""
        n = self.ratio_n.sum() + self.plain_n
        return float((self.ratio_sum.sum() + self.plain_sum) / n) if n else 1.0

    def time_scales(self) -> np.ndarray:
        """Learnt measured / predicted time of every option [len(ks), L_MAX + 1] (column 0: a plain step): each
        option's own ratios with one pseudo-observation at its family's scale, where a drafted round's family is
        every drafted round (with one pseudo-round at `machine_scale`) and a plain step's is `machine_scale`. A
        machine uniformly slower than calibrated thus scales every option alike, and leaves the choice as it was."""
        machine = self.machine_scale()
        drafted = (self.ratio_sum.sum() + machine) / (self.ratio_n.sum() + 1.0)
        scales = (self.ratio_sum + drafted) / (self.ratio_n + 1.0)
        scales[:, 0] = (self.plain_sum + machine) / (self.plain_n + 1.0)
        return scales

    def ar_ms(self) -> float:
        """Learnt ms of a plain step (`time_scales` of a plain step times the calibrated `ar_ms`)."""
        return self.costs.ar_ms * float(self.time_scales()[0, 0])

    def time_disagreement(self) -> float:
        """Measured / predicted (by the calibration alone) time of the rounds and plain steps timed so far; 1.0
        before any."""
        return self.measured_ms / self.predicted_ms if self.predicted_ms > 0 else 1.0

    def speeds(self) -> np.ndarray:
        """Predicted tokens/s of every option [len(ks), L_MAX + 1] (column 0: a plain step): the calibrated
        prediction (`predict_tokens_per_second` from the current acceptance and distinct prefixes, kept until the
        next round is learnt from) divided by the learnt `time_scales`."""
        if self._speeds is None:
            self._speeds = np.zeros((len(self.ks), L_MAX + 1))
            self._speeds[:, 0] = 1e3 / self.costs.ar_ms
            for i, k in enumerate(self.ks):
                tokens = 1.0 + np.cumsum(np.cumprod(self.alpha(k)))  # E for L = 1..L_MAX
                positions = 1.0 + np.cumsum(self.distinct(k))
                for L in range(1, L_MAX + 1):
                    ms = self.costs.round_ms(k, L, self.form, tokens[L - 1], positions[L - 1])
                    self._speeds[i, L] = 1e3 * tokens[L - 1] / ms
        return self._speeds / self.time_scales()

    def choose(self, left: int) -> tuple[int, int]:
        """(k, L) for the next round, with L ≤ left − 1 tokens (L = 0: a plain target step)."""
        allowed = np.full((len(self.ks), L_MAX + 1), -np.inf)
        Ls = sorted({min(L, left - 1) for L in self.Ls})  # a fixed L shrinks near the end, as without auto
        if Ls == [0]:
            return self.ks[0], 0
        explore = self.plain_in_a_row >= self.explore_after and any(L > 0 for L in Ls)
        if explore:
            Ls = [L for L in Ls if L > 0]
        allowed[:, Ls] = 0.0
        allowed[1:, 0] = -np.inf  # a plain step is one option, whatever k
        i, L = np.unravel_index(np.argmax(self.speeds() + allowed), allowed.shape)
        if L == 0 and self.explored:  # the last look did not change the choice: look less often
            self.explore_after = min(EXPLORE_MAX, 2 * self.explore_after)
        elif L > 0 and not explore:  # drafting pays again: look at the usual pace
            self.explore_after = EXPLORE_AFTER
        self.explored, self.first = explore and not self.first, False
        self.plain_in_a_row = self.plain_in_a_row + 1 if L == 0 else 0
        return self.ks[int(i)], int(L)

    def update(self, r: Round) -> None:
        """Learn from one finished round (its time too, when timed)."""
        if r.k not in self.acc:
            return
        d = np.arange(r.L)
        tried, accepted = d[d <= r.accepted], d[d < r.accepted]
        self.tried[r.k][tried] += 1
        self.acc[r.k][accepted] += 1
        self.accepted_total += len(accepted)
        self.expected_total += float(self.prior[r.k][tried].sum())
        self.nodes[r.k][d] += np.asarray(r.distinct, float)
        self.seen[r.k][d] += 1
        if r.ms > 0:
            predicted = self.costs.round_ms(r.k, r.L, self.form, r.accepted + 1, r.positions)
            self.measured_ms += r.ms
            self.predicted_ms += predicted
            if LEARN_TIMES and predicted > 0 and 1 <= r.L <= L_MAX:
                i = self.ks.index(r.k)
                self.ratio_sum[i, r.L] += float(np.clip(r.ms / predicted, 1 / RATIO_CLIP, RATIO_CLIP))
                self.ratio_n[i, r.L] += 1
        self._speeds = None

    def update_plain(self, ms: float) -> None:
        """Learn from one plain target step that took ms."""
        self.measured_ms += ms
        self.predicted_ms += self.costs.ar_ms
        if LEARN_TIMES:
            self.plain_sum += float(np.clip(ms / self.costs.ar_ms, 1 / RATIO_CLIP, RATIO_CLIP))
            self.plain_n += 1
