"""Prompt-lookup mixing of the draft distribution: the lookup itself (against a brute-force search), the
mixture, and the decoder's output law with it (exact enumeration + chi-square, fixed seeds)."""
import random

import pytest
import torch
from scipy.stats import chisquare

from spectr_lib import generate
from spectr_lib.engine import lookup
from spectr_lib.engine.acceptance import next_token_probs
from spectr_lib.engine.laws import chi_square_bins, empirical_counts, target_sequence_law
from spectr_lib.models.draft_settings import DraftSettings

from conftest import assert_power, target_greedy, temperature_departures

V = 6  # the vocabulary of test_decoder's pair
REPEATING = [1, 4, 2, 5, 1, 4]  # ends in (1, 4), seen before: the first drafting step already has a lookup (2)


def brute_force(seq: list[int]) -> tuple[int, int]:
    """The longest suffix (MIN_N..MAX_N tokens) seen earlier, its most recent earlier occurrence's next token."""
    T = len(seq)
    for n in range(min(lookup.MAX_N, T - 1), lookup.MIN_N - 1, -1):
        for end in range(T - 2, n - 2, -1):  # an earlier occurrence ends at `end` < T - 1
            if seq[end - n + 1 : end + 1] == seq[T - n :]:
                return seq[end + 1], n
    return -1, 0


def test_lookup_matches_a_brute_force_search():
    assert lookup.lookup_next(torch.tensor([5, 1, 2, 3, 9, 1, 2, 3])) == (9, 3)
    assert lookup.lookup_next(torch.tensor([1, 2, 7, 1, 2, 8, 1, 2])) == (8, 2)  # the most recent occurrence
    assert lookup.lookup_next(torch.tensor([1, 2, 3, 0, 3])) == (-1, 0)  # one matched token is not enough
    assert lookup.lookup_next(torch.tensor([4] * 12)) == (4, lookup.MAX_N)
    rng = random.Random(0)
    for _ in range(400):
        seq = [rng.randrange(3) for _ in range(rng.randrange(1, 30))]
        assert lookup.lookup_next(torch.tensor(seq)) == brute_force(seq), seq


