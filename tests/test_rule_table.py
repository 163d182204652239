"""Every rule with a closed-form acceptance side by side (tools/acceptance.rule_acceptance_by_category and the
command line tools/rule_table.py): the numbers are the closed forms averaged over positions, within their bounds."""
import json

import pytest
import torch

from spectr_lib.engine.drafters import draft_warp
from spectr_lib.theory.dists import warp
from spectr_lib.theory.kseq import kseq_acceptance
from spectr_lib.theory.optimal import optimal_iid_acceptance
from spectr_lib.theory.ot import optimal_acceptance
from spectr_lib.theory.sampled import sampled_acceptance
from spectr_lib.theory.selection import rrs_acceptance
from spectr_lib.tools import rule_table
from spectr_lib.tools.acceptance import answer_logits, rule_acceptance_by_category, selection_ms

IDS = [1, 4, 2, 5, 1, 4, 2, 3, 0, 2, 5, 1, 4, 2]


def test_each_rule_is_its_closed_form_averaged_and_within_its_bounds(pair):
    recs, prompts = [{"ids": torch.tensor(IDS), "start": 4}], [{"category": "x"}]
    got = rule_acceptance_by_category(pair, prompts, 1.0, 0, 0, ks=(1, 2, 4), recs=recs)
    assert set(got) == {"x", "overall"} and got["x"] == got["overall"]
    out = got["overall"]
    p, q_logits = answer_logits(pair, recs[0], 1.0)
    assert out["positions"] == len(p) == len(IDS) - 4
    for k, want in ((1, kseq_acceptance), (2, kseq_acceptance), (4, rrs_acceptance), (2, sampled_acceptance),
                    (4, optimal_iid_acceptance)):
        name = {kseq_acceptance: "kseq", rrs_acceptance: "rrs", sampled_acceptance: "sampled",
                optimal_iid_acceptance: "optimal"}[want]
        q = draft_warp(lambda x: warp(x, 1.0), pair.draft_settings.tau(k))(q_logits).cpu()
        assert out[name][k] == pytest.approx(float(want(p, q, k).mean()), abs=1e-12)
        assert out["alpha"][k] == pytest.approx(float(optimal_acceptance(p, q, k).mean()), abs=1e-12)
    assert set(out["sps"]) == {1} and out["sps"][1] == out["kseq"][1]  # SpS takes one draft: K-SEQ at k = 1
    for k in (1, 2, 4):
        for rule in ("sampled", "kseq", "rrs", "optimal"):
            assert 0 <= out[rule][k] <= out["alpha"][k] + 1e-12
        assert out["optimal"][k] >= max(out["kseq"][k], out["rrs"][k]) - 1e-12
        assert out["optimal"][k] == pytest.approx(out["alpha"][k], abs=1e-9)  # the tiny pair has fewer than 64 tokens
    assert out["sampled"][1] <= out["kseq"][1] + 1e-12  # Σ p·q ≤ Σ min(p, q)
    with pytest.raises(ValueError, match="no closed-form acceptance"):
        rule_acceptance_by_category(pair, prompts, 1.0, 0, 0, rules=("rrs_wor",), recs=recs)


def test_the_table_renders_every_rule_and_the_optimum(pair):
    recs, prompts = [{"ids": torch.tensor(IDS), "start": 4}], [{"category": "x"}]
    out = rule_acceptance_by_category(pair, prompts, 1.0, 0, 0, ks=(1, 2), recs=recs)
    report = {"pair": "toy", "prompts": 1, "max_new_tokens": 10, "lookup": False, "k": [1, 2],
              "rules": list(rule_table.WITH_FORM),
              "runs": {"1.0": rule_table.as_json(out)}}
    table = rule_table.render(json.loads(json.dumps(report)))
    for label in ("sampled verification", "speculative sampling", "K-SEQ (SpecTr)", "RRS (SpecInfer)", "optimum α*"):
        assert label in table
    assert "| speculative sampling | " + f"{out['overall']['sps'][1]:.3f} | – |" in table
    assert "One decision" not in table


def test_the_selection_cost_is_timed_for_every_rule_and_its_ks_and_rendered(pair):
    recs = [{"ids": torch.tensor(IDS), "start": 4}]
    cost = selection_ms(pair, recs, 1.0, ("sps", "kseq", "optimal"), (1, 2), positions=3)
    assert set(cost) == {"sps", "kseq", "optimal"} and set(cost["sps"]) == {1} and set(cost["kseq"]) == {1, 2}
    assert all(v > 0 for c in cost.values() for v in c.values())
    report = {"pair": "toy", "prompts": 1, "max_new_tokens": 10, "lookup": False, "k": [1, 2], "time_positions": 3,
              "rules": ["sps", "kseq", "optimal"], "machine": "AVX2 CPU, 1 torch threads", "selection_ms": {"1.0": {
                  r: {str(k): v for k, v in c.items()} for r, c in cost.items()}},
              "runs": {"1.0": rule_table.as_json(rule_acceptance_by_category(
                  pair, [{"category": "x"}], 1.0, 0, 0, rules=("sps", "kseq", "optimal"), ks=(1, 2), recs=recs))}}
    table = rule_table.render(json.loads(json.dumps(report)))
    assert "One decision at one position (ms, median over 3 positions; AVX2 CPU" in table
    assert f"| optimal i.i.d. rule | {cost['optimal'][1]:.2f} | {cost['optimal'][2]:.2f} |" in table


@pytest.mark.parametrize("argv, message", [
    (["--rules", "rrs_wor"], "invalid choice"),
    (["--prompts", "no/such.jsonl"], "no such file"),
    (["--k", "0"], "--k"),
    (["--temperature", "0"], "--temperature"),
    (["--categories", "nope"], "no such category"),
    (["--per-category", "1", "--skip-per-category", "1000"], "no prompt left"),
])
def test_the_command_line_refuses_before_loading(monkeypatch, capsys, tmp_path, argv, message):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"category": "a", "prompt": "hi"}\n')
    monkeypatch.setattr("spectr_lib.models.load.load_pair", lambda *a, **k: pytest.fail("loaded a model"))
    full = (["--prompts", str(prompts)] if "--prompts" not in argv else []) + argv + ["--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as err:
        rule_table.main(full)
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_the_command_line_refuses_an_out_that_is_a_file(monkeypatch, capsys, tmp_path):
    prompts, out = tmp_path / "p.jsonl", tmp_path / "f"
    prompts.write_text('{"category": "a", "prompt": "hi"}\n')
    out.write_text("")
    monkeypatch.setattr("spectr_lib.models.load.load_pair", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(SystemExit) as err:
        rule_table.main(["--prompts", str(prompts), "--out", str(out)])
    assert err.value.code == 2 and "is a file" in capsys.readouterr().err
