"""The optimal rule for i.i.d. drafts (theory/optimal.py): its law is p and its acceptance α*, both by exact
enumeration; its selection law lies in the coverage polytope and the rank parts reach it; truncated to the top
tokens it stays exact; the decoder runs it with the target's law; wrong variants are rejected by the same checks."""
import dataclasses
import itertools

import numpy as np
import pytest
import torch

from spectr_lib.engine import laws
from spectr_lib.models.load import tiny_pair
from spectr_lib.theory import exact, optimal, selection
from spectr_lib.theory.kseq import kseq_acceptance
from spectr_lib.theory.ot import optimal_acceptance, optimal_acceptance_lp
from spectr_lib.theory.selection import rrs_acceptance
from conftest import PROMPT, assert_decodes_the_target_law


def cases(seed, n, max_v=6, max_tuples=1296):
    """Random (p, q, k) with zeros in p and q now and then (the edge cases of the construction)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        V, k = int(rng.integers(2, max_v + 1)), int(rng.integers(1, 5))
        if V**k > max_tuples:
            continue
        p = rng.dirichlet(np.ones(V) * rng.choice([0.3, 1.0, 4.0]))
        q = rng.dirichlet(np.ones(V) * rng.choice([0.3, 1.0, 4.0]))
        if len(out) % 3 == 0:
            p[rng.integers(V)] = 0
        if len(out) % 5 == 0:
            q[rng.integers(V)] = 0
        out.append((p / p.sum(), q / q.sum(), k))
    return out


def laws_of(pass_fn, p, q, k):
    """Exact (output law [V], P(a draft passes)) of the decisions `pass_fn` takes on i.i.d. drafts from q."""
    tuples, weight = exact.draft_tuples("kseq", torch.tensor(q), k)
    n, V = len(tuples), len(p)
    P, Q = torch.tensor(p).expand(n, V), torch.tensor(q).expand(n, V)
    a, residual = pass_fn(P, Q, tuples)
    out = exact.decision_law(a, residual(), tuples)
    return (weight[:, None] * out).sum(0).numpy(), float((weight * (1 - (1 - a).prod(-1))).sum())


def test_the_law_is_p_and_the_acceptance_is_alpha_star():
    """Every case: the output law equals p to 1e-12 and the probability that a draft passes equals α* (closed
    form, Hu et al.) to 1e-9, both by enumeration of every draft tuple; the closed form of the rule says the same."""
    for p, q, k in cases(0, 60):
        law, passed = laws_of(optimal.optimal_iid_pass, p, q, k)
        alpha = optimal_acceptance(p, q, k)
        np.testing.assert_allclose(law, p, atol=1e-12, err_msg=f"k={k} p={p} q={q}")
        assert passed == pytest.approx(alpha, abs=1e-9), (p, q, k)
        assert optimal.optimal_iid_acceptance(p, q, k) == pytest.approx(alpha, abs=1e-9)
        assert exact.acceptance("optimal", p, q, k) == pytest.approx(alpha, abs=1e-9)  # through the rule's record


def test_the_acceptance_is_the_lp_optimum():
    """Against the optimal-transport LP itself (cvxpy), not only its closed form."""
    for p, q, k in [([0.5, 0.5], [0.4, 0.6], 2), ([0.6, 0.3, 0.1], [0.1, 0.3, 0.6], 3), ([0.2, 0.5, 0.3], [0.7, 0.2, 0.1], 2)]:
        assert optimal.optimal_iid_acceptance(p, q, k) == pytest.approx(optimal_acceptance_lp(p, q, k), abs=1e-6)


def test_it_beats_kseq_and_rrs_where_they_fall_short():
    """Never below K-SEQ or RRS; on p = (1/2, 1/2), q = (0.4, 0.6), k = 2 it accepts always, K-SEQ and RRS do not."""
    for p, q, k in cases(1, 40):
        opt = optimal.optimal_iid_acceptance(p, q, k)
        assert opt >= kseq_acceptance(p, q, k) - 1e-12 and opt >= rrs_acceptance(p, q, k) - 1e-12
    p, q = [0.5, 0.5], [0.4, 0.6]
    assert optimal.optimal_iid_acceptance(p, q, 2) == pytest.approx(1.0, abs=1e-12)
    assert max(kseq_acceptance(p, q, 2), rrs_acceptance(p, q, 2)) < 0.99


def test_the_selection_law_is_in_the_coverage_polytope_and_the_parts_reach_it():
    """r(A) ≤ 1 − (1 − q(A))^k for every set A and r(all) = 1 (step 1); the parts' w-masses equal r to 1e-12, the
    least rank falls to one draft with probability 1, and the selected token's law by enumeration is r (step 2)."""
    for p, q, k in cases(2, 30, max_v=7, max_tuples=2401):
        V = len(p)
        r = optimal.selection_law(p, q, k, None)[0]
        for mask in itertools.product([False, True], repeat=V):
            A = np.array(mask)
            assert r[A].sum() <= 1 - (1 - q[A].sum()) ** k + 1e-12
        assert r.sum() == pytest.approx(1.0, abs=1e-12)
        parts = optimal.RankParts(p, q, k, None).cut_all()
        np.testing.assert_allclose(parts.r, r, atol=1e-12)
        if V**k > 400:
            continue
        selected = np.zeros(V)
        for t in itertools.product(np.flatnonzero(q > 0), repeat=k):
            win = parts.win_probabilities(np.array(t))
            assert win.sum() == pytest.approx(1.0, abs=1e-12)
            np.add.at(selected, list(t), np.prod(q[list(t)]) * win)
        np.testing.assert_allclose(selected, r, atol=1e-12)


