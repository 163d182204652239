"""Feature drafts that fuse several target layers (EAGLE-3 style), and training-time test (unrolled steps)."""

import json

import pytest
import torch

from spectr_lib import generate
from spectr_lib.distill.cli import main as distill_main
from spectr_lib.distill.unroll import unroll_mask, unrolled_outputs
from spectr_lib.engine.acceptance import next_token_probs
from spectr_lib.engine.drafters import FeatureDrafter
from spectr_lib.engine.verifiers import VERIFIERS, make_verifier
from spectr_lib.models.feature_draft import (CONFIG_NAME, FeatureDraft, FeatureDraftConfig, KVCache, init_from_target,
                                             previous_features)
from spectr_lib.models.load import ModelPair, tiny_pair
from spectr_lib.theory.dists import warp

from conftest import PROMPT, V, chi_square_pvalue, exact_law, samples_of, target_greedy


@pytest.fixture(scope="module", params=[1, 2], ids=["1-layer", "2-layer"])
def fused(request):
    """A tiny 2-layer target with a random draft reading hidden_states (1, -1), of one or two decoder layers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tiny_pair(vocab_size=V, seed=2, target_layers=2, draft_layers=1, hidden=32)
    cfg = FeatureDraftConfig.from_target(base.target.config, 0, feature_layers=(1, -1), num_layers=request.param)
    torch.manual_seed(0)
    draft = init_from_target(cfg, base.target, torch.arange(V)).eval()
    with torch.no_grad():
        for p in draft.own_parameters():
            p.add_(0.1 * torch.randn_like(p))
    yield ModelPair(base.target, draft, None, torch.device("cpu"), torch.float32, V)
    torch.set_num_threads(threads)


def test_config_checks_layers_and_old_configs_load(fused, tmp_path):
    with pytest.raises(ValueError, match="hidden_states indices"):
        FeatureDraftConfig.from_target(fused.target.config, 0, feature_layers=(7,))
    fused.draft.save(tmp_path / "d")
    assert FeatureDraft.load(tmp_path / "d", fused.target).config.feature_layers == (1, -1)
    cfg = json.loads((tmp_path / "d" / CONFIG_NAME).read_text())
    cfg.pop("feature_layers")  # a draft saved before fusion existed reads the last state only
    (tmp_path / "d" / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not match"):  # its weights name a fusion its config lacks
        FeatureDraft.load(tmp_path / "d", fused.target)


def test_unroll_mask_rows():
    m = unroll_mask(5, 3)
    assert m.shape == (5, 15)
    s = 4  # depth 3 at position 4: context keys ≤ 2, depth-2 key at 3, its own key at 4
    assert m[s, :5].nonzero().flatten().tolist() == [0, 1, 2]
    assert m[s, 5:10].nonzero().flatten().tolist() == [3] and m[s, 10:].nonzero().flatten().tolist() == [4]
    assert m.any(1).all()


def test_unrolled_steps_equal_the_drafting_steps(fused):
    """Depth j's output at position s equals the j-th drafting step of a round that starts after position
    s − j + 1, with the draft's cache of the true context: what training-time test promises."""
    draft, T, depth = fused.draft, 9, 3
    torch.manual_seed(1)
    ids = torch.randint(0, V, (T,))
    feats = torch.randn(T, draft.feature_size)
    with torch.no_grad():
        outs = unrolled_outputs(draft, previous_features(feats)[None], ids[None], depth)
        for j in range(1, depth + 1):
            for s in range(j - 1, T):
                start = s - j + 1  # the position of the round's first drafting step
                cache = KVCache()
                f = draft(previous_features(feats)[None, : start + 1], ids[None, : start + 1],
                          torch.arange(start + 1), cache)[:, -1:]
                for t in range(start + 1, s + 1):
                    f = draft(f, ids[None, t : t + 1], torch.tensor([t]), cache)
                torch.testing.assert_close(f[0, 0], outs[j - 1][0, s], atol=1e-5, rtol=1e-4)