def test_the_mixture_is_a_distribution_with_the_lookup_weight():
    q = torch.softmax(torch.randn(2, V, dtype=torch.float64), -1)
    mixed = lookup.mix_rows(q, [torch.tensor([1, 4, 2, 5, 1, 4]), torch.tensor([0, 1, 2])])
    lam = lookup.weight(2)
    assert 0 < lam < 1 and lookup.weight(1) == 0 and lookup.weight(50) == 0.8
    torch.testing.assert_close(mixed[0], (1 - lam) * q[0] + lam * torch.eye(V, dtype=torch.float64)[2])
    torch.testing.assert_close(mixed[1], q[1])  # no lookup in row 1: q as it was
    torch.testing.assert_close(mixed.sum(-1), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("method,k,L", [("sps", 1, 3), ("kseq", 4, 3), ("rrs_wor", 3, 2), ("block", 1, 3)])
def test_the_output_law_is_the_targets_with_lookup(pair, method, k, L, monkeypatch):
    hits = []
    real = lookup.lookup_next
    monkeypatch.setattr(lookup, "lookup_next", lambda h: hits.append(real(h)[1]) or real(h))
    law = target_sequence_law(pair, REPEATING, n_tokens=3)
    counts = empirical_counts(pair, REPEATING, n_tokens=3, n_samples=4000, seed=0, method=method, k=k, L=L, lookup=True)
    assert sum(n >= lookup.MIN_N for n in hits) > 4000  # the mixture was really in play
    assert chisquare(*chi_square_bins(counts, law)[:2]).pvalue > 1e-3
    assert_power(law, temperature_departures(pair, REPEATING, 3), 4000)


def test_greedy_output_is_unchanged_by_lookup(pair):
    want = target_greedy(pair, REPEATING, 20)
    for method, k in (("sps", 1), ("kseq", 4)):
        got = generate(pair, REPEATING, method=method, k=k, L=3, max_new_tokens=20, temperature=0, seed=1, lookup=True)
        assert torch.equal(got.token_ids, want)


def test_teacher_forced_q_is_mixed_where_a_lookup_exists(pair):
    ids = torch.tensor(REPEATING + [2, 5])
    _, q = next_token_probs(pair, ids)
    _, mixed = next_token_probs(pair, ids, lookup=True)
    torch.testing.assert_close(mixed[:5], q[:5])  # no earlier match of two tokens before position 5
    torch.testing.assert_close(mixed[5], lookup.mix_rows(q[5:6], [ids[:6]])[0])
    assert mixed[7, 1] > q[7, 1]  # (1, 4, 2, 5) seen before: its next token, 1, gets more mass
    torch.testing.assert_close(lookup.mix_along(q[4:], ids, 4), mixed[4:])  # rows from a later position on
    with pytest.raises(TypeError, match="lookup must be True, False or None"):
        generate(pair, REPEATING, lookup="yes")


def test_draft_eval_acceptance_with_lookup_scores_the_mixed_q(pair):
    from spectr_lib.theory.kseq import kseq_acceptance
    from spectr_lib.tools.acceptance import acceptance_by_category

    ids = torch.tensor(REPEATING + [2, 5, 1, 4, 2])
    recs, prompts = [{"ids": ids, "start": 4}], [{"category": "x"}]
    plain = acceptance_by_category(pair, prompts, 1.0, 0, 0, recs=recs)["overall"]
    mixed = acceptance_by_category(pair, prompts, 1.0, 0, 0, recs=recs, lookup=True)["overall"]
    p, q = next_token_probs(pair, ids, lookup=True)
    p, q = p[3:-1], q[3:-1]
    assert mixed["positions"] == plain["positions"] == len(ids) - 4
    assert mixed["k1"] == pytest.approx(float(torch.minimum(p, q).sum(-1).mean()))
    assert mixed["k4"] == pytest.approx(float(kseq_acceptance(p, q, 4).mean()))
    assert mixed["k1"] != pytest.approx(plain["k1"])


def test_the_draft_s_own_setting_is_every_entry_point_s_default(pair, monkeypatch):
    """A draft with prompt_lookup on (the shipped draft's spectr_draft.json) mixes by default in generate,
    trace_round and draft_acceptance, and the cost model's key records it; lookup=False still turns it off."""
    from spectr_lib import draft_acceptance
    from spectr_lib.engine.costs import costs_key
    from spectr_lib.engine.trace import trace_round

    assert "prompt_lookup" not in costs_key(pair)  # the tiny draft has no setting: off
    monkeypatch.setattr(pair, "draft_settings", pair.draft_settings.replace(prompt_lookup=True))
    differs = traced_differs = False
    for seed in range(8):
        kw = dict(method="kseq", k=2, L=3, max_new_tokens=6, seed=seed)
        own, on, off = (generate(pair, REPEATING, **kw, **x).token_ids for x in ({}, {"lookup": True}, {"lookup": False}))
        assert torch.equal(own, on)
        differs |= not torch.equal(own, off)
        t = trace_round(pair, REPEATING, method="kseq", k=2, L=3, seed=seed)
        assert torch.equal(t.q, trace_round(pair, REPEATING, method="kseq", k=2, L=3, seed=seed, lookup=True).q)
        traced_differs |= not torch.equal(t.q, trace_round(pair, REPEATING, method="kseq", k=2, L=3, seed=seed, lookup=False).q)
        assert torch.equal(t.new_tokens, own[: t.accepted + 1])  # trace_round is generate's first round
    assert differs and traced_differs
    ids = REPEATING + [2, 5, 1, 4]
    assert torch.equal(draft_acceptance(pair, ids, 3), draft_acceptance(pair, ids, 3, lookup=True))
    assert not torch.equal(draft_acceptance(pair, ids, 3), draft_acceptance(pair, ids, 3, lookup=False))
    assert costs_key(pair)["prompt_lookup"] is True


def test_a_malformed_setting_on_the_draft_is_refused_before_any_model_call(pair, monkeypatch):
    from spectr_lib import draft_acceptance
    from spectr_lib.models import hf_cache
    from spectr_lib.engine.costs import costs_key
    from spectr_lib.engine.trace import trace_round

    def no_call(*a, **k):
        raise AssertionError("a model ran")

    monkeypatch.setattr(hf_cache, "forward", no_call)
    with pytest.raises(ValueError, match="prompt_lookup must be True or False"):  # checked when the settings are made
        pair.draft_settings.replace(prompt_lookup="yes")
    monkeypatch.setattr(pair, "draft_settings", "yes")
    for call in (lambda: generate(pair, [1, 2], method="sps"),
                 lambda: generate(pair, [1, 2], method="sps", lookup=True),
                 lambda: trace_round(pair, [1, 2], method="sps", k=1, L=2, seed=0),
                 lambda: draft_acceptance(pair, [1, 2, 3], 1)):
        with pytest.raises(TypeError, match="DraftSettings"):
            call()
    import numpy as np

    monkeypatch.setattr(pair, "draft_settings", DraftSettings(prompt_lookup=np.bool_(False)))  # numpy's bool is a bool here
    assert "prompt_lookup" not in costs_key(pair)
