"""Exact target law of the first tokens, empirical counts and chi-square bins (engine/laws.py)."""
import numpy as np
import pytest
import torch
from scipy import stats as st

from spectr_lib.engine.laws import chi_square_bins, empirical_counts, target_sequence_law
from spectr_lib.models.load import tiny_pair
from spectr_lib.theory.dists import warp

PROMPT = [1, 4, 2]


@pytest.fixture(scope="module")
def pair():
    return tiny_pair(vocab_size=6, seed=1, target_layers=1, draft_layers=1, hidden=32)


def test_law_sums_to_one_and_matches_the_chain_rule(pair):
    law = target_sequence_law(pair, PROMPT, n_tokens=2, temperature=0.8)
    assert len(law) == 36 and abs(sum(law.values()) - 1) < 1e-9
    with torch.no_grad():
        p1 = warp(pair.target(torch.tensor([PROMPT])).logits[0, -1], 0.8)
        p2 = warp(pair.target(torch.tensor([PROMPT + [3]])).logits[0, -1], 0.8)
    assert abs(law[(3, 5)] - float(p1[3] * p2[5])) < 1e-6
    first = target_sequence_law(pair, PROMPT, n_tokens=1, temperature=0.8)
    assert np.allclose([first[(y,)] for y in range(6)], p1.numpy(), atol=1e-6)


def test_decoder_passes_and_the_draft_fails(pair):
    law = target_sequence_law(pair, PROMPT, n_tokens=2)
    counts = empirical_counts(pair, PROMPT, n_tokens=2, n_samples=1500, method="kseq", k=4, L=2)
    assert sum(counts.values()) == 1500
    assert st.chisquare(*chi_square_bins(counts, law)[:2]).pvalue > 1e-3
    swapped = tiny_pair(vocab_size=6, seed=1, target_layers=1, draft_layers=1, hidden=32)
    swapped.target = pair.draft  # sampling the draft instead of the target must be caught
    wrong = empirical_counts(swapped, PROMPT, n_tokens=2, n_samples=1500, method="ar")
    assert st.chisquare(*chi_square_bins(wrong, law)[:2]).pvalue < 1e-6


def test_bins_merge_small_expectations():
    law = {(0,): 0.5, (1,): 0.49, (2,): 0.01}
    obs, exp, keys = chi_square_bins({(0,): 48, (1,): 50, (2,): 2}, law)
    assert keys == [(0,), (1,), "other"] and list(obs) == [48, 50, 2] and np.isclose(exp.sum(), 100)
    with pytest.raises(ValueError, match="probability 0"):
        chi_square_bins({(3,): 1}, law)


def test_bad_arguments_are_refused(pair):
    with pytest.raises(ValueError, match="too many"):
        target_sequence_law(pair, PROMPT, n_tokens=8)
    with pytest.raises(TypeError):
        target_sequence_law(pair, PROMPT, n_tokens=1.5)
    with pytest.raises(ValueError, match="seed"):
        empirical_counts(pair, PROMPT, seed=None)
