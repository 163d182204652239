"""Training stage of the distillation: fit a feature draft to the target's features and soft labels."""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import load_shards
from ..models.feature_draft import FeatureDraft, FeatureDraftConfig, init_from_target, previous_features

FEATURE_WEIGHT = 0.1  # the feature regression keeps predicted features usable as the next step's input
UNROLL_WEIGHT = 0.5  # second pass on the draft's own predicted features, as in multi-token drafting


def head_token_ids(records: list[dict], vocab_size: int, n: int, specials: list[int]) -> torch.Tensor:
    """The n tokens with most teacher probability mass in the data (all when n is 0), specials included."""
    if not n or n >= vocab_size:
        return torch.arange(vocab_size)
    mass = torch.zeros(vocab_size)
    for r in records:
        mass.index_add_(0, r["top_ids"].long().flatten(), r["top_p"].float().flatten())
        mass.index_add_(0, r["ids"], torch.ones(len(r["ids"])))
    mass[torch.tensor(specials, dtype=torch.long)] = float("inf")
    return mass.topk(n).indices.sort().values


def batch_tensors(group: list[dict], to_head: torch.Tensor):
    """Right-padded inputs (h_{t-1}, x_t), target features, head-indexed soft labels and the loss mask."""
    T = max(len(r["ids"]) for r in group)
    B, d = len(group), group[0]["features"].shape[-1]
    ids = torch.zeros(B, T, dtype=torch.long)
    feats = torch.zeros(B, T, d)
    top_p = torch.zeros(B, T, group[0]["top_p"].shape[-1])
    top_i = torch.zeros(B, T, group[0]["top_p"].shape[-1], dtype=torch.long)
    mask = torch.zeros(B, T)
    for b, r in enumerate(group):
        n = len(r["ids"])
        ids[b, :n], feats[b, :n] = r["ids"], r["features"].float()
        idx = to_head[r["top_ids"].long()]
        top_p[b, :n], top_i[b, :n] = r["top_p"].float() * (idx >= 0), idx.clamp_min(0)
        mask[b, r["start"] - 1 : n - 1] = 1  # positions whose next token is part of the answer
    feats_in = previous_features(feats)
    return feats_in, ids, feats, top_p, top_i, mask


def draft_loss(model: FeatureDraft, feats_in, ids, feats, top_p, top_i, mask):
    """Soft cross-entropy on the kept head + feature regression, for true and for predicted input features."""
    pos = torch.arange(ids.shape[1])
    total, n = 0.0, mask.sum().clamp_min(1)
    stats = {}
    for depth, weight in ((1, 1.0), (2, UNROLL_WEIGHT)):
        f = model(feats_in, ids, pos)
        logq = model.head_logits(f).float().log_softmax(-1)
        ce = -(top_p * logq.gather(-1, top_i)).sum(-1)
        reg = F.smooth_l1_loss(f.float(), feats, reduction="none").mean(-1)
        total = total + weight * ((ce + FEATURE_WEIGHT * reg) * mask).sum() / n
        with torch.no_grad():  # Σ min(p, q) over the teacher's top-k: a lower bound of the acceptance
            stats[f"acc{depth}"] = float((torch.minimum(top_p, logq.exp().gather(-1, top_i)).sum(-1) * mask).sum() / n)
        feats_in = previous_features(f.detach().float())
    return total, stats


