"""Every verification form (engine/verifiers.VERIFIERS: the batch form, the prefix-tree form, ...) measured side by
side: `python -m spectr_lib.tools.bench_verify`."""
from __future__ import annotations

import argparse

import torch
from tqdm.auto import tqdm

from ..engine.decoder import generate
from ..engine.verifiers import VERIFIERS
from ..prompts import encode_chat, read_prompts
from ..argtypes import count


def compare(pair, prompts: list[dict], configs, max_new_tokens: int, seed: int = 0) -> list[dict]:
    """Tokens/s and block efficiency of each (k, L) with every registered form, interleaved prompt by prompt."""
    rows = {(k, L, form): {"k": k, "L": L, "form": form, "tokens": 0, "seconds": 0.0, "calls": 0}
            for k, L in configs for form in VERIFIERS}
    for i, rec in enumerate(tqdm(prompts, desc="verification forms")):
        ids = encode_chat(pair.tokenizer, rec["prompt"]).to(pair.device)
        for key, row in rows.items():
            s = generate(pair, ids, method="kseq", k=key[0], L=key[1], max_new_tokens=max_new_tokens, seed=seed + i, verify=key[2],
                         lookup=False).stats  # the verification forms alone
            row["tokens"] += s.new_tokens
            row["calls"] += s.target_calls
            row["seconds"] += s.seconds_total - s.seconds_prefill
    return list(rows.values())


def main(argv: list[str] | None = None) -> None:
    """Print the comparison as a table."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.tools.bench_verify", description=__doc__)
    ap.add_argument("--limit", type=count(1), default=6)
    ap.add_argument("--max-new-tokens", type=count(1), default=64)
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
    forms = list(VERIFIERS)
    print(f"\n{where}, {pair.dtype}: K-SEQ tokens/s by verification form\n| k | L | " + " | ".join(forms)
          + " | " + " | ".join(f"{f} / {forms[0]}" for f in forms[1:]) + " |\n" + "|---" * (2 * len(forms) + 1) + "|")
    for k, L in [(4, 4), (8, 4), (8, 8)]:
        tps = [next(r["tokens"] / r["seconds"] for r in rows if (r["k"], r["L"], r["form"]) == (k, L, f)) for f in forms]
        print(f"| {k} | {L} | " + " | ".join(f"{t:.1f}" for t in tps) + " | "
              + " | ".join(f"{t / tps[0]:.2f}×" for t in tps[1:]) + " |")


if __name__ == "__main__":
    main()
