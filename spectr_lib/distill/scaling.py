"""The draft's data-scaling curve: held-out acceptance against the distinct answer tokens it was trained on,
`python -m spectr_lib.distill.scaling --budgets 70k,140k,280k --passes 1.5 [training options]`.

Each budget N trains a fresh draft on the first N answer tokens of the teacher data (`first_answer_tokens`: a
prefix of the data, so every budget's data holds the smaller ones') for the same number of passes over its data
(steps ∝ N: "same steps per token"), and every budget is measured on the same held-out prompts (one prompt id in
40, `train._split`). Each budget trains in its own folder, <work>/scaling/<N>/, with checkpoints: a finished
budget is read back, an unfinished one continues where it stopped. After each budget the folder gets
`scaling.json` (one row per budget: answer tokens, steps, the last held-out point of its learning curve,
Σ min(p, q) over the teacher's top 32 per drafting step) and `scaling.png`.

Options after the script's own are the training stage's (`python -m spectr_lib.distill --help`: --kind,
--feature-layers, --depth, --lr, --batch-seqs, ...); --steps is set per budget from --passes.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from . import StageError
from ..argtypes import real
from ..files import write_text

SUFFIX = {"k": 1_000, "m": 1_000_000}


def parse_budgets(text: str) -> list[int]:
    """'70k,140k,1.1M' -> [70000, 140000, 1100000] (ascending, distinct, positive)."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        try:
            value = float(part[:-1]) * SUFFIX[part[-1]] if part and part[-1] in SUFFIX else float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: give answer-token budgets such as 70k,140k,1.1M") from None
        if value < 1 or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{part!r}: a budget is a positive number of answer tokens")
        out.append(int(value))
    return sorted(set(out))


def steps_for(records: list[dict], budget: int, passes: float, batch_seqs: int, seed: int) -> tuple[int, int]:
    """(optimizer steps, answer tokens trained on) for one budget: `passes` passes over the training part of the
    first `budget` answer tokens, `batch_seqs` sequences per step (as `train.run_train` splits and cuts them)."""
    from .teacher import first_answer_tokens
    from .train import _split

    train = first_answer_tokens(_split(records, seed)[0], budget)
    return max(1, round(passes * len(train) / batch_seqs)), sum(len(r["ids"]) - r["start"] for r in train)


def run_scaling(args, target, work: Path, budgets: list[int], passes: float, out: Path | None = None) -> list[dict]:
    """Train one draft per budget (resumable) and return the rows written to <out>/scaling.json.

    args: the training stage's options (`cli.parse_args`); StageError, before any training, when the teacher
    data holds fewer answer tokens than the largest budget."""
    from .standalone import run_train_standalone
    from .teacher import TEACHER_DIR, load_records
    from .train import run_train

    out = Path(out or work / "scaling")
    records = load_records(args.teacher_dir or TEACHER_DIR, shards=getattr(args, "answer_shards", None))
    total = sum(len(r["ids"]) - r["start"] for r in records)
    if not records or budgets[-1] > total:
        raise StageError(f"the teacher data holds {total:,} answer tokens, less than the budget {budgets[-1]:,}: "
                         f"drop that budget, or sample and label more (python -m spectr_lib.distill.answers, then "
                         f"python -m spectr_lib.distill data)")
    plan = [(n, *steps_for(records, n, passes, args.batch_seqs, args.seed)) for n in budgets]
    del records  # each training run loads the teacher data itself
    train_fn = run_train_standalone if args.kind == "standalone" else run_train
    rows = []
    for n, steps, trained_tokens in plan:
        folder = work / "scaling" / str(n)
        folder.mkdir(parents=True, exist_ok=True)
        run = argparse.Namespace(**{**vars(args), "train_tokens": n, "steps": steps, "resume": True, "init": None,
                                    "checkpoint_every": min(args.checkpoint_every, steps)})
        train_fn(run, target, folder)
        curve = torch.load(folder / "checkpoint.pt", weights_only=False)["curve"]
        rows.append({"budget": n, "train_answer_tokens": trained_tokens, "steps": steps, "passes": passes,
                     **{k: v for k, v in curve[-1].items() if k != "step"}})
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "scaling.json", json.dumps({"kind": args.kind, "rows": rows}, indent=1))
        plot_scaling(rows, out / "scaling.png")
    return rows


def plot_scaling(rows: list[dict], path: Path) -> None:
    """Held-out Σ min(p, q) of each drafting step against answer tokens trained on (log x), saved to path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = [r["train_answer_tokens"] for r in rows]
    for key in sorted(k for k in rows[0] if k.startswith("val_acc")):
        ax.plot(x, [r[key] for r in rows], marker="o", label=f"drafting step {key.removeprefix('val_acc')}")
    ax.set_xscale("log")
    ax.set_xlabel("distinct answer tokens trained on")
    ax.set_ylabel("held-out Σ min(p, q) (teacher's top 32)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Command line: the script's own options, then the training stage's."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.distill.scaling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", type=parse_budgets, required=True, help="answer-token budgets, e.g. 70k,140k,280k")
    ap.add_argument("--passes", type=real(0, exclusive=True), default=1.5, help="passes over each budget's data (steps ∝ budget)")
    ap.add_argument("--scaling-out", type=Path, default=None, help="where scaling.json/png go (default <work>/scaling)")
    own, rest = ap.parse_known_args(argv)
    if "--steps" in rest or any(a.startswith("--steps=") for a in rest):
        ap.error("--steps is set per budget from --passes (steps ∝ budget)")
    if not own.passes > 0:
        ap.error(f"--passes must be positive, got {own.passes}")
    from .cli import load_for_stage, parse_args

    args = parse_args(["train", *rest])
    if args.source != "answers" or args.tiny:
        ap.error("the scaling curve trains on the stored answers' teacher pass (--source answers, not --tiny)")
    if args.init is not None or args.train_tokens is not None:
        ap.error("each budget trains a fresh draft on its own prefix of the data: --init and --train-tokens do not apply")
    target, _, work = load_for_stage(args, command_line=argv is None)
    try:
        rows = run_scaling(args, target, work, own.budgets, own.passes, own.scaling_out)
    except StageError as err:
        raise SystemExit(str(err)) from None
    for r in rows:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
