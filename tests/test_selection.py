"""Token-level invariants (docs/cheatsheet.md, "Invariants the tests hold") for every rule, exact and sampled."""
import numpy as np
import pytest
import torch
from scipy import stats

from spectr_lib.theory.exact import acceptance, output_distribution
from spectr_lib.theory.ot import maximal_coupling, optimal_acceptance, optimal_acceptance_lp, optimal_coupling_lp
from spectr_lib.theory.kseq import beta, kseq_acceptance, kseq_residual, kseq_rho
from spectr_lib.theory.selection import IID_RULES, RULES, draw_drafts, sample, speculative_sampling
from conftest import assert_power, rule_departures

VECTORS = [  # p, q, k, rho*, p_acc, alpha*
    ([.5, .3, .2], [.2, .3, .5], 1, 1.0, .7, .7),
    ([.5, .3, .2], [.2, .3, .5], 2, 1.456776, .791355, .86),
    ([.5, .3, .2], [.2, .3, .5], 3, 1.792593, .858519, .988),
    ([.7, .2, .1], [.1, .2, .7], 2, 1.726209, .472621, .49),
    ([1, 0], [.5, .5], 2, 1.5, .75, .75),
]


def random_pair(rng, V, sparse=False):
    p, q = rng.dirichlet(np.ones(V) * 0.7), rng.dirichlet(np.ones(V) * 0.7)
    if sparse:  # zeros in p (and sometimes q) exercise the edge cases
        p[rng.integers(V)] = 0
        p /= p.sum()
    return p, q


def ks_for(rule):
    return [1] if rule == "sps" else [2] if rule == "spechub" else [1, 2, 3, 4]


@pytest.mark.parametrize("p,q,k,rho,p_acc,alpha", VECTORS)
def test_vectors(p, q, k, rho, p_acc, alpha):
    assert kseq_rho(p, q, k) == pytest.approx(rho, abs=1e-6)
    assert kseq_acceptance(p, q, k) == pytest.approx(p_acc, abs=1e-6)
    assert optimal_acceptance(p, q, k) == pytest.approx(alpha, abs=1e-9)
    assert acceptance("kseq", p, q, k) == pytest.approx(p_acc, abs=1e-6)


def test_rrs_without_replacement_beats_iid_optimum():
    assert acceptance("rrs_wor", [1, 0], [.5, .5], 2) == pytest.approx(1.0)
    assert acceptance("kseq", [1, 0], [.5, .5], 2) == pytest.approx(.75)


@pytest.mark.parametrize("rule", RULES)
def test_exact_output_law_is_p(rule):
    rng = np.random.default_rng(0)
    for case in range(40):
        V = int(rng.integers(2, 7))
        p, q = random_pair(rng, V, sparse=case % 3 == 0)
        for k in ks_for(rule):
            if k > V and rule == "rrs_wor":
                continue
            np.testing.assert_allclose(output_distribution(rule, p, q, k), p, atol=1e-10, err_msg=f"{rule} k={k} V={V}")


def test_edge_cases_of_kseq():
    p = np.array([.4, .6, 0, 0]); q = np.array([0, 0, .5, .5])  # disjoint supports: beta = 0
    assert kseq_acceptance(p, q, 3) == 0.0
    np.testing.assert_allclose(output_distribution("kseq", p, q, 3), p, atol=1e-12)
    same = np.array([.1, .2, .3, .4])
    assert kseq_rho(same, same, 4) == pytest.approx(1.0, abs=1e-9)
    assert kseq_acceptance(same, same, 4) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(output_distribution("kseq", same, same, 3), same, atol=1e-10)


def test_rho_in_bracket_and_residual_is_a_distribution():
    rng = np.random.default_rng(1)
    p = torch.tensor(rng.dirichlet(np.ones(50) * 0.3, size=64))
    q = torch.tensor(rng.dirichlet(np.ones(50) * 0.3, size=64))
    for k in (1, 2, 5, 8):
        rho = kseq_rho(p, q, k)
        assert ((rho >= 1) & (rho <= k)).all()
        b = beta(p, q, rho)
        assert (1 - (1 - b) ** k - rho * b <= 1e-15).all()  # f(rho*) <= 0
        res = kseq_residual(p, q, rho, k)
        assert (res >= 0).all()
        torch.testing.assert_close(res.sum(-1), torch.ones(64, dtype=torch.float64))


def test_lp_equals_closed_form_on_random_cases():
    rng = np.random.default_rng(2)
    for case in range(100):
        V, k = int(rng.integers(2, 5)), int(rng.integers(1, 4))
        p, q = random_pair(rng, V, sparse=case % 4 == 0)
        assert optimal_acceptance_lp(p, q, k) == pytest.approx(optimal_acceptance(p, q, k), abs=1e-6), (p, q, k)


def test_coupling_has_the_right_marginals():
    p, q = np.array([.5, .3, .2]), np.array([.2, .3, .5])
    pi = optimal_coupling_lp(p, q, 2)
    np.testing.assert_allclose(pi.sum(axis=(0, 1)), p, atol=1e-6)
    np.testing.assert_allclose(pi.sum(axis=2), np.outer(q, q), atol=1e-6)
    m = maximal_coupling(p, q)
    np.testing.assert_allclose(m.sum(0), p); np.testing.assert_allclose(m.sum(1), q)
    assert np.trace(m) == pytest.approx(1 - 0.5 * np.abs(p - q).sum())


def test_lp_refuses_huge_problems():
    with pytest.raises(ValueError, match="optimal_acceptance"):
        optimal_acceptance_lp(np.ones(100) / 100, np.ones(100) / 100, 3)


