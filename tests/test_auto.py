"""k = "auto" / L = "auto": the output law is the target's (chi-square, as for fixed configurations), the
choice follows the costs, the prediction follows §8's formula, and the calibration is cached by its key."""
import dataclasses
import json

import pytest
import torch

from spectr_lib.engine import auto, calibration, costs as costs_mod
from spectr_lib.engine.auto import AutoConfig, Round, expected_tokens, predict_tokens_per_second
from spectr_lib.engine.calibration import load_costs
from spectr_lib.engine.costs import Costs
from spectr_lib.engine.decoder import generate
from conftest import PROMPT, chi_square_pvalue, exact_law, samples_of


def synthetic_costs(draft_ms: float, ar_ms: float = 10.0) -> Costs:
    """Costs where a round of k drafts is cheap (draft_ms small) or not, and acceptance priors that differ by k."""
    return Costs(key={}, ar_ms=ar_ms, verify_ms={"tree": [[1, 1, 10.0], [1, 81, 14.0]],
                                                 "batch": [[1, 2, 10.0], [1, 9, 12.0], [8, 2, 11.0], [8, 9, 16.0]]},
                 draft_ms=[[1, draft_ms], [8, 2 * draft_ms]], select_ms=0.05, overhead_ms=0.2,
                 alpha={"1": [0.5] * 6, "2": [0.6] * 6, "4": [0.7] * 6, "8": [0.75] * 6}, nodes={})


CHEAP, DEAR = synthetic_costs(0.3), synthetic_costs(50.0)


@pytest.mark.parametrize("method,k,L", [("kseq", "auto", "auto"), ("rrs", "auto", "auto"), ("sps", 1, "auto"),
                                        ("block", 1, "auto"), ("kseq", 4, "auto"), ("kseq", "auto", 3)])
def test_auto_configurations_follow_the_target_law(pair, method, k, L):
    law = exact_law(pair)
    samples = samples_of(pair, 4000, method=method, k=k, L=L, costs=CHEAP)
    assert chi_square_pvalue(samples, law) > 1e-3


def test_auto_varies_its_choice_and_records_it(pair):
    """With cheap drafts auto drafts long rounds and changes (k, L) as the run goes (the last round is capped by
    what is left); stats.rounds holds every round's (k, L) and the totals add up."""
    g = generate(pair, PROMPT, method="kseq", k="auto", L="auto", max_new_tokens=60, seed=0, costs=CHEAP)
    s = g.stats
    chosen = {(r.k, r.L) for r in s.rounds}
    assert len(chosen) >= 2 and max(r.L for r in s.rounds) >= 4
    assert sum(r.accepted + 1 for r in s.rounds) + s.plain_steps == s.new_tokens == 60
    assert s.k == s.L == "auto"


def test_auto_takes_plain_steps_when_drafting_cannot_pay(pair, monkeypatch):
    """Drafts dearer than the target (and the clock not learnt from): every step is plain except the looks: the
    first round, then one after 16, 32, 64, … plain steps in a row."""
    monkeypatch.setattr(auto, "LEARN_TIMES", False)
    s = generate(pair, PROMPT, method="kseq", k="auto", L="auto", max_new_tokens=200, seed=0, costs=DEAR).stats
    assert s.plain_steps >= 180 and 3 <= len(s.rounds) <= 5
    starts = [i for i, d in enumerate(s.draft_lengths) if d > 0]
    assert starts[:3] == [0, 17, 50]  # a look, 16 plain steps, a look, 32 plain steps, a look
    assert len(s.plain_ms) == s.plain_steps and all(ms > 0 for ms in s.plain_ms)


