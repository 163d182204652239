"""Timing helpers shared by the measurement tools: one median-of-n, and the cost of a draft step measured
through the Drafter protocol (so a new draft type needs nothing here)."""
from __future__ import annotations

from typing import Callable

import torch

from ..engine.calibration import draft_step_ms
from ..engine.costs import timed
from ..models.load import ModelPair


def median_seconds(fn: Callable[[], object], repeat: int = 7, warmup: int = 2) -> float:
    """Median wall-clock seconds of fn() over `repeat` runs, after `warmup` untimed runs."""
    return timed(fn, repeat, warmup) / 1e3


def draft_step_seconds(pair: ModelPair, context: torch.Tensor, k: int) -> float:
    """Seconds of one batched draft step at batch k on top of a warm cache of `context` [T] (ms-scale), as the
    cost model measures it (engine/calibration.draft_step_ms: drafting L = 3 minus L = 1, halved)."""
    return draft_step_ms(pair, context, k) / 1e3
