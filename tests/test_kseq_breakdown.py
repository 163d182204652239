"""K-SEQ taken apart (theory.kseq_breakdown): the exactness argument, number by number."""
import numpy as np
import pytest

from spectr_lib.theory.exact import output_distribution
from spectr_lib.theory.kseq import kseq_acceptance, kseq_residual
from spectr_lib.theory.kseq_breakdown import kseq_breakdown

P, Q = [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]


def test_worked_example_matches_the_reference_values():
    b = kseq_breakdown(P, Q, 2)
    assert b.rho == b.rho_star == pytest.approx(1.456776, abs=1e-6)
    assert b.beta == pytest.approx(0.543224, abs=1e-6) and b.p_acc == pytest.approx(0.791355, abs=1e-6)
    np.testing.assert_allclose(b.pass_mass, np.minimum(Q, np.array(P) / b.rho), atol=1e-15)
    np.testing.assert_allclose(b.from_drafts, b.gamma * b.pass_mass, atol=1e-12)  # the geometric sum, enumerated
    np.testing.assert_allclose(b.residual, [1.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(b.residual, kseq_residual(P, Q, b.rho, 2).numpy(), atol=1e-15)
    np.testing.assert_allclose(b.law, P, atol=1e-12)
    np.testing.assert_allclose(b.law, output_distribution("kseq", P, Q, 2), atol=1e-12)
    assert b.exact


@pytest.mark.parametrize("seed", range(5))
def test_every_rho_from_rho_star_to_k_is_exact_and_rho_star_accepts_most(seed):
    rng = np.random.default_rng(seed)
    p, q = rng.dirichlet(np.ones(5) * 0.5), rng.dirichlet(np.ones(5) * 0.5)
    k = 3
    star = kseq_breakdown(p, q, k)
    assert star.p_acc == pytest.approx(kseq_acceptance(p, q, k), abs=1e-12)
    accs = []
    for rho in np.linspace(star.rho_star, k, 5):
        b = kseq_breakdown(p, q, k, rho)
        assert b.exact, rho
        np.testing.assert_allclose(b.law, p, atol=1e-10)
        np.testing.assert_allclose(b.from_drafts, b.gamma * b.pass_mass, atol=1e-12)
        accs.append(b.p_acc)
    assert all(a >= b - 1e-12 for a, b in zip(accs, accs[1:]))  # acceptance falls as ρ grows: ρ* is best
    if star.rho_star > 1.05:  # below ρ* the residual would need negative mass: the law is no longer p
        low = kseq_breakdown(p, q, k, star.rho_star - 0.05)
        assert not low.exact and np.abs(low.law - p).max() > 1e-4


def test_one_draft_is_speculative_sampling():
    b = kseq_breakdown(P, Q, 1)
    assert b.rho_star == 1.0 and b.p_acc == pytest.approx(0.7)
    plus = np.clip(np.array(P) - Q, 0, None)
    np.testing.assert_allclose(b.residual, plus / plus.sum(), atol=1e-12)


def test_bad_inputs():
    with pytest.raises(ValueError, match="rho"):
        kseq_breakdown(P, Q, 2, rho=0.5)
    with pytest.raises(ValueError, match="1-D"):
        kseq_breakdown([P, P], [Q, Q], 2)
    with pytest.raises(ValueError, match="too many"):
        kseq_breakdown(np.ones(50) / 50, np.ones(50) / 50, 4)
    with pytest.raises(ValueError, match="k"):
        kseq_breakdown(P, Q, 0)
