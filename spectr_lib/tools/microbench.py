"""Micro-benchmark: what selecting the path of one K = 8, L = 8 round costs next to the target's forward passes.

Three numbers, measured in one run: selection inside real decoding (`generate` on the embedded pair, seconds of
selection per round, warping of p included), a synthetic worst case (ρ* solved eagerly at each of the L
positions, as if every round reached the end), and the target's forward call for 1 and K(L + 1) tokens.
"""
from __future__ import annotations

import argparse
import time

import torch

from ..theory.selection import _pass_probabilities, draw_drafts
from .timing import median_seconds
from ..argtypes import count

PROMPTS = ("List three uses of a paperclip.", "Describe a quiet morning in a small harbour town.",
           "What does a compiler do? Answer in two sentences.")


def kseq_round_seconds(p: torch.Tensor, q: torch.Tensor, k: int, repeat: int = 5) -> float:
    """Worst case: seconds for L eager K-SEQ pass-probability computations (p, q: [L, V]), ρ* solved at every
    position with k shrinking as drafts drop out (what a round costs if it never stops early)."""
    g = torch.Generator(device=p.device).manual_seed(0)
    drafts = draw_drafts("kseq", q, k, generator=g)

    def run():
        for i in range(p.shape[0]):
            _pass_probabilities("kseq", p[i : i + 1], q[i : i + 1], drafts[i : i + 1, : max(1, k >> i)])

    return median_seconds(run, repeat)


def decoding_select_seconds(pair, k: int, L: int, max_new_tokens: int = 64) -> tuple[float, int]:
    """Seconds of selection per round (warping p included, and since the lazy verification head the target
    head's float32 rows selection reads) in real K-SEQ decoding at T = 1, and rounds seen."""
    from ..engine.decoder import generate

    seconds = rounds = 0
    for i, prompt in enumerate(PROMPTS):
        s = generate(pair, prompt, method="kseq", k=k, L=L, max_new_tokens=max_new_tokens, seed=i,
                     lookup=False).stats  # selection alone, as the committed figures measured it
        seconds, rounds = seconds + s.seconds_select, rounds + sum(s.accepted_hist)
    return seconds / max(1, rounds), rounds


def main(argv: list[str] | None = None) -> None:
    """Print K-SEQ's selection cost next to the embedded target's forward passes, as ratios measured in one run."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.tools.microbench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=count(1), default=8)
    ap.add_argument("--L", type=count(1), default=8)
    ap.add_argument("--context", type=count(1), default=256)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    from transformers.utils import logging

    from ..models import hf_cache
    from ..models.load import load_pair

    logging.disable_progress_bar()
    pair = load_pair(device=args.device)
    model, dev = pair.target, pair.device
    torch.manual_seed(0)
    ctx = torch.randint(100, 20000, (1, args.context), device=dev)
    n = args.k * (args.L + 1)
    block = torch.randint(100, 20000, (1, n), device=dev)
    with torch.no_grad():
        cache = hf_cache.new_cache()
        hf_cache.forward(model, ctx, cache)

        def forward(tokens) -> float:
            start = time.perf_counter()
            hf_cache.forward(model, tokens, cache)
            elapsed = time.perf_counter() - start
            hf_cache.crop(cache, args.context)
            return elapsed

        t_one = sorted(forward(block[:, :1]) for _ in range(7))[3]  # medians: forward() times itself, crop excluded
        t_block = sorted(forward(block) for _ in range(7))[3]
        logits = hf_cache.forward(model, block, cache).logits[0, : args.L].double()
    p = logits.softmax(-1)
    q = (logits * 0.8 + torch.randn_like(logits)).softmax(-1)  # a plausible draft: blurred, perturbed target
    t_worst = kseq_round_seconds(p, q, args.k)
    t_select, rounds = decoding_select_seconds(pair, args.k, args.L)
    print(f"vocabulary {p.shape[-1]}, K = {args.k}, L = {args.L}, context {args.context}, {dev}, target in "
          f"{model.dtype}, {torch.get_num_threads()} threads")
    print(f"target forward, 1 token:                  {t_one * 1e3:8.2f} ms")
    print(f"target forward, K(L+1) = {n} tokens:       {t_block * 1e3:8.2f} ms")
    print(f"selection per round in decoding ({rounds} rounds): {t_select * 1e3:8.2f} ms = {t_select / t_one:.1%} of a 1-token call")
    print(f"worst case, ρ* solved at all L positions: {t_worst * 1e3:8.2f} ms = {t_worst / t_one:.1%} of a 1-token call")


if __name__ == "__main__":
    main()
