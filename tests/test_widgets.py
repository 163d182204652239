"""The functions behind the notebook sliders."""
import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch

from spectr_lib.theory.ot import optimal_acceptance
from spectr_lib.theory.kseq import kseq_acceptance
from spectr_lib.widgets import acceptance_curves, acceptance_panel, mismatched_pair, monte_carlo_acceptance, plot_acceptance


def test_mismatch_knob():
    logits = torch.randn(200, generator=torch.Generator().manual_seed(0)) * 3
    p, q = mismatched_pair(logits, 0.0)
    torch.testing.assert_close(p, q)
    tv = [0.5 * (p - q).abs().sum().item() for p, q in (mismatched_pair(logits, m) for m in (0.2, 1.0, 2.0))]
    assert tv[0] < tv[1] < tv[2]
    with pytest.raises(ValueError, match="temperature"):
        mismatched_pair(logits, 0.5, temperature=0)


def test_curves_are_consistent_with_the_closed_forms():
    logits = torch.randn(300, generator=torch.Generator().manual_seed(1)) * 3
    p, q = mismatched_pair(logits, 0.7)
    curves = acceptance_curves(p, q, ks=(1, 2, 4), rules=("kseq", "rrs"), n_mc=20000)
    assert curves["alpha"] == [optimal_acceptance(p, q, k) for k in (1, 2, 4)]
    assert curves["kseq"] == [kseq_acceptance(p, q, k) for k in (1, 2, 4)]
    assert curves["rrs"][0] == pytest.approx(curves["alpha"][0], abs=0.015)  # k = 1: RRS is SpS, 1 - TV
    for rule in ("kseq", "rrs"):
        assert all(a <= al + 0.015 for a, al in zip(curves[rule], curves["alpha"]))
        assert curves[rule][0] < curves[rule][-1]


def test_monte_carlo_matches_exact_kseq():
    rng = np.random.default_rng(2)
    p, q = torch.tensor(rng.dirichlet(np.ones(20))), torch.tensor(rng.dirichlet(np.ones(20)))
    assert monte_carlo_acceptance("kseq", p, q, 4, n=40000) == pytest.approx(kseq_acceptance(p, q, 4), abs=0.01)


def test_plot_and_panel_build():
    curves = {"k": [1, 2], "alpha": [0.5, 0.6], "kseq": [0.5, 0.55]}
    ax = plot_acceptance(curves)
    assert len(ax.lines) == 2
    panel = acceptance_panel(torch.randn(100), k_max=4, n_mc=100)
    assert {c.description for c in panel.children[:3]} == {"k", "mismatch", "temperature"}


def test_pair_curves_on_real_shaped_logits():
    from spectr_lib.widgets import pair_curves, pair_panel

    g = torch.Generator().manual_seed(3)
    pl, ql = torch.randn(5, 300, generator=g) * 3, torch.randn(5, 300, generator=g) * 3
    c = pair_curves(pl, pl, 2, 1.0, ks=(1, 4), n_mc=500)
    assert c["alpha"] == pytest.approx([1.0, 1.0]) and c["kseq"] == pytest.approx([1.0, 1.0])
    c = pair_curves(pl, ql, 2, 0.7, ks=(1, 2, 4), n_mc=500)
    assert c["alpha"][0] < c["alpha"][-1] <= 1
    with pytest.raises(ValueError, match="position"):
        pair_curves(pl, ql, 9)
    assert len(pair_panel(pl, ql, list("abcde"), n_mc=100).children) >= 3
