"""Benchmark: methods × (k, L) × prompts → table, JSON and plots, with Hugging Face baselines in the same run.

    python -m spectr_lib.tools.bench --limit 8 --max-new-tokens 64
    python -m spectr_lib.tools.bench --prompts ../shared/data/spec_bench/question.jsonl --per-category 2 --skip-per-category 16

Speed-ups are ratios of tokens/s measured in this one process, prompt by prompt, so machine noise hits every
method alike. Block efficiency = new tokens per target call (Spec-Bench's "mean accepted tokens").
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..engine.decoder import METHODS, generate, mean_acceptance_length
from ..prompts import encode_chat, first_per_category, read_prompts
from ..theory.selection import RULES
from .acceptance import acceptance_by_category

KS, LS = (1, 2, 4, 8), (2, 4, 8)


HF_METHODS = ("hf_ar", "hf_assisted", "hf_lookup")  # generate(): plain, assistant_model=draft, prompt lookup


@dataclass
class Config:
    """One row of the sweep: a method of this library, or a Hugging Face baseline (HF_METHODS)."""

    method: str
    k: int = 1
    L: int = 0

    @property
    def name(self) -> str:
        if self.method in ("ar", "hf_ar", "hf_assisted"):
            return self.method
        return f"{self.method} L={self.L}" if self.method == "hf_lookup" else f"{self.method} k={self.k} L={self.L}"


@dataclass
class Result:
    """Totals of one configuration over the prompts, and per category."""

    config: Config
    tokens: int = 0
    target_calls: int = 0
    seconds: float = 0.0
    accepted_hist: list[int] = field(default_factory=list)
    per_category: dict = field(default_factory=dict)

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


def sweep_configs(methods=METHODS, ks=KS, Ls=LS, hf: bool = True) -> list[Config]:
    """The configurations of a sweep: single-draft methods (SpS, block verification) at k = 1, the multi-draft
    rules at k ≥ 2."""
    out = [Config("hf_ar")] if hf else []
    if "ar" in methods:
        out.append(Config("ar"))
    for L in Ls:
        for m in (m for m in METHODS if m in methods and m != "ar"):
            fixed = 1 if m == "block" else RULES[m].k
            out += [Config(m, fixed, L)] if fixed else [Config(m, k, L) for k in ks if k >= 2]
    return out


class _CallClock:
    """Counts a model's forward calls and times the first one (Hugging Face's prompt prefill)."""

    def __init__(self, model: torch.nn.Module):
        self.calls, self.first_seconds, self._t0 = 0, 0.0, 0.0
        self._hooks = [model.register_forward_pre_hook(self._pre), model.register_forward_hook(self._post)]

    def _pre(self, *_):
        self.calls += 1
        if self.calls == 1:
            self._t0 = time.perf_counter()

    def _post(self, *_):
        if self.calls == 1:
            self.first_seconds = time.perf_counter() - self._t0

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()


def _hf_generate(pair, ids: torch.Tensor, max_new_tokens: int, temperature: float, method: str, L: int, seed: int):
    """New tokens, target calls and seconds of one Hugging Face `generate`, its prompt prefill excluded.

    The first target call (the prompt) is not timed, as our decoder's prefill is not; it also yields HF's first
    token(s), which are counted: a small edge to the baseline.
    """
    torch.manual_seed(seed)
    kw = dict(do_sample=temperature > 0, max_new_tokens=max_new_tokens, top_k=0, top_p=1.0,
              pad_token_id=getattr(pair.tokenizer, "eos_token_id", None))  # None when the pair has no tokenizer
    if temperature > 0:
        kw["temperature"] = temperature
    if method == "hf_assisted":
        kw["assistant_model"] = pair.draft
    elif method == "hf_lookup":
        kw["prompt_lookup_num_tokens"] = L
    clock = _CallClock(pair.target)
    try:
        t0 = time.perf_counter()
        out = pair.target.generate(ids[None], **kw)
        seconds = time.perf_counter() - t0 - clock.first_seconds
    finally:
        clock.remove()
    return out.shape[1] - len(ids), clock.calls, seconds


def hf_can_assist(pair) -> bool:
    """Hugging Face's assisted generation drives only standalone causal LMs, not a feature draft."""
    return pair.draft is not None and hasattr(pair.draft, "generate")


