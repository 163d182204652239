"""The training loop both kinds of draft share (the feature draft, distill/train.py; the standalone draft,
distill/standalone.py): batches of similar lengths, AdamW with a cosine schedule, gradient clipping, a held-out
evaluation and an atomic checkpoint every few steps, resumed where it stopped."""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

from . import StageError


@dataclass
class Progress:
    """Where a run stands: optimizer steps taken, the learning curve, answer tokens seen, and the clock's start
    (time.perf_counter() minus the seconds already trained before a resume)."""

    step: int = 0
    curve: list = field(default_factory=list)
    seen: int = 0
    t0: float = 0.0

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0


def fit(model: torch.nn.Module, params: list, opt: torch.optim.Optimizer, progress: Progress, steps: int, lr: float,
        batches: Iterator[list[dict]], loss_of: Callable, evaluate: Callable[[], dict], save: Callable[[Progress], None],
        checkpoint_every: int, desc: str) -> None:
    """Train `params` of `model` until `steps` optimizer steps: loss_of(records) -> (loss, stats) per batch from
    `batches`, learning rate `cosine_lr`, gradients clipped to norm 1. The held-out `evaluate()` -> {name: value}
    is recorded at step 0 of a new run and with every checkpoint (every `checkpoint_every` steps and at the end),
    where save(progress) writes the checkpoint."""

    def record() -> None:
        progress.curve.append({"step": progress.step, "answer_tokens_seen": progress.seen,
                               "seconds": round(progress.seconds) if progress.step else 0,
                               **{f"val_{k}": round(v, 4) for k, v in evaluate().items()}})
        print(json.dumps(progress.curve[-1]), flush=True)

    if progress.step == 0 and not progress.curve:  # the starting point (a continued draft: where it stands here)
        record()
    bar = tqdm(total=steps, initial=progress.step, desc=desc)
    model.train()
    while progress.step < steps:
        group = next(batches)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(progress.step, steps, lr)
        loss, stats = loss_of(group)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        progress.step += 1
        progress.seen += sum(len(r["ids"]) - r["start"] for r in group)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", **{k: f"{v:.3f}" for k, v in stats.items()})
        if progress.step % checkpoint_every == 0 or progress.step == steps:
            record()
            save(progress)
    bar.close()


def length_buckets(records: list[dict], batch: int, seed: int, start: int = 0, pool: int = 8):
    """Endless batches of `batch` records from optimizer step `start` on: each cycle draws pool·batch records at
    random, sorts them by length, cuts them into batches and yields those in random order (similar lengths in a
    batch: little padding). Cycle j is drawn from its own generator, seeded by (seed, j), so the batch of a step
    depends on (seed, step) alone: a run resumed at step s sees the batches the uninterrupted run saw from s on.
    StageError when there are no records."""
    if not records:
        raise StageError("no training sequences (all the data went to the held-out split): make more data first, "
                         "e.g. a larger --max-prompts")
    batch = min(batch, len(records))
    per_cycle = min(len(records), pool * batch) // batch  # batches per cycle
    cycle, skip = divmod(start, per_cycle)
    while True:
        rng = random.Random(f"length_buckets/{seed}/{cycle}")
        drawn = sorted(rng.sample(records, min(len(records), pool * batch)), key=lambda r: len(r["ids"]))
        groups = [drawn[i : i + batch] for i in range(0, per_cycle * batch, batch)]
        rng.shuffle(groups)
        yield from groups[skip:]
        cycle, skip = cycle + 1, 0


def cosine_lr(step: int, steps: int, lr: float, warmup: int = 50) -> float:
    """Learning rate at an optimizer step: linear warm-up over `warmup` steps, then cosine decay to lr / 10."""
    warm = min(1.0, (step + 1) / warmup)
    return lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, steps)))))


