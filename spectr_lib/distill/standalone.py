"""Training stage for a standalone draft (models/standalone_draft.py): a few of the target's layers, distilled
from the same teacher passes as the feature draft, from tokens alone.

Loss: soft cross-entropy of the draft's full-vocabulary distribution against the target's top-k next-token
probabilities (T = 1) at every answer position; the shared embedding and head stay frozen, only the draft's
layers and final norm learn. Held-out metric: Σ min(p, q) over the teacher's top-k (a lower bound of the
acceptance), on the same prompt-id split as the feature draft.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from . import StageError
from ..models import standalone_draft
from .teacher import first_answer_tokens
from .loop import check_same_run, fit, length_buckets, load_checkpoint, load_weights, optimizer_state, save_checkpoint
from .train import _records, _split, batch_tensors, head_token_ids, special_token_ids
from ..files import write_text

DEFAULT_INIT_LAYERS = (0, 1, 2)  # the target layers a fresh standalone draft starts from (--init-layers)

NO_COLS = torch.arange(0)  # a standalone draft reads no target features


def frozen_float_copies(model: torch.nn.Module) -> torch.Tensor:
    """Give the draft float32 frozen copies of its shared embedding and head, so that training (and casting the
    draft) never touches the target; returns the head weight [V, d] the loss uses."""
    emb = model.get_input_embeddings().weight.detach().float().clone()
    head = emb if model.config.tie_word_embeddings else model.get_output_embeddings().weight.detach().float().clone()
    model.set_input_embeddings(torch.nn.Embedding.from_pretrained(emb, freeze=True))
    out = torch.nn.Linear(head.shape[1], head.shape[0], bias=False)
    out.weight = torch.nn.Parameter(head, requires_grad=False)
    model.set_output_embeddings(out)  # the target's own modules are no longer reachable: .float() leaves them be
    return head


def standalone_loss(model: torch.nn.Module, head: torch.Tensor, ids: torch.Tensor, top_p: torch.Tensor,
                    top_i: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Soft cross-entropy (mean over answer positions) of the draft on right-padded ids [B, T] against the
    teacher's top-k probabilities top_p / ids top_i [B, T, K] where mask [B, T] is 1, and Σ min(p, q) there.
    Right padding needs no attention mask: causal attention keeps real positions from seeing it."""
    keep = mask > 0
    h = model.model(input_ids=ids, use_cache=False).last_hidden_state[keep]
    logq = (h.float() @ head.T).log_softmax(-1)
    top_p, top_i = top_p[keep], top_i[keep]
    picked = logq.gather(-1, top_i)
    ce = -(top_p * picked).sum(-1).mean()
    with torch.no_grad():
        acc = float(torch.minimum(top_p, picked.exp()).sum(-1).mean())
    return ce, {"acc1": acc}