def test_measured_rounds_overrule_a_prior_that_switched_drafting_off():
    """A calibration whose overhead term is far too large (as a residual of noisy terms was) predicts that
    drafting cannot pay; rounds measured at their real cost move the estimate of every option until drafting is
    chosen. The negative control: rounds as dear as predicted leave the choice at plain steps."""
    dear = dataclasses.replace(CHEAP, overhead_ms=60.0)  # ar_ms 10: a round "costs" > 6 plain steps
    for real_ms, drafts in ((12.0, True), (None, False)):
        a = AutoConfig(dear, (1, 4), tuple(range(9)), "tree")
        first = a.choose(100)
        assert first[1] >= 1  # the first round looks, whatever the prior says
        for _ in range(6):
            k, L = a.choose(100) if a.plain_in_a_row < a.explore_after else first
            predicted = dear.round_ms(k, max(L, 1), "tree", 2, 1 + 2 * max(L, 1))
            ms = real_ms if real_ms is not None else predicted
            a.update(Round(k, max(L, 1), 1, 1 + 2 * max(L, 1), (2,) * max(L, 1), ms / 2, ms / 4, ms / 8, ms / 8))
        assert (a.choose(100)[1] >= 1) == drafts
        assert a.time_disagreement() == pytest.approx(1.0) if real_ms is None else a.time_disagreement() < 0.5


def test_plain_steps_learn_their_own_time():
    """Plain steps measured slower than the calibrated ar_ms raise the learnt ar_ms (one pseudo-step at the
    prior), which makes drafting relatively more attractive; a stalled step counts at most 3× ar_ms."""
    a = AutoConfig(CHEAP, (1,), tuple(range(9)), "tree")
    for _ in range(9):
        a.update_plain(20.0)
    assert a.ar_ms() == pytest.approx((9 * 20.0 + 10.0) / 10)
    a.update_plain(1e6)
    assert a.ar_ms() == pytest.approx((9 * 20.0 + 30.0 + 10.0) / 11)
    assert a.speeds()[0, 0] == pytest.approx(1e3 / a.ar_ms())


def test_rounds_carry_their_time_and_the_profile_adds_up(pair):
    """Every round records its draft / verify / select / other ms; the profile's rounds and tokens add up to the
    stats, and its time to the decoding time within the loop's own book-keeping."""
    s = generate(pair, PROMPT, method="kseq", k="auto", L="auto", max_new_tokens=40, seed=0, costs=CHEAP).stats
    assert all(r.draft_ms > 0 and r.verify_ms > 0 and r.select_ms > 0 and r.other_ms >= 0 for r in s.rounds)
    prof = s.profile()
    assert sum(p["rounds"] for p in prof.values()) == len(s.rounds) + s.plain_steps
    assert sum(p["rounds"] * p["tokens_per_round"] for p in prof.values()) == pytest.approx(s.new_tokens)
    booked = sum(p["rounds"] * p["ms"] for p in prof.values()) / 1e3
    decoding = s.seconds_total - s.seconds_prefill
    assert 0.8 * decoding <= booked <= decoding


def test_the_cost_tables_are_monotone():
    """A call timed cheaper than a smaller one (noise) takes the smaller one's time: more positions per row, more
    rows and a larger draft batch never cost less; what was measured is kept as measured."""
    c = Costs(key={}, ar_ms=10.0, verify_ms={"tree": [[1, 1, 10.0], [1, 2, 9.0], [1, 9, 14.0]],
                                             "batch": [[1, 2, 10.0], [1, 9, 12.0], [8, 2, 9.5], [8, 9, 16.0]]},
              draft_ms=[[1, 2.0], [4, 1.5], [8, 3.0]], select_ms=0.1, overhead_ms=0.1)
    assert c.target(1, 1, "tree", 2) == 10.0 and c.target(1, 1, "tree", 1) == 10.0
    assert c.target(8, 1, "batch") >= c.target(1, 1, "batch") == 10.0
    assert c.draft(4) == 2.0 and c.draft(8) == 3.0
    assert c.verify_ms["tree"][1] == [1, 2, 9.0] and c.draft_ms[1] == [4, 1.5]


