"""Build the project's draft model from the target: `python -m spectr_lib.distill --help`.

Stages (each resumable): `data` runs the teacher pass over the stored on-policy answers (data/distill/answers,
written by `python -m spectr_lib.distill.answers`): the target's hidden states at `teacher.LAYERS` and its
top-k next-token probabilities, cached per answer shard; `train` fits a feature draft (one decoder layer, or
`--num-layers`, reading the target's features, last or fused low/middle/last, and the next token) to them,
unrolling `--depth` drafting steps as they run while decoding (training-time test), with checkpoints; `save`
writes it to data/models/<name>/. `all` runs the three. `--kind standalone` trains a standalone draft instead: a few of the
target's own layers (`--init-layers`), distilled from the same teacher pass, that Hugging Face's assisted
generation can drive. `--source templates` is the first draft's recipe: sample fresh answers to
data/prompts/train.jsonl and label them in one go.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from . import StageError
from ..models.draft_files import holds_model
from ..paths import DATA_DIR, DEFAULT_DRAFT_DIR, cache_dir
from ..argtypes import THREADS, count, real
from ..files import write_text

STANDALONE_DIR = DEFAULT_DRAFT_DIR.parent / "smollm2-draft-standalone"


def _layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(i) for i in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers, e.g. 4,16,-1") from None


def _shard_range(text: str) -> range:
    from .teacher import shard_range

    try:
        return shard_range(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the distillation script."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.distill", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", nargs="?", default="all", choices=["data", "train", "save", "all"])
    ap.add_argument("--target", default=None, help="target model name or folder (default: the embedded SmolLM2)")
    ap.add_argument("--work-dir", type=Path, default=None, help="shards and checkpoints (default: cache folder)")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"where the draft is saved (default: {DEFAULT_DRAFT_DIR.name} for a feature draft, "
                         f"{STANDALONE_DIR.name} for a standalone one, in {DEFAULT_DRAFT_DIR.parent.name}/)")
    ap.add_argument("--source", default="answers", choices=["answers", "templates"],
                    help="answers: the stored answers of data/distill (the 'data' stage runs the teacher pass over "
                         "them); templates: sample new answers to --prompts (the first draft's recipe)")
    ap.add_argument("--teacher-dir", type=Path, default=None, help="teacher shards (default: cache folder)")
    ap.add_argument("--kind", default="feature", choices=["feature", "standalone"],
                    help="feature: decoder layer(s) reading the target's hidden states (the default draft); "
                         "standalone: a "
                         "small causal LM of the target's own layers (Hugging Face assisted generation can drive it; "
                         "--feature-layers and --depth do not apply). Give the same --kind to train, --resume and save")
    ap.add_argument("--init-layers", type=_layers, default=None,
                    help="standalone: the target layers it starts from, comma-separated (its depth; default 0,1,2, or "
                         "those of the checkpoint continued by --resume or of the --init draft)")
    ap.add_argument("--feature-layers", type=_layers, default=None,
                    help="target hidden_states the draft reads, comma-separated (-1: last; e.g. 4,16,-1 fuses "
                         "three; default: those of the --init draft or the resumed checkpoint, else -1)")
    ap.add_argument("--num-layers", type=count(1), default=None,
                    help="feature draft: its decoder layers (default: those of the --init draft or the resumed "
                         "checkpoint, else 1); more than --init's adds layers that start as pass-throughs")
    ap.add_argument("--depth", type=count(1), default=3, help="drafting steps unrolled in training (training-time test)")
    ap.add_argument("--feature-weight", type=real(0), default=0.1, help="weight of the feature regression loss")
    ap.add_argument("--tv-weight", type=real(0), default=0.0,
                    help="weight of a total-variation term, 1 − Σ min(p, q) over the teacher's top-k, added to the "
                         "soft cross-entropy (a feature draft; 0: cross-entropy only)")
    ap.add_argument("--max-prompt", type=count(1), default=384, help="keep each prompt's last N tokens in training")
    ap.add_argument("--answer-shards", type=_shard_range, default=None, metavar="FIRST-LAST",
                    help="only these answer shards (e.g. 15-29): the data stage labels them, train reads them; to "
                         "continue a draft (--init) on answers it has not seen")
    ap.add_argument("--train-tokens", type=count(1), default=None,
                    help="train on the first N answer tokens only (a data-scaling curve)")
    ap.add_argument("--prompts", type=Path, default=DATA_DIR / "prompts" / "train.jsonl")
    ap.add_argument("--max-prompts", type=count(1), default=None, help="use the first N training prompts")
    ap.add_argument("--max-new-tokens", type=count(1), default=160)
    ap.add_argument("--temperature", type=real(0, exclusive=True), default=1.0, help="sampling temperature of the answers")
    ap.add_argument("--shard-size", type=count(1), default=48, help="prompts per data shard")
    ap.add_argument("--gen-batch", type=count(1), default=24)
    ap.add_argument("--steps", type=count(1), default=1200, help="optimizer steps of the train stage")
    ap.add_argument("--batch-seqs", type=count(1), default=16, help="sequences per optimizer step")
    ap.add_argument("--lr", type=real(0, exclusive=True), default=1e-3)
    ap.add_argument("--head-tokens", type=count(0), default=16384,
                    help="keep only the N most frequent tokens in the draft's output head (0: all)")
    ap.add_argument("--init", type=Path, default=None, help="continue training an existing draft folder")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --work-dir")
    ap.add_argument("--overwrite", action="store_true",
                    help="let save replace a draft already in --out (the default --out holds the shipped draft)")
    ap.add_argument("--restart", action="store_true",
                    help="let train start a new run over the checkpoint in --work-dir (without it, or --resume, refused)")
    ap.add_argument("--checkpoint-every", type=count(1), default=100)
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=count(0, 40_000), default=0)
    ap.add_argument("--tiny", action="store_true", help="tiny random pair and a few steps: a smoke test")
    ap.add_argument("--threads", type=THREADS, default=None, help="torch CPU threads")
    ap.add_argument("--precision", default="auto", choices=["auto", "float32", "bf16"],
                    help="a feature draft's training arithmetic on a CPU: bf16 autocast (auto: where the CPU computes "
                         "bf16 natively) or float32; the standalone draft always trains in float32")
    args = ap.parse_args(argv)
    if args.kind == "standalone":
        if args.source != "answers" or args.tiny:
            ap.error("a standalone draft trains on the stored answers' teacher pass (--source answers, not --tiny)")
        pass  # --init-layers: None means "from the checkpoint or --init, else 0,1,2" (standalone.DEFAULT_INIT_LAYERS)
        if args.tv_weight:
            ap.error("--tv-weight is a feature draft's loss term (the standalone draft trains on cross-entropy only)")
    elif args.init_layers is not None:
        ap.error("--init-layers is for --kind standalone (a feature draft reads --feature-layers)")
    if args.num_layers is not None and args.kind == "standalone":  # its type refuses counts below 1
        ap.error("--num-layers is a feature draft's layer count, a whole number ≥ 1 (a standalone draft's depth "
                 "is its --init-layers)")
    if args.num_layers is not None and args.init is not None:
        from ..models.draft_files import read_draft_config

        try:
            meta = read_draft_config(args.init) or {}
        except (ValueError, FileNotFoundError) as err:
            ap.error(str(err))
        if args.num_layers < meta.get("num_layers", 1):
            ap.error(f"--num-layers {args.num_layers} is fewer than the {meta.get('num_layers', 1)} layers of the "
                     f"--init draft {args.init}: give --num-layers {meta.get('num_layers', 1)} or more")
    if args.answer_shards is not None:
        if args.source != "answers" or args.tiny:
            ap.error("--answer-shards selects stored answer shards (--source answers, not --tiny)")
        if args.stage in ("data", "all"):
            from .teacher import select_shards

            try:
                select_shards(shards=args.answer_shards)  # the data stage's own check, before the target loads
            except ValueError as err:
                ap.error(str(err))
    if args.out is None:
        args.out = STANDALONE_DIR if args.kind == "standalone" else DEFAULT_DRAFT_DIR
    if args.stage in ("save", "all") and not args.overwrite and holds_model(args.out):
        ap.error(f"{args.out} already holds a draft (the shipped one, if it is the default --out): give --out "
                 f"NEW_FOLDER, or --overwrite to replace it")
    return args


def run_data(args, target, tokenizer, work: Path) -> None:
    """Sample answers and label them, one shard at a time; shards already on disk are kept."""
    from .data import answer_records, label, save_shard
    from ..prompts import encode_chat, read_prompts

    texts = [r["prompt"] for r in read_prompts(args.prompts)][: args.max_prompts]
    if tokenizer is not None:
        prompts = [encode_chat(tokenizer, t) for t in texts]
    else:  # the tiny smoke test has no tokenizer: stand-in ids derived from the text
        V = target.config.vocab_size
        prompts = [torch.tensor([ord(c) % V for c in t[:12]]) for t in texts]
    eos = getattr(tokenizer, "eos_token_id", None)
    for s in range(0, len(prompts), args.shard_size):
        path = work / "data" / f"shard-{s // args.shard_size:04d}.pt"
        if path.exists():
            continue
        t0 = time.perf_counter()
        recs = answer_records(target, prompts[s : s + args.shard_size], eos, args.max_new_tokens,
                              args.temperature, args.gen_batch, seed=args.seed * 100_003 + s)
        label(target, recs)
        save_shard(recs, path)
        n = sum(len(r["ids"]) - r["start"] for r in recs)
        print(f"{path.name}: {len(recs)} answers, {n} answer tokens, {time.perf_counter() - t0:.0f} s", flush=True)


def work_dir(args) -> Path:
    """The folder of the run's shards and checkpoints: --work-dir, or one per kind under the user cache folder."""
    return args.work_dir or cache_dir() / "distill" / ("tiny" if args.tiny else "smollm2" if args.kind == "feature"
                                                       else "smollm2-standalone")


