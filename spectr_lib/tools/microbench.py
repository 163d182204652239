"""Micro-benchmark: K-SEQ selection for one K = 8, L = 8 round on the real vocabulary vs target forwards."""
from __future__ import annotations

import argparse
import time

import torch

from ..theory.selection import draw_drafts, sample
from .timing import median_seconds


def kseq_round_seconds(p: torch.Tensor, q: torch.Tensor, k: int, repeat: int = 5) -> float:
    """Seconds for L successive K-SEQ selections (p, q: [L, V]) with k shrinking as drafts drop out."""
    g = torch.Generator(device=p.device).manual_seed(0)
    drafts = draw_drafts("kseq", q, k, generator=g)

    def run():
        for i in range(p.shape[0]):
            sample("kseq", p[i : i + 1], q[i : i + 1], drafts[i : i + 1, : max(1, k >> i)], generator=g, check=False)

    return median_seconds(run, repeat)


def main(argv: list[str] | None = None) -> None:
    """Print K-SEQ's cost next to the embedded target's forward passes, as ratios measured in one run."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--L", type=int, default=8)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    from transformers.utils import logging

    from ..engine import hf_cache
    from ..models.load import load_target

    logging.disable_progress_bar()
    model, _ = load_target(device=args.device)
    dev = model.device
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
    t_kseq = kseq_round_seconds(p, q, args.k)
    V = p.shape[-1]
    print(f"vocabulary {V}, K = {args.k}, L = {args.L}, context {args.context}, {dev}, target in {model.dtype}")
    print(f"K-SEQ for one round (L selections):      {t_kseq * 1e3:8.2f} ms")
    print(f"target forward, 1 token:                 {t_one * 1e3:8.2f} ms   ratio K-SEQ / forward = {t_kseq / t_one:.1%}")
    print(f"target forward, K(L+1) = {n} tokens:      {t_block * 1e3:8.2f} ms   ratio K-SEQ / forward = {t_kseq / t_block:.1%}")


if __name__ == "__main__":
    main()
