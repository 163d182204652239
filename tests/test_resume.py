"""A training run interrupted and resumed is the run that was not interrupted: the same batches from the
checkpoint's step on, the same optimizer and schedule state, the same tokens seen, the same weights."""
import shutil

import pytest
import torch

from spectr_lib.distill import loop, train
from spectr_lib.distill.cli import main as distill_main

COMMON = ["--tiny", "--max-prompts", "10", "--shard-size", "5", "--max-new-tokens", "10", "--batch-seqs", "3",
          "--head-tokens", "40", "--precision", "float32", "--checkpoint-every", "3", "--seed", "7"]
STEPS = 8  # checkpoints at 3 and 6; 10 prompts (8 train) in batches of 3: 2 batches a cycle, so step 3 is mid-cycle


def _train(work, *extra):
    distill_main(["train", *COMMON, "--steps", str(STEPS), "--work-dir", str(work), *extra])
    return torch.load(work / "checkpoint.pt", weights_only=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    work = tmp_path_factory.mktemp("data")
    distill_main(["data", *COMMON, "--work-dir", str(work)])
    return work / "data"


def test_a_resumed_run_equals_the_uninterrupted_one(data, tmp_path, monkeypatch):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    for work in (whole, cut):
        shutil.copytree(data, work / "data")
    reference = _train(whole)

    def interrupted(state, path):  # Ctrl-C right after the checkpoint of step 3 is written
        loop.save_checkpoint(state, path)
        if state["step"] == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(train, "save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _train(cut)
    monkeypatch.undo()
    assert torch.load(cut / "checkpoint.pt", weights_only=False)["step"] == 3
    resumed = _train(cut, "--resume")

    assert resumed["step"] == reference["step"] == STEPS
    assert resumed["seen"] == reference["seen"]  # the same batches
    strip = [{k: v for k, v in c.items() if k != "seconds"} for c in reference["curve"]]
    assert [{k: v for k, v in c.items() if k != "seconds"} for c in resumed["curve"]] == strip
    assert resumed["model"].keys() == reference["model"].keys()
    for name, w in reference["model"].items():
        assert torch.allclose(resumed["model"][name], w, rtol=0, atol=1e-5), name
    for a, b in zip(resumed["opt"]["state"].values(), reference["opt"]["state"].values()):
        assert torch.allclose(a["exp_avg_sq"], b["exp_avg_sq"], rtol=0, atol=1e-8)

    # resuming with settings that change the run, or with no steps left, is refused (the checkpoint unchanged)
    saved = (cut / "checkpoint.pt").read_bytes()
    for flags, message in ((["--batch-seqs", "4"], "batch_seqs 3 in the checkpoint, 4 now"),
                           (["--lr", "0.01"], "lr 0.001 in the checkpoint, 0.01 now"),
                           (["--depth", "2"], "depth 3 in the checkpoint, 2 now")):
        argv = ["train", *COMMON, "--steps", str(STEPS + 2), "--work-dir", str(cut), "--resume", *flags]
        with pytest.raises(SystemExit, match=message):
            distill_main(argv)
    with pytest.raises(SystemExit, match=f"at step {STEPS} already, past --steps {STEPS - 1}"):
        distill_main(["train", *COMMON, "--steps", str(STEPS - 1), "--work-dir", str(cut), "--resume"])
    distill_main(["train", *COMMON, "--steps", str(STEPS), "--work-dir", str(cut), "--resume"])  # finished: nothing to do
    assert (cut / "checkpoint.pt").read_bytes() == saved


def test_the_batch_of_a_step_depends_on_the_seed_and_the_step_alone():
    records = [{"ids": list(range(n)), "start": 0} for n in range(3, 20)]
    whole = loop.length_buckets(records, 3, seed=5)
    stream = [next(whole) for _ in range(25)]
    for start in (0, 4, 5, 11):
        later = loop.length_buckets(records, 3, seed=5, start=start)
        assert [next(later) for _ in range(25 - start)] == stream[start:]
    other = loop.length_buckets(records, 3, seed=6)
    assert [next(other) for _ in range(25)] != stream
    assert all(len(b) == 3 for b in stream)
    lengths = [len(r["ids"]) for b in stream[:5] for r in b]
    assert lengths != sorted(lengths)  # the batches of a cycle come in random order
    with pytest.raises(ValueError, match="no training sequences"):  # it used to loop forever, yielding nothing
        next(loop.length_buckets([], 3, seed=5))


def test_resume_without_a_checkpoint_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")
    monkeypatch.setattr("spectr_lib.distill.cli.load_for_stage", no_loading)
    with pytest.raises(SystemExit, match="no checkpoint in .* to continue: check --work-dir"):
        distill_main(["train", *COMMON, "--work-dir", str(tmp_path / "typo"), "--resume"])
    with pytest.raises(SystemExit, match="give one"):
        distill_main(["train", *COMMON, "--work-dir", str(tmp_path / "typo"), "--resume", "--restart"])
    assert not (tmp_path / "typo").exists()
