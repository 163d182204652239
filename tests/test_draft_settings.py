"""A draft's settings are one record, checked when made and read-only afterwards; the engine refuses settings that
do not fit the pair's draft, costs that lack the asked form, and bad `verify` values, before any model call."""
import pytest
import torch

from spectr_lib import generate, tiny_pair
from spectr_lib.engine.verifiers import VERIFIERS
from spectr_lib.models import hf_cache
from spectr_lib.models.draft_settings import DraftSettings, default_settings


@pytest.fixture(scope="module")
def pair():
    return tiny_pair(vocab_size=8, seed=2, target_layers=1, draft_layers=1, hidden=16)


@pytest.fixture()
def no_model_call(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a model ran")

    monkeypatch.setattr(hf_cache, "forward", refuse)


@pytest.mark.parametrize("ids", [torch.tensor([True, False]), torch.tensor([], dtype=torch.long),
                                 torch.tensor([0, -1]), torch.tensor([1, 1]), torch.tensor([[0, 1]]),
                                 torch.tensor([0.0, 1.0]), [0, 1]])
def test_bad_head_rows_are_refused_when_made(ids):
    with pytest.raises(ValueError, match="head_ids must be"):
        DraftSettings(head_ids=ids)


def test_settings_are_read_only_and_checked_again_on_replace():
    s = DraftSettings(temperatures={1: 0.85})
    with pytest.raises(TypeError):
        s.temperatures[8] = 50.0  # a read-only mapping: no way around the range check
    assert s.replace(prompt_lookup=True).temperatures == {1: 0.85}
    with pytest.raises(ValueError, match="draft_temperature"):
        s.replace(temperatures={8: 50.0})
    with pytest.raises(ValueError, match="feature draft keeps its head rows"):
        DraftSettings(kind="feature_draft", head_ids=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="draft kind must be one of"):
        DraftSettings(kind="lstm")


def test_settings_that_do_not_fit_the_draft_are_refused(pair, no_model_call, monkeypatch):
    too_wide = pair.with_draft(pair.draft, DraftSettings(head_ids=torch.tensor([0, 99])))
    with pytest.raises(ValueError, match="keep head row 99"):
        generate(too_wide, [1, 2, 3], method="sps", L=2)
    monkeypatch.setattr(pair.draft, "draft_temperature", {1: 0.5}, raising=False)  # the old way of setting τ
    with pytest.raises(ValueError, match="set them there"):
        generate(pair, [1, 2, 3], method="sps", L=2)


def test_with_draft_gives_the_new_draft_its_own_settings(pair):
    tuned = pair.with_draft(pair.draft, DraftSettings(temperatures={1: 0.5}, prompt_lookup=True))
    assert tuned.draft_settings.tau(1) == 0.5 and tuned.draft_settings.prompt_lookup
    plain = tuned.with_draft(pair.draft)
    assert plain.draft_settings.tau(1) == 1.0 and not plain.draft_settings.prompt_lookup
    assert default_settings(pair.draft).kind == "causal_lm"


def test_verify_values_and_costs_without_the_form_are_refused(pair, no_model_call):
    from test_auto import CHEAP

    with pytest.raises(TypeError, match="verify must be the name"):
        generate(pair, [1, 2, 3], verify=3)
    with pytest.raises(ValueError, match="one of 'batch', 'tree'"):
        generate(pair, [1, 2, 3], verify="fused")
    with pytest.raises(ValueError, match="pass the verification form once"):
        generate(pair, [1, 2, 3], verify="tree", tree=True)
    with pytest.warns(DeprecationWarning, match="verify='tree'"):
        with pytest.raises(AssertionError, match="a model ran"):  # the old flag still works (then the model runs)
            generate(pair, [1, 2, 3], tree=True)
    from dataclasses import replace

    tree_only = replace(CHEAP, verify_ms={"tree": CHEAP.verify_ms["tree"]})
    with pytest.raises(ValueError, match="no measurement of the 'batch' verification form"):
        generate(pair, [1, 2, 3], k="auto", verify="batch", costs=tree_only)
    assert list(VERIFIERS) == ["batch", "tree", "static"]


def test_predict_takes_the_old_tree_keyword_with_a_warning():
    from spectr_lib import predict_tokens_per_second
    from test_auto import CHEAP

    with pytest.warns(DeprecationWarning):
        old = predict_tokens_per_second(CHEAP, 4, 2, tree=True)
    assert old == predict_tokens_per_second(CHEAP, 4, 2, "tree")
    with pytest.raises(ValueError, match="pass the verification form once"):
        predict_tokens_per_second(CHEAP, 4, 2, "tree", tree=True)
    with pytest.raises(ValueError, match="form must name"):
        predict_tokens_per_second(CHEAP, 4, 2)
