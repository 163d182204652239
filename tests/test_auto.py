"""k = "auto" / L = "auto": the output law is the target's (chi-square, as for fixed configurations), the
choice follows the costs, the prediction follows §8's formula, and the calibration is cached by its key."""
import dataclasses
import json

import pytest
import torch

from spectr_lib.engine import auto, calibration, costs as costs_mod
from spectr_lib.engine.verifiers import VERIFIERS
from spectr_lib.engine.auto import AutoConfig, Round, expected_tokens, predict_tokens_per_second
from spectr_lib.engine.calibration import load_costs
from spectr_lib.engine.costs import Costs
from spectr_lib.engine.decoder import generate
from spectr_lib.models.load import tiny_pair
from conftest import PROMPT, chi_square_pvalue, exact_law, samples_of


def synthetic_costs(draft_ms: float, ar_ms: float = 10.0) -> Costs:
    """Costs where a round of k drafts is cheap (draft_ms small) or not, and acceptance priors that differ by k."""
    tree = [[1, 1, 10.0], [1, 81, 14.0]]
    return Costs(key={}, ar_ms=ar_ms, verify_ms={"tree": tree, "static": tree,
                                                 "batch": [[1, 2, 10.0], [1, 9, 12.0], [8, 2, 11.0], [8, 9, 16.0]]},
                 draft_ms=[[1, draft_ms], [8, 2 * draft_ms]], select_ms=0.05, overhead_ms=0.2,
                 alpha={"1": [0.5] * 6, "2": [0.6] * 6, "4": [0.7] * 6, "8": [0.75] * 6}, nodes={})


CHEAP, DEAR = synthetic_costs(0.3), synthetic_costs(50.0)
DEAR_OVERHEAD = dataclasses.replace(CHEAP, overhead_ms=25.0)  # ar_ms 10: a round "costs" 3-4 plain steps


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


@pytest.fixture
def fake_calibration(tmp_path, monkeypatch):
    """The cost cache under tmp_path and a calibration that returns synthetic_costs(1.0) under the pair's key
    at once; the list it returns grows by one per calibration."""
    monkeypatch.setenv("SPECTR_CACHE", str(tmp_path))
    calls = []

    def fake_calibrate(p, progress=True):
        calls.append(1)
        c = synthetic_costs(1.0)
        c.key = costs_mod.costs_key(p)
        return c

    monkeypatch.setattr(calibration, "calibrate", fake_calibrate)
    return calls


def simulate(costs, round_scale, plain_scale, steps=60, ks=(1, 4)):
    """(k, L) chosen by an AutoConfig over `steps` choices when every drafted round takes round_scale × its
    predicted ms (accepting one draft token) and every plain step plain_scale × ar_ms."""
    a, chosen = AutoConfig(costs, ks, tuple(range(9)), "tree"), []
    for _ in range(steps):
        k, L = a.choose(100)
        chosen.append((k, L))
        if L == 0:
            a.update_plain(costs.ar_ms * plain_scale)
        else:
            ms = costs.round_ms(k, L, "tree", 2, 1 + 2 * L) * round_scale
            a.update(Round(k, L, 1, 1 + 2 * L, (2,) * L, ms / 2, ms / 4, ms / 8, ms / 8))
    return chosen, a


def test_measured_rounds_overrule_a_prior_that_switched_drafting_off():
    """A calibration whose overhead term is far too large (as a residual of noisy terms was) predicts that
    drafting cannot pay; the first round looks anyway, and rounds measured far cheaper than predicted, next to
    plain steps measured as predicted, move the drafted options until drafting is chosen. The negative control:
    rounds as dear as predicted leave the choice at plain steps but for the looks."""
    chosen, a = simulate(DEAR_OVERHEAD, 0.4, 1.0)
    assert chosen[0][1] >= 1 and sum(L > 0 for _, L in chosen[-20:]) >= 18
    assert a.time_disagreement() < 0.6
    chosen, a = simulate(DEAR_OVERHEAD, 1.0, 1.0)
    assert sum(L > 0 for _, L in chosen) <= 3 and a.time_disagreement() == pytest.approx(1.0)


def test_a_machine_uniformly_slower_than_calibrated_keeps_the_choice():
    """Every round and plain step 2.5× (or 0.4×) the calibrated time: the same choices as at 1×. The control:
    only the drafted rounds faster changes them (more drafted rounds)."""
    for costs in (CHEAP, DEAR_OVERHEAD):
        base, _ = simulate(costs, 1.0, 1.0)
        for scale in (2.5, 0.4):
            assert simulate(costs, scale, scale)[0] == base
    faster, _ = simulate(DEAR_OVERHEAD, 0.4, 1.0)
    assert sum(L > 0 for _, L in faster) > sum(L > 0 for _, L in base) + 20


