"""The main job on the embedded default: AR vs speculative sampling vs SpecTr on three prompts, side by side."""
from __future__ import annotations

import argparse
import time

import torch

DEMO_PROMPTS = [
    {"category": "stem", "prompt": "Explain in three sentences why the sky is blue."},
    {"category": "writing", "prompt": "Write a short, friendly email inviting a colleague to lunch on Friday."},
    {"category": "coding", "prompt": "How do I read a CSV file in Python and print the first five rows?"},
]


def main(argv: list[str] | None = None) -> None:
    """Load the embedded pair, show one SpecTr answer, then print the comparison table."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.tools.demo", description=__doc__)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--k", type=int, default=4, help="drafts per round for SpecTr")
    ap.add_argument("--L", type=int, default=4, help="draft length")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from transformers.utils import logging

    from .bench import Config, run, table
    from ..engine.decoder import generate
    from ..models.load import load_pair

    logging.disable_progress_bar()
    t0 = time.perf_counter()
    pair = load_pair(device=args.device)
    print(f"loaded {pair!r} in {time.perf_counter() - t0:.1f} s")
    g = generate(pair, DEMO_PROMPTS[0]["prompt"], method="kseq", k=args.k, L=args.L,
                 max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    print(f"\nuser: {DEMO_PROMPTS[0]['prompt']}\nassistant (SpecTr, k={args.k}, L={args.L}): {g.text}\n")
    configs = [Config("ar"), Config("sps", 1, args.L), Config("kseq", args.k, args.L)]
    results = run(pair, DEMO_PROMPTS, configs, args.max_new_tokens, args.temperature, args.seed)
    print(f"{len(DEMO_PROMPTS)} prompts, T = {args.temperature}, up to {args.max_new_tokens} new tokens each, "
          f"{pair.device} {str(pair.dtype).replace('torch.', '')}, {torch.get_num_threads()} threads:\n")
    print(table(results, baseline="ar"))


if __name__ == "__main__":
    main()
