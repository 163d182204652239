"""Sampled verification (theory/sampled.py): exact for any draft law, its acceptance in closed form, decoded
with the target's law; wrong variants rejected by the same checks."""
import dataclasses

import numpy as np
import pytest
import torch

from spectr_lib.engine import laws
from spectr_lib.theory import selection
from spectr_lib.theory.exact import acceptance, decision_law, draft_tuples, output_distribution
from spectr_lib.theory.sampled import sampled_acceptance, sampled_pass
from spectr_lib.models.load import tiny_pair
from conftest import PROMPT, assert_decodes_the_target_law


def random_pair(rng, V):
    return torch.tensor(rng.dirichlet(np.ones(V) * 0.7)), torch.tensor(rng.dirichlet(np.ones(V) * 0.7))


def law_of(pass_fn, p, drafts_law, k, rule="kseq"):
    """Exact output law when the drafts come from `drafts_law` (i.i.d.) and `pass_fn` decides (q unused)."""
    tuples, weight = draft_tuples(rule, drafts_law, k)
    n, V = len(tuples), len(p)
    a, residual = pass_fn(p.expand(n, V), drafts_law.expand(n, V), tuples)
    return (weight[:, None] * decision_law(a, residual(), tuples)).sum(0)


def repeats_not_skipped(p, q, drafts):
    """WRONG: a repeated draft is tried again, passing with probability p(d)."""
    a, residual = sampled_pass(p, q, drafts)
    return torch.where(a == 0, p.gather(-1, drafts), a), residual


def mass_not_removed(p, q, drafts):
    """WRONG: every draft judged against p itself, not p off the earlier drafts."""
    _, residual = sampled_pass(p, q, drafts)
    return p.gather(-1, drafts), residual


def test_the_output_law_is_p_for_any_draft_law():
    """Exact enumeration: i.i.d. drafts from q, from a law unrelated to q, and the one-hot draft (argmax q)."""
    rng = np.random.default_rng(0)
    for case in range(30):
        V = int(rng.integers(2, 6))
        p, q = random_pair(rng, V)
        other = torch.tensor(rng.dirichlet(np.ones(V)))
        onehot = torch.nn.functional.one_hot(q.argmax(), V).double()
        for k in (1, 2, 3, 4):
            torch.testing.assert_close(torch.tensor(output_distribution("sampled", p, q, k)), p, atol=1e-12, rtol=0)
            torch.testing.assert_close(law_of(sampled_pass, p, other, k), p, atol=1e-12, rtol=0)
            torch.testing.assert_close(law_of(sampled_pass, p, onehot, k), p, atol=1e-12, rtol=0)


@pytest.mark.parametrize("wrong", [repeats_not_skipped, mass_not_removed])
def test_wrong_variants_are_rejected_by_the_same_enumeration(wrong):
    rng = np.random.default_rng(1)
    worst = 0.0
    for _ in range(10):
        p, q = random_pair(rng, 4)
        worst = max(worst, float((law_of(wrong, p, q, 3) - p).abs().max()))
    assert worst > 1e-2


def test_acceptance_in_closed_form_and_its_bounds():
    """Σ p·(1 − (1 − q)^k) equals the enumerated acceptance; one draft: Σ p·q ≤ Σ min(p, q) (speculative sampling);
    the one-hot draft accepts p(argmax q), which beats Σ min(p, q) when the target likes the draft's top token."""
    rng = np.random.default_rng(2)
    for _ in range(30):
        p, q = random_pair(rng, 5)
        for k in (1, 2, 3, 4):
            assert sampled_acceptance(p, q, k) == pytest.approx(acceptance("sampled", p, q, k), abs=1e-12)
        assert sampled_acceptance(p, q, 1) <= acceptance("sps", p, q, 1) + 1e-12
    batch = torch.stack([random_pair(rng, 5)[0] for _ in range(3)]), torch.stack([random_pair(rng, 5)[1] for _ in range(3)])
    torch.testing.assert_close(sampled_acceptance(*batch, 2), (batch[0] * (1 - (1 - batch[1]) ** 2)).sum(-1))
    p, q = torch.tensor([0.9, 0.1], dtype=torch.float64), torch.tensor([0.51, 0.49], dtype=torch.float64)
    onehot = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert sampled_acceptance(p, onehot, 1) == pytest.approx(0.9) and acceptance("sps", p, q, 1) == pytest.approx(0.61)
    for bad in (0, 1.5, torch.tensor(1.5), torch.tensor([1, 2])):
        with pytest.raises(ValueError):
            sampled_acceptance(p, q, bad)


def test_drafts_from_any_law_are_taken_where_the_rule_never_reads_q():
    """Sampled verification refuses only invalid ids: a draft where q = 0 is fine (the rule never reads q); a rule
    that reads q still refuses it."""
    p, q = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)
    a, _ = selection.pass_probabilities("sampled", p, q, torch.tensor([[0, 1]]))
    torch.testing.assert_close(a, torch.tensor([[0.5, 0.6]], dtype=torch.float64))
    with pytest.raises(ValueError, match="q = 0"):
        selection.pass_probabilities("kseq", p, q, torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="must lie in"):
        selection.pass_probabilities("sampled", p, q, torch.tensor([[0, 3]]))


def test_repeated_drafts_never_pass_and_the_residual_avoids_the_drafts():
    p = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    a, residual = sampled_pass(p, p, torch.tensor([[1, 1, 0]]))
    torch.testing.assert_close(a, torch.tensor([[0.3, 0.0, 0.5 / 0.7]], dtype=torch.float64))
    torch.testing.assert_close(residual(), torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64))


@pytest.mark.parametrize("form", ["tree", "batch"])
def test_the_decoder_with_sampled_verification_follows_the_target_law(form):
    """generate(method="sampled") on a tiny pair follows the target's law of three tokens (chi-square with its
    power asserted, conftest.assert_decodes_the_target_law)."""
    assert_decodes_the_target_law("sampled", 2, form)


def residual_is_p(p, q, drafts):
    """WRONG: after every draft failed, p itself is sampled (the drafts' tokens not removed)."""
    a, _ = sampled_pass(p, q, drafts)
    return a, lambda: p


@pytest.mark.parametrize("wrong, k", [(residual_is_p, 2), (mass_not_removed, 4)])
def test_the_decoder_harness_rejects_a_wrong_sampled_rule(monkeypatch, wrong, k):
    """Negative controls: the same harness and sample size reject the residual left as p (k = 2) and every draft
    judged against p itself (k = 4; at k = 2 that departure is too small for 3,000 samples)."""
    record = selection.RULES["sampled"]
    monkeypatch.setitem(selection.RULES, "sampled", dataclasses.replace(record, pass_probabilities=wrong,
                                                                         first_pass_row=None))
    pair = tiny_pair(vocab_size=6, seed=0)
    counts = laws.empirical_counts(pair, PROMPT, 3, 3000, 0, method="sampled", k=k, L=2, verify="tree")
    assert laws.chi_square_pvalue(counts, laws.target_sequence_law(pair, PROMPT, 3)) < 1e-6