def run(pair, prompts: list[dict], configs: list[Config], max_new_tokens: int, temperature: float, seed: int,
        progress: bool = True) -> list[Result]:
    """Run every configuration on every prompt (configurations interleaved per prompt).

    A prompt record holds "prompt" (text, chat template applied) or "ids" (token ids), and "category".
    """
    results = [Result(c) for c in configs]
    bar = tqdm(total=len(prompts) * len(configs), desc=f"benchmark T={temperature}", disable=not progress)
    for i, rec in enumerate(prompts):
        ids = rec["ids"] if "ids" in rec else encode_chat(pair.tokenizer, rec["prompt"])
        ids = ids.to(pair.device)
        for res in results:
            c = res.config
            if c.method in HF_METHODS:
                if c.method == "hf_assisted" and not hf_can_assist(pair):
                    bar.update(1)
                    continue
                n, calls, sec = _hf_generate(pair, ids, max_new_tokens, temperature, c.method, c.L, seed + i)
                res.add(rec["category"], n, calls, sec, [])
            else:
                g = generate(pair, ids, method=c.method, k=c.k, L=max(c.L, 1), max_new_tokens=max_new_tokens,
                             temperature=temperature, seed=seed + i)
                s = g.stats
                res.add(rec["category"], s.new_tokens, s.target_calls, s.seconds_total - s.seconds_prefill, s.accepted_hist)
            bar.update(1)
    bar.close()
    return results


def table(results: list[Result], baseline: str = "hf_ar") -> str:
    """Markdown table: block efficiency, tokens/s, speed-ups over the baseline and over our AR, accepted lengths."""
    base = next((r for r in results if r.config.name == baseline and r.tokens), None)
    ours = next((r for r in results if r.config.name == "ar" and r.tokens), None)
    cols = [baseline] + (["ar"] if ours is not None and baseline != "ar" else [])
    lines = ["| method | k | L | block efficiency | mean acceptance length | tokens/s | "
             + " | ".join(f"speed-up vs {c}" for c in cols) + " | accepted drafts per round (0..L) |",
             "|---" * (7 + len(cols)) + "|"]
    for r in results:
        if not r.tokens:
            continue
        speeds = [f"{r.tokens_per_second / b.tokens_per_second:.2f}×" if b else "–" for b in (base, ours)[: len(cols)]]
        mal = f"{mean_acceptance_length(r.accepted_hist):.2f}" if r.accepted_hist else "–"
        lines.append(f"| {r.config.method} | {r.config.k} | {r.config.L or '–'} | {r.block_efficiency:.2f} | {mal} | "
                     f"{r.tokens_per_second:.1f} | " + " | ".join(speeds) + f" | {r.accepted_hist or '–'} |")
    return "\n".join(lines)


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
        lines.append(f"| {r.config.method} | {r.config.k} | {r.config.L or '–'} | " + " | ".join(cells) + " |")
    return "Per category: block efficiency, speed-up over our AR.\n\n" + "\n".join(lines)


