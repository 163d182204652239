"""Distillation data: on-policy chat answers sampled from the target, then its features and soft labels.

A shard holds, per sequence: the token ids (prompt + answer), where the answer starts, the target's hidden
states at every position (what a feature draft reads), and the target's top-k next-token probabilities.
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


def length_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices of `lengths` in batches of similar length (shortest first) whose padded size, rows × longest
    row, stays within `batch_tokens` (a row longer than that goes alone). The padded size is what a forward
    pass allocates: logits alone take 4 · V bytes per position (~200 KB for a 49 k vocabulary)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, batch = [], []
    for i in order:  # ascending: the row being added is the batch's longest
        if batch and (len(batch) + 1) * lengths[i] > batch_tokens:
            batches.append(batch)
            batch = []
        batch.append(i)
    return batches + [batch] if batch else batches


@torch.no_grad()
def label(model, records: list[dict], layers=(-1,), batch_tokens: int = 4096, progress: bool = True) -> list[dict]:
    """Add the target's features [T, n·d] (bf16: hidden_states at `layers`, concatenated; default the last) and
    its top-k next-token probabilities (float32 head) at every position to each record."""
    from ..models.heads import OutputHead

    head = OutputHead(model, model.config.vocab_size)  # float32 labels
    bar = tqdm(total=sum(len(r["ids"]) for r in records), desc="teacher pass", unit="tok", disable=not progress,
               leave=False)
    for batch in length_batches([len(r["ids"]) for r in records], batch_tokens):
        group = [records[j] for j in batch]
        width = max(len(r["ids"]) for r in group)
        ids = torch.stack([torch.nn.functional.pad(r["ids"], (0, width - len(r["ids"])), value=0) for r in group])
        logits, feats = head(ids.to(model.device), None, layers=layers)  # right padding: no effect on real rows
        top = logits.softmax(-1).topk(min(TOP_K, logits.shape[-1]), dim=-1)
        for row, r in enumerate(group):
            T = len(r["ids"])
            r["features"] = feats[row, :T].to(torch.bfloat16).cpu().clone()
            r["top_p"] = top.values[row, :T].to(torch.float16).cpu()
            r["top_ids"] = top.indices[row, :T].to(torch.int32).cpu()
            bar.update(T)
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

