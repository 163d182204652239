"""Training stage of the distillation: fit a feature draft to the target's features and soft labels."""
from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from . import StageError
from .data import load_shards
from .loop import check_same_run, fit, length_buckets, load_checkpoint, load_weights, optimizer_state, save_checkpoint
from .teacher import first_answer_tokens
from .unroll import unrolled_outputs
from ..models.feature_draft import FeatureDraft, FeatureDraftConfig, init_from_target, previous_features
from ..models.load import cpu_has_native_bf16
from ..files import write_text

FEATURE_WEIGHT = 0.1  # the feature regression keeps predicted features usable as the next step's input
DEPTH_WEIGHTS = (1.0, 0.7, 0.5, 0.35, 0.25)  # loss weight of drafting steps 1, 2, 3, … (training-time test)


def special_token_ids(config) -> list[int]:
    """The EOS and BOS ids of a model config that are set (kept in every draft head)."""
    return [i for i in (getattr(config, "eos_token_id", None), getattr(config, "bos_token_id", None)) if isinstance(i, int)]


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


def feature_columns(stored: tuple[int, ...], wanted: tuple[int, ...], d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Column indices of the draft's input features and of the regression target (the last state, -1) within
    records whose features hold the hidden_states indices `stored` [T, len(stored)·d]. ValueError if missing."""
    missing = [i for i in (*wanted, -1) if i not in stored]
    if missing:
        raise StageError(f"the teacher data holds hidden_states {stored}, not {missing}: relabel with those layers")
    cols = lambda i: torch.arange(stored.index(i) * d, (stored.index(i) + 1) * d)  # noqa: E731
    return torch.cat([cols(i) for i in wanted]), cols(-1)


def batch_tensors(group: list[dict], to_head: torch.Tensor, in_cols: torch.Tensor | None = None,
                  last_cols: torch.Tensor | None = None, max_prompt: int | None = None):
    """Right-padded inputs (g_{t-1}, x_t), the target's last features, head-indexed soft labels, the loss mask.

    in_cols / last_cols pick the draft's input features and the regression target out of the stored columns
    (default: all, the same); max_prompt keeps only each prompt's last tokens (a shorter context, cheaper).
    Records without "features" (a standalone draft's) give empty feature tensors [B, T, 0]."""
    cut = [max(0, r["start"] - max_prompt) if max_prompt else 0 for r in group]
    T = max(len(r["ids"]) - c for r, c in zip(group, cut))
    d_all = group[0]["features"].shape[-1] if "features" in group[0] else 0  # records without features: labels only
    in_cols = torch.arange(d_all) if in_cols is None else in_cols
    last_cols = torch.arange(d_all) if last_cols is None else last_cols
    B, K = len(group), group[0]["top_p"].shape[-1]
    ids = torch.zeros(B, T, dtype=torch.long)
    feats_in = torch.zeros(B, T, len(in_cols))
    feats = torch.zeros(B, T, len(last_cols))
    top_p, top_i, mask = torch.zeros(B, T, K), torch.zeros(B, T, K, dtype=torch.long), torch.zeros(B, T)
    for b, (r, c) in enumerate(zip(group, cut)):
        n = len(r["ids"]) - c
        ids[b, :n] = r["ids"][c:]
        if d_all:
            f = r["features"][c:]
            feats_in[b, :n], feats[b, :n] = f[:, in_cols].float(), f[:, last_cols].float()
        idx = to_head[r["top_ids"][c:].long()]
        top_p[b, :n], top_i[b, :n] = r["top_p"][c:].float() * (idx >= 0), idx.clamp_min(0)
        mask[b, r["start"] - c - 1 : n - 1] = 1  # positions whose next token is part of the answer
    return previous_features(feats_in), ids, feats, top_p, top_i, mask


def draft_loss(model: FeatureDraft, feats_in, ids, feats, top_p, top_i, mask, depth: int = 2,
               feature_weight: float = FEATURE_WEIGHT, tv_weight: float = 0.0):
    """Soft cross-entropy on the kept head + feature regression, for drafting steps 1..depth unrolled with the
    attention they have while decoding (`unroll.unrolled_outputs`, training-time test).

    tv_weight > 0 adds tv_weight · (1 − Σ_top-k min(p, q)) per position: the total-variation distance
    1 − Σ min(p, q), the rejection rate a draft step is judged by, with the overlap counted over the teacher's
    stored top-k only (DistillSpec, Zhou et al., ICLR 2024, trains drafts on TVD for this reason). Returns (loss, stats) with
    stats["acc{j}"] = Σ_top-k min(p, q) at drafting step j (a lower bound of the acceptance)."""
    keep = mask > 0  # the head runs only where there is a label (answer positions): most of the cost
    top_p, top_i, feats = top_p[keep], top_i[keep], feats[keep]
    total, n = 0.0, max(1, int(keep.sum()))
    stats = {}
    for j, f in enumerate(unrolled_outputs(model, feats_in, ids, depth), start=1):
        f = f[keep]
        logq = model.head_logits(f).float().log_softmax(-1)
        ce = -(top_p * logq.gather(-1, top_i)).sum(-1)
        reg = F.smooth_l1_loss(f.float(), feats, reduction="none").mean(-1)
        overlap = torch.minimum(top_p, logq.exp().gather(-1, top_i)).sum(-1)  # Σ min(p, q) over the teacher's top-k
        tv = tv_weight * (1 - overlap) if tv_weight else 0.0
        total = total + DEPTH_WEIGHTS[min(j, len(DEPTH_WEIGHTS)) - 1] * (ce + feature_weight * reg + tv).sum() / n
        stats[f"acc{j}"] = float(overlap.detach().sum() / n)
    return total, stats


def _split(records: list[dict], seed: int):
    """Held-out 2.5 %: by prompt id when records carry one (the same prompts whatever the data size, so runs on
    prefixes of the data are compared on one split), else a seeded shuffle."""
    if all("prompt_id" in r for r in records):
        held = lambda r: (r["prompt_id"] * 2654435761 + seed) % 2**32 % 40 == 0  # noqa: E731
        return [r for r in records if not held(r)], [r for r in records if held(r)]
    rng = random.Random(seed)
    idx = list(range(len(records)))
    rng.shuffle(idx)
    n_val = max(1, len(records) // 40)
    return [records[i] for i in idx[n_val:]], [records[i] for i in idx[:n_val]]


def _records(args, work: Path) -> tuple[list[dict], tuple[int, ...]]:
    """Training records and the hidden_states indices their features hold."""
    if getattr(args, "source", "templates") == "answers":
        from .teacher import TEACHER_DIR, load_records, teacher_layers

        folder = getattr(args, "teacher_dir", None) or TEACHER_DIR
        shards = getattr(args, "answer_shards", None)
        records = load_records(folder, shards=shards)
        if not records:
            which = "" if shards is None else f" numbered {shards.start}-{shards.stop - 1}"
            raise StageError(f"no teacher shards{which} in {folder}: run the 'data' stage first"
                             + ("" if shards is None else " with the same --answer-shards"))
        return records, teacher_layers(folder)
    records = load_shards(work / "data")
    if not records:
        raise StageError(f"no data shards in {work / 'data'}: run the 'data' stage first")
    return records, (-1,)


def run_train(args, target, work: Path) -> None:
    """Train (or continue training) the feature draft, with checkpoints and --resume."""
    records, stored = _records(args, work)
    train, val = _split(records, args.seed)
    train = first_answer_tokens(train, getattr(args, "train_tokens", None))
    n_answer = sum(len(r["ids"]) - r["start"] for r in train)
    depth = getattr(args, "depth", 2)
    max_prompt = getattr(args, "max_prompt", None)
    ckpt_path = work / "checkpoint.pt"
    ck = load_checkpoint(ckpt_path, "feature_draft") if args.resume and ckpt_path.exists() else None
    # unset --feature-layers / --num-layers: the resumed checkpoint's, else the --init draft's, else (-1,) and 1
    layers = getattr(args, "feature_layers", None) or (ck or {}).get("feature_layers")
    num_layers = getattr(args, "num_layers", None) or (ck or {}).get("num_layers")
    model = FeatureDraft.load(args.init, target, dtype=torch.float32) if args.init is not None else None
    layers = tuple(layers or (model.config.feature_layers if model is not None else (-1,)))
    print(f"{len(train)} training sequences ({n_answer} answer tokens), "
          f"{len(val)} held out; features {layers}, depth {depth}", flush=True)
    if model is not None:  # continue from a saved draft; a new fusion or new layers start as pass-throughs
        num_layers = num_layers or model.config.num_layers
        if num_layers < model.config.num_layers:
            raise StageError(f"{num_layers} layer(s) (--num-layers, or the checkpoint --resume continues) is fewer than "
                             f"the {model.config.num_layers} of the --init draft {args.init}: give --num-layers "
                             f"{model.config.num_layers} or more, or another --work-dir")
        if (tuple(model.config.feature_layers), model.config.num_layers) != (layers, num_layers):
            cfg = dataclasses.replace(model.config, feature_layers=layers, num_layers=num_layers)
            old = {n: t for n, t in model.state_dict().items() if not n.startswith("embed.")}
            model = init_from_target(cfg, target, model.head_ids.cpu())
            model.load_state_dict(old, strict=False)
    else:
        cfg = FeatureDraftConfig.from_target(target.config, args.head_tokens, layers, num_layers or 1)
        head_ids = ck["head_ids"] if ck else head_token_ids(train, cfg.vocab_size, args.head_tokens, special_token_ids(target.config))
        cfg.head_tokens = len(head_ids)
        model = init_from_target(cfg, target, head_ids)
    d = model.config.hidden_size
    in_cols, last_cols = feature_columns(stored, tuple(model.config.feature_layers), d)
    # train on a frozen float copy of the embedding, so the target's own module is never touched
    model.embed = torch.nn.Embedding.from_pretrained(model.embed.weight.detach().float().clone(), freeze=True)
    model = model.float()
    to_head = torch.full((model.config.vocab_size,), -1, dtype=torch.long)
    to_head[model.head_ids.cpu()] = torch.arange(len(model.head_ids))
    opt, progress = optimizer_state(model, model.own_parameters(), args.lr, ck)
    val_batch = batch_tensors(val[:64], to_head, in_cols, last_cols, max_prompt)
    fw = getattr(args, "feature_weight", FEATURE_WEIGHT)
    tvw = getattr(args, "tv_weight", 0.0)
    # bf16 autocast only where the CPU computes bf16 natively: emulated (AVX2) it was 14× slower than float32
    precision = getattr(args, "precision", "auto")
    bf16 = model.head.device.type == "cpu" and (precision == "bf16" or precision == "auto" and cpu_has_native_bf16())
    recipe = {"source": getattr(args, "source", "templates"), "feature_layers": list(model.config.feature_layers),
              "num_layers": model.config.num_layers,
              "depth": depth, "feature_weight": fw, "tv_weight": tvw, "max_prompt": max_prompt, "train_sequences": len(train),
              "train_answer_tokens": n_answer, "val_sequences": len(val),
              "batch_seqs": args.batch_seqs, "lr": args.lr, "steps": args.steps,
              "init": Path(args.init).name if args.init else None, "bf16_autocast": bf16, "seed": args.seed}
    check_same_run(ck, recipe, args.steps)

    def loss_of(group: list[dict]):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return draft_loss(model, *batch_tensors(group, to_head, in_cols, last_cols, max_prompt), depth=depth,
                              feature_weight=fw, tv_weight=tvw)

    def evaluate() -> dict:
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, st = draft_loss(model, *val_batch, depth=max(depth, 3), feature_weight=fw, tv_weight=tvw)
        model.train()
        return st

    def save(p) -> None:
        own = {n: t for n, t in model.state_dict().items() if not n.startswith("embed.")}
        save_checkpoint({"model": own, "head_ids": model.head_ids.cpu(), "feature_layers": list(model.config.feature_layers),
                         "num_layers": model.config.num_layers, "recipe": recipe, "opt": opt.state_dict(), "step": p.step,
                         "curve": p.curve, "seen": p.seen, "elapsed": p.seconds}, ckpt_path)

    batches = length_buckets(train, args.batch_seqs, args.seed, progress.step)
    fit(model, list(model.own_parameters()), opt, progress, args.steps, args.lr, batches, loss_of, evaluate, save,
        args.checkpoint_every, "training draft")


def run_save(args, target, tokenizer, work: Path) -> None:
    """Write the trained draft from the last checkpoint to --out (weights, config, tokenizer, training log)."""
    ckpt_path = work / "checkpoint.pt"
    if not ckpt_path.exists():
        raise StageError(f"no checkpoint in {work}: run the 'train' stage first")
    ck = load_checkpoint(ckpt_path, "feature_draft")
    head_ids = ck["head_ids"]
    cfg = FeatureDraftConfig.from_target(target.config, args.head_tokens, tuple(ck.get("feature_layers", (-1,))),
                                         ck.get("num_layers", 1))
    cfg.head_tokens = len(head_ids)
    model = FeatureDraft(cfg, target.get_input_embeddings(), target.get_output_embeddings().weight, head_ids)
    load_weights(model, ck["model"])
    training = {"recipe": ck.get("recipe"), "steps": ck["step"], "answer_tokens_seen": ck["seen"], "train_seconds": round(ck["elapsed"]),
                "learning_curve": ck["curve"], "torch_threads": torch.get_num_threads()}
    model.save(args.out, extra={"shared_from_target": ["embed_tokens", "lm_head"]})
    write_text(args.out / "training.json", json.dumps(training, indent=1))
    if tokenizer is not None:
        tokenizer.save_pretrained(args.out)
    print(f"saved the draft to {args.out}")
