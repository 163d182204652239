"""The draft's temperature per draft count, measured on the project's own held-out prompts and stored with the draft.

`python -m spectr_lib.tools.draft_temperature --draft data/models/smollm2-draft-fused [--write]`

A draft trained to match p can be under- or over-confident, and what is best for one draft is not what is best for
k i.i.d. drafts (K-SEQ gains from drafts that differ). With τ, rounds of k drafts sample them from
softmax(logits / (τ·T)); any τ keeps the output law exact, since every rule verifies against the q the drafts
came from. This tool scores a grid of τ for each k by token-level acceptance (k = 1: Σ min(p, q); k > 1: K-SEQ's
acceptance, `theory.kseq.kseq_acceptance`) at every position of the target's answers to the corpus' held-out
prompts (never a benchmark's), teacher-forced (the draft's first step), and prints the table. `--write` stores
the best τ of each k in the draft folder's spectr_draft.json (`draft_temperature`, read by `generate`). The
draft's own current table is ignored while measuring: every τ is applied to the raw logits.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..theory.dists import warp
from ..theory.kseq import kseq_acceptance
from ..argtypes import SEED, count, real
from ..files import write_text

TAUS = (0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.1, 1.2)
KS = (1, 2, 4, 8)


def measure(pair, prompts: list[dict] | None = None, ks=KS, taus=TAUS, temperature: float = 1.0,
            max_new_tokens: int = 96, seed: int = 1234, recs: list[dict] | None = None) -> dict:
    """{"positions": n, "acceptance": {k: {τ: mean acceptance per position}}} over the target's answers to the
    prompts (records with a "prompt"; or pass `recs`, {"ids" [T], "start"} each, as `acceptance.continuations`
    makes them), at the target temperature `temperature`."""
    from .acceptance import answer_logits, continuations

    recs = recs if recs is not None else continuations(pair, prompts, temperature, max_new_tokens, seed)
    sums = {k: {tau: 0.0 for tau in taus} for k in ks}
    n = 0
    for rec in tqdm(recs, desc="draft temperature"):
        if len(rec["ids"]) <= rec["start"]:
            continue
        p, q_logits = answer_logits(pair, rec, temperature)
        q_logits = q_logits.cpu()
        n += len(p)
        for tau in taus:
            q = warp(q_logits / tau, temperature)
            for k in ks:
                sums[k][tau] += float(kseq_acceptance(p, q, k).sum())
    return {"positions": n, "acceptance": {k: {tau: v / max(n, 1) for tau, v in row.items()} for k, row in sums.items()}}


MIN_GAIN = 0.002  # a τ other than 1 is kept only when it beats τ = 1 by this much acceptance per position


def best(result: dict, min_gain: float = MIN_GAIN) -> dict[int, float]:
    """For each k, the τ with the highest acceptance, or 1 when that is not at least `min_gain` above τ = 1's
    (a sample of a few thousand positions does not resolve smaller differences)."""
    out = {}
    for k, row in result["acceptance"].items():
        top = max(row, key=row.get)
        out[k] = top if row[top] >= row.get(1.0, float("-inf")) + min_gain else 1.0
    return out


def write(folder: Path, table: dict[int, float]) -> None:
    """Store {k: τ} as spectr_draft.json's draft_temperature (τ = 1 entries left out), atomically."""
    from ..models.draft_files import CONFIG_NAME

    path = Path(folder) / CONFIG_NAME
    meta = json.loads(path.read_text())
    meta["draft_temperature"] = {str(k): tau for k, tau in sorted(table.items()) if tau != 1.0}
    write_text(path, json.dumps(meta, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Measure the grid on held-out prompts, print it, optionally write the best τ per k into the draft folder."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.tools.draft_temperature", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draft", required=True, type=Path, help="a spectr_lib draft folder (spectr_draft.json)")
    ap.add_argument("--per-category", type=count(1), default=4, help="held-out prompts per category")
    ap.add_argument("--temperature", type=real(0, exclusive=True), default=1.0)
    ap.add_argument("--max-new-tokens", type=count(1), default=96)
    ap.add_argument("--seed", type=SEED, default=1234)
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    ap.add_argument("--write", action="store_true", help="store the best τ per k in the draft's spectr_draft.json")
    args = ap.parse_args(argv)
    from ..models.draft_files import read_draft_config

    if not args.draft.is_dir() or read_draft_config(args.draft) is None:
        ap.error(f"--draft {args.draft}: not a spectr_lib draft folder (it needs spectr_draft.json)")
    if args.per_category < 1 or args.max_new_tokens < 1 or not 0 < args.temperature < float("inf"):
        ap.error("--per-category and --max-new-tokens must be at least 1, --temperature a finite number > 0")
    from ..distill import corpus
    from ..models.load import load_pair
    from .draft_eval import first_per_category

    pair = load_pair(draft=str(args.draft))
    pair.draft_settings = pair.draft_settings.replace(temperatures={})  # measure the raw logits
    prompts = first_per_category(corpus.read(corpus.CORPUS_FILE, "heldout"), args.per_category)
    result = measure(pair, prompts, temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)
    print(f"{pair!r}: {len(prompts)} held-out prompts, {result['positions']} positions, T = {args.temperature}")
    print("| k | " + " | ".join(f"τ = {tau}" for tau in TAUS) + " | best |")
    print("|---" * (len(TAUS) + 2) + "|")
    chosen = best(result)
    for k, row in result["acceptance"].items():
        print(f"| {k} | " + " | ".join(f"{v:.4f}" for v in row.values()) + f" | {chosen[k]} |")
    if args.out:
        write_text(args.out, json.dumps({"pair": repr(pair), "prompts": len(prompts), "temperature": args.temperature,
                                        **result, "best": chosen}, indent=1))
    if args.write:
        write(args.draft, chosen)
        print(f"wrote draft_temperature {json.dumps({str(k): t for k, t in chosen.items() if t != 1.0})} to {args.draft}")


if __name__ == "__main__":
    main()