def test_bounds_guarantee_and_monotonicity():
    rng = np.random.default_rng(3)
    for _ in range(60):
        V = int(rng.integers(2, 7))
        p, q = random_pair(rng, V)
        prev_alpha = prev_kseq = 0.0
        for k in (1, 2, 3, 4):
            alpha = optimal_acceptance(p, q, k)
            for rule in IID_RULES:
                if rule != "sps" or k == 1:
                    assert acceptance(rule, p, q, k) <= alpha + 1e-9
            kseq = kseq_acceptance(p, q, k)
            assert kseq >= (1 - (1 - 1 / k) ** k) * alpha - 1e-9
            assert alpha >= prev_alpha - 1e-12 and kseq >= prev_kseq - 1e-9
            prev_alpha, prev_kseq = alpha, kseq
    # SpecHub against alpha* of its own draft law is checked through its exact law: acceptance <= 1, law = p
    p, q = random_pair(rng, 5)
    assert 0 <= acceptance("spechub", p, q, 2) <= 1


def test_kseq_with_one_draft_is_speculative_sampling_decision_for_decision():
    rng = np.random.default_rng(4)
    p = torch.tensor(rng.dirichlet(np.ones(30) * 0.5, size=2000))
    q = torch.tensor(rng.dirichlet(np.ones(30) * 0.5, size=2000))
    g = torch.Generator().manual_seed(0)
    drafts = torch.multinomial(q, 1, generator=g)
    u = torch.rand(2000, 1, generator=g, dtype=torch.float64)
    tok_k, idx = sample("kseq", p, q, drafts, generator=torch.Generator().manual_seed(9), uniforms=u)
    tok_s, accept = speculative_sampling(p, q, drafts[:, 0], u[:, 0], generator=torch.Generator().manual_seed(9))
    assert torch.equal(idx >= 0, accept)
    assert torch.equal(tok_k, tok_s)
    torch.testing.assert_close(kseq_residual(p, q, torch.ones(2000, dtype=torch.float64), 1),
                               (p - q).clamp_min(0) / (p - q).clamp_min(0).sum(-1, keepdim=True))


@pytest.mark.parametrize("rule", RULES)
def test_batched_sampler_matches_exact_law(rule):
    rng = np.random.default_rng(5)
    p, q = random_pair(rng, 6)
    k = ks_for(rule)[-1]
    n = 100_000
    g = torch.Generator().manual_seed(11)
    P, Q = torch.tensor(p).expand(n, 6), torch.tensor(q).expand(n, 6)
    drafts = draw_drafts(rule, Q, k, generator=g)
    token, index = sample(rule, P, Q, drafts, generator=g)
    counts = torch.bincount(token, minlength=6).numpy()
    assert stats.chisquare(counts, p * n).pvalue > 1e-3, (counts, p * n)
    assert_power({(x,): float(v) for x, v in enumerate(p)}, rule_departures(rule, P[0], Q[0], k), n)
    # the reported index points at the draft that was returned
    hit = index >= 0
    assert torch.equal(drafts[hit].gather(-1, index[hit, None])[:, 0], token[hit])
    accepted = hit.double().mean().item()
    member = (drafts == token[:, None]).any(-1).double().mean().item()
    assert member == pytest.approx(acceptance(rule, p, q, k), abs=4 / np.sqrt(n)), rule
    assert accepted <= member + 1e-12


@pytest.mark.parametrize("bad,match", [
    (([.5, .5], [.2, .3, .5], 2), "entries"),
    (([.5, -.1, .6], [.2, .3, .5], 2), "negative"),
    (([.5, float("nan"), .5], [.2, .3, .5], 2), "NaN"),
    (([.5, .3, .3], [.2, .3, .5], 2), "sums to 1"),
    (([.5, .3, .2], [.2, .3, .5], 0), "k"),
])
def test_bad_input_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        kseq_acceptance(*bad)
    with pytest.raises(ValueError, match=match):
        optimal_acceptance(*bad)


def test_bad_drafts_and_rules_are_refused():
    p, q = torch.tensor([[.5, .3, .2]], dtype=torch.float64), torch.tensor([[.5, .5, 0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="q = 0"):
        sample("kseq", p, q, torch.tensor([[0, 2]]))
    with pytest.raises(ValueError, match="unknown rule"):
        sample("greedy", p, q, torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="one draft"):
        sample("sps", p, q, torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="too many"):
        output_distribution("kseq", np.ones(20) / 20, np.ones(20) / 20, 5)


def test_inverse_cdf_sampler_draws_iid_from_each_row():
    """sample_rows: n draws per row follow the row's law, pairs are independent, zero-mass tokens never come."""
    from spectr_lib.theory.dists import sample_rows

    p = torch.tensor([[.5, 0., .3, .2], [0., .1, .0, .9]], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    n = 50_000
    draws = sample_rows(p[:, None].expand(2, n, 4), g, n=2)  # [2, n, 2]
    for row in range(2):
        for col in range(2):
            counts = torch.bincount(draws[row, :, col], minlength=4).numpy()
            assert counts[p[row].numpy() == 0].sum() == 0
            nz = p[row].numpy() > 0
            assert stats.chisquare(counts[nz], p[row].numpy()[nz] * n).pvalue > 1e-3
        pairs = torch.bincount(draws[row, :, 0] * 4 + draws[row, :, 1], minlength=16).numpy()
        joint = np.outer(p[row], p[row]).reshape(-1)
        assert stats.chisquare(pairs[joint > 0], joint[joint > 0] * n).pvalue > 1e-3
    assert sample_rows(p, g).shape == (2,)
