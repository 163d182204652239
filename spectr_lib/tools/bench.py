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
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..engine.decoder import METHODS, generate, pair_costs
from ..engine.methods import get_method
from ..engine.inputs import lookup_arg
from ..engine.verifiers import default_form
from ..argtypes import SEED, TEMPERATURE, count
from ..models.matmul_order import plain_products
from ..prompts import encode_chat, first_per_category, read_prompts
from ..runtime import attention_backends, sync
from .acceptance import acceptance_by_category
from .bench_results import HF_METHODS, Config, Result, render, to_json
from ..files import write_text

KS, LS = (1, 2, 4, 8), (2, 4, 8)
SWEEP_MAX = 64  # largest k and L a sweep runs (the paper's go to 8; the engine's k to 1024)



def sweep_configs(methods=METHODS, ks=KS, Ls=LS, hf: bool = True, auto: bool = True) -> list[Config]:
    """The configurations of a sweep: single-draft methods (SpS, block verification) at k = 1, the multi-draft
    rules at k ≥ 2, then (auto=True) every speculative method with L = "auto" (and k = "auto" where k varies)."""
    out = [Config("hf_ar")] if hf else []
    if "ar" in methods:
        out.append(Config("ar"))
    spec = [m for m in METHODS if m in methods and m != "ar"]
    fixed = {m: get_method(m).k for m in spec}
    for L in Ls:
        for m in spec:
            out += [Config(m, fixed[m], L)] if fixed[m] else [Config(m, k, L) for k in ks if k >= 2]
    if auto:
        out += [Config(m, fixed[m] or "auto", "auto") for m in spec]
    return out


class _CallClock:
    """Counts a model's forward calls and times the first one (Hugging Face's prompt prefill)."""

    def __init__(self, model: torch.nn.Module):
        self.calls, self.first_seconds, self._t0 = 0, 0.0, 0.0
        self._hooks = [model.register_forward_pre_hook(self._pre), model.register_forward_hook(self._post)]

    def _pre(self, *_):
        self.calls += 1
        if self.calls == 1:
            sync()
            self._t0 = time.perf_counter()

    def _post(self, *_):
        if self.calls == 1:
            sync()
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
        sync()
        t0 = time.perf_counter()
        # the attention kernels our decoder uses, and the linear layers' stock products (as a model nobody changed)
        with attention_backends(pair.device), plain_products():
            out = pair.target.generate(ids[None], **kw)
        sync()
        seconds = time.perf_counter() - t0 - clock.first_seconds
    finally:
        clock.remove()
    return out.shape[1] - len(ids), clock.calls, seconds


def hf_can_assist(pair) -> bool:
    """Hugging Face's assisted generation drives only standalone causal LMs, not a feature draft."""
    return pair.draft is not None and hasattr(pair.draft, "generate")


def run(pair, prompts: list[dict], configs: list[Config], max_new_tokens: int, temperature: float, seed: int,
        progress: bool = True, on_prompt=None) -> list[Result]:
    """Run every configuration on every prompt (configurations interleaved per prompt); each result also
    holds the cost model's prediction of its time from the rounds it ran (engine/costs.py). on_prompt(results,
    n_done), if given, is called after each prompt (the command line saves partial results with it).

    A prompt record holds "prompt" (text, chat template applied) or "ids" (token ids), and "category".
    """
    for c in configs:  # before any model call
        if c.lookup and not c.drafts:
            raise ValueError(f"{c.name}: lookup=True mixes the draft's q, and {c.method!r} drafts nothing")
    # each row's lookup as generate takes it (None: the draft's own setting), shown as "+lookup" in the tables
    results = [Result(replace(c, lookup=lookup_arg(pair, c.lookup) if c.drafts else False))
               for c in configs]
    ours = pair.draft is not None and any(c.drafts for c in configs)
    costs = pair_costs(pair, progress=progress) if ours else None  # predictions, and what "auto" chooses from
    form = default_form(pair.device)  # the form generate verifies with here
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
                L = c.L if c.L == "auto" else max(c.L, 1)
                g = generate(pair, ids, method=c.method, k=c.k, L=L, max_new_tokens=max_new_tokens,
                             temperature=temperature, seed=seed + i, costs=costs, lookup=c.lookup)
                s = g.stats
                res.add(rec["category"], s.new_tokens, s.target_calls, s.seconds_total - s.seconds_prefill, s.accepted_hist)
                res.add_rounds(s, costs, form)
                res.add_profile(s)
            bar.update(1)
        if on_prompt is not None:
            on_prompt(results, i + 1)
    bar.close()
    return results


