"""Token-level acceptance of the draft per prompt category, on answers the target samples (one measurement for
the benchmark and the draft evaluation)."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..engine.acceptance import next_token_logits
from ..engine.drafters import draft_warp
from ..engine.lookup import mix_along
from ..models.load import ModelPair
from ..prompts import encode_chat, sample_answers
from ..theory.dists import warp
from ..theory.ot import optimal_acceptance
from ..theory.selection import RULES, draw_drafts, sample
from .timing import median_seconds


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


def answer_laws(pair: ModelPair, rec: dict, temperature: float, taus, lookup: bool):
    """p [n, V] of `answer_logits` and {τ: q [n, V]}: the draft's q at each draft temperature τ as `generate` draws
    it (mixed with prompt lookup along the answer when lookup=True), all on the CPU."""
    p, q_logits = answer_logits(pair, rec, temperature)
    qs = {}
    for tau in taus:
        q = draft_warp(lambda x: warp(x, temperature), tau)(q_logits)
        if lookup:  # the answer's positions only (the prompt's are not scored)
            q = mix_along(q, rec["ids"].to(q.device), rec["start"] - 1)
        qs[tau] = q.cpu()
    return p, qs


def selection_ms(pair: ModelPair, recs: list[dict], temperature: float, rules, ks, positions: int = 64,
                 lookup: bool = False, seed: int = 0) -> dict:
    """{rule: {k: median ms}} of one decision at one position, as the decoder takes it (`selection.sample` on one
    row, float64 on the CPU, drafts freshly drawn from the rule's law), over the first `positions` answer positions
    of `recs` (`continuations`), each k's q as `rule_acceptance_by_category` has it (the median of 3 calls per
    position). Run it on an idle machine."""
    taus = {k: pair.draft_settings.tau(k) for k in ks}
    laws, n = [], 0
    for rec in recs:
        if n >= positions or len(rec["ids"]) <= rec["start"]:
            continue
        p, qs = answer_laws(pair, rec, temperature, set(taus.values()), lookup)
        laws.append((p[: positions - n].double(), {t: q[: positions - n].double() for t, q in qs.items()}))
        n += len(laws[-1][0])
    g = torch.Generator().manual_seed(seed)
    out = {}
    for rule in rules:
        out[rule] = {}
        for k in (k for k in ks if RULES[rule].k in (None, k)):
            times = []
            for p, qs in laws:
                q = qs[taus[k]]
                for i in range(len(p)):
                    drafts = draw_drafts(rule, q[i : i + 1], k, g)
                    times.append(median_seconds(lambda: sample(rule, p[i : i + 1], q[i : i + 1], drafts, g, check=False),
                                                repeat=3, warmup=1))
            out[rule][k] = 1e3 * float(np.median(times))
    return out


def acceptance_by_category(pair: ModelPair, prompts: list[dict], temperature: float, max_new_tokens: int,
                           seed: int, ks=(1, 4), recs: list[dict] | None = None, lookup: bool = False) -> dict:
    """Mean per-position overlap (k = 1) and K-SEQ acceptance for each k, per category and overall, along the
    target's answers (`continuations`; pass `recs` to reuse them for several drafts), each k's q at the draft
    temperature `generate` uses for k drafts (the draft's own τ); lookup=True: the draft's q mixed with prompt
    lookup (engine/lookup.py)."""
    out = rule_acceptance_by_category(pair, prompts, temperature, max_new_tokens, seed, ("kseq",), ks, recs, lookup,
                                      alpha=False)
    return {c: {"positions": v["positions"], **{f"k{k}": a for k, a in v["kseq"].items()}} for c, v in out.items()}


def rule_acceptance_by_category(pair: ModelPair, prompts: list[dict], temperature: float, max_new_tokens: int,
                                seed: int, rules=("sampled", "sps", "kseq", "rrs", "optimal"), ks=(1, 2, 4, 8),
                                recs: list[dict] | None = None, lookup: bool = False, alpha: bool = True) -> dict:
    """Exact acceptance P(output ∈ drafts) of each rule with a closed form (`Rule.closed_form`; a rule with one k
    only at that k) for each k, and the optimum α*(p, q^⊗k) of i.i.d. drafts (alpha=True), averaged over the
    positions of the target's answers (`continuations`), per category and overall: {category: {"positions": n,
    rule: {k: mean}, "alpha": {k: mean}}}. q: the draft's at its τ for k drafts, as `generate` draws them (mixed
    with prompt lookup when lookup=True). No Monte Carlo: every value is the exact expectation at each position.
    ValueError for a rule without a closed form."""
    for rule in rules:
        if RULES[rule].closed_form is None:
            with_form = ", ".join(n for n, r in RULES.items() if r.closed_form is not None)
            raise ValueError(f"{rule!r} has no closed-form acceptance: choose among {with_form}")
    recs = recs if recs is not None else continuations(pair, prompts, temperature, max_new_tokens, seed)
    taus = {k: pair.draft_settings.tau(k) for k in ks}
    ks_of = {rule: [k for k in ks if RULES[rule].k in (None, k)] for rule in rules}
    sums: dict[str, dict] = {}
    for rec, r in tqdm(list(zip(recs, prompts)), desc=f"acceptance T={temperature}"):
        if len(rec["ids"]) <= rec["start"]:
            continue
        p, qs = answer_laws(pair, rec, temperature, set(taus.values()), lookup)
        values = {rule: {k: float(RULES[rule].closed_form(p, qs[taus[k]], k).sum()) for k in ks_of[rule]}
                  for rule in rules}
        if alpha:
            values["alpha"] = {k: float(optimal_acceptance(p, qs[taus[k]], k).sum()) for k in ks}
        for cat in (r["category"], "overall"):
            s = sums.setdefault(cat, {"positions": 0, **{name: dict.fromkeys(v, 0.0) for name, v in values.items()}})
            s["positions"] += len(p)
            for name, v in values.items():
                for k, x in v.items():
                    s[name][k] += x
    return {c: {"positions": s["positions"], **{name: {k: x / s["positions"] for k, x in v.items()}
                                                for name, v in s.items() if name != "positions"}}
            for c, s in sums.items()}
