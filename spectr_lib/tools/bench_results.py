"""The benchmark's records and reports: one `Config` per row of the sweep, its `Result` totals, and the
markdown tables, plots and JSON written by `python -m spectr_lib.tools.bench` (and re-drawn by `--render`)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.decoder import METHODS
from ..engine.metrics import PHASES, mean_acceptance_length, profile_sums, round_profile
from ..files import write_text

HF_METHODS = ("hf_ar", "hf_assisted", "hf_lookup")  # generate(): plain, assistant_model=draft, prompt lookup


@dataclass
class Config:
    """One row of the sweep: a method of this library, or a Hugging Face baseline (HF_METHODS)."""

    method: str
    k: int | str = 1  # "auto": chosen per round
    L: int | str = 0
    lookup: bool | None = None  # generate(lookup=...): None the draft's own setting, resolved by `bench.run`

    @property
    def drafts(self) -> bool:
        """Whether this row drafts with our decoder (a method of this library other than AR): only such a row
        takes the draft's lookup setting, and a sweep with one makes `bench.run` calibrate the cost model."""
        return self.method in METHODS and self.method != "ar"

    @property
    def label(self) -> str:
        """The method column of the tables: the method, "+lookup" when mixed with prompt lookup."""
        return self.method + ("+lookup" if self.lookup else "")

    @property
    def name(self) -> str:
        if self.method in ("ar", "hf_ar", "hf_assisted"):
            return self.method
        return f"{self.method} L={self.L}" if self.method == "hf_lookup" else f"{self.label} k={self.k} L={self.L}"


@dataclass
class Result:
    """Totals of one configuration over the prompts, and per category."""

    config: Config
    tokens: int = 0
    target_calls: int = 0
    seconds: float = 0.0
    accepted_hist: list[int] = field(default_factory=list)
    per_category: dict = field(default_factory=dict)
    predicted_seconds: float = 0.0  # the cost model's time for the same rounds (engine/costs.py)
    chosen: dict = field(default_factory=dict)  # "k,L" (or "plain") -> rounds
    profile: dict = field(default_factory=dict)  # "k,L" (or "plain") -> rounds, tokens and ms summed by phase

    def add_profile(self, stats) -> None:
        """Add one generation's rounds and plain steps, timed by phase, to the profile (metrics.profile_sums)."""
        profile_sums(stats, self.profile)

    def add_rounds(self, stats, costs, form: str) -> None:
        """Book the cost model's predicted seconds for the rounds and plain steps of one generation, and the
        (k, L) of each round."""
        if costs is None:
            return
        ms = sum(costs.round_ms(r.k, r.L, form, r.accepted + 1, r.positions) for r in stats.rounds)
        self.predicted_seconds += (ms + stats.plain_steps * costs.ar_ms if stats.method != "ar"
                                   else stats.new_tokens * costs.ar_ms) / 1e3
        for r in stats.rounds:
            self.chosen[f"{r.k},{r.L}"] = self.chosen.get(f"{r.k},{r.L}", 0) + 1
        if stats.plain_steps:
            self.chosen["plain"] = self.chosen.get("plain", 0) + stats.plain_steps

    @property
    def predicted_tokens_per_second(self) -> float | None:
        return self.tokens / self.predicted_seconds if self.predicted_seconds else None

    def chosen_summary(self, top: int = 3) -> str:
        """The most frequent (k, L) of the rounds, with their shares ("plain": target steps without drafts)."""
        n = sum(self.chosen.values())
        items = sorted(self.chosen.items(), key=lambda kv: -kv[1])[:top]
        return ", ".join(f"({key}) {v / n:.0%}" if key != "plain" else f"plain {v / n:.0%}" for key, v in items) if n else "–"

    def add(self, category: str, tokens: int, calls: int, seconds: float, hist: list[int]) -> None:
        for bucket in (self.__dict__, self.per_category.setdefault(category, {"tokens": 0, "target_calls": 0, "seconds": 0.0})):
            bucket["tokens"] += tokens
            bucket["target_calls"] += calls
            bucket["seconds"] += seconds
        if hist:
            n = max(len(self.accepted_hist), len(hist))
            pad = lambda h: h + [0] * (n - len(h))  # noqa: E731
            self.accepted_hist = [a + b for a, b in zip(pad(self.accepted_hist), pad(hist))]

    @property
    def block_efficiency(self) -> float:
        return self.tokens / max(1, self.target_calls)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(1e-9, self.seconds)