def token_acceptance(pair, prompts: list[dict], max_new_tokens: int, temperature: float, seed: int) -> dict:
    """Mean Σ min(p, q) along target-sampled continuations, per category and overall (q at the draft's own
    temperature for one draft and with its own prompt-lookup setting, as SpS draws it)."""
    by_cat = acceptance_by_category(pair, prompts, temperature, max_new_tokens, seed + 10_000, ks=(1,),
                                    lookup=lookup_arg(pair, None))
    return {c: v["k1"] for c, v in by_cat.items()}


def main(argv: list[str] | None = None) -> None:
    """Command line: run the sweep and write results/<name>/{results.json, table.md, *.png}."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.tools.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=Path, default=None, help="JSONL prompts (default: data/prompts/eval.jsonl)")
    ap.add_argument("--limit", type=count(1), default=None, help="use the first N prompts")
    ap.add_argument("--per-category", type=count(1), default=None, help="use N prompts of each category")
    ap.add_argument("--categories", nargs="+", default=None, help="keep only prompts of these categories")
    ap.add_argument("--skip-per-category", type=count(0), default=0,
                    help="with --per-category: leave out the first N of each category (e.g. those the draft was evaluated on)")
    ap.add_argument("--max-new-tokens", type=count(1, 100_000), default=128)
    ap.add_argument("--temperature", type=TEMPERATURE, nargs="+", default=[1.0, 0.7])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--k", type=count(1, SWEEP_MAX), nargs="+", default=list(KS),
                    help=f"drafts per round of the fixed configurations (1..{SWEEP_MAX})")
    ap.add_argument("--L", type=count(1, SWEEP_MAX), nargs="+", default=list(LS),
                    help=f"draft lengths of the fixed configurations (1..{SWEEP_MAX}, below --max-new-tokens)")
    ap.add_argument("--no-hf", action="store_true", help="skip the Hugging Face baselines")
    ap.add_argument("--no-auto", action="store_true", help="skip the k = 'auto' / L = 'auto' rows")
    ap.add_argument("--lookup-L", type=count(1, SWEEP_MAX), default=4,
                    help="candidate tokens of HF's prompt-lookup baseline")
    ap.add_argument("--with-lookup", action="store_true",
                    help="run every speculative configuration without and with prompt-lookup mixing "
                         "(generate(lookup=False / True)), side by side, prompt by prompt; otherwise each takes the "
                         "draft's own setting (shown as +lookup where it is on)")
    ap.add_argument("--target", default=None)
    ap.add_argument("--draft", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--head-dtype", default=None, choices=["float32", "bfloat16", "float16"],
                    help="the dtype our decoder runs the target's output head in (default: --dtype, as HF generate)")
    ap.add_argument("--seed", type=SEED, default=0)
    ap.add_argument("--profile", action="store_true",
                    help="also print where each configuration's rounds spent their time: ms per round of drafting, "
                         "verification, selection and the rest, and tokens per round, by (k, L) chosen")
    ap.add_argument("--out", type=Path, default=Path("results") / "bench")
    ap.add_argument("--render", type=Path, default=None, metavar="RESULTS_JSON",
                    help="only re-write table.md and the plots of a saved results.json (into its folder)")
    args = ap.parse_args(argv)
    check_args(ap, args)
    if args.render is not None:
        try:
            report = json.loads(args.render.read_text())
            if not isinstance(report, dict) or not {"pair", "device", "runs"} <= set(report):
                raise ValueError("not a benchmark report (results.json with pair, device and runs)")
        except (ValueError, UnicodeDecodeError) as err:
            ap.error(f"--render {args.render}: {err}")
        print(render(report, args.render.parent))
        return
    try:
        _run_main(args)
    except KeyboardInterrupt:
        raise SystemExit(f"\ninterrupted: every finished prompt is in {args.out / 'results.json'} "
                         f"(render it with --render {args.out / 'results.json'})") from None


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject settings the sweep cannot run, before any model is loaded (argparse's usage error, exit 2)."""
    long = [L for L in args.L if L >= args.max_new_tokens]
    if long:
        ap.error(f"--L {long[0]}: a draft must be shorter than --max-new-tokens ({args.max_new_tokens}), or its rounds "
                 f"would be cut to fit and the row would measure another L")
    for flag, path in (("--render", args.render), ("--prompts", args.prompts)):
        if path is not None and not path.is_file():
            ap.error(f"{flag} {path}: no such file")
    if args.render is not None:
        return
    from ..models.load import resolve_device

    try:
        resolve_device(args.device)
    except ValueError as err:
        ap.error(f"--device: {err}")
    if args.skip_per_category and not args.per_category:
        ap.error("--skip-per-category skips prompts of each category before --per-category takes some: give "
                 "--per-category too")
    if args.out.exists() and not args.out.is_dir():
        ap.error(f"--out {args.out} is a file: give a folder for results.json, table.md and the plots")
    if args.categories:
        try:
            have = {r["category"] for r in read_prompts(args.prompts)}
        except (OSError, ValueError) as err:
            ap.error(f"--prompts: {err}")
        unknown = sorted(set(args.categories) - have)
        if unknown:
            ap.error(f"--categories {' '.join(unknown)}: no such category in "
                     f"{args.prompts or 'the default prompts file'} (it has {', '.join(sorted(have))})")


