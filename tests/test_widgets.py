"""The functions behind the notebook sliders."""
import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch

from spectr_lib.theory.ot import optimal_acceptance
from spectr_lib.theory.kseq import kseq_acceptance
from spectr_lib.widgets import (MC_CHUNK, acceptance_curves, acceptance_panel, acceptance_view, mismatched_pair,
                               monte_carlo_acceptance, plot_acceptance, rule_acceptance)


def test_mismatch_knob():
    logits = torch.randn(200, generator=torch.Generator().manual_seed(0)) * 3
    p, q = mismatched_pair(logits, 0.0)
    torch.testing.assert_close(p, q)
    tv = [0.5 * (p - q).abs().sum().item() for p, q in (mismatched_pair(logits, m) for m in (0.2, 1.0, 2.0))]
    assert tv[0] < tv[1] < tv[2]
    with pytest.raises(ValueError, match="temperature"):
        mismatched_pair(logits, 0.5, temperature=0)


def test_curves_are_exact_closed_forms():
    logits = torch.randn(300, generator=torch.Generator().manual_seed(1)) * 3
    p, q = mismatched_pair(logits, 0.7)
    curves = acceptance_curves(p, q, ks=(1, 2, 4), rules=("kseq", "rrs"))
    assert curves["alpha"] == [optimal_acceptance(p, q, k) for k in (1, 2, 4)]
    assert curves["kseq"] == [kseq_acceptance(p, q, k) for k in (1, 2, 4)]
    assert curves["estimated"] == []  # no Monte Carlo for K-SEQ, RRS or α*
    assert curves["rrs"][0] == pytest.approx(curves["alpha"][0], abs=1e-12)  # k = 1: RRS is SpS, 1 - TV
    for rule in ("kseq", "rrs"):
        assert all(a <= al + 1e-12 for a, al in zip(curves[rule], curves["alpha"]))
        assert curves[rule][0] < curves[rule][-1]


def test_rule_without_formula_is_enumerated_when_small_else_estimated():
    from spectr_lib.theory.exact import acceptance

    rng = np.random.default_rng(5)
    p, q = torch.tensor(rng.dirichlet(np.ones(6))), torch.tensor(rng.dirichlet(np.ones(6)))
    value, exact = rule_acceptance("rrs_wor", p, q, 3)
    assert exact and value == pytest.approx(acceptance("rrs_wor", p, q, 3), abs=1e-12)
    big_p, big_q = torch.tensor(rng.dirichlet(np.ones(60))), torch.tensor(rng.dirichlet(np.ones(60)))
    curves = acceptance_curves(big_p, big_q, ks=(2, 4), rules=("rrs_wor",), n_mc=4000)
    assert curves["estimated"] == ["rrs_wor"]  # 60^4 tuples: Monte Carlo, labelled as such
    assert curves["rrs_wor"][0] == pytest.approx(acceptance("rrs_wor", big_p, big_q, 2), abs=1e-12)  # 60^2: enumerated
    mc = monte_carlo_acceptance("rrs_wor", big_p, big_q, 2, n=4000)
    assert mc == pytest.approx(curves["rrs_wor"][0], abs=4 * 0.5 / 4000**0.5)  # the estimator is unbiased
    with pytest.raises(ValueError, match="unknown rule"):
        rule_acceptance("nope", p, q, 2)


def test_monte_carlo_memory_is_bounded_and_seeded(monkeypatch):
    import spectr_lib.widgets as widgets

    rows = []
    real_draw = widgets.draw_drafts
    monkeypatch.setattr(widgets, "draw_drafts", lambda rule, Q, k, generator: rows.append(Q.shape) or real_draw(rule, Q, k, generator))
    V = 49_152
    p = torch.full((V,), 1.0 / V, dtype=torch.float64)
    q = torch.softmax(torch.randn(V, generator=torch.Generator().manual_seed(0), dtype=torch.float64), -1)
    first = monte_carlo_acceptance("rrs_wor", p, q, 4, n=500, seed=7)
    assert rows and all(m * v <= MC_CHUNK for m, v in rows)  # never the full n × V block
    assert sum(m for m, _ in rows) == 500
    assert monte_carlo_acceptance("rrs_wor", p, q, 4, n=500, seed=7) == first


def test_monte_carlo_matches_exact_kseq():
    rng = np.random.default_rng(2)
    p, q = torch.tensor(rng.dirichlet(np.ones(20))), torch.tensor(rng.dirichlet(np.ones(20)))
    assert monte_carlo_acceptance("kseq", p, q, 4, n=40000) == pytest.approx(kseq_acceptance(p, q, 4), abs=0.01)