def run_train_standalone(args, target, work: Path) -> None:
    """Train (or continue, --resume) a standalone draft of len(--init-layers) layers; checkpoints in `work`."""
    asked = None if args.init_layers is None else tuple(int(i) for i in args.init_layers)
    standalone_draft.check_init_layers(target, asked or DEFAULT_INIT_LAYERS)  # before the teacher data loads
    if asked is not None and args.init is not None and not args.resume:
        raise StageError(f"--init {args.init} continues a saved draft with its own layers: drop --init-layers "
                         f"(or drop --init to start a fresh draft from target layers {asked})")
    records, _ = _records(args, work)
    for r in records:
        r.pop("features", None)  # not read: frees most of the teacher cache's memory
    train, val = _split(records, args.seed)
    if not val:
        raise StageError("no held-out sequence in the teacher data (the split holds out 1 prompt id in 40): "
                         "label more answers first")
    train = first_answer_tokens(train, getattr(args, "train_tokens", None))
    n_answer = sum(len(r["ids"]) - r["start"] for r in train)
    ckpt_path = work / "checkpoint.pt"
    ck = load_checkpoint(ckpt_path, standalone_draft.KIND) if args.resume and ckpt_path.exists() else None
    n = target.config.num_hidden_layers
    if ck and asked is not None and {int(i) % n for i in ck["init_layers"]} != {i % n for i in asked}:
        raise StageError(f"the checkpoint in {work} continues a draft started from target layers {tuple(ck['init_layers'])}, "
                         f"not {asked}: drop --init-layers to continue it, or use another --work-dir for a new draft")
    layer_ids = tuple(ck["init_layers"]) if ck else asked or DEFAULT_INIT_LAYERS
    if args.init is not None and ck is None:
        model = standalone_draft.load(args.init, target, dtype=torch.float32)
        layer_ids = tuple(model.spectr_init_layers or layer_ids)
    else:
        model = standalone_draft.init_from_target(target, layer_ids)
    head_ids = ck["head_ids"] if ck else head_token_ids(train, model.config.vocab_size, args.head_tokens,
                                                          special_token_ids(target.config))
    print(f"{len(train)} training sequences ({n_answer} answer tokens), {len(val)} held out; "
          f"standalone draft of {len(layer_ids)} layers from target layers {layer_ids}", flush=True)
    head = frozen_float_copies(model)
    model = model.float()
    own = [p for n, p in model.named_parameters() if n.startswith(standalone_draft.OWN_PREFIXES)]
    opt, progress = optimizer_state(model, own, args.lr, ck)
    full = torch.arange(model.config.vocab_size)
    tensors = lambda group: batch_tensors(group, full, NO_COLS, NO_COLS, args.max_prompt)  # noqa: E731
    val_batch = tensors(val[:64])
    recipe = {"kind": standalone_draft.KIND, "init_layers": list(layer_ids), "max_prompt": args.max_prompt,
              "train_sequences": len(train), "train_answer_tokens": n_answer, "val_sequences": len(val),
              "batch_seqs": args.batch_seqs, "lr": args.lr, "steps": args.steps,
              "init": Path(args.init).name if args.init else None, "seed": args.seed}
    check_same_run(ck, recipe, args.steps)

    def evaluate() -> dict:
        model.eval()
        with torch.no_grad():
            _, st = standalone_loss(model, head, *_labels(val_batch))
        model.train()
        return st

    def save(p) -> None:
        save_checkpoint({"kind": standalone_draft.KIND, "model": standalone_draft.own_state(model),
                         "init_layers": list(layer_ids), "head_ids": head_ids, "recipe": recipe,
                         "opt": opt.state_dict(), "step": p.step, "curve": p.curve, "seen": p.seen,
                         "elapsed": p.seconds}, ckpt_path)

    batches = length_buckets(train, args.batch_seqs, args.seed, progress.step)
    fit(model, own, opt, progress, args.steps, args.lr, batches,
        lambda group: standalone_loss(model, head, *_labels(tensors(group))), evaluate, save, args.checkpoint_every,
        "training standalone draft")


def _labels(batch: tuple) -> tuple:
    """(ids, top_p, top_i, mask) out of `train.batch_tensors`' tuple (its feature tensors are empty here)."""
    _, ids, _, top_p, top_i, mask = batch
    return ids, top_p, top_i, mask


def run_save_standalone(args, target, tokenizer, work: Path) -> None:
    """Write the standalone draft of the last checkpoint to --out (own weights, config, tokenizer, training log)."""
    if not (work / "checkpoint.pt").exists():
        raise StageError(f"no checkpoint in {work}: run the 'train' stage with --kind standalone first")
    ck = load_checkpoint(work / "checkpoint.pt", standalone_draft.KIND)
    model = standalone_draft.init_from_target(target, tuple(ck["init_layers"]))
    missing, _ = load_weights(model, ck["model"])
    if any(m.startswith(standalone_draft.OWN_PREFIXES) for m in missing):
        raise StageError(f"the checkpoint in {work} does not hold every layer of its draft (missing {missing[:3]})")
    head_ids = ck["head_ids"]
    standalone_draft.save(model, args.out, head_ids=None if len(head_ids) >= model.config.vocab_size else head_ids)
    training = {"recipe": ck.get("recipe"), "steps": ck["step"], "answer_tokens_seen": ck["seen"],
                "train_seconds": round(ck["elapsed"]), "learning_curve": ck["curve"],
                "torch_threads": torch.get_num_threads()}
    write_text(args.out / "training.json", json.dumps(training, indent=1))
    if tokenizer is not None:
        tokenizer.save_pretrained(args.out)
    print(f"saved the standalone draft to {args.out}")
