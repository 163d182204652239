"""Timing helpers shared by the measurement tools: one median-of-n, and the cost of a draft step measured
through the Drafter protocol (so a new draft type needs nothing here)."""
from __future__ import annotations

import time
from typing import Callable

import torch

from ..engine.drafters import make_drafter
from ..engine.verifiers import make_verifier
from ..models.load import ModelPair
from ..theory.dists import warp


def median_seconds(fn: Callable[[], object], repeat: int = 7, warmup: int = 2) -> float:
    """Median wall-clock seconds of fn() over `repeat` runs, after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def draft_step_seconds(pair: ModelPair, context: torch.Tensor, k: int, repeat: int = 7) -> float:
    """Seconds of one batched draft step at batch k on top of a warm cache of `context` [T] (ms-scale): the
    difference of drafting L = 2 and L = 1 (each followed by the roll-back), medians of `repeat` runs."""
    drafter = make_drafter(pair.draft, pair.vocab_size)
    target = make_verifier(pair.target, pair.vocab_size, need_features=drafter.needs_features, tree=False)
    drafter.prefill(context, target.prefill(context))
    gen = torch.Generator(device=pair.device).manual_seed(0)
    d = pair.target.config.hidden_size

    def round_(L: int) -> None:
        tokens, _ = drafter.draft(k, L, warp, gen)
        drafter.commit(tokens, 0, 0, tokens[0, 0], torch.zeros(1, d, device=pair.device, dtype=pair.dtype))

    return max(0.0, median_seconds(lambda: round_(2), repeat) - median_seconds(lambda: round_(1), repeat))
