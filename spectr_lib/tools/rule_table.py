"""Every lossless rule with a closed-form acceptance side by side on real distributions, next to the optimum α*.

Along answers the target samples to held-out prompts (first turn, chat template), each position gives the
target's p and the draft's q (at the draft temperature `generate` uses for k drafts, mixed with prompt lookup
where the draft has it on, as `generate` drafts); for each k the table holds the mean over positions of each
rule's exact acceptance P(output ∈ drafts) (`Rule.closed_form`: SpS, K-SEQ, RRS, sampled verification, the
optimal rule) and of α*(p, q^⊗k), the most any lossless rule reaches with k i.i.d. drafts. No Monte Carlo: every
number is an exact expectation at each position, averaged. With --time-positions, the cost of one decision of
each rule (ms). `python -m spectr_lib.tools.rule_table --help`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..argtypes import SEED, count, real
from ..files import write_text
from ..paths import SPEC_BENCH
from ..prompts import first_per_category, read_prompts
from ..theory.selection import RULES

WITH_FORM = tuple(name for name, r in RULES.items() if r.closed_form is not None)


def as_json(by_category: dict) -> dict:
    """`rule_acceptance_by_category`'s result with its k keys as strings, as results.json holds it."""
    return {c: {name: ({str(k): x for k, x in v.items()} if isinstance(v, dict) else v) for name, v in by.items()}
            for c, by in by_category.items()}


def render(report: dict) -> str:
    """Markdown: per temperature, the overall mean acceptance of each rule (rows) for each k (columns), α* last,
    then each rule's share of α* at the largest k per category."""
    lines = ["# Rules side by side", "", f"{report['pair']}, {report['prompts']} prompts, answers of "
             f"{report['max_new_tokens']} tokens at most; q mixed with prompt lookup: {report['lookup']}.", ""]
    for T, by_cat in report["runs"].items():
        overall, ks = by_cat["overall"], report["k"]
        lines += [f"## T = {T}", "", f"Mean exact acceptance over {overall['positions']} answer positions.", "",
                  "| rule | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
        for name in report["rules"] + ["alpha"]:
            label = "optimum α* (i.i.d. drafts)" if name == "alpha" else RULES[name].label
            cells = [f"{overall[name][str(k)]:.3f}" if str(k) in overall[name] else "–" for k in ks]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        k = str(ks[-1])
        cats = sorted(c for c in by_cat if c != "overall")
        lines += ["", f"Share of α* at k = {k}, per category.", "",
                  "| rule | " + " | ".join(cats) + " |", "|---" * (len(cats) + 1) + "|"]
        for name in report["rules"]:
            if k in overall[name]:
                lines.append(f"| {RULES[name].label} | " + " | ".join(
                    f"{by_cat[c][name][k] / by_cat[c]['alpha'][k]:.2f}" for c in cats) + " |")
        lines.append("")
        if T in report.get("selection_ms", {}):
            cost = report["selection_ms"][T]
            lines += [f"One decision at one position (ms, median over {report['time_positions']} positions; "
                      f"{report['machine']}).", "", "| rule | " + " | ".join(f"k = {k}" for k in ks) + " |",
                      "|---" * (len(ks) + 1) + "|"]
            lines += [f"| {RULES[name].label} | " + " | ".join(f"{cost[name][str(k)]:.2f}" if str(k) in cost[name]
                                                              else "–" for k in ks) + " |" for name in report["rules"]]
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: measure and write OUT/results.json and OUT/table.md (and print the table)."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.tools.rule_table", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=Path, default=SPEC_BENCH)
    ap.add_argument("--categories", nargs="+", default=None, help="keep only prompts of these categories")
    ap.add_argument("--per-category", type=count(1), default=2)
    ap.add_argument("--skip-per-category", type=count(0), default=0,
                    help="leave out the first N prompts of each category (those used elsewhere)")
    ap.add_argument("--max-new-tokens", type=count(1, 4096), default=64)
    ap.add_argument("--temperature", type=real(0, exclusive=True), nargs="+", default=[1.0, 0.7])
    ap.add_argument("--k", type=count(1, 64), nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--rules", nargs="+", default=list(WITH_FORM), choices=WITH_FORM)
    ap.add_argument("--time-positions", type=count(0), default=64,
                    help="also time one decision of each rule at this many answer positions per temperature (ms, "
                         "median; 0: no timing). Run on an idle machine")
    ap.add_argument("--draft", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=SEED, default=0)
    ap.add_argument("--out", type=Path, default=Path("results") / "rule_table")
    args = ap.parse_args(argv)
    if not args.prompts.is_file():
        ap.error(f"--prompts {args.prompts}: no such file")
    if args.out.exists() and not args.out.is_dir():
        ap.error(f"--out {args.out} is a file: give a folder for results.json and table.md")
    try:
        prompts = read_prompts(args.prompts)
    except (OSError, ValueError) as err:
        ap.error(f"--prompts: {err}")
    if args.categories:
        unknown = sorted(set(args.categories) - {r["category"] for r in prompts})
        if unknown:
            ap.error(f"--categories {' '.join(unknown)}: no such category in {args.prompts}")
        prompts = [r for r in prompts if r["category"] in args.categories]
    prompts = first_per_category(prompts, args.per_category, args.skip_per_category)
    if not prompts:
        ap.error(f"no prompt left after skipping {args.skip_per_category} per category")
    from ..models.load import check_model_spec

    if args.draft is not None:
        try:
            check_model_spec(args.draft, "draft")
        except ValueError as err:
            ap.error(f"--draft: {err}")
    run(args, prompts)


def run(args: argparse.Namespace, prompts: list[dict]) -> dict:
    """The measurement of `main` after its arguments were checked; returns the report it wrote."""
    from transformers.utils import logging

    from ..models.load import load_pair
    from .acceptance import continuations, rule_acceptance_by_category, selection_ms
    from .timing import machine_note

    logging.disable_progress_bar()
    pair = load_pair(draft=args.draft, device=args.device)
    lookup = pair.draft_settings.prompt_lookup
    ks = sorted(set(args.k))
    report = {"pair": repr(pair), "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "lookup": lookup,
              "k": ks, "rules": list(args.rules), "time_positions": args.time_positions, "runs": {}}
    if args.time_positions:
        report["machine"] = machine_note()  # before this run loads the cores itself
    for T in args.temperature:
        recs = continuations(pair, prompts, T, args.max_new_tokens, args.seed)
        out = rule_acceptance_by_category(pair, prompts, T, args.max_new_tokens, args.seed, tuple(args.rules), ks,
                                          recs=recs, lookup=lookup)
        report["runs"][str(T)] = as_json(out)
        if args.time_positions:
            cost = selection_ms(pair, recs, T, args.rules, ks, args.time_positions, lookup, args.seed)
            report.setdefault("selection_ms", {})[str(T)] = {r: {str(k): v for k, v in c.items()} for r, c in cost.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "results.json", json.dumps(report, indent=1))
    table = render(report)
    write_text(args.out / "table.md", table)
    print(table)
    return report


if __name__ == "__main__":
    main()
