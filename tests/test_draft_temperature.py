"""The draft temperature tool: acceptance per (k, τ) equals the direct computation, the choice keeps τ = 1 unless
another τ clearly wins, and the table it writes is what the loader reads back."""
import json

import pytest
import torch

from spectr_lib.engine.acceptance import next_token_logits
from spectr_lib.models.draft_files import draft_temperatures, read_draft_config
from spectr_lib.models.load import tiny_pair
from spectr_lib.theory.dists import warp
from spectr_lib.theory.kseq import kseq_acceptance
from spectr_lib.tools import draft_temperature as tool


@pytest.fixture(scope="module")
def pair():
    return tiny_pair(vocab_size=12, seed=5, target_layers=1, draft_layers=1, hidden=16)


def test_measure_scores_every_k_and_tau_as_the_direct_computation(pair):
    g = torch.Generator().manual_seed(0)
    recs = [{"ids": torch.randint(0, 12, (9,), generator=g), "start": 4}, {"ids": torch.randint(0, 12, (7,), generator=g), "start": 3}]
    result = tool.measure(pair, ks=(1, 4), taus=(0.5, 1.0, 2.0), temperature=0.8, recs=recs)
    assert result["positions"] == 5 + 4
    for k in (1, 4):
        for tau in (0.5, 1.0, 2.0):
            total = 0.0
            for rec in recs:
                p_logits, q_logits = next_token_logits(pair, rec["ids"])
                s = rec["start"] - 1
                p, q = warp(p_logits, 0.8)[s:-1], warp(q_logits / tau, 0.8)[s:-1]
                total += float(kseq_acceptance(p, q, k).sum())
            assert result["acceptance"][k][tau] == pytest.approx(total / 9, abs=1e-9)
    assert len({round(v, 6) for v in result["acceptance"][1].values()}) == 3  # τ moves acceptance


def test_best_keeps_one_unless_another_tau_clearly_wins():
    result = {"acceptance": {1: {0.85: 0.431, 1.0: 0.422}, 2: {0.95: 0.5227, 1.0: 0.5218}, 8: {1.0: 0.68, 1.1: 0.67}}}
    assert tool.best(result) == {1: 0.85, 2: 1.0, 8: 1.0}


def test_write_stores_the_table_the_loader_reads(tmp_path):
    from spectr_lib.models.feature_draft import FeatureDraftConfig, init_from_target

    target = tiny_pair(vocab_size=16, seed=3, target_layers=2, hidden=32).target
    cfg = FeatureDraftConfig.from_target(target.config, 4)
    init_from_target(cfg, target, torch.tensor([0, 2, 3, 5])).save(tmp_path / "d")
    before = json.loads((tmp_path / "d" / "spectr_draft.json").read_text())
    tool.write(tmp_path / "d", {1: 0.85, 2: 1.0, 8: 1.1})
    meta = read_draft_config(tmp_path / "d")
    assert meta["draft_temperature"] == {"1": 0.85, "8": 1.1}
    assert draft_temperatures(meta) == {1: 0.85, 8: 1.1}
    assert {key: v for key, v in meta.items() if key != "draft_temperature"} == {**before, "kind": meta["kind"]}


def test_the_command_refuses_a_folder_that_is_not_a_draft(tmp_path):
    with pytest.raises(SystemExit):
        tool.main(["--draft", str(tmp_path)])
    with pytest.raises(SystemExit):
        tool.main(["--draft", "data/models/smollm2-draft-fused", "--per-category", "0"])


