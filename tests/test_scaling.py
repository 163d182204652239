"""The data-scaling curve: one fresh draft per answer-token budget, steps ∝ budget, one held-out split,
resumable, refused up front when the data is too small."""
import json

import pytest

from spectr_lib.distill.cli import parse_args
from spectr_lib.distill.scaling import main, parse_budgets, run_scaling

from test_standalone_draft import target, teacher_dir  # noqa: F401 (fixtures: the tiny target and its teacher pass)


def test_budgets_parse():
    assert parse_budgets("70k,140k,1.1M,140000") == [70_000, 140_000, 1_100_000]
    for bad in ("", "x", "0", "-5k", "nan"):
        with pytest.raises(Exception, match="budget"):
            parse_budgets(bad)


def test_one_draft_per_budget_resumable(target, teacher_dir, tmp_path):  # noqa: F811
    args = parse_args(["train", "--teacher-dir", str(teacher_dir), "--head-tokens", "8", "--batch-seqs", "2",
                       "--max-prompt", "6", "--lr", "3e-3", "--depth", "2"])
    with pytest.raises(ValueError, match="less than the budget 10,000"):
        run_scaling(args, target, tmp_path, [20, 10_000], passes=4)
    assert not (tmp_path / "scaling").exists()  # refused before any training
    rows = run_scaling(args, target, tmp_path, [20, 50], passes=4)
    assert [r["budget"] for r in rows] == [20, 50]
    assert rows[0]["train_answer_tokens"] >= 20 and rows[1]["train_answer_tokens"] >= 50
    assert rows[1]["steps"] > rows[0]["steps"] and rows[0]["answer_tokens_seen"] > 0
    assert {"val_acc1", "val_acc2"} <= set(rows[0])
    saved = json.loads((tmp_path / "scaling" / "scaling.json").read_text())
    assert saved["rows"] == rows and (tmp_path / "scaling" / "scaling.png").stat().st_size > 0
    stamp = (tmp_path / "scaling" / "50" / "checkpoint.pt").stat().st_mtime_ns
    assert run_scaling(args, target, tmp_path, [20, 50], passes=4) == rows  # read back, not trained again
    assert (tmp_path / "scaling" / "50" / "checkpoint.pt").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("extra, message", [(["--steps", "5"], "--steps is set per budget"),
                                            (["--train-tokens", "100"], "do not apply"), (["--tiny"], "not --tiny")])
def test_options_that_do_not_apply_are_refused_before_loading(extra, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--budgets", "1k", *extra])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
