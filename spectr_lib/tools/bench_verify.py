"""Batch form vs prefix-tree form of verification, measured side by side: `python -m spectr_lib.tools.bench_verify`."""
from __future__ import annotations

import argparse

import torch
from tqdm.auto import tqdm

from ..engine.decoder import generate
from ..prompts import encode_chat, read_prompts


def compare(pair, prompts: list[dict], configs, max_new_tokens: int, seed: int = 0) -> list[dict]:
    """Tokens/s and block efficiency of each (k, L) with both forms, interleaved prompt by prompt."""
    rows = {(k, L, tree): {"k": k, "L": L, "tree": tree, "tokens": 0, "seconds": 0.0, "calls": 0}
            for k, L in configs for tree in (False, True)}
    for i, rec in enumerate(tqdm(prompts, desc="verification forms")):
        ids = encode_chat(pair.tokenizer, rec["prompt"]).to(pair.device)
        for key, row in rows.items():
            s = generate(pair, ids, method="kseq", k=key[0], L=key[1], max_new_tokens=max_new_tokens, seed=seed + i, tree=key[2],
                         lookup=False).stats  # the verification forms alone
            row["tokens"] += s.new_tokens
            row["calls"] += s.target_calls
            row["seconds"] += s.seconds_total - s.seconds_prefill
    return list(rows.values())


def main(argv: list[str] | None = None) -> None:
    """Print the comparison as a table."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.tools.bench_verify", description=__doc__)
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                    help="default: the library's for the device")
    ap.add_argument("--prompts", default=None, help="JSONL prompts (default: the project's own)")
    args = ap.parse_args(argv)
    from transformers.utils import logging

    from ..models.load import load_pair

    prompts = read_prompts(args.prompts)[: args.limit]  # a missing file is named before the models load
    logging.disable_progress_bar()
    pair = load_pair(device=args.device, dtype=args.dtype)
    rows = compare(pair, prompts, [(4, 4), (8, 4), (8, 8)], args.max_new_tokens)
    where = torch.cuda.get_device_name() if pair.device.type == "cuda" else "CPU"
    print(f"\n{where}, {pair.dtype}: K-SEQ tokens/s, batch form vs prefix tree\n| k | L | batch | tree | tree / batch |\n|---|---|---|---|---|")
    for k, L in [(4, 4), (8, 4), (8, 8)]:
        b, t = (next(r for r in rows if r["k"] == k and r["L"] == L and r["tree"] == tree) for tree in (False, True))
        tb, tt = b["tokens"] / b["seconds"], t["tokens"] / t["seconds"]
        print(f"| {k} | {L} | {tb:.1f} | {tt:.1f} | {tt / tb:.2f}× |")


if __name__ == "__main__":
    main()