def test_every_path_takes_the_draft_s_table(pair, monkeypatch):
    """trace_round is generate's first round with the table too; draft_acceptance uses τ for one draft; the cost
    model's key holds the table; k = "auto" looks τ up for the k of each round."""
    from spectr_lib import draft_acceptance
    from spectr_lib.engine.costs import costs_key
    from spectr_lib.engine.decoder import generate
    from spectr_lib.engine.drafters import LMDrafter
    from spectr_lib.engine.trace import trace_round
    from spectr_lib.theory.dists import warp
    from test_auto import CHEAP

    monkeypatch.setattr(pair, "draft_settings", pair.draft_settings.replace(temperatures={1: 0.3, 2: 3.0}))
    differs = False
    for seed in range(12):
        t = trace_round(pair, [1, 4, 2], method="kseq", k=2, L=3, seed=seed)
        g = generate(pair, [1, 4, 2], method="kseq", k=2, L=3, max_new_tokens=4, seed=seed)
        assert torch.equal(t.new_tokens, g.token_ids[: t.accepted + 1])
        flat = trace_round(pair, [1, 4, 2], method="kseq", k=2, L=3, seed=seed, draft_temperature=1.0)
        differs |= not torch.equal(flat.tokens, t.tokens)
    assert differs
    ids = torch.tensor([1, 4, 2, 7, 3, 9, 5])
    own = draft_acceptance(pair, ids, 3)
    assert torch.equal(own, draft_acceptance(pair, ids, 3, draft_temperature=0.3))
    assert not torch.allclose(own, draft_acceptance(pair, ids, 3, draft_temperature=1.0))
    assert costs_key(pair)["draft_temperature"] == {"1": 0.3, "2": 3.0}
    calls = []  # (k, the warp the drafter got) of every drafted round
    real = LMDrafter.draft
    monkeypatch.setattr(LMDrafter, "draft", lambda self, k, L, w, *a: calls.append((k, w)) or real(self, k, L, w, *a))
    rounds = generate(pair, [1, 4, 2], method="kseq", k="auto", L="auto", max_new_tokens=40, seed=0, costs=CHEAP).stats.rounds
    assert rounds and [k for k, _ in calls] == [r.k for r in rounds]
    x = torch.linspace(-3.0, 3.0, pair.vocab_size)
    for k, w in calls:  # each drafted round's own k's τ
        torch.testing.assert_close(w(x), warp(x / {1: 0.3, 2: 3.0}.get(k, 1.0)))


@pytest.mark.parametrize("bad, error", [(0.0, ValueError), (1e-39, ValueError), (25.0, ValueError),
                                        (float("nan"), ValueError), ("0.9", TypeError), (True, TypeError)])
def test_bad_draft_temperatures_are_refused_before_any_model_call(pair, monkeypatch, bad, error):
    from spectr_lib import draft_acceptance
    from spectr_lib.models import hf_cache
    from spectr_lib.engine.decoder import generate
    from spectr_lib.engine.trace import trace_round

    def no_call(*a, **k):
        raise AssertionError("a model ran")

    monkeypatch.setattr(hf_cache, "forward", no_call)  # every model call of the engine goes through it
    with pytest.raises(AssertionError, match="a model ran"):  # the guard itself works
        generate(pair, [1, 2], method="sps", draft_temperature=0.9)
    for call in (lambda: generate(pair, [1, 2], method="sps", draft_temperature=bad),
                 lambda: trace_round(pair, [1, 2], method="sps", k=1, L=2, seed=0, draft_temperature=bad),
                 lambda: draft_acceptance(pair, [1, 2, 3], 1, draft_temperature=bad)):
        with pytest.raises(error, match="draft_temperature"):
            call()
    for table in ({1: 0.0}, {"1": 0.85}, {0: 1.0}, [0.85]):  # a table set in code is checked when it is made
        with pytest.raises(ValueError, match="draft_temperature"):
            pair.draft_settings.replace(temperatures=table)
    monkeypatch.setattr(pair, "draft_settings", {1: 0.85})  # settings that are not a DraftSettings: refused at once
    for call in (lambda: generate(pair, [1, 2], method="sps"),
                 lambda: trace_round(pair, [1, 2], method="sps", k=1, L=2, seed=0),
                 lambda: draft_acceptance(pair, [1, 2, 3], 1)):
        with pytest.raises(TypeError, match="DraftSettings"):
            call()
