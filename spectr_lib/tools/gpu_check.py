"""A short check for a machine with a CUDA GPU: `python -m spectr_lib.tools.gpu_check` (or `make gpu-check`).

Meant for a bare accelerator machine with torch and transformers but no network: no package is installed,
nothing is downloaded (carry the embedded target with `offline_bundle`, then run with PYTHONPATH=SITE:.). Its
phases, each timed and written to OUT/gpu_check.json as soon as it ends, so a run cut short keeps what it did:

    env     python, torch, transformers, the GPU's name, memory and compute capability
    smoke   a tiny random pair on the GPU: every method and both verification forms decode; at temperature 0
            each equals the target's own greedy output; the law of the first two tokens of K-SEQ, RRS without
            replacement and block verification passes a chi-square test against the exact law (fixed seeds)
    costs   the embedded pair's cost model calibrated on the GPU: a target call by positions scored (tree form)
            and by (k, L) (batch form), a draft step by batch, in ms and in autoregressive steps
    bench   the benchmark (`bench`) on the given prompts: AR, SpS, block, SpecTr, RRS, fixed and auto (k, L),
            with Hugging Face baselines, into OUT/bench/
    forms   K-SEQ tokens/s of every verification form side by side (`bench_verify`)

A failing phase prints its traceback and the next one runs; the exit status is 1 if any phase failed.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

from ..argtypes import TEMPERATURE, count
from ..files import write_text

PHASES = ("env", "smoke", "costs", "bench", "forms")


def environment(device: str = "cuda") -> dict:
    """Versions and the GPU's properties; raises RuntimeError when device is "cuda" and torch sees no GPU."""
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "device": device, "cpu_threads": torch.get_num_threads()}
    if device != "cuda":
        return out
    if not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device here: this check is for a machine with an NVIDIA GPU "
                           "(--device cpu runs the same phases on the CPU)")
    p = torch.cuda.get_device_properties(0)
    return {**out, "cuda": torch.version.cuda, "gpu": p.name, "gpu_memory_gib": round(p.total_memory / 2**30, 1),
            "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count}


def smoke(samples: int = 1500, device: str = "cuda") -> dict:
    """Every method on a tiny pair on the GPU: greedy equality (every verification form) and a chi-square of the
    first two tokens' law for K-SEQ, RRS without replacement and block verification. Raises AssertionError on a failure."""

    from ..engine.decoder import METHODS, generate
    from ..engine.verifiers import VERIFIERS
    from ..engine.laws import chi_square_pvalue, empirical_counts, target_sequence_law
    from ..models.load import tiny_pair

    pair = tiny_pair(vocab_size=6, device=device)
    prompt = torch.tensor([1, 4, 2], device=device)
    with torch.no_grad():  # the target's own greedy continuation, step by step
        ids = prompt[None]
        for _ in range(16):
            nxt = pair.target(ids).logits[0, -1, : pair.vocab_size].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], 1)
        want = ids[0, len(prompt):].cpu()
    law = target_sequence_law(pair, prompt, n_tokens=2)
    out = {"greedy_equal": {}, "chi2_p": {}}
    for method in METHODS:
        for form in VERIFIERS:
            k = 1 if method in ("ar", "sps", "block") else 4
            got = generate(pair, prompt, method=method, k=k, L=3, max_new_tokens=16, temperature=0, seed=1, verify=form).token_ids
            out["greedy_equal"][f"{method}, {form}"] = bool(torch.equal(got, want))
    for method, k in (("kseq", 4), ("rrs_wor", 3), ("block", 1)):
        counts = empirical_counts(pair, prompt, n_tokens=2, n_samples=samples, seed=0, method=method, k=k, L=3)
        out["chi2_p"][method] = chi_square_pvalue(counts, law)
    assert all(out["greedy_equal"].values()), f"greedy output differs from the target's: {out['greedy_equal']}"
    assert min(out["chi2_p"].values()) > 1e-3, f"first-two-token law rejected on the GPU: {out['chi2_p']}"
    return out


def costs_summary(costs) -> dict:
    """The calibrated costs as tables in ms and in autoregressive steps (what `auto` chooses from)."""
    ar = costs.ar_ms
    return {"ar_ms": round(ar, 3),
            **{f"{form}_form": [{"rows": int(r), "positions_per_row": int(c), "ms": round(ms, 3), "ar_steps": round(ms / ar, 2)}
                                for r, c, ms in calls] for form, calls in costs.verify_ms.items()},
            "draft_step": [{"batch": int(b), "ms": round(ms, 3), "ar_steps": round(ms / ar, 3)} for b, ms in costs.draft_ms],
            "select_ms_per_position": round(costs.select_ms, 4), "overhead_ms_per_round": round(costs.overhead_ms, 3),
            "alpha": costs.alpha}