def plot(results: list[Result], temperature: float):
    """Block efficiency vs k for each L, and tokens/s vs k; returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method, marker in (("kseq", "o"), ("rrs", "s")):
        for L in sorted({r.config.L for r in results if r.config.L}):
            rows = sorted([r for r in results if r.config.L == L and r.config.method in (method, "sps") and r.tokens],
                          key=lambda r: r.config.k)
            if len(rows) > 1:
                ks = [r.config.k for r in rows]
                axes[0].plot(ks, [r.block_efficiency for r in rows], marker=marker, label=f"{method} L={L}")
                axes[1].plot(ks, [r.tokens_per_second for r in rows], marker=marker, label=f"{method} L={L}")
    for r in results:
        if r.config.method in ("ar",) + HF_METHODS and r.tokens:
            axes[1].axhline(r.tokens_per_second, ls="--", lw=1, color="gray" if r.config.method in ("ar", "hf_ar") else "red")
            axes[1].annotate(r.config.name, (1, r.tokens_per_second), fontsize=8)
    for ax, title in zip(axes, ("block efficiency (tokens per target call)", "tokens/s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (drafts)")
        ax.set_title(f"{title}, T = {temperature}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def to_json(results: list[Result]) -> list[dict]:
    """Plain records of the results."""
    return [{"method": r.config.method, "k": r.config.k, "L": r.config.L, "tokens": r.tokens,
             "target_calls": r.target_calls, "seconds": r.seconds, "block_efficiency": r.block_efficiency,
             "tokens_per_second": r.tokens_per_second, "accepted_hist": r.accepted_hist,
             "per_category": {c: {**v, "block_efficiency": v["tokens"] / max(1, v["target_calls"])}
                              for c, v in r.per_category.items()}} for r in results if r.tokens]


def from_json(records: list[dict]) -> list[Result]:
    """Results back from the records of `to_json` (to re-render tables and plots of a saved run)."""
    keep = ("tokens", "target_calls", "seconds")
    return [Result(Config(d["method"], d["k"], d["L"]), d["tokens"], d["target_calls"], d["seconds"], list(d["accepted_hist"]),
                   {c: {key: v[key] for key in keep} for c, v in d["per_category"].items()}) for d in records]


def render(report: dict, out: Path) -> str:
    """Write table.md and one plot per temperature for a report (the content of results.json); return the markdown."""
    import matplotlib.pyplot as plt

    md = [f"# Benchmark\n\n{report['pair']} on {report['device']}, {report['prompts']} prompts, "
          f"{report['max_new_tokens']} new tokens at most.\n"] + [n + "\n" for n in report.get("notes", [])]
    for T, run_ in report["runs"].items():
        results, acc = from_json(run_["results"]), run_["token_acceptance"]
        md += [f"\n## T = {T}\n", "token-level acceptance Σ min(p, q): " + ", ".join(f"{c} {v:.3f}" for c, v in acc.items()) + "\n",
               table(results)]
        per_category = category_table(results)
        if per_category:
            md += ["", per_category]
        fig = plot(results, float(T))
        fig.savefig(out / f"plots_T{T}.png", dpi=110)
        plt.close(fig)
    (out / "table.md").write_text("\n".join(md) + "\n")
    return "\n".join(md)


def token_acceptance(pair, prompts: list[dict], max_new_tokens: int, temperature: float, seed: int) -> dict:
    """Mean Σ min(p, q) along target-sampled continuations, per category and overall."""
    by_cat = acceptance_by_category(pair, prompts, temperature, max_new_tokens, seed + 10_000, ks=(1,))
    return {c: v["k1"] for c, v in by_cat.items()}


def main(argv: list[str] | None = None) -> None:
    """Command line: run the sweep and write results/<name>/{results.json, table.md, *.png}."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.tools.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=Path, default=None, help="JSONL prompts (default: data/prompts/eval.jsonl)")
    ap.add_argument("--limit", type=int, default=None, help="use the first N prompts")
    ap.add_argument("--per-category", type=int, default=None, help="use N prompts of each category")
    ap.add_argument("--categories", nargs="+", default=None, help="keep only prompts of these categories")
    ap.add_argument("--skip-per-category", type=int, default=0,
                    help="with --per-category: leave out the first N of each category (e.g. those the draft was evaluated on)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, nargs="+", default=[1.0, 0.7])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--k", type=int, nargs="+", default=list(KS))
    ap.add_argument("--L", type=int, nargs="+", default=list(LS))
    ap.add_argument("--no-hf", action="store_true", help="skip the Hugging Face baselines")
    ap.add_argument("--lookup-L", type=int, default=4, help="candidate tokens of HF's prompt-lookup baseline")
    ap.add_argument("--target", default=None)
    ap.add_argument("--draft", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None, choices=[None, "float32", "bfloat16", "float16"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("results") / "bench")
    ap.add_argument("--render", type=Path, default=None, metavar="RESULTS_JSON",
                    help="only re-write table.md and the plots of a saved results.json (into its folder)")
    args = ap.parse_args(argv)
    if args.render is not None:
        print(render(json.loads(args.render.read_text()), args.render.parent))
        return
    from transformers.utils import logging

    from ..models.load import load_pair

    logging.disable_progress_bar()
    pair = load_pair(args.target, args.draft, device=args.device, dtype=getattr(torch, args.dtype) if args.dtype else None)
    prompts = read_prompts(args.prompts)
    if args.categories:
        prompts = [r for r in prompts if r["category"] in args.categories]
        if not prompts:
            raise SystemExit(f"no prompt of categories {args.categories} in {args.prompts or 'the default prompts file'}")
    if args.per_category:
        prompts = first_per_category(prompts, args.per_category, args.skip_per_category)
    prompts = prompts[: args.limit]
    configs = sweep_configs(args.methods, args.k, args.L, hf=not args.no_hf)
    if not args.no_hf:
        configs[1:1] = [Config("hf_assisted"), Config("hf_lookup", 1, args.lookup_L)]
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if pair.device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    report = {"device": device, "dtype": str(pair.dtype), "pair": repr(pair), "prompts": len(prompts),
              "max_new_tokens": args.max_new_tokens, "runs": {}}
    lookup = (f"hf_lookup is Hugging Face's draft-free speculative decoding (prompt lookup, {args.lookup_L} candidate "
              "tokens). HF rows exclude their first target call (the prompt), as ours exclude the prefill.")
    no_assist = "Hugging Face assisted generation cannot drive this draft (a feature draft): that baseline is omitted."
    report["notes"] = ([] if hf_can_assist(pair) else [no_assist]) + [lookup]
    for T in args.temperature:
        results = run(pair, prompts, configs, args.max_new_tokens, T, args.seed)
        acc = token_acceptance(pair, prompts, min(args.max_new_tokens, 128), T, args.seed) if T > 0 else {}
        report["runs"][str(T)] = {"results": to_json(results), "token_acceptance": acc}
        (args.out / "results.json").write_text(json.dumps(report, indent=1))  # after each temperature: a long run keeps its part
        md = render(report, args.out)
        print(md[md.index(f"## T = {T}"):], flush=True)
    print(f"wrote {args.out}/results.json, table.md and plots")


if __name__ == "__main__":
    main()