def check_no_lost_work(args) -> None:
    """StageError when a train stage would start a new run over a checkpoint already in the work folder (neither
    --resume nor --restart given): a finished or interrupted run is never replaced silently. Also when the train
    stage alone is asked to --resume and there is no checkpoint (a mistyped --work-dir would start over silently);
    `all --resume` on a new folder starts training at step 0, and says so."""
    checkpoint = work_dir(args) / "checkpoint.pt"
    if args.stage in ("train", "all") and checkpoint.exists() and not (args.resume or args.restart):
        raise StageError(f"{checkpoint} holds a training run's checkpoint: give --resume to continue it, --restart "
                         f"to start a new run over it, or another --work-dir")
    if args.resume and args.restart:
        raise StageError("--resume continues the run in --work-dir and --restart starts a new one over it: give one")
    if args.resume and not checkpoint.exists():
        if args.stage == "train":
            raise StageError(f"--resume: there is no checkpoint in {checkpoint.parent} to continue: check --work-dir "
                             f"(and --kind), or drop --resume to start a new run")
        if args.stage == "all":
            print(f"--resume: no checkpoint in {checkpoint.parent} yet, training starts at step 0", flush=True)


def load_for_stage(args, command_line: bool):
    """The setup every stage shares: malloc tunables (a command line re-runs itself with them: big tensors
    page-fault badly without), torch threads, the work folder, the target. Returns (target, tokenizer, work)."""
    if command_line:
        from ..runtime import keep_freed_memory

        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = work_dir(args)
    work.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging

    logging.disable_progress_bar()
    if args.tiny:
        from ..models.load import tiny_pair

        args.source = "templates"  # the tiny random pair has no tokenizer for the stored answers
        return tiny_pair(vocab_size=64, seed=args.seed, hidden=32).target, None, work
    from ..models.load import load_target

    return (*load_target(args.target, device=args.device), work)