def _run_main(args: argparse.Namespace) -> None:
    """The sweep of `main` after its arguments were checked."""
    from transformers.utils import logging

    from ..models.load import load_pair

    logging.disable_progress_bar()
    pair = load_pair(args.target, args.draft, device=args.device, dtype=args.dtype, head_dtype=args.head_dtype)
    prompts = read_prompts(args.prompts)
    if args.categories:  # each one is in the file (check_args)
        prompts = [r for r in prompts if r["category"] in args.categories]
    if args.per_category:
        prompts = first_per_category(prompts, args.per_category, args.skip_per_category)
    prompts = prompts[: args.limit]
    configs = sweep_configs(args.methods, args.k, args.L, hf=not args.no_hf, auto=not args.no_auto)
    if args.with_lookup:
        configs = [v for c in configs for v in ([replace(c, lookup=False), replace(c, lookup=True)]
                                                if c.drafts else [c])]
    if not args.no_hf:
        configs[1:1] = [Config("hf_assisted"), Config("hf_lookup", 1, args.lookup_L)]
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if pair.device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    report = {"device": device, "dtype": str(pair.dtype), "head_dtype": str(pair.head_dtype), "pair": repr(pair), "prompts": len(prompts),
              "max_new_tokens": args.max_new_tokens, "profile": args.profile, "runs": {}}
    lookup = (f"hf_lookup is Hugging Face's draft-free speculative decoding (prompt lookup, {args.lookup_L} candidate "
              "tokens). HF rows exclude their first target call (the prompt), as ours exclude the prefill, and run the "
              "models' linear layers as stock nn.Linear (no few-rows product order, no packed weights).")
    no_assist = "Hugging Face assisted generation cannot drive this draft (a feature draft): that baseline is omitted."
    report["notes"] = [] if args.no_hf else ([] if hf_can_assist(pair) else [no_assist]) + [lookup]  # notes on HF rows
    def save_partial(results, done, T):  # a run cut short keeps every finished prompt
        report["runs"][str(T)] = {"results": to_json(results), "token_acceptance": {}, "prompts_done": done}
        write_text(args.out / "results.json", json.dumps(report, indent=1))

    for T in args.temperature:
        results = run(pair, prompts, configs, args.max_new_tokens, T, args.seed,
                      on_prompt=lambda res, done, T=T: save_partial(res, done, T))
        acc = token_acceptance(pair, prompts, min(args.max_new_tokens, 128), T, args.seed) if T > 0 else {}
        report["runs"][str(T)] = {"results": to_json(results), "token_acceptance": acc,
                                  "token_acceptance_lookup": lookup_arg(pair, None)}
        write_text(args.out / "results.json", json.dumps(report, indent=1))  # after each temperature: a long run keeps its part
        md = render(report, args.out)
        print(md[md.index(f"## T = {T}"):], flush=True)
    print(f"wrote {args.out}/results.json, table.md and plots")


if __name__ == "__main__":
    main()
