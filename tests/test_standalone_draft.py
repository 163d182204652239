"""Standalone drafts: a few target layers as a plain transformers causal LM, embedding and head shared with the
target; stored without them, loaded by load_draft, trained from the teacher pass, driven by our decoder and by
Hugging Face's assisted generation."""
import argparse
import gzip
import json

import pytest
import torch
from safetensors.torch import load_file

from spectr_lib import generate
from spectr_lib.distill import teacher
from spectr_lib.distill.answers import save_shard
from spectr_lib.distill.cli import main as distill_main
from spectr_lib.distill.standalone import (NO_COLS, _labels, frozen_float_copies, run_save_standalone,
                                           run_train_standalone, standalone_loss)
from spectr_lib.distill.train import batch_tensors
from spectr_lib.models import standalone_draft as sd
from spectr_lib.models.feature_draft import WEIGHTS_NAME
from spectr_lib.models.load import ModelPair, load_draft, tiny_pair

from conftest import PROMPT, chi_square_pvalue, exact_law, samples_of, target_greedy
from test_teacher import FakeTokenizer

V = 16  # FakeTokenizer's ids are < 16


@pytest.fixture(scope="module")
def target():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_pair(vocab_size=V, seed=3, target_layers=3, hidden=32).target
    torch.set_num_threads(threads)


