"""What a generation measured: its `Stats` (calls, tokens, accepted lengths, where the time went), the `Generation`
it returns, and the field's per-run metrics from a histogram of rounds by accepted draft tokens: mean acceptance
length (vLLM's and llama.cpp's figure) and the per-position acceptance rate (vLLM's)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .auto import Round


@dataclass
class Stats:
    """What a generation cost: calls, tokens, accepted lengths and where the time went (seconds)."""

    method: str
    k: int | str  # "auto": chosen per round (see rounds)
    L: int | str
    new_tokens: int = 0
    target_calls: int = 0  # verification rounds (or one call per token for "ar"); the prefill is not counted
    draft_calls: int = 0
    accepted_hist: list[int] = field(default_factory=list)  # rounds that emitted 0, 1, … accepted draft tokens
    draft_lengths: list[int] = field(default_factory=list)  # tokens drafted in each round (0: a plain target step)
    plain_steps: int = 0  # a speculative method's target steps without drafts: not rounds, not in accepted_hist ("ar": 0)
    rounds: list[Round] = field(default_factory=list)  # each round's k, L, accepted drafts, positions scored, ms
    plain_ms: list[float] = field(default_factory=list)  # each plain target step's ms (every step of "ar")
    seconds_prefill: float = 0.0
    seconds_draft: float = 0.0
    seconds_verify: float = 0.0
    seconds_select: float = 0.0  # selection, with the target head's logits of the positions it reads
    seconds_total: float = 0.0

    @property
    def block_efficiency(self) -> float:
        """Mean new tokens per target call."""
        return self.new_tokens / max(1, self.target_calls)

    @property
    def tokens_per_second(self) -> float:
        """New tokens per second of decoding (prefill excluded)."""
        return self.new_tokens / max(1e-9, self.seconds_total - self.seconds_prefill)

    @property
    def mean_acceptance_length(self) -> float:
        """1 + accepted draft tokens per round (vLLM's and llama.cpp's definition); 0 for "ar"."""
        return mean_acceptance_length(self.accepted_hist)

    def profile(self) -> dict[str, dict[str, float]]:
        """Where each round's time went, by configuration: {"k,L" (or "plain"): {"rounds", "tokens_per_round",
        "draft_ms", "verify_ms", "select_ms", "other_ms", "ms"}}, ms as means per round (a plain step's whole time,
        the target step with the draft's push of the token, is its verify_ms). `round_profile` sums several."""
        return round_profile([self])

    @property
    def acceptance_rate_per_position(self) -> list[float]:
        """Rate i (i = 1..L): rounds that accepted ≥ i draft tokens / rounds that drafted ≥ i (vLLM's rate)."""
        return acceptance_rate_per_position(self.accepted_hist, [d for d in self.draft_lengths if d])


@dataclass
class Generation:
    """The new tokens [n] (EOS included when reached, on the CPU), their text and the stats."""

    token_ids: torch.Tensor
    text: str
    stats: Stats


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


PHASES = ("draft_ms", "verify_ms", "select_ms", "other_ms")


def profile_sums(stats: "Stats", into: dict | None = None) -> dict[str, dict[str, float]]:
    """Per configuration ("k,L" or "plain"): rounds, tokens and the summed ms of each phase of one generation's
    rounds and plain steps, added into `into` (the same layout) when given."""
    into = {} if into is None else into
    for r in stats.rounds:
        row = into.setdefault(f"{r.k},{r.L}", dict.fromkeys(("rounds", "tokens", *PHASES), 0.0))
        row["rounds"] += 1
        row["tokens"] += r.accepted + 1
        for name in PHASES:
            row[name] += getattr(r, name)
    if stats.plain_ms:
        row = into.setdefault("plain", dict.fromkeys(("rounds", "tokens", *PHASES), 0.0))
        row["rounds"] += len(stats.plain_ms)
        row["tokens"] += len(stats.plain_ms)
        row["verify_ms"] += sum(stats.plain_ms)  # the target step and the draft's push, as one figure
    return into


def round_profile(stats_list: list["Stats"] | None = None, sums: dict | None = None) -> dict[str, dict[str, float]]:
    """Mean ms per round of each phase and tokens per round, by configuration, over several generations' stats
    (or from sums made by `profile_sums`), most frequent configuration first; see `Stats.profile`."""
    if sums is None:
        sums = {}
        for s in stats_list or []:
            profile_sums(s, sums)
    out = {}
    for key, row in sorted(sums.items(), key=lambda kv: -kv[1]["rounds"]):
        n = max(1.0, row["rounds"])
        means = {name: row[name] / n for name in PHASES}
        out[key] = {"rounds": int(row["rounds"]), "tokens_per_round": row["tokens"] / n, **means, "ms": sum(means.values())}
    return out