def calibrate_embedded(dtype: str | None, device: str = "cuda") -> dict:
    """Load the embedded pair on the device and calibrate its cost model (recalibrated, also cached)."""
    from transformers.utils import logging

    from ..engine.decoder import pair_costs
    from ..models.load import load_pair

    logging.disable_progress_bar()
    t0 = time.perf_counter()
    pair = load_pair(device=device, dtype=dtype)
    loaded = time.perf_counter() - t0
    out = costs_summary(pair_costs(pair, recalibrate=True, progress=False))
    return {"pair": repr(pair), "load_seconds": round(loaded, 1), **out}


def main(argv: list[str] | None = None) -> None:
    """Run the phases in order (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.tools.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("results") / "gpu")
    ap.add_argument("--device", default="cuda", help="cuda (default), or cpu to try the same phases on a CPU")
    ap.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                    help="default: the library's for CUDA (bfloat16)")
    ap.add_argument("--smoke-samples", type=count(200), default=1500, help="samples per chi-square test of the smoke phase")
    ap.add_argument("--prompts", default=None, help="JSONL prompts of the bench phase (default: the project's own)")
    ap.add_argument("--per-category", type=count(1), default=None)
    ap.add_argument("--skip-per-category", type=count(0), default=0)
    ap.add_argument("--limit", type=count(1), default=8)
    ap.add_argument("--max-new-tokens", type=count(1), default=64)
    ap.add_argument("--temperature", nargs="+", type=TEMPERATURE, default=[1.0])  # checked here, passed on to bench
    ap.add_argument("--k", nargs="+", type=count(1, 8), default=[4, 8])
    ap.add_argument("--L", nargs="+", type=count(1, 8), default=[2, 4, 8])
    args = ap.parse_args(argv)
    if "bench" in args.phases and max(args.L) >= args.max_new_tokens:
        ap.error(f"--L {max(args.L)}: a draft must be shorter than --max-new-tokens ({args.max_new_tokens}) in the "
                 f"bench phase")
    args.out.mkdir(parents=True, exist_ok=True)
    report, failed = {"phases": {}}, []
    bench_args = ["--device", args.device, "--out", str(args.out / "bench"), "--max-new-tokens", str(args.max_new_tokens),
                  "--methods", "ar", "sps", "block", "kseq", "rrs", "--temperature", *map(str, args.temperature),
                  "--k", *map(str, args.k), "--L", *map(str, args.L)] + (["--dtype", args.dtype] if args.dtype else [])
    bench_args += ["--prompts", args.prompts] if args.prompts else []
    bench_args += (["--per-category", str(args.per_category), "--skip-per-category", str(args.skip_per_category)]
                   if args.per_category else ["--limit", str(args.limit)])
    for phase in args.phases:
        t0 = time.perf_counter()
        print(f"\n=== {phase} ===", flush=True)
        try:
            if phase == "env":
                result = environment(args.device)
            elif phase == "smoke":
                result = smoke(args.smoke_samples, args.device)
            elif phase == "costs":
                result = calibrate_embedded(args.dtype, args.device)
            elif phase == "bench":
                from .bench import main as bench_main

                bench_main(bench_args)
                result = {"folder": str(args.out / "bench"), "args": bench_args}
            else:
                from .bench_verify import main as forms_main

                forms_main(["--device", args.device, "--limit", "4", "--max-new-tokens", str(args.max_new_tokens)]
                           + (["--dtype", args.dtype] if args.dtype else []) + (["--prompts", args.prompts] if args.prompts else []))
                result = {}
            status = "ok"
        except Exception as err:  # report and go on: a later phase may still work
            if phase != "env":
                traceback.print_exc()
            result, status = {"error": f"{type(err).__name__}: {err}"}, "failed"
            failed.append(phase)
        report["phases"][phase] = {"status": status, "seconds": round(time.perf_counter() - t0, 1), **result}
        print(json.dumps(report["phases"][phase], indent=1)[:4000], flush=True)
        write_text(args.out / "gpu_check.json", json.dumps(report, indent=1))
        if phase == "env" and status == "failed":
            print(f"the environment cannot run this check: {result['error']}", flush=True)
            break  # every later phase would fail for the same reason
    print(f"\nphases failed: {', '.join(failed)}" if failed else "\nevery phase passed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