def test_a_calibration_rounds_disagree_with_is_measured_again(pair, tmp_path, monkeypatch):
    """A generation whose time is off the prediction by more than calibration.DISAGREEMENT drops the cached file
    (with a RuntimeWarning) so the next load_costs calibrates again; one within the margin keeps it."""
    monkeypatch.setenv("SPECTR_CACHE", str(tmp_path))
    calls = []

    def fake_calibrate(p, progress=True):
        calls.append(1)
        c = synthetic_costs(1.0)
        c.key = costs_mod.costs_key(p)
        return c

    monkeypatch.setattr(calibration, "calibrate", fake_calibrate)
    c = load_costs(pair)
    assert not calibration.check_agreement(c, 2000.0, 1800.0) and not calibration.check_agreement(c, 100.0, 10.0)
    load_costs(pair)
    assert len(calls) == 1
    with pytest.warns(RuntimeWarning, match="measured again"):
        assert calibration.check_agreement(c, 4000.0, 1000.0)
    load_costs(pair)
    assert len(calls) == 2
    with pytest.warns(RuntimeWarning):
        assert calibration.check_agreement(c, 1000.0, 4000.0)  # too fast is as wrong as too slow
    assert not calibration.check_agreement(synthetic_costs(1.0), 4000.0, 1000.0)  # no key: no cached file


def test_auto_arguments_are_checked(pair):
    with pytest.raises(ValueError, match="'ar'"):
        generate(pair, PROMPT, method="ar", L="auto", costs=CHEAP)
    with pytest.raises(ValueError, match="k='auto' is for"):
        generate(pair, PROMPT, method="sps", k="auto", costs=CHEAP)
    with pytest.raises((TypeError, ValueError), match="k must be"):
        generate(pair, PROMPT, method="kseq", k="fast", costs=CHEAP)
    with pytest.raises(ValueError, match="k='auto' chooses among rounds of L ≤ 8"):
        generate(pair, PROMPT, method="kseq", k="auto", L=12, costs=CHEAP)
    with pytest.raises(TypeError, match="costs must be"):
        generate(pair, PROMPT, method="kseq", L="auto", costs={"ar_ms": 1})


def test_expected_tokens_and_prediction_follow_the_round_formula():
    assert expected_tokens([0.5] * 8, 0) == 1.0
    assert expected_tokens([0.5] * 8, 2) == pytest.approx(1.75)
    c = CHEAP
    # k = 1, L = 2, tree form with one node per depth: 3 positions
    ms = c.draft(1) + c.draft(1) + c.target(1, 2, "tree", 3) + c.select_ms * 1.75 + c.overhead_ms
    assert predict_tokens_per_second(c, 1, 2, "tree", [0.5] * 8, [1.0] * 8) == pytest.approx(1e3 * 1.75 / ms)
    assert predict_tokens_per_second(c, 8, 0, "tree") == pytest.approx(100.0)
    for bad in ((c, 0, 2), (c, 2.5, 2), (c, 2, -1), (c, 3, 100)):
        with pytest.raises(ValueError):
            predict_tokens_per_second(*bad, "tree")
    with pytest.raises(TypeError, match="pair_costs"):
        predict_tokens_per_second(None, 2, 2, "tree")


def test_the_estimate_learns_from_rounds():
    """Rounds that accept everything raise every k's acceptance estimate; rounds that accept nothing lower it."""
    hi, lo = AutoConfig(CHEAP, (1, 8), tuple(range(9)), "tree"), AutoConfig(CHEAP, (1, 8), tuple(range(9)), "tree")
    for _ in range(20):
        hi.update(Round(8, 4, 4, 20, (4, 4, 4, 4)))
        lo.update(Round(8, 4, 0, 20, (4, 4, 4, 4)))
    assert hi.alpha(8)[0] > 0.9 > 0.2 > lo.alpha(8)[0]
    assert hi.alpha(1)[0] > 0.5 > lo.alpha(1)[0]  # moved through the shared factor