def test_fused_incremental_drafting_matches_one_pass(fused):
    ids = torch.tensor(PROMPT + [3, 0, 5])
    _, q_full = next_token_probs(fused, ids)
    ver = make_verifier(fused.target, V, need_features=(1, -1))
    drafter = FeatureDrafter(fused.draft, V)
    feats = ver.prefill(ids)
    assert feats.shape == (len(ids) - 1, 2 * fused.target.config.hidden_size)
    drafter.prefill(ids, feats)
    _, q = drafter.draft(1, 1, lambda x: warp(x), torch.Generator().manual_seed(0))
    torch.testing.assert_close(q[0, 0], q_full[-1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("form", list(VERIFIERS))
def test_greedy_with_a_fused_draft(fused, form):
    got = generate(fused, PROMPT, method="kseq", k=3, L=3, max_new_tokens=20, temperature=0, seed=1, verify=form).token_ids
    assert torch.equal(got, target_greedy(fused, PROMPT, 20))


def test_decoding_with_a_fused_draft_is_exact(fused):
    assert chi_square_pvalue(samples_of(fused, 4000, method="kseq", k=3, L=3), exact_law(fused)) > 1e-3


def test_distill_trains_a_fused_draft_with_unrolled_steps(tmp_path):
    out = tmp_path / "draft"
    distill_main(["all", "--tiny", "--max-prompts", "6", "--shard-size", "3", "--max-new-tokens", "10", "--steps", "3",
                  "--checkpoint-every", "3", "--batch-seqs", "3", "--work-dir", str(tmp_path / "work"), "--out", str(out),
                  "--head-tokens", "40", "--depth", "3"])
    training = json.loads((out / "training.json").read_text())
    assert training["recipe"]["depth"] == 3 and set(training["learning_curve"][-1]) >= {"val_acc1", "val_acc3"}
    with pytest.raises(SystemExit):
        distill_main(["train", "--tiny", "--feature-layers", "4,x"])


def test_a_new_fusion_starts_as_the_single_layer_draft_it_extends(fused):
    """init_from_target + the weights of a last-state draft: the fused draft's output is that draft's output."""
    target = fused.target
    single = init_from_target(FeatureDraftConfig.from_target(target.config, 0), target, torch.arange(V))
    with torch.no_grad():
        for p in single.own_parameters():
            p.add_(0.1 * torch.randn_like(p))
    cfg = FeatureDraftConfig.from_target(target.config, 0, feature_layers=(1, -1))
    both = init_from_target(cfg, target, torch.arange(V))
    both.load_state_dict({n: t for n, t in single.state_dict().items() if not n.startswith("embed.")}, strict=False)
    ids, d = torch.tensor([[1, 4, 2, 0]]), target.config.hidden_size
    feats = torch.randn(1, 4, 2 * d)
    with torch.no_grad():
        torch.testing.assert_close(both(feats, ids, torch.arange(4)), single(feats[..., d:], ids, torch.arange(4)))


def _tv_batch(draft, B=2, T=7, K=4):
    """Random inputs of draft_loss: features, ids, regression targets, top-K soft labels and a loss mask."""
    torch.manual_seed(3)
    top_p = torch.rand(B, T, K).softmax(-1) * 0.9  # the teacher's top-K hold 90 % of its mass
    top_i = torch.stack([torch.randperm(V)[:K] for _ in range(B * T)]).view(B, T, K)
    mask = torch.zeros(B, T)
    mask[:, 2:] = 1
    return (previous_features(torch.randn(B, T, draft.feature_size)), torch.randint(0, V, (B, T)),
            torch.randn(B, T, draft.config.hidden_size), top_p, top_i, mask)


def test_tv_weight_adds_one_minus_the_overlap_and_its_gradient_raises_it(fused):
    from spectr_lib.distill.train import DEPTH_WEIGHTS, draft_loss

    draft, batch = fused.draft, _tv_batch(fused.draft)
    with torch.no_grad():
        ce, st = draft_loss(draft, *batch, depth=3)
        both, st2 = draft_loss(draft, *batch, depth=3, tv_weight=2.0)
    assert st == st2 and 0 < st["acc1"] < 0.9
    want = ce + 2.0 * sum(DEPTH_WEIGHTS[j - 1] * (1 - st[f"acc{j}"]) for j in (1, 2, 3))
    torch.testing.assert_close(both, want)
    # a step down the TV term's gradient alone raises Σ min(p, q) at drafting step 1
    params = list(draft.own_parameters())
    saved = [p.detach().clone() for p in params]
    tv = draft_loss(draft, *batch, depth=1, tv_weight=1.0)[0] - draft_loss(draft, *batch, depth=1)[0]
    grads = torch.autograd.grad(tv, params, allow_unused=True)
    try:
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p.sub_(0.5 * g)
            assert draft_loss(draft, *batch, depth=1)[1]["acc1"] > st["acc1"] + 1e-3
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


def test_tv_weight_arguments_are_checked(capsys):
    from spectr_lib.distill.cli import parse_args

    for bad in ("-1", "nan", "inf"):
        with pytest.raises(SystemExit):
            parse_args(["train", "--tiny", "--tv-weight", bad])
        err = capsys.readouterr().err
        assert "--tv-weight" in err and "finite number ≥ 0" in err
    with pytest.raises(SystemExit):
        parse_args(["train", "--kind", "standalone", "--source", "answers", "--tv-weight", "1"])
    assert "--tv-weight is a feature draft's loss term" in capsys.readouterr().err
    assert parse_args(["train", "--tiny", "--tv-weight", "0.5"]).tv_weight == 0.5
