"""Exact quantities of the rules after SpecTr (theory.enumeration): block vs token-level accepted length, the ideal
coupling of blocks, and the optimum of any draft law."""
from fractions import Fraction

import numpy as np
import pytest
import torch

from spectr_lib.theory.block import block_verify
from spectr_lib.theory.enumeration import (
    accepted_length_law,
    expected_accepted_length,
    ideal_accepted_length,
    optimal_acceptance_of_law,
    prefix_law,
    prefix_overlap_bound,
    spechub_acceptance,
)
from spectr_lib.theory.exact import acceptance, draft_tuples
from spectr_lib.theory.ot import optimal_acceptance

P_TOY, Q_TOY = [1 / 3, 2 / 3], [2 / 3, 1 / 3]


def frac(x: float) -> Fraction:
    return Fraction(x).limit_denominator(1000)


def test_toy_case_of_the_block_verification_paper():
    """i.i.d. positions, p = (1/3, 2/3), q = (2/3, 1/3), γ = 2: token 10/9, block 11/9, ideal 12/9."""
    assert frac(expected_accepted_length(P_TOY, Q_TOY, 2, "token")) == Fraction(10, 9)
    assert frac(expected_accepted_length(P_TOY, Q_TOY, 2, "block")) == Fraction(11, 9)
    assert abs(expected_accepted_length(P_TOY, Q_TOY, 2, "block") - 11 / 9) < 1e-12
    assert abs(prefix_overlap_bound(P_TOY, Q_TOY, 2) - 12 / 9) < 1e-12
    assert abs(ideal_accepted_length(P_TOY, Q_TOY, 2) - 12 / 9) < 1e-6


def test_block_verification_accepts_the_whole_block_when_the_prefix_ratio_recovers():
    """Draft (a, b): p/q = 1/2 then 2, so w_2 = min(1, 1/2 · 2) = 1 and block verification keeps both tokens."""
    blocks, probs, law = accepted_length_law(P_TOY, Q_TOY, 2, "block")
    row = [i for i, b in enumerate(blocks.tolist()) if b == [0, 1]][0]
    assert torch.allclose(law[row], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    _, _, token = accepted_length_law(P_TOY, Q_TOY, 2, "token")
    assert torch.allclose(token[row], torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64))
    assert torch.allclose(probs.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(law.sum(-1), torch.ones(len(law), dtype=torch.float64))


def context_laws(seed: int, V: int = 3):
    """Context-dependent target and draft over V tokens, as functions of the prefix."""
    def dist(offset, prefix, sharp):
        g = torch.Generator().manual_seed(seed * 7919 + offset + 31 * sum((t + 1) * 5**i for i, t in enumerate(prefix)) + len(prefix))
        return (sharp * torch.randn(V, generator=g, dtype=torch.float64)).softmax(-1)
    return (lambda pre: dist(0, pre, 2.0)), (lambda pre: dist(50, pre, 1.5))


@pytest.mark.parametrize("seed", [0, 1])
def test_block_is_never_below_token_and_never_above_the_ideal(seed):
    p, q = context_laws(seed)
    token = expected_accepted_length(p, q, 3, "token")
    block = expected_accepted_length(p, q, 3, "block")
    assert token - 1e-12 <= block <= prefix_overlap_bound(p, q, 3) + 1e-12
    b2 = expected_accepted_length(p, q, 2, "block")
    assert expected_accepted_length(p, q, 2, "token") - 1e-12 <= b2 <= ideal_accepted_length(p, q, 2) + 1e-6
    assert ideal_accepted_length(p, q, 2) <= prefix_overlap_bound(p, q, 2) + 1e-6


def monte_carlo_block(p, q, gamma: int, n: int, seed: int) -> float:
    """Mean accepted length of `block.block_verify` over n draft blocks sampled from q (fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    total = 0
    for _ in range(n):
        x = []
        for i in range(gamma):
            x.append(int(torch.multinomial(q(tuple(x)), 1, generator=g)))
        P = torch.stack([p(tuple(x[:i])) for i in range(gamma + 1)])
        Q = torch.stack([q(tuple(x[:i])) for i in range(gamma)])
        total += block_verify(P, Q, torch.tensor(x), generator=g)[0]
    return total / n


@pytest.mark.parametrize("laws, gamma", [((prefix_law(P_TOY), prefix_law(Q_TOY)), 2), (context_laws(3), 3)])
def test_exact_accepted_length_matches_a_monte_carlo_of_block_verify(laws, gamma):
    """The enumeration against the library's sampler, fixed seed: the toy case and context-dependent p, q (V = 3)."""
    p, q = laws
    n = 4000
    exact = expected_accepted_length(p, q, gamma, "block")
    _, probs, law = accepted_length_law(p, q, gamma, "block")
    sd = (float((probs[:, None] * law * torch.arange(gamma + 1.0, dtype=torch.float64) ** 2).sum()) - exact**2) ** 0.5
    assert abs(monte_carlo_block(p, q, gamma, n, seed=0) - exact) < 4 * sd / n**0.5
    if gamma == 2:  # the toy case: the Monte Carlo can tell block (11/9) from token-level (10/9)
        assert abs(monte_carlo_block(p, q, gamma, n, seed=0) - 10 / 9) > 4 * sd / n**0.5


def test_laws_as_tables_and_vectors_agree():
    table_p = {(): P_TOY, (0,): P_TOY, (1,): P_TOY, (0, 0): P_TOY, (0, 1): P_TOY, (1, 0): P_TOY, (1, 1): P_TOY}
    table_q = {(): Q_TOY, (0,): Q_TOY, (1,): Q_TOY}
    assert abs(expected_accepted_length(table_p, table_q, 2, "block") - 11 / 9) < 1e-12
    assert abs(expected_accepted_length(lambda pre: P_TOY, lambda pre: Q_TOY, 2, "token") - 10 / 9) < 1e-12


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="unknown rule"):
        expected_accepted_length(P_TOY, Q_TOY, 2, "tree")
    with pytest.raises(ValueError, match="gamma"):
        expected_accepted_length(P_TOY, Q_TOY, 0)
    with pytest.raises(ValueError, match="too many"):
        expected_accepted_length(np.ones(50) / 50, np.ones(50) / 50, 4)
    with pytest.raises(ValueError, match="no distribution for the prefix"):
        expected_accepted_length({(): P_TOY}, Q_TOY, 2)
    with pytest.raises(ValueError, match="sums to 1"):
        expected_accepted_length([0.5, 0.6], Q_TOY, 2)
    with pytest.raises(ValueError, match=r"\[V\] vector"):
        expected_accepted_length(lambda pre: [0.2, 0.3, 0.5], Q_TOY, 2)
    with pytest.raises(ValueError, match="variables"):
        ideal_accepted_length(np.ones(8) / 8, np.ones(8) / 8, 3)
    with pytest.raises(ValueError, match="callable"):
        prefix_law(np.ones((2, 2)) / 2)


