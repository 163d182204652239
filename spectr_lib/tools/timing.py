"""Timing helpers shared by the measurement tools: one median-of-n, and the cost of a draft step measured
through the Drafter protocol (so a new draft type needs nothing here)."""
from __future__ import annotations

from typing import Callable

import torch

from ..engine.calibration import draft_step_ms
from ..engine.costs import timed
from ..models.load import ModelPair
from ..runtime import cpu_kind


def median_seconds(fn: Callable[[], object], repeat: int = 7, warmup: int = 2) -> float:
    """Median wall-clock seconds of fn() over `repeat` runs, after `warmup` untimed runs."""
    return timed(fn, repeat, warmup) / 1e3


def draft_step_seconds(pair: ModelPair, context: torch.Tensor, k: int) -> float:
    """Seconds of one batched draft step at batch k on top of a warm cache of `context` [T] (ms-scale), as the
    cost model measures it (engine/calibration.draft_step_ms: drafting L = 3 minus L = 1, halved)."""
    return draft_step_ms(pair, context, k) / 1e3


def machine_note() -> str:
    """One line to print next to timings: the CPU's kind, torch threads, cores and the load average, with a warning
    when other processes compete for the cores (then timings are inflated, often many times over, and mean little)."""
    import os

    cores = os.cpu_count() or 1
    kind = f"{cpu_kind()} CPU"
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return f"{kind}, {torch.get_num_threads()} torch threads, {cores} cores"
    note = f"{kind}, {torch.get_num_threads()} torch threads, {cores} cores, load average {load:.1f}"
    if load > max(cores, torch.get_num_threads()) + 0.5:
        note += " — WARNING: the machine is busy; these timings are inflated and should not be compared"
    return note
