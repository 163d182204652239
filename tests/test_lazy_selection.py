"""The one-row fast paths of `sample` (K-SEQ decided lazily against a bracket of ρ*, RRS building residuals only
after a rejection) take exactly the decisions of the rules' pass probabilities, and ρ̂ matches the batched solver."""
import numpy as np
import pytest
import torch

from spectr_lib.theory.kseq import _rho_star, kseq_first_pass_row
from spectr_lib.theory.selection import RULES, _pass_probabilities, draw_drafts, sample
from conftest import assert_power, rule_departures


def _pairs(V: int, seed: int):
    """(p, q) pairs from flat to very peaked, with zeros in p and in q."""
    g = torch.Generator().manual_seed(seed)
    for scale in (0.3, 1.0, 3.0, 8.0):
        logits = torch.randn(V, generator=g, dtype=torch.float64) * scale
        p = logits.softmax(-1)
        q = (logits * 0.7 + torch.randn(V, generator=g, dtype=torch.float64) * scale).softmax(-1)
        yield p, q
        p0 = torch.where(torch.rand(V, generator=g) < 0.3, 0.0, p)
        q0 = torch.where(torch.rand(V, generator=g) < 0.2, 0.0, q)
        yield p0 / p0.sum(), q0 / q0.sum()


@pytest.mark.parametrize("rule", ["sps", "kseq", "rrs", "rrs_wor", "sampled"])
def test_lazy_decisions_equal_the_eager_rule(rule):
    """For fixed uniforms, the fast path returns the draft index the eager pass probabilities give (U_i < a_i,
    first i); when all fail, the residual equals the eager one."""
    checked = 0
    for seed in range(6):
        for p, q in _pairs(50, seed):
            for k in ((1,) if rule == "sps" else (1, 2, 3, 8)):
                g = torch.Generator().manual_seed(seed * 100 + k)
                drafts = draw_drafts(rule, q[None], k, generator=g)
                u = torch.rand(1, k, generator=g, dtype=torch.float64)
                a, residual = _pass_probabilities(rule, p[None], q[None], drafts)
                passed = (u < a)[0]
                want = int(passed.to(torch.int8).argmax()) if passed.any() else -1
                i, lazy_residual = RULES[rule].first_pass_row(p, q, drafts[0], u[0])
                assert i == want, (rule, seed, k)
                if i < 0:
                    torch.testing.assert_close(lazy_residual(), residual()[0], atol=1e-9, rtol=1e-7)
                checked += 1
    assert checked >= 48


def test_lazy_rho_matches_the_batched_solver():
    """When every draft fails, ρ̂ from the narrowed bracket is the root found by the batched solver on [1, k]."""
    n_fail = 0
    for seed in range(10):
        for p, q in _pairs(200, seed):
            for k in (2, 5, 8):
                drafts = np.argsort(-(q.numpy()))[:k]  # drafts where q is large: many rejections
                u = np.full(k, 0.999)
                i, rho = kseq_first_pass_row(p.numpy(), q.numpy(), drafts, u)
                if i >= 0:
                    continue
                n_fail += 1
                batched = _rho_star(torch.stack([p, p]), torch.stack([q, q]), torch.tensor([k, k]))[0]
                assert abs(rho - float(batched)) < 1e-8 * k
    assert n_fail >= 10


def test_one_row_sample_is_the_fast_path_and_agrees_in_law():
    """`sample` on one CPU row takes the fast path; its empirical law over 25,000 calls matches p (chi-square)."""
    from scipy.stats import chisquare

    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    q = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    counts = np.zeros(4)
    for _ in range(25_000):
        drafts = draw_drafts("kseq", q[None], 3, generator=g)
        token, _ = sample("kseq", p[None], q[None], drafts, g, check=False)
        counts[int(token)] += 1
    assert chisquare(counts, 25_000 * p.numpy()).pvalue > 0.001
    assert_power({(x,): float(v) for x, v in enumerate(p)}, rule_departures("kseq", p, q, 3), 25_000)