def optimizer_state(model: torch.nn.Module, params, lr: float, ck: dict | None) -> tuple[torch.optim.Optimizer, Progress]:
    """AdamW over params and the run's `Progress`, restored from checkpoint ck (model weights included) when one
    is given; the clock starts now, minus the seconds the checkpoint had trained. StageError when the checkpoint's
    weights do not fit the model."""
    params = list(params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    if ck is None:
        return opt, Progress(t0=time.perf_counter())
    trained = {n for n, p in model.named_parameters() if any(p is q for q in params)}  # what the checkpoint holds
    missing, unexpected = load_weights(model, ck["model"])
    if unexpected or trained & set(missing):
        raise StageError(f"the checkpoint's weights do not fit this draft (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}): --resume with the checkpoint's own --feature-layers and --num-layers, "
                         f"or start over in another --work-dir")
    opt.load_state_dict(ck["opt"])
    print(f"resumed at step {ck['step']} ({ck['seen']} tokens seen)")
    return opt, Progress(ck["step"], ck["curve"], ck["seen"], time.perf_counter() - ck["elapsed"])


# recipe entries a resumed run must share with the checkpoint's (name in the recipe -> the flag that sets it)
SAME_RUN = {"seed": "--seed", "batch_seqs": "--batch-seqs", "lr": "--lr", "depth": "--depth", "feature_weight": None,
            "tv_weight": "--tv-weight", "max_prompt": "--max-prompt", "train_sequences": "--train-tokens / the data",
            "train_answer_tokens": "--train-tokens / the data"}  # --precision may change (a run moved to another CPU)


def check_same_run(ck: dict | None, recipe: dict, steps: int) -> None:
    """StageError when a resumed run would not continue the checkpoint's run: a setting of its recipe differs (the
    batches, the step size or the loss would change), or --steps is below the checkpoint's step (equal: the run is
    finished, nothing to train). A larger --steps is allowed (the cosine schedule is stretched from the
    checkpoint's step on)."""
    if ck is None:
        return
    if steps < ck["step"]:
        raise StageError(f"the checkpoint is at step {ck['step']} already, past --steps {steps}: give --steps "
                         f"{ck['step']} or more to train on, or run the 'save' stage")
    old = ck.get("recipe") or {}
    differ = [(k, old[k], recipe[k]) for k in SAME_RUN if k in old and k in recipe and old[k] != recipe[k]]
    if differ:
        said = "; ".join(f"{k} {a!r} in the checkpoint, {b!r} now" + (f" ({SAME_RUN[k]})" if SAME_RUN[k] else "")
                         for k, a, b in differ)
        raise StageError(f"--resume would not continue the same run: {said}. Resume with the checkpoint's settings, "
                         f"or give --restart to start a new run")


def load_weights(model: torch.nn.Module, state: dict) -> tuple[list[str], list[str]]:
    """model.load_state_dict(state, strict=False): (missing, unexpected) keys; StageError when a tensor has another
    shape (the checkpoint was made for another target or draft shape)."""
    try:
        return model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise StageError(f"the checkpoint's weights do not fit this draft ({str(err).splitlines()[-1].strip()}): it "
                         f"was made for another target or draft shape; use its own target, or another --work-dir") from None


def load_checkpoint(path: Path, kind: str) -> dict:
    """The checkpoint at path, refused (StageError) when it belongs to the other kind of draft ("feature_draft"
    or "standalone_draft"; checkpoints without a kind are feature drafts')."""
    ck = torch.load(path, weights_only=False)
    if ck.get("kind", "feature_draft") != kind:
        flag = "--kind standalone" if ck.get("kind") == "standalone_draft" else "--kind feature"
        raise StageError(f"{path} holds a {ck.get('kind', 'feature_draft')}'s checkpoint: give {flag} to every stage "
                         f"(train, --resume, save), or another --work-dir")
    return ck


def save_checkpoint(state: dict, path: Path) -> None:
    """torch.save to path atomically (a run killed while saving keeps the previous checkpoint)."""
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)