def test_costs_are_cached_by_key(pair, tmp_path, monkeypatch):
    """The first call calibrates and writes the cache; the second reads it; a changed key calibrates again."""
    monkeypatch.setenv("SPECTR_CACHE", str(tmp_path))
    calls = []

    def fake_calibrate(p, progress=True):
        calls.append(1)
        c = synthetic_costs(1.0)
        c.key = costs_mod.costs_key(p)
        return c

    monkeypatch.setattr(calibration, "calibrate", fake_calibrate)
    a = load_costs(pair)
    b = load_costs(pair)
    assert len(calls) == 1 and a == b
    (path,) = (tmp_path / "costs").glob("*.json")
    assert json.loads(path.read_text())["ar_ms"] == 10.0
    load_costs(pair, recalibrate=True)
    monkeypatch.setattr(torch, "__version__", "0.0-other")
    load_costs(pair)
    assert len(calls) == 3


def test_real_calibration_of_the_tiny_pair(pair, tmp_path, monkeypatch):
    """A real calibration measures positive costs and priors in [0, 1] for every k auto chooses among."""
    monkeypatch.setenv("SPECTR_CACHE", str(tmp_path))
    c = load_costs(pair, progress=False)
    assert c.ar_ms > 0 and set(c.verify_ms) == {"tree", "batch"} and all(ms > 0 for calls in c.verify_ms.values() for *_, ms in calls) and c.select_ms > 0
    assert 0 <= c.overhead_ms < c.ar_ms  # measured by the rounds' own timers: book-keeping, not a residual
    assert set(c.alpha) == {"1", "2", "4", "8"} and all(0 <= a <= 1 for row in c.alpha.values() for a in row)
    assert all(1 <= n <= int(k) for k, row in c.nodes.items() for n in row)


def test_auto_k_with_a_fixed_L_drafts_to_the_end(pair):
    """k = "auto" with L = 4 shrinks the last rounds' L to what is left, as a fixed configuration does: only the
    very last token can be a plain step."""
    s = generate(pair, PROMPT, method="kseq", k="auto", L=4, max_new_tokens=23, seed=1, costs=CHEAP).stats
    assert s.plain_steps <= 1 and all(r.L <= 4 for r in s.rounds) and s.new_tokens == 23


def test_draft_eval_predicts_with_the_decoders_cost_model():
    """draft_eval's prediction is §8's formula with Costs.round_ms (selection and bookkeeping included), and a
    compared draft's measured step costs replace the calibrated ones."""
    from spectr_lib.tools.draft_eval import predicted_speedups

    c = synthetic_costs(1.0)
    acc = {"k1": 0.5, "k4": 0.7}
    got = predicted_speedups(c, acc, form="batch")
    e1 = 1 + 0.5 + 0.25 + 0.125 + 0.0625
    round1 = c.draft(1) + 3 * c.draft(1) + c.target(1, 4, "batch") + c.select_ms * e1 + c.overhead_ms
    assert got["k1_L4"]["tokens_per_round"] == pytest.approx(e1)
    assert got["k1_L4"]["speedup_over_ar"] == pytest.approx(e1 * c.ar_ms / round1)
    e4 = expected_tokens([0.7] * 4, 4)
    round4 = c.draft(1) + 3 * c.draft(4) + c.target(4, 4, "batch") + c.select_ms * e4 + c.overhead_ms
    assert got["k4_L4"]["speedup_over_ar"] == pytest.approx(e4 * c.ar_ms / round4)
    dearer = predicted_speedups(c, acc, {"batch1": {"draft_step_s": 0.004}, "batch8": {"draft_step_s": 0.008}},
                                form="batch")
    round1 = 4 * 4.0 + c.target(1, 4, "batch") + c.select_ms * e1 + c.overhead_ms
    assert dearer["k1_L4"]["speedup_over_ar"] == pytest.approx(e1 * c.ar_ms / round1)
