"""Measure a draft: token-level acceptance on Spec-Bench continuations, its cost next to the target's, and
the speed-up the two predict. `python -m spectr_lib.tools.draft_eval --help`.

Acceptance is Σ_x min(p(x), q(x)) at every position of target-sampled continuations (first turn of each
prompt, chat template), per category; q at the draft temperature `generate` uses for that many drafts, raw
("acceptance") and mixed with prompt lookup ("lookup": with --lookup, or always for a draft that has it on by
default, as the shipped one does; the prediction then uses the mixed q, what `generate` drafts).
Cost is wall-clock of one draft step vs one target step on a warm cache, batch 1 and batch 8, measured side
by side. The predicted speed-up is the decoder's own cost model
(`pair_costs`: verification calls, selection, per-round bookkeeping; calibrated once per machine and pair,
then cached) with each draft's measured step costs and acceptance.
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from ..models import hf_cache
from ..models.load import ModelPair
from ..paths import SPEC_BENCH
from ..prompts import first_per_category, read_prompts
from .acceptance import acceptance_by_category, continuations
from .timing import draft_step_seconds, median_seconds
from ..argtypes import SEED, count, real
from ..files import write_text

MT_BENCH = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}


def spec_bench_prompts(path: Path, per_category: int) -> list[dict]:
    """The first `per_category` prompts of each Spec-Bench category (MT-bench's eight subcategories as one)."""
    records = read_prompts(path)
    for r in records:
        r["category"] = "mt_bench" if r["category"] in MT_BENCH else r["category"]
    return first_per_category(records, per_category)


@torch.no_grad()
def step_costs(pair: ModelPair, context: int = 256, batch=(1, 4, 8), verify_tokens=(5, 20, 36, 72)) -> dict:
    """Seconds of one target step, one draft step (batch 1 and 8, warm cache) and target calls scoring n tokens."""
    dev = pair.device
    ctx = torch.randint(100, 20000, (1, context), device=dev)
    out = {}
    for b in batch:
        cache = hf_cache.new_cache()
        hf_cache.forward(pair.target, ctx, cache)
        hf_cache.repeat_rows(cache, b)
        tok = torch.randint(100, 20000, (b, 1), device=dev)

        def target_step():
            hf_cache.forward(pair.target, tok, cache)
            hf_cache.crop(cache, context)

        t_target, t_draft = median_seconds(target_step), draft_step_seconds(pair, ctx[0], b)
        out[f"batch{b}"] = {"target_step_s": t_target, "draft_step_s": t_draft, "ratio": t_draft / t_target}
    cache = hf_cache.new_cache()
    hf_cache.forward(pair.target, ctx, cache)
    for n in verify_tokens:
        ids = torch.randint(100, 20000, (1, n), device=dev)

        def call():
            hf_cache.forward(pair.target, ids, cache)
            hf_cache.crop(cache, context)

        out[f"target_call_{n}_tokens_s"] = median_seconds(call)
    return out


def predicted_speedups(costs, acceptance: dict, draft_s: dict | None = None, form: str = "tree", L: int = 4) -> dict:
    """Predicted speed-up over autoregressive decoding of rounds of k = 1 and k = 4 drafts of length L, from the
    decoder's cost model (`engine.costs.Costs`, ms) with one acceptance per depth: acceptance["k1"] / ["k4"]
    (Σ min(p, q) and K-SEQ's, taken as independent per position). draft_s: {"batch1": {"draft_step_s": s}, ..}
    replaces the calibrated draft step costs (another draft measured against the same target); None keeps
    them. form: the verification form (a name in engine.verifiers.VERIFIERS). Returns {"k1_L4": {"tokens_per_round", "speedup_over_ar"}, "k4_L4": {...}}. Source: the expected
    tokens per round of Leviathan et al. 2023, §3.4, with the round cost of `Costs.round_ms`."""
    from dataclasses import replace

    from ..engine.auto import expected_tokens, predict_tokens_per_second

    if draft_s is not None:
        costs = replace(costs, draft_ms=sorted([int(b[5:]), v["draft_step_s"] * 1e3] for b, v in draft_s.items()
                                               if b.startswith("batch")))
    out = {}
    for k in (1, 4):
        alpha = [acceptance[f"k{k}"]] * L
        tps = predict_tokens_per_second(costs, k, L, form, alpha=alpha, nodes=None if k > 1 else [1] * L)
        out[f"k{k}_L{L}"] = {"tokens_per_round": expected_tokens(alpha, L), "speedup_over_ar": tps * costs.ar_ms / 1e3}
    return out


def main(argv: list[str] | None = None) -> None:
    """Print and save acceptance per category (T = 1 and 0.7), step costs and predicted speed-ups."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.tools.draft_eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=Path, default=SPEC_BENCH)
    ap.add_argument("--per-category", type=count(1), default=16)
    ap.add_argument("--categories", nargs="+", default=["translation", "summarization", "qa", "math_reasoning", "rag"])
    ap.add_argument("--max-new-tokens", type=count(1), default=128)
    ap.add_argument("--temperature", type=real(0, exclusive=True), nargs="+", default=[1.0, 0.7])
    ap.add_argument("--draft", default=None)
    ap.add_argument("--compare", nargs="+", default=[], metavar="DRAFT",
                    help="more drafts measured on the same target continuations (acceptance, and their step cost "
                         "unless --no-cost)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=SEED, default=1234)
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    ap.add_argument("--heldout", action="store_true",
                    help="the project's own held-out prompts (the corpus' heldout split, every category) instead of "
                         "Spec-Bench")
    ap.add_argument("--no-cost", action="store_true", help="acceptance only (no timing: for a busy machine)")
    ap.add_argument("--lookup", action="store_true",
                    help="also measure every draft with prompt-lookup mixing (generate(lookup=True)), same "
                         "continuations (always done when the draft has it on by default, as the shipped one does)")
    args = ap.parse_args(argv)
    from ..models.load import check_model_spec

    for spec in args.compare:  # before any model loads
        if spec == args.draft or spec in args.compare[: args.compare.index(spec)]:
            ap.error(f"--compare {spec}: already measured (give each draft once, --draft included)")
        try:
            check_model_spec(spec, "draft")
        except (ValueError, TypeError) as err:
            ap.error(f"--compare: {err}")
    from transformers.utils import logging

    from ..models.load import load_pair

    logging.disable_progress_bar()
    pair = load_pair(draft=args.draft, device=args.device)
    from ..engine.inputs import lookup_arg

    args.lookup = args.lookup or lookup_arg(pair, None)  # what generate does by default
    if args.heldout:
        from ..distill import corpus

        prompts = first_per_category(corpus.read(corpus.CORPUS_FILE, "heldout"), args.per_category)
    else:
        prompts = [r for r in spec_bench_prompts(args.prompts, args.per_category) if r["category"] in args.categories]
    report = {"pair": repr(pair), "prompts": len(prompts), "prompt_set": "heldout" if args.heldout else f"{args.prompts.parent.name}/{args.prompts.name}",
              "draft_temperature": {k: pair.draft_settings.tau(k) for k in (1, 4)},
              "acceptance": {}, **({"lookup": {}} if args.lookup else {})}
    from dataclasses import replace

    from ..models.load import load_draft

    others = {}
    for spec in args.compare:
        model, _, settings = load_draft(spec, pair.target, pair.device, pair.dtype)
        others[spec] = replace(pair, draft=model, draft_settings=settings)
        report.setdefault("compare", {}).setdefault(spec, {})["draft_temperature"] = {
            k: settings.tau(k) for k in (1, 4)}
    for T in args.temperature:
        recs = continuations(pair, prompts, T, args.max_new_tokens, args.seed)
        for (name, p), lookup in itertools.product({args.draft or "default": pair, **others}.items(),
                                                   (False, True) if args.lookup else (False,)):
            acc = acceptance_by_category(p, prompts, T, args.max_new_tokens, args.seed, recs=recs, lookup=lookup)
            if p is pair:
                report["lookup" if lookup else "acceptance"][str(T)] = acc
            else:
                report.setdefault("compare", {}).setdefault(name, {})[("lookup " if lookup else "") + str(T)] = acc
            name = f"{name} + lookup" if lookup else name
            taus = ", ".join(f"k={k} τ={p.draft_settings.tau(k)}" for k in (1, 4))
            print(f"\n{name}, T = {T}: mean acceptance per position (k=1: Σ min(p, q); k=4: K-SEQ; draft temperature {taus})")
            for cat, v in acc.items():
                print(f"  {cat:15s} {v['positions']:6d} positions   k=1 {v['k1']:.3f}   k=4 {v['k4']:.3f}")
    if args.no_cost:
        if args.out:
            write_text(args.out, json.dumps(report, indent=1))
        return
    report["cost"] = cost = step_costs(pair)
    print("\ncost (median seconds):", json.dumps(cost, indent=1))
    ctx = torch.randint(100, 20000, (256,), device=pair.device)
    for name, p in others.items():  # the compared drafts' steps, in the same run as the target's
        c = {f"batch{b}": {"draft_step_s": draft_step_seconds(p, ctx, b)} for b in (1, 4, 8)}
        for b, v in c.items():
            v["ratio"] = v["draft_step_s"] / cost[b]["target_step_s"]
        report["compare"][name]["cost"] = c
        print(f"{name}: draft step / target step " + ", ".join(f"{b} {v['ratio']:.3f}" for b, v in c.items()))
    from ..engine.decoder import pair_costs
    from ..engine.verifiers import default_form

    costs = pair_costs(pair)  # the decoder's cost model on this machine (calibrated once, then cached)
    T0 = str(args.temperature[0])
    form = default_form(pair.device)  # the decoder's default verification form
    own = "lookup" if lookup_arg(pair, None) else "acceptance"  # as generate drafts by default
    report["predicted_from"] = "q mixed with prompt lookup" if own == "lookup" else "raw q"
    report["predicted"] = predicted_speedups(costs, report[own][T0]["overall"], cost, form)
    for name in others:
        mixed = lookup_arg(others[name], None) and args.lookup  # its own default, when measured
        report["compare"][name]["predicted_from"] = "q mixed with prompt lookup" if mixed else "raw q"
        report["compare"][name]["predicted"] = predicted_speedups(
            costs, report["compare"][name][("lookup " if mixed else "") + T0]["overall"], report["compare"][name]["cost"], form)
    print(f"\npredicted speed-up over AR (the decoder's cost model, one AR token {costs.ar_ms:.1f} ms, T = {T0}):")
    for name, pred in {args.draft or "default": report["predicted"],
                       **{n: report["compare"][n]["predicted"] for n in others}}.items():
        print(f"  {name}: " + "; ".join(f"{key.replace('_', ', ')}: {v['tokens_per_round']:.2f} tokens per round, "
                                       f"{v['speedup_over_ar']:.2f}×" for key, v in pred.items()))
    if args.out:
        write_text(args.out, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
