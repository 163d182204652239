"""Argument types for the command lines: each parses one flag's text and refuses a value outside its range, so
argparse prints one line naming the flag and exits 2 before anything loads (`count(1)` for "a whole number ≥ 1",
`real(0, exclusive=True)` for "a finite number > 0", `SEED` for a random seed)."""
from __future__ import annotations

import argparse
import math


def count(minimum: int = 1, maximum: int | None = None):
    """A type for a whole number in [minimum, maximum] (no maximum: unbounded)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            span = f"≥ {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise argparse.ArgumentTypeError(f"{value} is out of range: give a whole number {span}")
        return value

    parse.__name__ = "whole number"
    return parse


def real(minimum: float = 0.0, exclusive: bool = False, maximum: float | None = None):
    """A type for a finite number ≥ minimum (> minimum when exclusive) and ≤ maximum when given."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        low = value <= minimum if exclusive else value < minimum
        if not math.isfinite(value) or low or (maximum is not None and value > maximum):
            span = f"{'>' if exclusive else '≥'} {minimum:g}" + ("" if maximum is None else f" and ≤ {maximum:g}")
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a finite number {span}")
        return value

    parse.__name__ = "number"
    return parse


SEED = count(0, 2**31 - 1)  # torch.Generator takes [0, 2**32): room for the per-prompt offsets tools add
THREADS = count(1, 1024)
TEMPERATURE = real(0.0)  # 0: greedy
