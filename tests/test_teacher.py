"""The teacher pass over stored answers: prompts re-encoded as the answer job did, features of the chosen layers,
soft labels equal to the target's own distribution, one cache shard per answer shard (a rerun skips it)."""
import gzip
import json

import pytest
import torch

from spectr_lib.distill import teacher
from spectr_lib.distill.answers import save_shard
from spectr_lib.models.load import tiny_pair


class FakeTokenizer:
    """A chat template that maps a prompt to its characters' codes (mod 16) after a fixed header."""

    def apply_chat_template(self, messages, **kw):
        text = messages[-1]["content"]
        return {"input_ids": torch.tensor([[1, 2] + [ord(c) % 16 for c in text]])}


def test_teacher_pass_labels_each_answer_shard_once(tmp_path):
    torch.set_num_threads(1)
    target = tiny_pair(vocab_size=16, seed=0, target_layers=2, hidden=32).target
    corpus = tmp_path / "prompts.jsonl.gz"
    with gzip.open(corpus, "wt") as fh:
        for i, p in enumerate(["hello", "a longer prompt", "x"]):
            fh.write(json.dumps({"id": i, "split": "train", "prompt": p}) + "\n")
    answers = tmp_path / "answers"
    save_shard(answers / "shard-0000.npz", [0, 2], [torch.tensor([3, 4, 5]), torch.tensor([6])],
               {"max_new_tokens": 8, "max_prompt_tokens": 4, "seed": 0})
    out = tmp_path / "teacher"
    teacher.run(target, FakeTokenizer(), out=out, answers=answers, layers=(1, -1), corpus_file=corpus)
    assert teacher.teacher_layers(out) == (1, -1)
    recs = teacher.load_records(out)
    assert [r["prompt_id"] for r in recs] == [0, 2]
    r = recs[0]  # "hello" → [1, 2, 8, 5, 12, 12, 15], cut to its last 4 tokens as the job did, then the answer
    assert r["ids"].tolist() == [5, 12, 12, 15, 3, 4, 5] and r["start"] == 4
    assert r["features"].shape == (7, 64) and r["features"].dtype == torch.bfloat16
    with torch.no_grad():
        out_hf = target(r["ids"][None], output_hidden_states=True)
    torch.testing.assert_close(r["features"][:, 32:].float(), out_hf.hidden_states[-1][0], atol=0.05, rtol=0.02)
    torch.testing.assert_close(r["features"][:, :32].float(), out_hf.hidden_states[1][0], atol=0.05, rtol=0.02)
    p = out_hf.logits[0].float().softmax(-1)
    torch.testing.assert_close(r["top_p"].float(), p.topk(16, -1).values, atol=2e-3, rtol=2e-3)
    stamp = (out / "shard-0000.pt").stat().st_mtime_ns
    teacher.run(target, FakeTokenizer(), out=out, answers=answers, layers=(1, -1), corpus_file=corpus)
    assert (out / "shard-0000.pt").stat().st_mtime_ns == stamp  # labelled once
    assert len(teacher.load_records(out, limit_tokens=2)) == 1


def test_answer_shards_label_and_read_only_the_range(tmp_path):
    """--answer-shards: the teacher pass labels only the shards numbered in the range, and training reads
    only those (continuing a draft on answers it has not seen)."""
    torch.set_num_threads(1)
    target = tiny_pair(vocab_size=16, seed=0, target_layers=2, hidden=32).target
    corpus = tmp_path / "prompts.jsonl.gz"
    with gzip.open(corpus, "wt") as fh:
        for i in range(4):
            fh.write(json.dumps({"id": i, "split": "train", "prompt": f"prompt {i}"}) + "\n")
    answers = tmp_path / "answers"
    for s in range(4):
        save_shard(answers / f"shard-{s:04d}.npz", [s], [torch.tensor([3, 4 + s])],
                   {"max_new_tokens": 8, "max_prompt_tokens": 4, "seed": 0})
    out = tmp_path / "teacher"
    done = teacher.run(target, FakeTokenizer(), out=out, answers=answers, layers=(-1,), corpus_file=corpus,
                       shards=teacher.shard_range("1-2"))
    assert [p.name for p in done] == ["shard-0001.pt", "shard-0002.pt"]
    assert sorted(p.name for p in out.glob("shard-*.pt")) == ["shard-0001.pt", "shard-0002.pt"]
    teacher.run(target, FakeTokenizer(), out=out, answers=answers, layers=(-1,), corpus_file=corpus)  # all four
    assert [r["prompt_id"] for r in teacher.load_records(out)] == [0, 1, 2, 3]
    assert [r["prompt_id"] for r in teacher.load_records(out, shards=range(2, 4))] == [2, 3]
    with pytest.raises(ValueError, match="they run from 0 to 3"):
        teacher.run(target, FakeTokenizer(), out=out, answers=answers, corpus_file=corpus, shards=range(7, 9))