def _split(records: list[dict], seed: int):
    rng = random.Random(seed)
    idx = list(range(len(records)))
    rng.shuffle(idx)
    n_val = max(1, len(records) // 40)
    return [records[i] for i in idx[n_val:]], [records[i] for i in idx[:n_val]]


def run_train(args, target, work: Path) -> None:
    """Train (or continue training) the feature draft, with checkpoints and --resume."""
    records = load_shards(work / "data")
    if not records:
        raise SystemExit(f"no data shards in {work / 'data'}: run the 'data' stage first")
    train, val = _split(records, args.seed)
    tok_specials = [i for i in (getattr(target.config, "eos_token_id", None), getattr(target.config, "bos_token_id", None)) if isinstance(i, int)]
    ckpt_path = work / "checkpoint.pt"
    ck = torch.load(ckpt_path, weights_only=False) if args.resume and ckpt_path.exists() else None
    if args.init is not None:
        model = FeatureDraft.load(args.init, target)
    else:
        cfg = FeatureDraftConfig.from_target(target.config, args.head_tokens)
        head_ids = ck["head_ids"] if ck else head_token_ids(train, cfg.vocab_size, args.head_tokens, tok_specials)
        cfg.head_tokens = len(head_ids)
        model = init_from_target(cfg, target, head_ids)
    # train on a frozen float copy of the embedding, so the target's own module is never touched
    model.embed = torch.nn.Embedding.from_pretrained(model.embed.weight.detach().float().clone(), freeze=True)
    model = model.float()
    to_head = torch.full((model.config.vocab_size,), -1, dtype=torch.long)
    to_head[model.head_ids.cpu()] = torch.arange(len(model.head_ids))
    opt = torch.optim.AdamW(model.own_parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.95))
    step, curve, seen, elapsed = 0, [], 0, 0.0
    if ck is not None:
        model.load_state_dict(ck["model"], strict=False)
        opt.load_state_dict(ck["opt"])
        step, curve, seen, elapsed = ck["step"], ck["curve"], ck["seen"], ck["elapsed"]
        print(f"resumed at step {step} ({seen} tokens seen)")
    rng = random.Random(args.seed + step)
    val_batch = batch_tensors(val[:32], to_head)
    t0 = time.perf_counter() - elapsed

    def lr_at(s: int) -> float:
        warm = min(1.0, (s + 1) / 50)
        return args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, args.steps)))))

    def evaluate() -> dict:
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=model.head.device.type == "cpu"):
            _, st = draft_loss(model, *val_batch)
        model.train()
        return st

    bar = tqdm(total=args.steps, initial=step, desc="training draft")
    model.train()
    while step < args.steps:
        group = rng.sample(train, min(args.batch_seqs, len(train)))
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=model.head.device.type == "cpu"):
            loss, st = draft_loss(model, *batch_tensors(group, to_head))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.own_parameters(), 1.0)
        opt.step()
        step += 1
        seen += sum(len(r["ids"]) - r["start"] for r in group)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", acc1=f"{st['acc1']:.3f}", acc2=f"{st['acc2']:.3f}")
        if step % args.checkpoint_every == 0 or step == args.steps:
            curve.append({"step": step, "answer_tokens_seen": seen, "seconds": round(time.perf_counter() - t0),
                          **{f"val_{k}": round(v, 4) for k, v in evaluate().items()}})
            print(json.dumps(curve[-1]), flush=True)
            own = {n: t for n, t in model.state_dict().items() if not n.startswith("embed.")}
            torch.save({"model": own, "head_ids": model.head_ids.cpu(), "opt": opt.state_dict(), "step": step, "curve": curve,
                        "seen": seen, "elapsed": time.perf_counter() - t0}, ckpt_path.with_suffix(".tmp"))
            ckpt_path.with_suffix(".tmp").rename(ckpt_path)
    bar.close()


def run_save(args, target, tokenizer, work: Path) -> None:
    """Write the trained draft from the last checkpoint to --out (weights, config, tokenizer, training log)."""
    ckpt_path = work / "checkpoint.pt"
    if not ckpt_path.exists():
        raise SystemExit(f"no checkpoint in {work}: run the 'train' stage first")
    ck = torch.load(ckpt_path, weights_only=False)
    head_ids = ck["head_ids"]
    cfg = FeatureDraftConfig.from_target(target.config, args.head_tokens)
    cfg.head_tokens = len(head_ids)
    model = FeatureDraft(cfg, target.get_input_embeddings(), target.get_output_embeddings().weight, head_ids)
    model.load_state_dict(ck["model"], strict=False)
    training = {"steps": ck["step"], "answer_tokens_seen": ck["seen"], "train_seconds": round(ck["elapsed"]),
                "learning_curve": ck["curve"], "torch_threads": torch.get_num_threads()}
    model.save(args.out, extra={"shared_from_target": ["embed_tokens", "lm_head"]})
    (args.out / "training.json").write_text(json.dumps(training, indent=1))
    if tokenizer is not None:
        tokenizer.save_pretrained(args.out)
    print(f"saved the draft to {args.out}")