def tokens_per_round(accepted_hist: list[int]) -> tuple[float, float]:
    """Mean tokens per round (accepted drafts + 1) and its standard error, from a row's `accepted_hist`
    (rounds that accepted 0, 1, .., L drafts). The mean is the block efficiency of the drafted rounds; the
    standard error (sample standard deviation / √rounds) says how far two rows may differ by chance.
    Raises ValueError for fewer than two rounds."""
    n = sum(accepted_hist)
    if n < 2:
        raise ValueError(f"a standard error needs at least two rounds, got {n}")
    mean = sum((i + 1) * c for i, c in enumerate(accepted_hist)) / n
    var = sum(c * (i + 1 - mean) ** 2 for i, c in enumerate(accepted_hist)) / (n - 1)
    return mean, (var / n) ** 0.5


def paired_by_category(a: dict, b: dict) -> tuple[float, float, int]:
    """(mean, standard error, categories) of b's block efficiency minus a's, category by category, for two rows
    of a results.json run (dicts with "per_category": {category: {"block_efficiency", ...}}) over the same
    prompts. Rounds of one prompt are not independent (an answer that copies from its prompt accepts long runs
    round after round), so the categories, not the rounds, are the units: a paired comparison across them.
    Raises ValueError for fewer than two categories in common, or differences that are all equal (no spread to
    measure a standard error from)."""
    cats = sorted(set(a["per_category"]) & set(b["per_category"]))
    if len(cats) < 2:
        raise ValueError(f"a paired standard error needs at least two categories in common, got {cats}")
    d = [b["per_category"][c]["block_efficiency"] - a["per_category"][c]["block_efficiency"] for c in cats]
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / (len(d) - 1)
    if var == 0:
        raise ValueError(f"every category differs by the same {mean:+.4f}: no spread, so no standard error")
    return mean, (var / len(d)) ** 0.5, len(d)


def table(results: list[Result], baseline: str = "hf_ar") -> str:
    """Markdown table: block efficiency, tokens/s, speed-ups over the baseline and over our AR, accepted lengths."""
    base = next((r for r in results if r.config.name == baseline and r.tokens), None)
    ours = next((r for r in results if r.config.name == "ar" and r.tokens), None)
    cols = [baseline] + (["ar"] if ours is not None and baseline != "ar" else [])
    lines = ["| method | k | L | block efficiency | mean acceptance length | tokens/s | predicted tokens/s (error) | "
             + " | ".join(f"speed-up vs {c}" for c in cols) + " | accepted drafts per round (0..L) | rounds' (k, L) |",
             "|---" * (9 + len(cols)) + "|"]
    for r in results:
        if not r.tokens:
            continue
        speeds = [f"{r.tokens_per_second / b.tokens_per_second:.2f}×" if b else "–" for b in (base, ours)[: len(cols)]]
        mal = f"{mean_acceptance_length(r.accepted_hist):.2f}" if r.accepted_hist else "–"
        pred = r.predicted_tokens_per_second
        pred = f"{pred:.1f} ({pred / r.tokens_per_second - 1:+.0%})" if pred else "–"
        chosen = r.chosen_summary() if "auto" in (r.config.k, r.config.L) else "–"
        lines.append(f"| {r.config.label} | {r.config.k} | {r.config.L or '–'} | {r.block_efficiency:.2f} | {mal} | "
                     f"{r.tokens_per_second:.1f} | {pred} | " + " | ".join(speeds) + f" | {r.accepted_hist or '–'} | {chosen} |")
    return "\n".join(lines)


def profile_table(results: list[Result]) -> str:
    """Markdown table of where each configuration's rounds spent their time: per (k, L) chosen (or plain steps),
    the rounds, tokens per round and mean ms per round of drafting, verification, selection and the rest."""
    lines = ["| method | k | L | round (k, L) | rounds | tokens per round | draft ms | verify ms | select ms | other ms | "
             "ms per round | tokens/s of these rounds |", "|---" * 12 + "|"]
    for r in results:
        for key, row in round_profile(sums=r.profile).items():
            cells = " | ".join(f"{row[name]:.1f}" for name in PHASES)
            lines.append(f"| {r.config.label} | {r.config.k} | {r.config.L or '–'} | {key} | {row['rounds']} | "
                         f"{row['tokens_per_round']:.2f} | {cells} | {row['ms']:.1f} | "
                         f"{1e3 * row['tokens_per_round'] / max(row['ms'], 1e-9):.1f} |")
    return ("Round profile (`--profile`): mean ms per round by phase; a plain step's whole time is its verify ms.\n\n"
            + "\n".join(lines)) if len(lines) > 2 else ""


def category_table(results: list[Result]) -> str:
    """Markdown table per category: block efficiency, and speed-up over our AR measured on the same prompts."""
    ours = next((r for r in results if r.config.name == "ar" and r.tokens), None)
    cats = sorted({c for r in results for c in r.per_category})
    if len(cats) < 2:
        return ""
    lines = ["| method | k | L | " + " | ".join(cats) + " |", "|---" * (3 + len(cats)) + "|"]
    for r in results:
        if not r.tokens or r.config.method == "ar":
            continue
        cells = []
        for c in cats:
            v, o = r.per_category.get(c), ours.per_category.get(c) if ours else None
            if not v or not v["tokens"]:
                cells.append("–")
                continue
            speed = f", {v['tokens'] / v['seconds'] / (o['tokens'] / o['seconds']):.2f}×" if o and o["tokens"] else ""
            cells.append(f"{v['tokens'] / max(1, v['target_calls']):.2f}{speed}")
        lines.append(f"| {r.config.label} | {r.config.k} | {r.config.L or '–'} | " + " | ".join(cells) + " |")
    return "Per category: block efficiency, speed-up over our AR.\n\n" + "\n".join(lines)


