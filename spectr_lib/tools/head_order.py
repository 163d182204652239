"""Side by side: decoding with the output head's product (or, with `--part body`, every linear layer of the
models) in the plain order (h @ W.T), in the transposed order ((W @ h.T).T) for every 2-16 rows, on oneDNN's packed
weight (models/packed.py) for every 1-96 rows (2-96 in the body), and by this CPU's rules (`matmul_order.packed_rows`,
then `matmul_order.transposed_rows` / `matmul_order.body_transposed_rows`: by dtype, weight size and CPU),
interleaved prompt by prompt in one process.

Prints tokens/s of each method in the four settings and each against plain. The two orders differ only in
float rounding, so sampled texts can part ways after a near-tie; both follow the target's law.
"""
from __future__ import annotations

import argparse
import time

import torch

from ..models import matmul_order
from .timing import machine_note
from ..argtypes import count

PROMPTS = ("Explain how the gears of a bicycle work.", "Summarize the plot of a heist film in three sentences.",
           "Write a haiku about rain.")
CONFIGS = (("ar", None, 1), ("sps", 1, 4), ("block", 1, 2), ("block", 1, 4), ("kseq", 4, 2), ("kseq", 4, 4))
BODY_CONFIGS = (("ar", None, 1), ("sps", 1, 1), ("sps", 1, 2), ("block", 1, 2), ("kseq", 2, 2), ("kseq", 4, 2))
# the body's rule acts on calls of 2-4 rows: short drafts, few drafts
NEVER = matmul_order.NEVER
# (the transposed order's rows, the packed product's rows) of each setting: values for `matmul_order.FEW_ROWS` /
# `BODY_ROWS` and `matmul_order.PACKED_ROWS` (None: the CPU's rule)
ORDERS = {"plain": (NEVER, NEVER), "transposed": ((2, 16), NEVER), "packed": (NEVER, (1, 96)), "rule": (None, None)}
OVERRIDE = {"head": "FEW_ROWS", "body": "BODY_ROWS"}  # which rule each part's setting overrides
PACKED_LO = {"head": 1, "body": 2}  # the packed setting's fewest rows per part (a body's one-row product is a gemv)


def compare(pair, prompts=PROMPTS, configs=CONFIGS, max_new_tokens: int = 48, repeats: int = 2,
            progress: bool = True, part: str = "head") -> dict:
    """{(order, method, k, L): [seconds, new tokens]} over repeats × prompts, the orders interleaved per run.

    Sets `matmul_order.FEW_ROWS` (part="head") or `matmul_order.BODY_ROWS` (part="body"), and
    `matmul_order.PACKED_ROWS`, for each run and restores them afterwards (the packed setting packs every weight
    of `matmul_order.PACKED_MIN_WEIGHT` elements or more, the head's and the body's alike). ValueError for another
    part."""
    if part not in OVERRIDE:
        raise ValueError(f"part must be one of {sorted(OVERRIDE)}, got {part!r}")
    from tqdm.auto import tqdm

    from ..engine.decoder import generate

    name = OVERRIDE[part]
    saved, saved_packed, totals = getattr(matmul_order, name), matmul_order.PACKED_ROWS, {}
    runs = [(r, i, order, c) for r in range(repeats) for i in range(len(prompts)) for c in configs for order in ORDERS]
    try:
        for r, i, order, (method, k, L) in tqdm(runs, desc=f"{part} order", disable=not progress):
            rows, packed = ORDERS[order]
            setattr(matmul_order, name, rows)
            matmul_order.PACKED_ROWS = packed if packed in (None, NEVER) else (PACKED_LO[part], packed[1])
            t = time.perf_counter()
            g = generate(pair, prompts[i], method=method, k=k, L=L, max_new_tokens=max_new_tokens, seed=r * 100 + i,
                         lookup=False)  # the head's product alone, as the committed record measured it
            row = totals.setdefault((order, method, k, L), [0.0, 0])
            row[0] += time.perf_counter() - t
            row[1] += g.stats.new_tokens
    finally:
        setattr(matmul_order, name, saved)
        matmul_order.PACKED_ROWS = saved_packed
    return totals


def report(totals: dict, configs=CONFIGS) -> str:
    """A markdown table: tokens/s per setting, each against plain, and each row against AR by the rule."""
    speed = {key: n / s for key, (s, n) in totals.items()}
    lines = ["| method | k | L | plain tokens/s | transposed tokens/s | packed tokens/s | rule tokens/s "
             "| transposed / plain | packed / plain | rule / plain | vs AR (rule) |", "|---" * 11 + "|"]
    ar = speed[("rule", *configs[0])]
    for m, k, L in configs:
        a, b, p, c = (speed[(order, m, k, L)] for order in ORDERS)
        lines.append(f"| {m} | {k or 1} | {L if m != 'ar' else '–'} | {a:.2f} | {b:.2f} | {p:.2f} | {c:.2f} "
                     f"| {b / a:.2f}× | {p / a:.2f}× | {c / a:.2f}× | {c / ar:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Load the pair, run the three settings side by side, print the table."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.tools.head_order", description=__doc__)
    ap.add_argument("--max-new-tokens", type=count(1), default=48)
    ap.add_argument("--repeats", type=count(1), default=2)
    ap.add_argument("--tiny", action="store_true", help="a tiny random pair (a smoke test)")
    ap.add_argument("--part", choices=sorted(OVERRIDE), default="head",
                    help="head: the output head's product; body: every linear layer of the two models")
    args = ap.parse_args(argv)
    if args.max_new_tokens < 1 or args.repeats < 1:
        ap.error("--max-new-tokens and --repeats must be at least 1")
    from ..models.few_rows import use_few_rows_order
    from ..models.load import load_pair, tiny_pair

    pair = tiny_pair(vocab_size=64, seed=0, hidden=32) if args.tiny else load_pair(device="cpu")
    if args.tiny:  # load_pair does this; the tiny pair keeps nn.Linear unless asked
        for model in (pair.target, pair.draft):
            use_few_rows_order(model)
    prompts = ([1, 2, 3], [4, 5, 6, 7], [8, 9]) if args.tiny else PROMPTS
    configs = CONFIGS if args.part == "head" else BODY_CONFIGS
    totals = compare(pair, prompts, configs, args.max_new_tokens, args.repeats, part=args.part)
    of = matmul_order.transposed_rows if args.part == "head" else matmul_order.body_transposed_rows
    rule = {str(dt).removeprefix("torch."): of(dt) for dt in (torch.float32, torch.bfloat16)}
    print(f"{pair!r}, {len(prompts)} prompts × {args.repeats}, up to {args.max_new_tokens} tokens, T = 1; {machine_note()}")
    packed = {str(dt).removeprefix("torch."): matmul_order.packed_rows(dt, 2**22 if args.part == "head" else 2**18)
              for dt in (torch.float32, torch.bfloat16)}
    print(f"this CPU's rule for the {args.part} (rows transposed, by dtype; None: never): {rule}; rows on the packed "
          f"weight (by dtype; None: never): {packed}")
    print(report(totals, configs))


if __name__ == "__main__":
    main()