def main(argv: list[str] | None = None) -> None:
    """Run the requested stages; a stage that refuses its inputs (`StageError`) ends the command with its message."""
    try:
        run_stages(parse_args(argv), command_line=argv is None)
    except StageError as err:
        raise SystemExit(str(err)) from None
    except KeyboardInterrupt:
        if argv is not None:  # called from Python: the caller decides
            raise
        raise SystemExit("interrupted: finished shards and the last checkpoint are kept; run the same command again "
                         "(with --resume, to continue training) to go on") from None


def run_stages(args, command_line: bool = False) -> None:
    """The stages of parsed command-line `args` (data, train, save, or all three). StageError (before the target
    loads) when a new training run would replace a checkpoint (`check_no_lost_work`)."""
    check_no_lost_work(args)
    target, tokenizer, work = load_for_stage(args, command_line=command_line)
    if args.stage in ("data", "all"):
        if args.source == "answers" and not args.tiny:
            from . import teacher

            teacher.run(target, tokenizer, out=args.teacher_dir or teacher.TEACHER_DIR, shards=args.answer_shards)
        else:
            run_data(args, target, tokenizer, work)
    if args.stage in ("train", "all"):
        from .standalone import run_train_standalone
        from .train import run_train

        (run_train_standalone if args.kind == "standalone" else run_train)(args, target, work)
    if args.stage in ("save", "all"):
        from .standalone import run_save_standalone
        from .train import run_save

        if args.kind == "standalone":
            run_save_standalone(args, target, tokenizer, work)
        else:
            run_save(args, target, tokenizer, work)
    write_text(work / "args.json", json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))


if __name__ == "__main__":
    main()