@pytest.mark.parametrize("top, groups", [(2, 1), (2, 2), (1, 3)])
def test_on_elements_instead_of_tokens_it_stays_exact(top, groups):
    """With `top` tokens of their own and the rest in `groups` runs the law is still p; the acceptance is the closed
    form's, never above α*, and below it in some case (the grouping's cost is real, and stated)."""
    costs = []
    for p, q, k in cases(3, 25, max_v=6):
        law, passed = laws_of(lambda P, Q, D: optimal.optimal_iid_pass(P, Q, D, top=top, groups=groups), p, q, k)
        np.testing.assert_allclose(law, p, atol=1e-12)
        assert passed == pytest.approx(optimal.optimal_iid_acceptance(p, q, k, top=top, groups=groups), abs=1e-12)
        costs.append(optimal_acceptance(p, q, k) - passed)
    assert min(costs) > -1e-12 and max(costs) > 1e-3


def test_the_elements_cover_the_support_in_runs_of_falling_ratio():
    rng = np.random.default_rng(4)
    p, q = rng.dirichlet(np.ones(300) * 0.3), rng.dirichlet(np.ones(300) * 0.3)
    q[:5] = 0
    q /= q.sum()
    elem, P, Q = optimal.elements(p, q, top=10, groups=8)
    assert (elem[:5] == -1).all() and (elem[5:] >= 0).all() and len(P) == len(Q) == 18
    np.testing.assert_allclose([P.sum(), Q.sum()], [p[5:].sum(), 1.0], atol=1e-12)
    own = np.flatnonzero((elem >= 0) & (elem < 10))
    assert len(own) == 10 and set(elem[own]) == set(range(10))
    rest = np.setdiff1d(np.arange(5, 300), own)
    assert (p + q)[own].min() >= (p + q)[rest].max()  # the top tokens are those of largest p + q
    ratio = p / np.where(q > 0, q, 1)
    for a, b in zip(range(10, 17), range(11, 18)):  # runs in falling p/q order
        assert ratio[elem == a].min() >= ratio[elem == b].max()