def plot(results: list[Result], temperature: float):
    """Block efficiency vs k for each L, and tokens/s vs k; returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (method, marker), lookup in itertools.product((("kseq", "o"), ("rrs", "s")), sorted({bool(r.config.lookup) for r in results})):
        for L in sorted({r.config.L for r in results if isinstance(r.config.L, int) and r.config.L}):
            rows = sorted([r for r in results if r.config.L == L and isinstance(r.config.k, int)
                           and r.config.method in (method, "sps") and bool(r.config.lookup) == lookup and r.tokens],
                          key=lambda r: r.config.k)
            if len(rows) > 1:
                ks, name = [r.config.k for r in rows], f"{method}{'+lookup' if lookup else ''} L={L}"
                axes[0].plot(ks, [r.block_efficiency for r in rows], marker=marker, label=name)
                axes[1].plot(ks, [r.tokens_per_second for r in rows], marker=marker, label=name)
    for r in results:
        if (r.config.method in ("ar",) + HF_METHODS or r.config.L == "auto") and r.tokens:
            axes[1].axhline(r.tokens_per_second, ls="--", lw=1, color="gray" if r.config.method in ("ar", "hf_ar") else "green" if r.config.L == "auto" else "red")
            axes[1].annotate(r.config.name, (1, r.tokens_per_second), fontsize=8)
    for ax, title in zip(axes, ("block efficiency (tokens per target call)", "tokens/s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (drafts)")
        ax.set_title(f"{title}, T = {temperature}")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[1]:  # a sweep with one k per L draws no curves to label
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def to_json(results: list[Result]) -> list[dict]:
    """Plain records of the results."""
    return [{"method": r.config.method, "k": r.config.k, "L": r.config.L, "lookup": r.config.lookup, "tokens": r.tokens,
             "target_calls": r.target_calls, "seconds": r.seconds, "block_efficiency": r.block_efficiency,
             "tokens_per_second": r.tokens_per_second, "accepted_hist": r.accepted_hist,
             "predicted_seconds": r.predicted_seconds, "chosen": r.chosen, "profile": r.profile,
             "per_category": {c: {**v, "block_efficiency": v["tokens"] / max(1, v["target_calls"])}
                              for c, v in r.per_category.items()}} for r in results if r.tokens]


def from_json(records: list[dict]) -> list[Result]:
    """Results back from the records of `to_json` (to re-render tables and plots of a saved run)."""
    keep = ("tokens", "target_calls", "seconds")
    return [Result(Config(d["method"], d["k"], d["L"], d.get("lookup", False)), d["tokens"], d["target_calls"], d["seconds"], list(d["accepted_hist"]),
                   {c: {key: v[key] for key in keep} for c, v in d["per_category"].items()},
                   d.get("predicted_seconds", 0.0), dict(d.get("chosen", {})), dict(d.get("profile", {}))) for d in records]


def render(report: dict, out: Path) -> str:
    """Write table.md and one plot per temperature for a report (the content of results.json); return the markdown."""
    import matplotlib.pyplot as plt

    md = [f"# Benchmark\n\n{report['pair']} on {report['device']}, {report['prompts']} prompts, "
          f"{report['max_new_tokens']} new tokens at most.\n"] + [n + "\n" for n in report.get("notes", [])]
    for T, run_ in report["runs"].items():
        results, acc = from_json(run_["results"]), run_["token_acceptance"]
        partial = f" (partial: the first {run_['prompts_done']} prompts)" if "prompts_done" in run_ else ""
        mixed = ", mixed with prompt lookup" if run_.get("token_acceptance_lookup") else ""
        md += [f"\n## T = {T}{partial}\n", f"token-level acceptance Σ min(p, q) (q at the draft's τ for one draft{mixed}): "
               + ", ".join(f"{c} {v:.3f}" for c, v in acc.items()) + "\n",
               table(results)]
        per_category = category_table(results)
        if per_category:
            md += ["", per_category]
        profile = profile_table(results) if report.get("profile") else ""
        if profile:
            md += ["", profile]
        fig = plot(results, float(T))
        fig.savefig(out / f"plots_T{T}.png", dpi=110)
        plt.close(fig)
    write_text(out / "table.md", "\n".join(md) + "\n")
    return "\n".join(md)
