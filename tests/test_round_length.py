"""The exact expected accepted drafts of a round of k i.i.d. drafts of length L (theory/round_length.py): it agrees
with one-draft enumeration at k = 1, with each rule's exact acceptance at L = 1, and with the decoder's own path
walk (theory/path.select_path) sampled many times, closely enough to tell another rule's value apart."""
import itertools

import numpy as np
import pytest
import torch

from spectr_lib.theory import path
from spectr_lib.theory.enumeration import expected_accepted_length
from spectr_lib.theory.exact import acceptance
from spectr_lib.theory.round_length import expected_round_accepted

V = 3


def context_law(seed: int, L: int = 2) -> dict:
    """A law that depends on the prefix: a table {prefix: [V]} for prefixes of length 0..L."""
    rng = np.random.default_rng(seed)
    return {pre: torch.tensor(rng.dirichlet(np.ones(V) * 0.8)) for n in range(L + 1)
            for pre in itertools.product(range(V), repeat=n)}


P, Q = context_law(1), context_law(2)


@pytest.mark.parametrize("rule", ["sps", "kseq", "rrs", "optimal"])
def test_one_draft_is_speculative_sampling_of_a_block(rule):
    assert expected_round_accepted(rule, P, Q, 1, 2) == pytest.approx(expected_accepted_length(P, Q, 2, "token"),
                                                                       abs=1e-12)


@pytest.mark.parametrize("rule", ["kseq", "rrs", "sampled", "optimal"])
def test_one_position_is_the_rules_exact_acceptance(rule):
    for k in (2, 3):
        assert expected_round_accepted(rule, P, Q, k, 1) == pytest.approx(acceptance(rule, P[()], Q[()], k), abs=1e-12)


def sampled_walks(rule: str, k: int, n: int, seed: int = 0) -> np.ndarray:
    """Accepted drafts of n rounds walked by the decoder's select_path on drafts drawn from Q."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        tokens = torch.zeros(k, 2, dtype=torch.long)
        q = torch.zeros(k, 2, V, dtype=torch.float64)
        for j in range(k):
            for i in range(2):
                q[j, i] = Q[tuple(tokens[j, :i].tolist())]
                tokens[j, i] = torch.multinomial(q[j, i], 1, generator=g)
        out.append(path.select_path(rule, lambda r, i: P[tuple(tokens[r, :i].tolist())], q, tokens, g)[2])
    return np.array(out, dtype=float)


def test_the_decoders_walk_averages_to_the_exact_value_and_another_rules_value_is_told_apart():
    """6,000 sampled rounds of the optimal rule (k = 3, L = 2) average to the enumeration within 4 standard errors;
    RRS's exact value for the same rounds (a rule taking other decisions) lies more than 6 standard errors away."""
    walks = sampled_walks("optimal", 3, 6000)
    se = walks.std() / np.sqrt(len(walks))
    exact = expected_round_accepted("optimal", P, Q, 3, 2)
    assert abs(walks.mean() - exact) < 4 * se, (walks.mean(), exact, se)
    assert abs(walks.mean() - expected_round_accepted("rrs", P, Q, 3, 2)) > 6 * se


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="i.i.d. drafts only"):
        expected_round_accepted("rrs_wor", P, Q, 2, 2)
    with pytest.raises(ValueError, match="L \\(draft length\\)"):
        expected_round_accepted("kseq", P, Q, 2, 0)
    with pytest.raises(ValueError, match="too many"):
        expected_round_accepted("kseq", np.ones(10) / 10, np.ones(10) / 10, 4, 3)
    with pytest.raises(ValueError, match="one draft"):
        expected_round_accepted("sps", P, Q, 2, 2)
