"""Feature drafts of several decoder layers: new layers start as pass-throughs, the layer count is saved,
checked and continued by distill (the decoding and training-time-test checks run on 2 layers in
test_fused_draft.py)."""

import json

import pytest
import torch

from spectr_lib.distill.cli import main as distill_main
from spectr_lib.models.feature_draft import CONFIG_NAME, FeatureDraft, FeatureDraftConfig, KVCache, init_from_target
from spectr_lib.models.load import tiny_pair

V = 40


@pytest.fixture(scope="module")
def target():
    return tiny_pair(vocab_size=V, seed=3, target_layers=2, draft_layers=1, hidden=32).target


def perturbed(model, scale=0.1):
    with torch.no_grad():
        for p in model.own_parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def test_added_layers_start_as_pass_throughs(target):
    """A 2-layer draft built by init_from_target with a 1-layer draft's weights loaded on top acts as that draft."""
    torch.manual_seed(0)
    one = perturbed(init_from_target(FeatureDraftConfig.from_target(target.config, 0), target, torch.arange(V)))
    two = init_from_target(FeatureDraftConfig.from_target(target.config, 0, num_layers=2), target, torch.arange(V))
    missing, unexpected = two.load_state_dict({n: t for n, t in one.state_dict().items()}, strict=False)
    assert not unexpected and missing and all(n.startswith("extra_layers.0.") for n in missing)
    ids, feats = torch.tensor([[1, 4, 2, 0, 7]]), torch.randn(1, 5, target.config.hidden_size)
    with torch.no_grad():
        torch.testing.assert_close(two(feats, ids, torch.arange(5)), one(feats, ids, torch.arange(5)))
        for p in two.extra_layers.parameters():  # once trained, the second layer changes the output
            p.add_(0.1 * torch.randn_like(p))
        assert not torch.allclose(two(feats, ids, torch.arange(5)), one(feats, ids, torch.arange(5)), atol=1e-3)


def test_cache_holds_every_layer_and_rolls_back(target):
    torch.manual_seed(1)
    two = perturbed(init_from_target(FeatureDraftConfig.from_target(target.config, 0, num_layers=2), target,
                                     torch.arange(V))).eval()
    ids, feats = torch.tensor([[1, 4, 2, 0, 7, 3]]), torch.randn(1, 6, target.config.hidden_size)
    cache = KVCache()
    with torch.no_grad():
        full = two(feats, ids, torch.arange(6))
        two(feats[:, :4], ids[:, :4], torch.arange(4), cache)
        two(feats[:, 4:5], ids[:, 4:5], torch.tensor([4]), cache)  # a drafted step, then rolled back
        assert len(cache.keys) == 2 and len(cache) == 5
        cache.crop(4)
        cache.select(torch.tensor([0, 0]))
        assert (cache.rows, len(cache)) == (2, 4)
        step = two(feats[:, 4:6].expand(2, -1, -1), ids[:, 4:6].expand(2, -1), torch.arange(4, 6), cache)
    torch.testing.assert_close(step, full[:, 4:6].expand(2, -1, -1), atol=1e-5, rtol=1e-4)


def test_layer_count_is_saved_and_old_configs_read_one(target, tmp_path):
    with pytest.raises(ValueError, match="num_layers"):
        FeatureDraftConfig.from_target(target.config, 0, num_layers=0)
    two = init_from_target(FeatureDraftConfig.from_target(target.config, 0, num_layers=2), target, torch.arange(V))
    two.save(tmp_path / "two")
    assert FeatureDraft.load(tmp_path / "two", target).config.num_layers == 2
    one = init_from_target(FeatureDraftConfig.from_target(target.config, 0), target, torch.arange(V))
    one.save(tmp_path / "one")
    cfg = json.loads((tmp_path / "one" / CONFIG_NAME).read_text())
    cfg.pop("num_layers")  # a draft saved before the field existed has one layer
    (tmp_path / "one" / CONFIG_NAME).write_text(json.dumps(cfg))
    assert FeatureDraft.load(tmp_path / "one", target).config.num_layers == 1
    cfg["num_layers"] = 2  # a config that claims a layer its weights lack is refused
    (tmp_path / "one" / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not match"):
        FeatureDraft.load(tmp_path / "one", target)


def test_distill_adds_a_layer_to_a_saved_draft(tmp_path, capsys):
    common = ["--tiny", "--max-prompts", "6", "--shard-size", "3", "--max-new-tokens", "10", "--checkpoint-every", "2",
              "--batch-seqs", "3", "--head-tokens", "40", "--depth", "2"]
    one = tmp_path / "one"
    distill_main(["all", *common, "--steps", "2", "--work-dir", str(tmp_path / "w1"), "--out", str(one)])
    two = tmp_path / "two"
    distill_main(["all", *common, "--steps", "2", "--work-dir", str(tmp_path / "w2"), "--out", str(two),
                  "--init", str(one), "--num-layers", "2"])
    training = json.loads((two / "training.json").read_text())
    assert training["recipe"]["num_layers"] == 2 and json.loads((two / CONFIG_NAME).read_text())["num_layers"] == 2
    # step 0 of the continued run is where the one-layer draft stood: the new layer starts as a pass-through
    start = training["learning_curve"][0]
    assert start["step"] == 0 and start["val_acc1"] == pytest.approx(
        json.loads((one / "training.json").read_text())["learning_curve"][-1]["val_acc1"], abs=1e-6)
    with pytest.raises(SystemExit):  # fewer layers than the --init draft: refused before the target loads
        distill_main(["train", *common, "--steps", "2", "--work-dir", str(tmp_path / "w3"), "--init", str(two),
                      "--num-layers", "1"])
    assert "fewer than the 2 layers" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="do not fit this draft"):  # resuming a 2-layer run as a 3-layer one
        distill_main(["train", *common, "--steps", "4", "--work-dir", str(tmp_path / "w2"), "--resume",
                      "--init", str(one), "--num-layers", "3"])
    capsys.readouterr()
    with pytest.raises(SystemExit):  # a standalone draft's depth is its --init-layers
        distill_main(["train", "--kind", "standalone", "--num-layers", "2"])
    assert "--num-layers is a feature draft's layer count" in capsys.readouterr().err


def test_distill_keeps_the_init_drafts_feature_layers(tmp_path):
    """No --feature-layers with --init: the draft keeps the fusion it has (it used to fall back to the last state
    and drop the fusion's weights). The tiny data stores the last state only, so the fused draft is refused."""
    common = ["--tiny", "--max-prompts", "6", "--shard-size", "3", "--max-new-tokens", "10", "--batch-seqs", "3",
              "--head-tokens", "40", "--depth", "2", "--checkpoint-every", "2", "--steps", "2"]
    distill_main(["data", *common, "--work-dir", str(tmp_path / "w")])
    tiny_target = tiny_pair(vocab_size=64, seed=0, hidden=32).target  # the target of --tiny (seed 0)
    fused = init_from_target(FeatureDraftConfig.from_target(tiny_target.config, 0, feature_layers=(1, -1)),
                             tiny_target, torch.arange(40))
    fused.save(tmp_path / "fused")
    with pytest.raises(SystemExit, match=r"holds hidden_states \(-1,\), not \[1\]"):  # one line, no traceback
        distill_main(["train", *common, "--work-dir", str(tmp_path / "w"), "--init", str(tmp_path / "fused")])
