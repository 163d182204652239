"""The feature draft: incremental drafting matches one-pass scoring, decoding with it is exact, distill runs."""

import json

import pytest
import torch

from spectr_lib import draft_acceptance, generate
from spectr_lib.engine.acceptance import next_token_probs
from spectr_lib.theory.dists import warp
from spectr_lib.distill.cli import main as distill_main
from spectr_lib.engine.drafters import FeatureDrafter
from spectr_lib.models.feature_draft import FeatureDraft, FeatureDraftConfig, init_from_target
from spectr_lib.models.load import ModelPair, tiny_pair
from spectr_lib.engine.verifiers import make_verifier

from conftest import PROMPT, V, chi_square_pvalue, exact_law, samples_of, target_greedy


@pytest.fixture(scope="module")
def fpair():
    """A tiny target with a random feature draft whose head keeps 4 of the 6 tokens (q = 0 elsewhere)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tiny_pair(vocab_size=V, seed=1, target_layers=1, draft_layers=1, hidden=32)
    cfg = FeatureDraftConfig.from_target(base.target.config, 4)
    torch.manual_seed(0)
    draft = init_from_target(cfg, base.target, torch.tensor([0, 2, 3, 5])).eval()
    with torch.no_grad():
        for p in draft.own_parameters():
            p.add_(0.05 * torch.randn_like(p))
    yield ModelPair(base.target, draft, None, torch.device("cpu"), torch.float32, V)
    torch.set_num_threads(threads)


def test_incremental_drafting_matches_one_pass(fpair):
    ids = torch.tensor(PROMPT + [3, 0, 5])
    _, q_full = next_token_probs(fpair, ids)
    ver = make_verifier(fpair.target, V, need_features=True)
    drafter = FeatureDrafter(fpair.draft, V)
    drafter.prefill(ids, ver.prefill(ids))
    tokens, q = drafter.draft(1, 1, lambda x: warp(x), torch.Generator().manual_seed(0))
    torch.testing.assert_close(q[0, 0], q_full[-1], atol=1e-5, rtol=1e-4)
    assert (q[0, 0][[1, 4]] == 0).all()  # tokens outside the kept head are never drafted


@pytest.mark.parametrize("drafter_kind", ["feature", "lm"])
def test_a_plain_target_step_keeps_the_drafter_in_step(fpair, drafter_kind):
    """After a round with nothing to draft (a target step), the drafter drafts as if it had seen the token all along."""
    from spectr_lib.engine.drafters import make_drafter

    draft = fpair.draft if drafter_kind == "feature" else tiny_pair(vocab_size=V, seed=1, target_layers=1, hidden=32).draft
    ids, qs = torch.tensor(PROMPT + [3, 0]), []
    for pushed in (False, True):
        ver, drafter = make_verifier(fpair.target, V, need_features=True), make_drafter(draft, V)
        start = ids[:-1] if pushed else ids
        drafter.prefill(start, ver.prefill(start))
        if pushed:  # the verifier's pending token is ids[-2]; one step samples (here: is given) ids[-1]
            _, feat = ver.step()
            ver.push(ids[-1])
            drafter.push(ids[-1], feat)
        qs.append(drafter.draft(1, 2, lambda x: warp(x), torch.Generator().manual_seed(0))[1])
    torch.testing.assert_close(qs[0], qs[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method,k,L", [("kseq", 4, 3), ("rrs", 2, 2)])
def test_decoding_with_a_feature_draft_is_exact(fpair, method, k, L):
    assert chi_square_pvalue(samples_of(fpair, 5000, method=method, k=k, L=L), exact_law(fpair)) > 1e-3


def test_greedy_with_a_feature_draft(fpair):
    got = generate(fpair, PROMPT, method="kseq", k=4, L=3, max_new_tokens=24, temperature=0, seed=1).token_ids
    assert torch.equal(got, target_greedy(fpair, PROMPT, 24))


def test_draft_acceptance_is_per_position_overlap(fpair):
    ids = torch.tensor(PROMPT + [3, 0, 5, 2])
    acc = draft_acceptance(fpair, ids, start=3)
    assert acc.shape == (4,) and ((acc >= 0) & (acc <= 1)).all()
    with pytest.raises(ValueError, match="start"):
        draft_acceptance(fpair, ids, start=0)


def test_distill_script_end_to_end(tmp_path):
    out = tmp_path / "draft"
    distill_main(["all", "--tiny", "--max-prompts", "8", "--shard-size", "4", "--max-new-tokens", "12", "--steps", "4",
                  "--checkpoint-every", "2", "--batch-seqs", "4", "--work-dir", str(tmp_path / "work"), "--out", str(out),
                  "--head-tokens", "48", "--precision", "float32"])
    assert (out / "draft.safetensors").exists() and (out / "training.json").exists()
    assert json.loads((out / "training.json").read_text())["recipe"]["bf16_autocast"] is False  # as asked
    target = tiny_pair(vocab_size=64, seed=0, hidden=32).target
    draft = FeatureDraft.load(out, target)
    assert draft.config.head_tokens == 48
    # resume continues from the checkpoint rather than starting over
    distill_main(["train", "--tiny", "--max-prompts", "8", "--shard-size", "4", "--steps", "6", "--resume",
                  "--checkpoint-every", "2", "--batch-seqs", "4", "--work-dir", str(tmp_path / "work"), "--head-tokens", "48",
                  "--precision", "bf16"])
    ck = torch.load(tmp_path / "work" / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 6 and [c["step"] for c in ck["curve"]] == [0, 2, 4, 6]  # 0: before training
    assert ck["recipe"]["bf16_autocast"] is True
    # a new run over that checkpoint, without --resume or --overwrite, is refused before anything loads
    saved = (tmp_path / "work" / "checkpoint.pt").read_bytes()
    again = ["train", "--tiny", "--max-prompts", "8", "--shard-size", "4", "--steps", "2", "--checkpoint-every", "2",
             "--batch-seqs", "4", "--work-dir", str(tmp_path / "work"), "--head-tokens", "48"]
    with pytest.raises(SystemExit, match="--resume to continue it, --restart"):
        distill_main(again)
    assert (tmp_path / "work" / "checkpoint.pt").read_bytes() == saved
    with pytest.raises(SystemExit, match="--restart"):  # --overwrite is the output folder's flag, not the run's
        distill_main([*again, "--overwrite"])
    distill_main([*again, "--restart"])  # asked for: a new run
    assert torch.load(tmp_path / "work" / "checkpoint.pt", weights_only=False)["step"] == 2
