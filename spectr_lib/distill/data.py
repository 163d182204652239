"""Distillation data: on-policy chat answers sampled from the target, then its features and soft labels.

A shard holds, per sequence: the token ids (prompt + answer), where the answer starts, the target's last
hidden state at every position (what a feature draft reads), and the target's top-k next-token probabilities.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..prompts import sample_answers

TOP_K = 32


def answer_records(model, prompts: list[torch.Tensor], eos: int | None, max_new_tokens: int, temperature: float,
                   batch_size: int, seed: int, progress: bool = True) -> list[dict]:
    """Records {"ids": prompt + answer [T], "start": len(prompt)} with one sampled answer per encoded prompt."""
    answers = sample_answers(model, prompts, eos, max_new_tokens, temperature, 1.0, batch_size, seed, progress)
    return [{"ids": torch.cat([e, a]), "start": len(e)} for e, a in zip(prompts, answers)]


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