def priority_without_windows(p, q, drafts):
    """WRONG: each element of a segment takes one interval in p/q order (no windows), accepted as if its law were r."""
    original = optimal.RankParts.__init__

    def contiguous(self, p_, q_, k, top=optimal.TOP, groups=optimal.GROUPS):
        original(self, p_, q_, k, top, groups)  # r stays the law the windows would reach
        for a, _, members in self._segments:
            ends = a + np.cumsum(self._Q[members])
            for e, s, t in zip(members.tolist(), np.concatenate([[a], ends[:-1]]), ends):
                self._pieces[e] = np.array([[s, t]])

    optimal.RankParts.__init__ = contiguous
    try:
        out = optimal.optimal_iid_pass(p, q, drafts)
    finally:
        optimal.RankParts.__init__ = original
    return out


def residual_is_p(p, q, drafts):
    """WRONG: after a rejection p itself is sampled."""
    a, _ = optimal.optimal_iid_pass(p, q, drafts)
    return a, lambda: p


@pytest.mark.parametrize("wrong", [priority_without_windows, residual_is_p])
def test_wrong_variants_are_rejected_by_the_same_enumeration(wrong):
    worst = max(np.abs(laws_of(wrong, p, q, k)[0] - p).max() for p, q, k in cases(0, 30))
    assert worst > 1e-3


@pytest.mark.parametrize("form", ["tree", "batch"])
def test_the_decoder_with_the_optimal_rule_follows_the_target_law(form):
    """generate(method="optimal") on a tiny pair follows the target's law of three tokens (chi-square with its
    power asserted, conftest.assert_decodes_the_target_law)."""
    assert_decodes_the_target_law("optimal", 3, form)


def test_the_decoder_harness_rejects_the_optimal_rule_without_its_windows(monkeypatch):
    """Negative control: the same harness and sample size reject the rule whose parts are one interval per token."""
    record = selection.RULES["optimal"]
    monkeypatch.setitem(selection.RULES, "optimal", dataclasses.replace(record, pass_probabilities=priority_without_windows))
    pair = tiny_pair(vocab_size=6, seed=0)
    counts = laws.empirical_counts(pair, PROMPT, 3, 3000, 0, method="optimal", k=3, L=2, verify="tree")
    assert laws.chi_square_pvalue(counts, laws.target_sequence_law(pair, PROMPT, 3)) < 1e-6


def test_bad_input_is_refused_before_any_work():
    with pytest.raises(ValueError, match="one integer k"):
        optimal.optimal_iid_acceptance([0.5, 0.5], [0.5, 0.5], torch.tensor([2]))
    with pytest.raises(ValueError, match="q has 3 entries|p has 2 entries"):
        optimal.optimal_iid_acceptance([0.5, 0.5], [0.2, 0.3, 0.5], 2)
    with pytest.raises(ValueError, match="q = 0"):
        selection.pass_probabilities("optimal", [0.5, 0.5], [1.0, 0.0], torch.tensor([[0, 1]]))


def test_peaked_drafts_with_entries_below_the_float_resolution_stay_exact():
    """A draft whose tokens have q ~ 1e-18..1e-25 next to q ≈ 1 (a confident model at low temperature): the
    elements of no length in floats rank at a point; the law is still p to 1e-12 and the acceptance α* to 1e-9."""
    p = np.array([0.9984932068654603, 4.575e-26, 0.00039284549090287126, 0.0011139476436368865])
    q = np.array([0.9999999999999982, 3.189e-25, 2.042e-18, 1.758e-15])
    p, q = p / p.sum(), q / q.sum()
    for k in (2, 3, 4):
        np.testing.assert_allclose(exact.output_distribution("optimal", p, q, k), p, atol=1e-12)
        assert exact.acceptance("optimal", p, q, k) == pytest.approx(optimal_acceptance(p, q, k), abs=1e-9)