def test_plot_and_panel_build():
    curves = {"k": [1, 2], "alpha": [0.5, 0.6], "kseq": [0.5, 0.55], "rrs_wor": [0.5, 0.6], "estimated": ["rrs_wor"]}
    ax = plot_acceptance(curves)
    assert len(ax.lines) == 3
    assert "RRS w/o replacement (Monte Carlo)" in [t.get_text() for t in ax.get_legend().get_texts()]
    panel = acceptance_panel(torch.randn(100), k_max=4)
    sliders = panel.children[:3]
    assert [c.description for c in sliders] == ["k_max", "mismatch", "temperature"]  # k_max: the largest k drawn
    assert list(sliders[0].options) == [1, 2, 4]
    assert all(c.continuous_update is False for c in sliders)
    with pytest.raises(ValueError, match="power of two"):
        acceptance_panel(torch.randn(100), k_max=6)


def test_static_view_is_the_panels_frame():
    import matplotlib.pyplot as plt

    logits = torch.randn(49_152, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 3
    fig, ax = plt.subplots()
    curves = acceptance_view(logits, k_max=16, mismatch=0.5, temperature=1.0, ax=ax)
    plt.close(fig)
    assert curves["k"] == [1, 2, 4, 8, 16] and curves["estimated"] == []
    p, q = mismatched_pair(logits, 0.5, 1.0)
    from spectr_lib.theory.selection import rrs_acceptance

    assert curves["rrs"] == [rrs_acceptance(p, q, k) for k in curves["k"]]
    assert len(ax.lines) == 3


def test_pair_curves_on_real_shaped_logits():
    from spectr_lib.widgets import pair_curves, pair_panel

    g = torch.Generator().manual_seed(3)
    pl, ql = torch.randn(5, 300, generator=g) * 3, torch.randn(5, 300, generator=g) * 3
    c = pair_curves(pl, pl, 2, 1.0, ks=(1, 4))
    assert c["alpha"] == pytest.approx([1.0, 1.0]) and c["kseq"] == pytest.approx([1.0, 1.0])
    c = pair_curves(pl, ql, 2, 0.7, ks=(1, 2, 4))
    assert c["alpha"][0] < c["alpha"][-1] <= 1
    with pytest.raises(ValueError, match="position"):
        pair_curves(pl, ql, 9)
    panel = pair_panel(pl, ql, list("abcde"), n_mc=100)
    assert [c.description for c in panel.children[:3]] == ["position", "temperature", "k_max"]
    assert all(c.continuous_update is False for c in panel.children[:3])


@pytest.mark.parametrize("seed", range(4))
def test_rrs_closed_form_equals_enumeration(seed):
    from spectr_lib.theory.exact import acceptance
    from spectr_lib.theory.selection import rrs_acceptance

    rng = np.random.default_rng(seed)
    p, q = rng.dirichlet(np.ones(5) * 0.5), rng.dirichlet(np.ones(5) * 0.5)
    for k in (1, 2, 3):
        assert rrs_acceptance(p, q, k) == pytest.approx(acceptance("rrs", p, q, k), abs=1e-12)
    peaked = np.array([1 - 1e-13, 4e-14, 6e-14])
    assert rrs_acceptance([0.2, 0.5, 0.3], peaked, 2) == pytest.approx(acceptance("rrs", [0.2, 0.5, 0.3], peaked, 2), abs=1e-12)


def test_every_rules_curve_at_the_sliders_lowest_temperature(embedded_f32):
    """T = 0.2 makes most real next-token distributions peaked: every rule's acceptance stays a probability,
    the closed forms agree with the samplers, i.i.d. rules stay under α*, K-SEQ over its (1 − 1/e) guarantee."""
    from spectr_lib.prompts import encode_chat
    from spectr_lib.theory.selection import RULES

    model, tok = embedded_f32
    with torch.no_grad():
        logits = model(encode_chat(tok, "Name three rivers in Europe.")[None]).logits[0, -12:].double()
    for i in (0, 7):
        p, q = mismatched_pair(logits[i], 0.5, temperature=0.2, seed=i)
        rules = [r for r in RULES if r != "sps"]
        curves = acceptance_curves(p, q, ks=(2,), rules=rules, n_mc=4000)  # SpecHub is defined for k = 2
        mc_rrs = monte_carlo_acceptance("rrs", p, q, 2, n=4000)
        assert curves["rrs"][0] == pytest.approx(mc_rrs, abs=0.03)  # 4000 draws: 3 standard errors
        for rule in rules:
            assert all(0 <= a <= 1 for a in curves[rule]), (rule, curves[rule])
        assert curves["kseq"][0] <= curves["alpha"][0] + 1e-9 and curves["rrs"][0] <= curves["alpha"][0] + 0.015
        assert curves["kseq"][0] >= (1 - (1 - 1 / 2) ** 2) * curves["alpha"][0] - 1e-9
