"""The field's per-run metrics of speculative decoding, from a histogram of rounds by accepted draft tokens:
mean acceptance length (vLLM's and llama.cpp's figure) and the per-position acceptance rate (vLLM's)."""
from __future__ import annotations


def mean_acceptance_length(accepted_hist: list[int]) -> float:
    """1 + accepted drafts / rounds from a histogram of rounds by accepted draft tokens (0 with no rounds)."""
    rounds = sum(accepted_hist)
    return 1 + sum(n * c for n, c in enumerate(accepted_hist)) / rounds if rounds else 0.0


def acceptance_rate_per_position(accepted_hist: list[int], draft_lengths: list[int] | None = None) -> list[float]:
    """[rounds that accepted ≥ i drafts / rounds that drafted ≥ i tokens, for i = 1..L] (vLLM's per-position
    rate); without draft_lengths every round counts as having drafted L tokens."""
    L = len(accepted_hist) - 1
    at_least = [0] * (L + 2)
    for i in range(L, -1, -1):  # suffix sums: rounds that accepted ≥ i
        at_least[i] = at_least[i + 1] + accepted_hist[i]
    drafted = [at_least[0]] * (L + 1)
    if draft_lengths is not None:
        drafted = [sum(1 for d in draft_lengths if d >= i) for i in range(L + 1)]
    return [at_least[i] / drafted[i] if drafted[i] else 0.0 for i in range(1, L + 1)]
