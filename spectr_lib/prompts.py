"""Prompts: chat-template encoding and the prompt files (the project's own, or Spec-Bench style JSONL)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .paths import DATA_DIR, SPEC_BENCH



def encode_chat(tokenizer, prompt: str) -> torch.Tensor:
    """Token ids [T] of a user prompt wrapped in the model's chat template (ready for the answer)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the prompt is empty: give a non-empty string or a non-empty list of token ids")
    if tokenizer is None:
        raise ValueError("this pair has no tokenizer (e.g. tiny_pair()): pass the prompt as token ids")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    return ids[0]


def read_prompts(path: str | Path | None = None, split: str = "eval") -> list[dict]:
    """Prompt records {id, category, prompt} from a JSONL file (first turn of Spec-Bench style records)."""
    path = Path(path) if path is not None else DATA_DIR / "prompts" / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"prompts file {path} not found: give --prompts PATH to a JSONL file")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        obj = json.loads(line)
        text = obj.get("prompt") or (obj.get("turns") or [None])[0]
        if not text:
            raise ValueError(f"{path}:{n}: a record needs 'prompt' or 'turns' (a list of user messages)")
        records.append({"id": obj.get("question_id", obj.get("id", n)), "category": obj.get("category", "all"),
                        "prompt": text})
    return records


def first_per_category(records: list[dict], n: int, skip: int = 0) -> list[dict]:
    """Records skip + 1 … skip + n of each category, in file order (skip: leave out prompts used elsewhere)."""
    counts: dict[str, int] = {}
    out = []
    for r in records:
        seen = counts.get(r["category"], 0)
        counts[r["category"]] = seen + 1
        if skip <= seen < skip + n:
            out.append(r)
    return out