@pytest.mark.parametrize("text, expected", [("5-29", range(5, 30)), ("7", range(7, 8)), (" 3 - 4 ", range(3, 5))])
def test_shard_range_parses(text, expected):
    assert teacher.shard_range(text) == expected


@pytest.mark.parametrize("text", ["a-b", "9-3", "1-2-3", "", "-4"])
def test_shard_range_refuses_with_the_form_to_use(text):
    with pytest.raises(ValueError, match="e.g. 5-29|range is empty"):
        teacher.shard_range(text)


def test_answer_shards_checked_at_the_command_line(capsys):
    """A malformed range, or one holding no stored answer shard, stops before any model loads."""
    from spectr_lib.distill.cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(["data", "--answer-shards", "9-3"])
    assert "write the smaller number first" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["data", "--answer-shards", "9000-9001"])
    assert "they run from 0 to" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["train", "--tiny", "--answer-shards", "1-2"])
    assert "--source answers" in capsys.readouterr().err
    assert parse_args(["train", "--answer-shards", "1-2"]).answer_shards == range(1, 3)


@pytest.mark.parametrize("lengths,budget", [([40, 1024, 300, 41, 39, 700, 1024, 5], 4096), ([7] * 9, 20),
                                             ([50, 10, 30], 20), ([3], 1)])
def test_length_batches_bound_the_padded_size(lengths, budget):
    from spectr_lib.distill.data import length_batches

    batches = length_batches(lengths, budget)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every row once
    for b in batches:  # rows × longest row within the budget, unless one row alone is longer
        assert len(b) * max(lengths[i] for i in b) <= budget or len(b) == 1
    # a short row no longer carries a long one into a batch sized for the short: the old rule put all of the
    # first case (8 rows up to 1,024 long, 8,192 padded positions) into one batch
    assert max(len(b) * max(lengths[i] for i in b) for b in batches) <= max(budget, max(lengths))


def test_label_in_small_batches_equals_one_row_at_a_time():
    from spectr_lib.distill.data import label

    torch.set_num_threads(1)
    target = tiny_pair(vocab_size=16, seed=0, target_layers=2, hidden=32).target
    g = torch.Generator().manual_seed(0)
    recs = [{"ids": torch.randint(0, 16, (n,), generator=g), "start": 1} for n in (3, 17, 4, 9, 30, 2)]
    shapes = []  # what each forward pass was given: rows × padded width stays within the 32-position budget
    hook = target.get_input_embeddings().register_forward_pre_hook(lambda m, a: shapes.append(tuple(a[0].shape)))
    batched = label(target, [dict(r) for r in recs], layers=(1, -1), batch_tokens=32, progress=False)
    hook.remove()
    assert sum(b for b, _ in shapes) == len(recs) and all(b * w <= 32 for b, w in shapes), shapes
    for r, b in zip(recs, batched):
        one = label(target, [dict(r)], layers=(1, -1), batch_tokens=10_000, progress=False)[0]
        torch.testing.assert_close(b["features"].float(), one["features"].float(), atol=0.02, rtol=0.02)
        torch.testing.assert_close(b["top_p"].float(), one["top_p"].float(), atol=2e-3, rtol=2e-3)
