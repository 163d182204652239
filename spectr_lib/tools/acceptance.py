"""Token-level acceptance of the draft per prompt category, on answers the target samples (one measurement for
the benchmark and the draft evaluation)."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..engine.acceptance import next_token_logits
from ..engine.drafters import draft_warp
from ..engine.lookup import mix_along
from ..models.load import ModelPair
from ..prompts import encode_chat, sample_answers
from ..theory.dists import warp
from ..theory.kseq import kseq_acceptance


def continuations(pair: ModelPair, prompts: list[dict], temperature: float, max_new_tokens: int, seed: int) -> list[dict]:
    """{"ids": prompt + answer [T], "start"} per prompt: the target's answers (first turn, chat template)."""
    enc = [encode_chat(pair.tokenizer, r["prompt"]) for r in prompts]
    answers = sample_answers(pair.target, enc, pair.tokenizer.eos_token_id, max_new_tokens, temperature, 1.0, 16, seed)
    return [{"ids": torch.cat([e, a]), "start": len(e)} for e, a in zip(enc, answers)]


def answer_logits(pair: ModelPair, rec: dict, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For the answer of rec = {"ids" [T], "start"} (`continuations`): the target's p [n, V] at `temperature`
    (on the CPU) and the draft's raw logits [n, V] (on the model's device) of each answer token, n = T − start
    (teacher forcing: the draft's first drafting step at every position)."""
    p_logits, q_logits = next_token_logits(pair, rec["ids"])
    return warp(p_logits, temperature)[rec["start"] - 1 : -1].cpu(), q_logits[rec["start"] - 1 : -1]


def acceptance_by_category(pair: ModelPair, prompts: list[dict], temperature: float, max_new_tokens: int,
                           seed: int, ks=(1, 4), recs: list[dict] | None = None, lookup: bool = False) -> dict:
    """Mean per-position overlap (k = 1) and K-SEQ acceptance for each k, per category and overall, along the
    target's answers (`continuations`; pass `recs` to reuse them for several drafts), each k's q at the draft
    temperature `generate` uses for k drafts (the draft's own τ); lookup=True: the draft's q mixed with prompt
    lookup (engine/lookup.py)."""
    recs = recs if recs is not None else continuations(pair, prompts, temperature, max_new_tokens, seed)
    sums: dict[str, dict] = {}
    taus = {k: pair.draft_settings.tau(k) for k in ks}
    for rec, r in tqdm(list(zip(recs, prompts)), desc=f"acceptance T={temperature}"):
        if len(rec["ids"]) <= rec["start"]:
            continue
        p, q_logits = answer_logits(pair, rec, temperature)
        qs = {}
        for k, tau in taus.items():
            if tau not in qs:
                q = draft_warp(lambda x: warp(x, temperature), tau)(q_logits)
                if lookup:  # the answer's positions only (the prompt's are not scored)
                    q = mix_along(q, rec["ids"].to(q.device), rec["start"] - 1)
                qs[tau] = q.cpu()
        for cat in (r["category"], "overall"):
            s = sums.setdefault(cat, {"positions": 0, **{f"k{k}": 0.0 for k in ks}})
            s["positions"] += len(p)
            for k in ks:
                s[f"k{k}"] += float(kseq_acceptance(p, qs[taus[k]], k).sum())
    return {c: {"positions": s["positions"], **{key: v / s["positions"] for key, v in s.items() if key != "positions"}}
            for c, s in sums.items()}