def perturbed(model, scale=0.05, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(sd.OWN_PREFIXES):
                p.add_(scale * torch.randn_like(p))
    return model.eval()


def test_a_draft_of_every_target_layer_is_the_target(target):
    draft = sd.init_from_target(target, (0, 1, 2)).eval()
    ids = torch.tensor([[1, 5, 2, 7, 3]])
    with torch.no_grad():
        torch.testing.assert_close(draft(ids).logits, target(ids).logits)
    assert draft.get_input_embeddings() is target.get_input_embeddings()
    assert draft.get_output_embeddings() is target.get_output_embeddings()


def test_layers_are_checked(target):
    with pytest.raises(ValueError, match="decoder layers"):
        sd.init_from_target(target, (0, 3))
    with pytest.raises(ValueError, match="1..3 layers"):
        sd.draft_config(target.config, 0)


def test_saved_draft_holds_only_its_layers_and_loads_on_its_target(target, tmp_path):
    draft = perturbed(sd.init_from_target(target, (0, -1)))
    sd.save(draft, tmp_path)
    stored = load_file(str(tmp_path / WEIGHTS_NAME))
    assert stored and all(k.startswith(sd.OWN_PREFIXES) for k in stored)
    assert sd.is_standalone_draft(tmp_path) and not sd.is_standalone_draft(tmp_path / "nothing")
    loaded, _ = load_draft_without_tokenizer(tmp_path, target)
    assert loaded.spectr_init_layers == [0, 2] and loaded.config.num_hidden_layers == 2
    assert loaded.get_input_embeddings() is target.get_input_embeddings()
    with torch.no_grad():  # the stored weights are bf16: the loaded draft is the saved one rounded so
        for name, p in draft.named_parameters():
            if name.startswith(sd.OWN_PREFIXES):
                p.copy_(p.to(torch.bfloat16).float())
        ids = torch.tensor([[4, 1, 6, 2]])
        torch.testing.assert_close(loaded(ids).logits, draft(ids).logits)
    other = tiny_pair(vocab_size=V, seed=3, target_layers=3, hidden=16).target
    with pytest.raises(ValueError, match="built for a llama target of width 32"):
        sd.load(tmp_path, other)


def load_draft_without_tokenizer(folder, target):
    """load_draft's standalone branch (the tiny pair has no tokenizer to load)."""
    assert sd.is_standalone_draft(folder)
    return sd.load(folder, target), None


def test_our_decoder_and_hf_assisted_generation_drive_it(target, tmp_path):
    draft = perturbed(sd.init_from_target(target, (0,)), scale=0.2)
    pair = ModelPair(target, draft, None, torch.device("cpu"), torch.float32, V)
    want = target_greedy(pair, PROMPT, 16)
    got = generate(pair, PROMPT, method="kseq", k=3, L=3, max_new_tokens=16, temperature=0, seed=0).token_ids
    assert torch.equal(got, want)
    hf = target.generate(torch.tensor([PROMPT]), assistant_model=draft, do_sample=False, max_new_tokens=16, pad_token_id=0)
    assert torch.equal(hf[0, len(PROMPT):], want)


@pytest.fixture(scope="module")
def teacher_dir(target, tmp_path_factory):
    """A teacher pass of the tiny target over six stored answers (prompt 0 is the held-out one for seed 0)."""
    tmp = tmp_path_factory.mktemp("standalone")
    corpus = tmp / "prompts.jsonl.gz"
    prompts = ["hello there", "a longer prompt", "x", "tell me more", "one two three", "last one"]
    with gzip.open(corpus, "wt") as fh:
        for i, p in enumerate(prompts):
            fh.write(json.dumps({"id": i, "split": "train", "prompt": p}) + "\n")
    g = torch.Generator().manual_seed(0)
    answers = [torch.randint(0, V, (12,), generator=g) for _ in prompts]
    save_shard(tmp / "answers" / "shard-0000.npz", list(range(len(prompts))), answers,
               {"max_new_tokens": 12, "max_prompt_tokens": 8, "seed": 0})
    teacher.run(target, FakeTokenizer(), out=tmp / "teacher", answers=tmp / "answers", layers=(-1,), corpus_file=corpus)
    return tmp / "teacher"


def test_the_loss_reads_labels_at_the_right_positions(target, teacher_dir):
    """A draft equal to the target (all its layers) has q = p: Σ min(p, q) over the teacher's top-k equals the
    top-k mass at every answer position, and the soft cross-entropy is the top-k part of the entropy."""
    records = teacher.load_records(teacher_dir)
    model = sd.init_from_target(target, (0, 1, 2))
    head = frozen_float_copies(model)
    ids, top_p, top_i, mask = _labels(batch_tensors(records, torch.arange(V), NO_COLS, NO_COLS))
    with torch.no_grad():
        ce, st = standalone_loss(model, head, ids, top_p, top_i, mask)
    keep = mask > 0
    assert keep.sum() == sum(len(r["ids"]) - r["start"] for r in records)  # one label per answer token
    assert st["acc1"] == pytest.approx(float(top_p[keep].sum(-1).mean()), abs=3e-3)
    entropy = -(top_p[keep] * top_p[keep].clamp_min(1e-12).log()).sum(-1).mean()
    assert float(ce) == pytest.approx(float(entropy), abs=0.02)
    shallow = sd.init_from_target(target, (0,))
    frozen_float_copies(shallow)
    with torch.no_grad():
        assert standalone_loss(shallow, head, ids, top_p, top_i, mask)[1]["acc1"] < st["acc1"] - 0.01


def _args(teacher_dir, out, steps, resume=False):
    return argparse.Namespace(source="answers", teacher_dir=teacher_dir, seed=0, train_tokens=None, resume=resume,
                              init=None, init_layers=(0,), lr=3e-3, steps=steps, batch_seqs=3, max_prompt=6,
                              checkpoint_every=2, out=out, head_tokens=8)


def test_training_learns_resumes_and_saves(target, teacher_dir, tmp_path):
    work, out = tmp_path / "work", tmp_path / "draft"
    work.mkdir()
    run_train_standalone(_args(teacher_dir, out, 4), target, work)
    with pytest.raises(ValueError, match=r"started from target layers \(0,\), not \(0, -1\): drop --init-layers"):
        run_train_standalone(argparse.Namespace(**{**vars(_args(teacher_dir, out, 40, resume=True)), "init_layers": (0, -1)}),
                             target, work)
    run_train_standalone(argparse.Namespace(**{**vars(_args(teacher_dir, out, 40, resume=True)), "init_layers": None}),
                         target, work)  # no --init-layers: the checkpoint's
    curve = torch.load(work / "checkpoint.pt", weights_only=False)["curve"]
    assert [c["step"] for c in curve][:4] == [0, 2, 4, 6]  # resumed at step 4, not restarted
    assert curve[-1]["step"] == 40 and curve[-1]["val_acc1"] > curve[0]["val_acc1"] + 0.02
    run_save_standalone(_args(teacher_dir, out, 40), target, None, work)
    training = json.loads((out / "training.json").read_text())
    assert training["recipe"]["init_layers"] == [0] and training["steps"] == 40
    with pytest.raises(ValueError, match="continues a saved draft with its own layers: drop --init-layers"):
        run_train_standalone(argparse.Namespace(**{**vars(_args(teacher_dir, out, 2)), "init": out}), target, tmp_path)
    loaded = sd.load(out, target)
    assert loaded.config.num_hidden_layers == 1 and len(sd.kept_head_rows(out)) == 8
    assert json.loads((out / "spectr_draft.json").read_text())["head_tokens"] == 8
    trained = torch.load(work / "checkpoint.pt", weights_only=False)["model"]
    torch.testing.assert_close(loaded.state_dict()["model.norm.weight"], trained["model.norm.weight"].to(torch.bfloat16).float())
    from spectr_lib.distill.train import run_save
    with pytest.raises(ValueError, match="--kind standalone"):  # a feature-draft save of this checkpoint is refused
        run_save(argparse.Namespace(head_tokens=8, out=tmp_path / "wrong"), target, None, work)
    with pytest.raises(ValueError, match="decoder layers"):  # refused before the teacher data loads
        run_train_standalone(argparse.Namespace(**{**vars(_args(teacher_dir, out, 2)), "init_layers": (0, 99)}),
                             target, tmp_path)


def test_training_leaves_a_bf16_target_untouched(target, teacher_dir, tmp_path):
    """The draft trains in float32 on copies: the target's shared embedding/head keep their dtype and values."""
    import copy

    t16 = copy.deepcopy(target).to(torch.bfloat16)
    before = t16.get_input_embeddings().weight.detach().clone()
    run_train_standalone(_args(teacher_dir, tmp_path / "d", 2), t16, tmp_path)
    after = t16.get_input_embeddings().weight
    assert after.dtype == torch.bfloat16 and torch.equal(after, before)
    assert t16.get_output_embeddings().weight.dtype == torch.bfloat16


def test_kept_head_rows_give_q_zero_elsewhere_and_decoding_stays_exact():
    """A draft that reads out only some head rows (FR-Spec style) never proposes the others; the decoder's
    output law is still the target's (chi-square against exact enumeration, fixed seeds)."""
    from spectr_lib.engine.drafters import make_drafter
    from spectr_lib.models.draft_settings import DraftSettings
    from spectr_lib.theory.dists import warp

    base = tiny_pair(vocab_size=6, seed=1, target_layers=2, hidden=32)
    draft = perturbed(sd.init_from_target(base.target, (0,)), scale=0.3)
    settings = DraftSettings(head_ids=torch.tensor([0, 1, 2, 4]))
    pair = ModelPair(base.target, draft, None, torch.device("cpu"), torch.float32, 6, settings)
    drafter = make_drafter(draft, 6, settings)
    drafter.prefill(torch.tensor(PROMPT), None)
    tokens, q = drafter.draft(4, 3, lambda x: warp(x, 1.0), torch.Generator().manual_seed(0))
    assert q.shape == (4, 3, 6) and float(q[..., [3, 5]].abs().max()) == 0.0
    assert not set(tokens.flatten().tolist()) & {3, 5}
    assert chi_square_pvalue(samples_of(pair, 3000, method="kseq", k=3, L=3), exact_law(pair)) > 1e-3


def test_command_line_checks():
    with pytest.raises(SystemExit):
        distill_main(["train", "--kind", "standalone", "--tiny"])
    with pytest.raises(SystemExit):
        distill_main(["train", "--init-layers", "0,1"])  # a feature draft has no init layers