def test_optimum_of_a_draft_law():
    rng = np.random.default_rng(0)
    for _ in range(5):
        p, q = torch.tensor(rng.dirichlet(np.ones(5))), torch.tensor(rng.dirichlet(np.ones(5) * 0.5))
        for k in (1, 2, 3):
            tuples, weight = draft_tuples("kseq", q, k)
            assert abs(optimal_acceptance_of_law(p, tuples, weight) - optimal_acceptance(p, q, k)) < 1e-10
        tuples, weight = draft_tuples("spechub", q, 2)  # the hub rule is the transport for its own law
        assert abs(optimal_acceptance_of_law(p, tuples, weight) - acceptance("spechub", p, q, 2)) < 1e-10
        tuples, weight = draft_tuples("rrs_wor", q, 2)
        assert acceptance("rrs_wor", p, q, 2) <= optimal_acceptance_of_law(p, tuples, weight) + 1e-10
    # the cheat sheet's example: p = [1, 0], q = [.5, .5], k = 2: i.i.d. optimum .75, distinct drafts 1
    t, w = draft_tuples("rrs_wor", torch.tensor([0.5, 0.5], dtype=torch.float64), 2)
    assert abs(optimal_acceptance_of_law([1.0, 0.0], t, w) - 1.0) < 1e-12
    with pytest.raises(ValueError, match="sum to 1"):
        optimal_acceptance_of_law([0.5, 0.5], torch.tensor([[0], [1]]), torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match="V ≤ 16"):
        optimal_acceptance_of_law(np.ones(17) / 17, torch.tensor([[0]]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="draft ids"):
        optimal_acceptance_of_law([0.5, 0.5], torch.tensor([[2]]), torch.tensor([1.0]))


def test_spechub_acceptance_closed_form_matches_enumeration():
    rng = np.random.default_rng(1)
    P = torch.tensor(rng.dirichlet(np.ones(6) * 0.5, size=20))
    Q = torch.tensor(rng.dirichlet(np.ones(6) * 0.5, size=20))
    batched = spechub_acceptance(P, Q)
    for i in range(20):
        assert abs(float(batched[i]) - acceptance("spechub", P[i], Q[i], 2)) < 1e-12
    with pytest.raises(ValueError, match="2 distinct drafts"):
        spechub_acceptance([0.5, 0.5], [1.0, 0.0])
