"""Prompts: chat-template encoding and the prompt files (the project's own, or Spec-Bench style JSONL)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .paths import DATA_DIR



def is_chat(x) -> bool:
    """True for a non-empty list of chat messages (dicts), the form Hugging Face pipelines take."""
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(m, dict) for m in x)


CHAT_ROLES = ("system", "user", "assistant", "tool")


def check_text(text: str, what: str = "the prompt") -> str:
    """text, if every character of it can be written as UTF-8 (ValueError naming the first one that cannot, e.g. a
    lone surrogate "\\ud800" left by a bad decode, before any tokenizer or model sees it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"{what} holds {text[err.start]!r} at character {err.start}, which is not valid Unicode text "
                         f"(a lone surrogate, often left by decoding bytes with errors='surrogateescape'): fix or "
                         f"drop it") from None
    return text


def encode_chat(tokenizer, prompt, continue_final_message: bool = False) -> torch.Tensor:
    """Token ids [T] of a user prompt (a string) or a conversation (a list of {"role", "content"} messages:
    system, user and assistant turns) in the model's chat template, ready for the answer. By default a
    conversation that ends in an assistant message gets a new assistant turn after it; continue_final_message=True
    continues that message instead, its turn left open (`apply_chat_template(..., continue_final_message=True)`,
    the default of Hugging Face's text-generation pipeline for such a chat). As in `apply_chat_template`,
    special-token text inside a message (e.g. "<|im_end|>") becomes the special token itself, so user text can
    close a turn; an empty system message is kept (in SmolLM2's template it replaces the default system prompt).
    ValueError for an empty prompt or user / assistant / tool content, text that is not valid Unicode, an unknown
    role, or continue_final_message=True for a prompt that does not end in an assistant message; TypeError for
    another kind of prompt or a continue_final_message that is not a bool."""
    if tokenizer is None:
        raise ValueError("this pair has no tokenizer (e.g. tiny_pair()): pass the prompt as token ids")
    if not isinstance(continue_final_message, bool):
        raise TypeError(f"continue_final_message must be True or False, got {continue_final_message!r}")
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("the prompt is empty: give a non-empty string or a non-empty list of token ids")
        messages = [{"role": "user", "content": check_text(prompt)}]
    elif is_chat(prompt):
        for i, m in enumerate(prompt):
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError(f"chat message {i} must have a string 'role' and a string 'content', got {m!r}")
            if m["role"] not in CHAT_ROLES:
                raise ValueError(f"chat message {i} has role {m['role']!r}: use one of {', '.join(CHAT_ROLES)}")
            if not m["content"].strip() and m["role"] != "system":  # an empty system message replaces a template's default
                raise ValueError(f"chat message {i} ({m['role']}) has empty content: give it text or leave the message out")
            check_text(m["content"], f"chat message {i}")
        messages = list(prompt)
    else:
        raise TypeError(f"a chat prompt is a string or a list of {{'role', 'content'}} messages, got {type(prompt).__name__}")
    if continue_final_message and messages[-1]["role"] != "assistant":
        raise ValueError(f"continue_final_message=True continues a final assistant message, but the prompt ends with "
                         f"a {messages[-1]['role']} message: end the chat with {{'role': 'assistant', 'content': ...}} "
                         f"or leave continue_final_message False")
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=not continue_final_message,
                                        continue_final_message=continue_final_message, return_tensors="pt",
                                        return_dict=True)["input_ids"]
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


@torch.no_grad()
def sample_answers(model, prompts: list[torch.Tensor], eos: int | None, max_new_tokens: int, temperature: float = 1.0,
                   top_p: float = 1.0, batch_size: int = 16, seed: int | None = None, progress: bool = True) -> list[torch.Tensor]:
    """One answer [≤ max_new_tokens] per encoded prompt [T_i], sampled from `model` with Hugging Face `generate`
    (batches left-padded; temperature 0 is greedy). EOS is kept, nothing after it. Prompts of similar length
    should be batched together by the caller: padding costs compute."""
    if seed is not None:
        torch.manual_seed(seed)
    pad = 0 if eos is None else eos
    out = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="sampling answers", disable=not progress):
        enc = prompts[i : i + batch_size]
        width = max(len(e) for e in enc)
        ids = torch.full((len(enc), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, e in enumerate(enc):
            ids[row, width - len(e):], mask[row, width - len(e):] = e, 1
        sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=top_p) if temperature > 0 else dict(do_sample=False)
        gen = model.generate(ids.to(model.device), attention_mask=mask.to(model.device), max_new_tokens=max_new_tokens,
                             pad_token_id=pad, eos_token_id=eos, **sampling)[:, width:].cpu()
        for answer in gen:
            stop = (answer == eos).nonzero() if eos is not None else answer[:0]
            out.append(answer[: int(stop[0]) + 1] if len(stop) else answer)
    return out