def test_plain_steps_learn_their_own_time():
    """Plain steps measured slower than the calibrated ar_ms raise the learnt ar_ms (one pseudo-step at the
    machine's scale, here theirs), which makes drafting relatively more attractive; a stalled step counts at most
    3× ar_ms."""
    a = AutoConfig(CHEAP, (1,), tuple(range(9)), "tree")
    for _ in range(9):
        a.update_plain(20.0)
    assert a.machine_scale() == pytest.approx(2.0) and a.ar_ms() == pytest.approx(20.0)
    a.update_plain(1e6)
    assert a.machine_scale() == pytest.approx(2.1) and a.ar_ms() == pytest.approx(10.0 * (21.0 + 2.1) / 11)
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


def test_a_calibration_rounds_disagree_with_is_measured_again(pair, tmp_path, fake_calibration):
    """A generation whose time is off the prediction by more than calibration.DISAGREEMENT drops the cached file
    (with a RuntimeWarning) so the next load_costs calibrates again; one within the margin keeps it."""
    calls = fake_calibration
    c = load_costs(pair)
    assert not calibration.check_agreement(c, pair, 2000.0, 1800.0) and not calibration.check_agreement(c, pair, 100.0, 10.0)
    load_costs(pair)
    assert len(calls) == 1
    with pytest.warns(RuntimeWarning, match="measured again"):
        assert calibration.check_agreement(c, pair, 4000.0, 1000.0)
    load_costs(pair)
    assert len(calls) == 2
    with pytest.warns(RuntimeWarning):
        assert calibration.check_agreement(c, pair, 1000.0, 4000.0)  # too fast is as wrong as too slow
    load_costs(pair)
    assert not calibration.check_agreement(synthetic_costs(1.0), pair, 4000.0, 1000.0)  # no key: no cached file
    other = tiny_pair(vocab_size=6, seed=9)  # another pair's rounds never drop this pair's calibration
    assert not calibration.check_agreement(c, other, 4000.0, 1000.0) and len(list((tmp_path / "costs").glob("*.json"))) == 1


@pytest.mark.parametrize("field,value,match", [
    ("ar_ms", float("nan"), "ar_ms"), ("ar_ms", 0.0, "ar_ms"), ("select_ms", -1.0, "select_ms"),
    ("overhead_ms", "fast", "overhead_ms"), ("draft_ms", [], "draft_ms"), ("draft_ms", [[1, float("nan")]], "draft_ms"),
    ("verify_ms", {"tree": []}, "verify_ms"), ("verify_ms", {"tree": [[1, 0, 3.0]]}, "verify_ms"), ("verify_ms", "x", "verify_ms"),
    ("alpha", {"x": [0.5]}, "alpha"), ("alpha", {"2": [1.5]}, "alpha"), ("nodes", {"2": [-1.0]}, "nodes")])
def test_costs_no_machine_measures_are_refused(field, value, match):
    with pytest.raises(ValueError, match=f"{match}.*recalibrate=True"):
        dataclasses.replace(CHEAP, **{field: value})


def test_a_damaged_cache_file_is_measured_again_and_a_folder_in_its_place_is_named(pair, tmp_path, fake_calibration):
    calls = fake_calibration
    load_costs(pair)
    (path,) = (tmp_path / "costs").glob("*.json")
    good = json.loads(path.read_text())
    for damage in ({**good, "ar_ms": float("nan")}, {**good, "draft_ms": []}, {**good, "verify_ms": "x"},
                   {**good, "alpha": {"2": [2.0]}}):
        path.write_text(json.dumps(damage))
        assert load_costs(pair).ar_ms == 10.0
    assert len(calls) == 5
    path.unlink()
    path.mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        load_costs(pair)


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
    for name, bad in (("alpha", [0.9]), ("alpha", 0.5), ("alpha", [5.0] * 8), ("nodes", [float("nan")] * 8), ("nodes", "x")):
        with pytest.raises(ValueError, match=f"{name} must be a 1-D sequence"):
            predict_tokens_per_second(c, 2, 2, "tree", **{name: bad})


def test_the_estimate_learns_from_rounds():
    """Rounds that accept everything raise every k's acceptance estimate; rounds that accept nothing lower it."""
    hi, lo = AutoConfig(CHEAP, (1, 8), tuple(range(9)), "tree"), AutoConfig(CHEAP, (1, 8), tuple(range(9)), "tree")
    for _ in range(20):
        hi.update(Round(8, 4, 4, 20, (4, 4, 4, 4)))
        lo.update(Round(8, 4, 0, 20, (4, 4, 4, 4)))
    assert hi.alpha(8)[0] > 0.9 > 0.2 > lo.alpha(8)[0]
    assert hi.alpha(1)[0] > 0.5 > lo.alpha(1)[0]  # moved through the shared factor


def test_costs_are_cached_by_key(pair, tmp_path, monkeypatch, fake_calibration):
    """The first call calibrates and writes the cache; the second reads it; a changed key calibrates again."""
    calls = fake_calibration
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
    assert c.ar_ms > 0 and set(c.verify_ms) == set(VERIFIERS) and all(ms > 0 for calls in c.verify_ms.values() for *_, ms in calls) and c.select_ms > 0
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
