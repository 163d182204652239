"""The token-level law test of every rule has the power it needs, computed exactly: the law a defective rule
would give is enumerated over all draft tuples, and the chi-square test at the sample size the suite uses
(tests/test_selection.py, 100,000 draws) must reject it with probability ≥ 0.99. The named departures: drafts
verified against q at τ = 0.7 or 1.3 while drawn from q (τ = 1), and the residual replaced by p (the K-SEQ
correction, or RRS's recursive residual, dropped). Each is then planted in the sampler and rejected."""
import dataclasses

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import assert_power, rule_departure_law, rule_departures, tempered
from spectr_lib.theory import selection
from spectr_lib.theory.selection import draw_drafts, sample

V, N = 6, 100_000
CASES = [("sps", 1), ("kseq", 2), ("kseq", 4), ("rrs", 4), ("rrs_wor", 3)]
TAUS = (0.7, 1.3)


def pair_of(seed: int = 5):
    rng = np.random.default_rng(seed)
    return (torch.tensor(rng.dirichlet(np.ones(V))), torch.tensor(rng.dirichlet(np.ones(V))))


def as_law(probs) -> dict:
    return {(x,): float(v) for x, v in enumerate(probs)}


@pytest.mark.parametrize("rule,k", CASES)
def test_the_rule_law_test_has_power_against_each_named_departure(rule, k):
    p, q = pair_of()
    law = as_law(p.numpy())
    assert [v for v in rule_departure_law(rule, p, q, k).values()] == pytest.approx(p.numpy(), abs=1e-12)  # the law
    departures = rule_departures(rule, p, q, k)
    assert len(departures) == (2 if rule == "sps" else 3)
    assert_power(law, departures, N)


def draws(rule: str, k: int, verify_q=None, seed: int = 11) -> np.ndarray:
    p, q = pair_of()
    g = torch.Generator().manual_seed(seed)
    P, Q = p.expand(N, V), q.expand(N, V)
    drafts = draw_drafts(rule, Q, k, generator=g)
    qv = Q if verify_q is None else verify_q.expand(N, V)
    token, _ = sample(rule, P, qv, drafts, generator=g)
    return torch.bincount(token, minlength=V).numpy()


@pytest.mark.parametrize("rule,k", CASES)
def test_each_planted_departure_is_rejected_and_the_rule_is_not(rule, k, monkeypatch):
    p, q = pair_of()
    assert stats.chisquare(draws(rule, k), p.numpy() * N).pvalue > 1e-3
    for t in TAUS:
        assert stats.chisquare(draws(rule, k, verify_q=tempered(q, t)), p.numpy() * N).pvalue < 1e-3, t
    if rule == "kseq":
        monkeypatch.setattr(selection, "_kseq_residual", lambda p, q, rho, k: p)
    elif rule in ("rrs", "rrs_wor"):
        record = selection.RULES[rule]
        real = record.pass_probabilities

        def residual_is_p(p, q, drafts):
            a, _ = real(p, q, drafts)
            return a, lambda: p
        monkeypatch.setitem(selection.RULES, rule, dataclasses.replace(record, pass_probabilities=residual_is_p))
    else:
        return
    assert stats.chisquare(draws(rule, k), p.numpy() * N).pvalue < 1e-3