def test_the_sampler_takes_peaked_real_size_rows_without_a_warning(recwarn):
    """Low-temperature rows of a 2,000-token vocabulary: every decision is a probability, the win probabilities of
    the drafts add up to 1, and nothing warns (no division by a part of no length)."""
    rng = np.random.default_rng(5)
    g = torch.Generator().manual_seed(0)
    seen_points = False
    for k in (2, 8):
        for _ in range(5):
            logits = torch.tensor(rng.normal(size=(2, 2000)) * 3)
            p, q = torch.softmax(logits[0] / 0.1, -1), torch.softmax(logits[1] / 0.1, -1)
            drafts = selection.draw_drafts("optimal", q[None], k, g)
            a, residual = optimal.optimal_iid_pass(p[None], q[None], drafts)
            assert ((a >= 0) & (a <= 1)).all() and torch.isfinite(residual()).all()
            parts = optimal.RankParts(p.numpy(), q.numpy(), k)
            assert parts.win_probabilities(drafts[0].numpy()).sum() == pytest.approx(1.0, abs=1e-9)
            parts.cut_all()
            points = [x for x in range(2000) if q[x] > 0 and np.ptp(parts.parts(x)) == 0]
            if points:  # drafts ranking at a point, against each other and against a draft with a part
                mixed = np.array([points[0], int(q.argmax()), points[-1]][:k])
                assert parts.win_probabilities(mixed).sum() == pytest.approx(1.0, abs=1e-9)
                seen_points = True
    assert seen_points
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_the_default_elements_on_a_vocabulary_above_top_are_exact():
    """V = 90 > TOP: 64 tokens of their own and the rest in runs; the law is p by enumeration (k = 2)."""
    rng = np.random.default_rng(6)
    p, q = rng.dirichlet(np.ones(90) * 0.5), rng.dirichlet(np.ones(90) * 0.5)
    law, passed = laws_of(optimal.optimal_iid_pass, p, q, 2)
    np.testing.assert_allclose(law, p, atol=1e-12)
    assert passed == pytest.approx(optimal.optimal_iid_acceptance(p, q, 2), abs=1e-12)
    assert passed <= optimal_acceptance(p, q, 2) + 1e-12


def test_shapes_and_sizes_are_checked():
    p, q = [0.5, 0.5], [[0.5, 0.5], [0.2, 0.8]]
    with pytest.raises(ValueError, match="one shape"):
        optimal.optimal_iid_acceptance(p, q, 2)
    for top, groups in ((-1, 4), (1.5, 4), (4, 0), (4, -3)):
        with pytest.raises(ValueError, match="top|groups"):
            optimal.optimal_iid_acceptance([0.5, 0.5], [0.5, 0.5], 2, top=top, groups=groups)
    with pytest.raises(ValueError, match="q = 0"):
        optimal.optimal_iid_pass(torch.tensor([[0.5, 0.5]], dtype=torch.float64),
                                 torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([[0, 1]]))


def test_a_batch_of_different_rows_decides_as_each_row_alone():
    """Rows with different (p, q), some repeated: pass probabilities and residuals equal those of one row at a time
    (each construction is shared only by the rows it belongs to)."""
    rng = np.random.default_rng(8)
    pairs = [tuple(torch.tensor(rng.dirichlet(np.ones(5))) for _ in range(2)) for _ in range(3)]
    order = [0, 0, 1, 2, 2, 0]
    P = torch.stack([pairs[i][0] for i in order])
    Q = torch.stack([pairs[i][1] for i in order])
    D = torch.stack([torch.multinomial(Q[b], 3, replacement=True, generator=torch.Generator().manual_seed(b))
                     for b in range(len(order))])
    a, residual = optimal.optimal_iid_pass(P, Q, D)
    res = residual()
    for b in range(len(order)):
        a1, r1 = optimal.optimal_iid_pass(P[b : b + 1], Q[b : b + 1], D[b : b + 1])
        torch.testing.assert_close(a[b], a1[0], rtol=0, atol=1e-15)
        torch.testing.assert_close(res[b], r1()[0], rtol=0, atol=1e-15)
