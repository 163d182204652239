"""The main job on the embedded default: AR, SpS, block verification, SpecTr and RRS with their auto (k, L)
on three prompts, side by side, with the cost model's predicted speed next to the measured one."""
from __future__ import annotations

import argparse
import time

import torch

from ..argtypes import SEED, TEMPERATURE, count

DEMO_PROMPTS = [
    {"category": "stem", "prompt": "Explain in three sentences why the sky is blue."},
    {"category": "writing", "prompt": "Write a short, friendly email inviting a colleague to lunch on Friday."},
    {"category": "coding", "prompt": "How do I read a CSV file in Python and print the first five rows?"},
]


def main(argv: list[str] | None = None) -> None:
    """Load the embedded pair, calibrate its costs once (cached), show one SpecTr answer, print the comparison."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.tools.demo", description=__doc__)
    ap.add_argument("--max-new-tokens", type=count(1), default=96)
    ap.add_argument("--temperature", type=TEMPERATURE, default=1.0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=SEED, default=0)
    ap.add_argument("--recalibrate", action="store_true", help="measure the cost model again")
    args = ap.parse_args(argv)
    from transformers.utils import logging

    from .bench import run
    from .bench_results import Config, table
    from ..engine.decoder import generate, pair_costs
    from ..engine.inputs import lookup_arg
    from ..engine.verifiers import default_form
    from ..models.load import load_pair

    logging.disable_progress_bar()
    t0 = time.perf_counter()
    pair = load_pair(device=args.device)
    print(f"loaded {pair!r} in {time.perf_counter() - t0:.1f} s")
    costs = pair_costs(pair, recalibrate=args.recalibrate)
    print(f"cost model: one autoregressive token {costs.ar_ms:.1f} ms, a draft step {costs.draft(1):.1f} ms, "
          f"verifying 1 + 4·4 positions {costs.target(4, 4, default_form(pair.device)):.1f} ms")
    g = generate(pair, DEMO_PROMPTS[0]["prompt"], method="kseq", k="auto", L="auto",
                 max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed, costs=costs)
    print(f"\nuser: {DEMO_PROMPTS[0]['prompt']}\nassistant (SpecTr, k and L auto): {g.text}\n")
    configs = [Config("ar"), Config("sps", 1, "auto"), Config("block", 1, "auto"), Config("kseq", "auto", "auto"),
               Config("rrs", "auto", "auto")]
    results = run(pair, DEMO_PROMPTS, configs, args.max_new_tokens, args.temperature, args.seed)
    print(f"{len(DEMO_PROMPTS)} prompts, T = {args.temperature}, up to {args.max_new_tokens} new tokens each, "
          f"{pair.device} {str(pair.dtype).replace('torch.', '')}, {torch.get_num_threads()} threads:\n")
    print(table(results, baseline="ar"))
    print("\n'auto' picks each round's (k, L) from the cost model calibrated on this machine, corrected by the "
          "acceptance and the time of the rounds seen so far; 'plain' rounds are target steps without drafts, taken "
          "when drafting cannot pay here."
          + (" '+lookup': the draft's q is mixed with prompt lookup, this draft's default (generate(lookup=False) "
             "turns it off)." if lookup_arg(pair, None) else ""))


if __name__ == "__main__":
    main()
