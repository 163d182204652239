"""The answer store: shards round-trip, and a restart continues by prompt id whatever shard size ran before."""
import numpy as np
import torch

from spectr_lib.distill.answers import load_answers, plan_shards, save_shard


def test_restart_skips_answered_prompts_across_shard_sizes(tmp_path):
    records = [{"id": i, "prompt": f"p{i}"} for i in range(10)]
    plan = plan_shards(records, tmp_path, 4)
    assert [(s, [r["id"] for r in rows]) for s, rows in plan] == [(0, [0, 1, 2, 3]), (1, [4, 5, 6, 7]), (2, [8, 9])]
    save_shard(tmp_path / "shard-0000.npz", [0, 1, 2, 3], [torch.tensor([5, 6]), torch.tensor([7]), torch.tensor([]).long(),
                                                          torch.tensor([9, 9, 9])])
    (tmp_path / "shard-0001.tmp.npz").write_bytes(b"a crashed run's half-written shard")
    # a later run with another shard size: prompts 4.. only, numbered after the last shard on disk
    plan = plan_shards(records, tmp_path, 5)
    assert [(s, [r["id"] for r in rows]) for s, rows in plan] == [(1, [4, 5, 6, 7, 8]), (2, [9])]
    save_shard(tmp_path / "shard-0001.npz", [4, 5, 6, 7, 8], [torch.tensor([i]) for i in range(5)])
    assert [(s, [r["id"] for r in rows]) for s, rows in plan_shards(records, tmp_path, 5)] == [(2, [9])]
    got = load_answers(tmp_path)
    assert [pid for pid, _ in got] == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert got[3][1].tolist() == [9, 9, 9] and got[2][1].size == 0 and got[0][1].dtype == np.int64
    assert [pid for pid, _ in load_answers(tmp_path, limit_tokens=3)] == [0, 1]


def test_a_restart_with_other_answer_lengths_is_refused(tmp_path):
    import pytest

    from spectr_lib.distill.answers import check_settings

    save_shard(tmp_path / "shard-0000.npz", [0], [torch.tensor([5])])  # no settings stored: the old defaults
    check_settings(tmp_path, max_new_tokens=256, max_prompt_tokens=768)
    save_shard(tmp_path / "shard-0001.npz", [1], [torch.tensor([5])], {"max_new_tokens": 128, "max_prompt_tokens": 768, "seed": 3})
    with pytest.raises(ValueError, match="shard-0001.npz was sampled with max-new-tokens 128, not 256"):
        check_settings(tmp_path, max_new_tokens=256, max_prompt_tokens=768)
    assert int(np.load(tmp_path / "shard-0001.npz")["seed"]) == 3
