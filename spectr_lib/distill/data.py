"""Distillation data: on-policy chat answers sampled from the target, then its features and soft labels.

A shard holds, per sequence: the token ids (prompt + answer), where the answer starts, the target's last
hidden state at every position (what a feature draft reads), and the target's top-k next-token probabilities.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

TOP_K = 32


@torch.no_grad()
def sample_answers(model, prompts: list[torch.Tensor], eos: int | None, max_new_tokens: int, temperature: float,
                   batch_size: int, seed: int, progress: bool = True) -> list[dict]:
    """Sample one answer per encoded prompt from the target (batched, left-padded); returns ids and answer start."""
    torch.manual_seed(seed)
    dev = model.device
    out = []
    pad = 0 if eos is None else eos
    for i in tqdm(range(0, len(prompts), batch_size), desc="sampling answers", disable=not progress):
        enc = prompts[i : i + batch_size]
        width = max(len(e) for e in enc)
        ids = torch.full((len(enc), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, e in enumerate(enc):
            ids[row, width - len(e):], mask[row, width - len(e):] = e, 1
        gen = model.generate(ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens,
                             do_sample=temperature > 0, temperature=temperature or None, top_k=0, top_p=1.0,
                             pad_token_id=pad, eos_token_id=eos)[:, width:].cpu()
        for row, e in enumerate(enc):
            answer = gen[row]
            stop = (answer == eos).nonzero() if eos is not None else answer[:0]
            answer = answer[: int(stop[0]) + 1] if len(stop) else answer
            out.append({"ids": torch.cat([e, answer]), "start": len(e)})
    return out


@torch.no_grad()
def label(model, records: list[dict], batch_tokens: int = 4096, progress: bool = True) -> list[dict]:
    """Add the target's features [T, d] (bf16) and top-k probabilities at every position to each record."""
    order = sorted(range(len(records)), key=lambda i: len(records[i]["ids"]))
    bar = tqdm(total=sum(len(r["ids"]) for r in records), desc="teacher pass", unit="tok", disable=not progress)
    i = 0
    while i < len(order):
        n = max(1, min(len(order) - i, batch_tokens // max(1, len(records[order[i]]["ids"]))))
        group = [records[j] for j in order[i : i + n]]
        width = max(len(r["ids"]) for r in group)
        ids = torch.stack([torch.nn.functional.pad(r["ids"], (0, width - len(r["ids"])), value=0) for r in group])
        out = model(ids.to(model.device), output_hidden_states=True)
        feats = out.hidden_states[-1].to(torch.bfloat16).cpu()
        probs = out.logits.float().softmax(-1)
        top = probs.topk(TOP_K, dim=-1)
        for row, r in enumerate(group):
            T = len(r["ids"])
            r["features"] = feats[row, :T].clone()
            r["top_p"] = top.values[row, :T].to(torch.float16).cpu()
            r["top_ids"] = top.indices[row, :T].to(torch.int32).cpu()
            bar.update(T)
        i += n
    bar.close()
    return records


def save_shard(records: list[dict], path: Path) -> None:
    """Write records to one .pt shard (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(records, tmp)
    tmp.rename(path)


def load_shards(folder: Path) -> list[dict]:
    """All records of every shard in a folder, in name order."""
    records = []
    for shard in sorted(Path(folder).glob("shard-*.pt")):
        records.extend(torch.load(shard, weights_only=False))
    return records

