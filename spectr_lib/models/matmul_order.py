"""How a matrix product with a few rows runs: the output head's (`head_matmul`) and the models' linear layers'
(`few_rows.FewRowsLinear`). On a CPU the BLAS product with a few rows on the left can be 2-3x slower than the same
work with the few rows on the right, and on some CPUs oneDNN's product on a packed weight (models/packed.py) beats
both; which row counts, by dtype, weight size and the CPU's flags (`runtime.cpu_flags`), are the rules below
(`packed_rows` first, then `transposed_rows` / `body_transposed_rows`). Only the summation order differs (float
rounding).
"""
from __future__ import annotations

from contextlib import contextmanager

from ..runtime import cpu_flags
from . import packed

FEW_ROWS: tuple[int, int] | None = None  # None: `transposed_rows`' measured rule; (lo, hi): that range, any dtype
BODY_ROWS: tuple[int, int] | None = None  # the same for the models' linear layers (`body_transposed_rows`)
PACKED_ROWS: tuple[int, int] | None = None  # None: `packed_rows`' measured rule; (lo, hi): that range, any dtype
AT_ONCE_ROWS: int | None = None  # None: `rows_at_once`' measured rule; n: up to n scored positions, any dtype
PACKED_MIN_WEIGHT = 2**18  # weights with fewer elements (a small model's key and value projections) never pack
NEVER = (2**62, 2**62)  # a (lo, hi) no row count reaches: an override that turns an order off


@contextmanager
def plain_products():
    """Within it, every few-rows product runs as the plain `h @ W.T` / `F.linear` (all three overrides set to
    `NEVER`): the models' linear layers behave as stock `nn.Linear` ones, as in a Hugging Face model nobody
    changed (the benchmark's HF baselines run this way). Restores the overrides afterwards."""
    global FEW_ROWS, BODY_ROWS, PACKED_ROWS
    saved = FEW_ROWS, BODY_ROWS, PACKED_ROWS
    FEW_ROWS = BODY_ROWS = PACKED_ROWS = NEVER
    try:
        yield
    finally:
        FEW_ROWS, BODY_ROWS, PACKED_ROWS = saved


def packed_rows(dtype, weight_numel: int) -> tuple[int, int] | None:
    """(lo, hi): the row counts for which a product with a weight of `weight_numel` elements runs on oneDNN's
    packed weight (`packed.linear`) on a CPU, by dtype, or None where it never does.

    Measured (2 threads, SmolLM2-135M-Instruct in float32 on top of a 200-token context, medians of 10-16
    interleaved calls, packed / the order used before) on a 2-core AVX2 CPU (AMD EPYC, no AVX-512): the target's
    body (every linear layer of 2**18 elements or more packed) 1.23 at 4 positions (against the transposed order of
    `body_transposed_rows`), 0.74-0.82 at 5-8, 0.81-0.85 at 9-33; the 49,152 x 576 output head alone 0.57 at one
    row, 0.68-0.75 at 2-9, 0.35 at 17 (a product of a few rows by a weight that fits the CPU's caches gains more,
    up to 3x, but a model's weights stream from memory). -> (1, 96) for weights of 2**22 elements or more, (5, 96)
    from 2**18 (96: the largest verification call, 81 tree positions or 8 drafts of 9, with room). Not measured on
    CPUs with AVX-512 or AMX, nor in bfloat16 (which oneDNN's packed product runs only with AVX-512): off there.
    `PACKED_ROWS`, when set, overrides the rule for every dtype (`tools/head_order.py` compares settings that way).
    """
    import torch

    if weight_numel < PACKED_MIN_WEIGHT:
        return None
    if PACKED_ROWS is not None:
        return PACKED_ROWS
    flags = cpu_flags()
    if dtype == torch.float32 and "avx2" in flags and "avx512f" not in flags:
        return (1 if weight_numel >= 2**22 else 5, 96)
    return None


def rows_at_once(positions: int, dtype, device_type: str = "cpu") -> bool:
    """Whether a verification call's lazy head (`heads.LazyLogits`) computes the logits of all its `positions`
    scored positions at the first read, in one product, instead of one position per read.

    Selection reads the accepted path and one position after it: about 1.7 rows a round of SpecTr (4, 2) on the
    embedded pair. Measured (2 threads, the 49,152 x 576 float32 head on its packed weight, a body call between
    products so that the head streams from memory, medians of 10) on a 2-core AVX2 CPU (AMD EPYC, no AVX-512): one
    product took 9.5 ms for 1 row, 9.0 for 2, 10.7 for 3, 11.3 for 5, 13.2 for 9 and 17.5 for 17, against 9.2 /
    16.8 / 26.0 ms for 1 / 2 / 3 rows one at a time -> all rows at once up to 17 positions (no more than two single
    rows cost). On a 2-core AMX Xeon one row took 3 ms and 9-17 rows 9-14 ms: one row per read there, and on
    every CPU or dtype not measured. `AT_ONCE_ROWS`, when set, overrides the rule (0: never)."""
    import torch

    if device_type != "cpu":
        return False
    if AT_ONCE_ROWS is not None:
        return positions <= AT_ONCE_ROWS
    flags = cpu_flags()
    return dtype == torch.float32 and "avx2" in flags and "avx512f" not in flags and positions <= 17


def uses_packed(x, weight) -> bool:
    """Whether the product x [..., in] @ weight.T runs on the packed weight: a CPU, the same dtype, a row count
    in `packed_rows`, no gradient needed, a weight made outside `torch.inference_mode` (one made inside has no
    version counter), and a torch build and CPU that run it (`packed.usable`)."""
    if x.device.type != "cpu" or weight.device.type != "cpu" or x.dtype != weight.dtype or not x.shape[-1]:
        return False
    if weight.is_inference():  # no version counter to notice an edit by: the plain product
        return False
    span = packed_rows(x.dtype, weight.numel())
    rows = x.numel() // x.shape[-1]
    return (span is not None and span[0] <= rows <= span[1] and not packed.needs_grad(x, weight)
            and packed.usable(x.dtype))


def transposed_rows(dtype) -> tuple[int, int]:
    """(lo, hi): the row counts for which `head_matmul` multiplies the transposed way on a CPU, by dtype.

    Measured (2 threads, d = 576, median of 30 products, both orders in one process):
    - float32 on a CPU with AMX (Intel Xeon, AVX-512 + AMX): a 49,152-row head took 3.8–12.4 ms for 2–7 rows the
      usual way against 10.3–12.8 ms transposed, and 13.8–23.2 against 9.9–11.0 ms for 8–15 rows (16: 10.2 both
      ways; 17: 10.8 against 13–15) -> (8, 15);
    - bfloat16 there: transposed 1.6–2.2 ms against 3.0–3.4 for 2–16 rows (49,152-row head), 0.55–0.72 against
      0.71–0.76 ms (the draft's 16,384 rows) -> (2, 16);
    - float32 on a 2-core AVX2 CPU (AMD EPYC): 7.6–14 ms transposed against 22.6–25.7 ms for 2–9 rows, 21.9
      against 24.9 at 17 -> (2, 16).
    `FEW_ROWS`, when set, overrides the rule for every dtype (tools/head_order.py compares orders that way)."""
    import torch

    if FEW_ROWS is not None:
        return FEW_ROWS
    if dtype == torch.float32 and "amx_bf16" in cpu_flags():
        return (8, 15)
    return (2, 16)


def body_transposed_rows(dtype) -> tuple[int, int] | None:
    """(lo, hi): the row counts for which the models' own linear layers (`models.few_rows.FewRowsLinear`)
    multiply the transposed way on a CPU, or None where they never do.

    Measured (2 threads, SmolLM2-135M-Instruct's body in float32 on top of a 119-token context, medians of 10
    interleaved calls per count): on a 2-core AVX2 CPU (AMD EPYC, no AVX-512) a call scoring 2-4 positions took
    71-82 ms transposed against 90-102 ms the usual way (0.76-0.81x), 5 positions 0.96x, 6-17 positions 1.00-1.15x,
    and one position (a matrix-vector product either way) the same -> (2, 4). Not measured on CPUs with AVX-512
    or AMX, nor in bfloat16: off there. The output head has its own rule (`transposed_rows`). `BODY_ROWS`, when
    set, overrides the rule (`tools/head_order.py --part body` compares orders that way)."""
    import torch

    if BODY_ROWS is not None:
        return BODY_ROWS
    flags = cpu_flags()
    if dtype == torch.float32 and "avx2" in flags and "avx512f" not in flags:
        return (2, 4)
    return None


def uses_transposed(rows: int, dtype, device_type: str = "cpu") -> bool:
    """Whether `head_matmul` multiplies `rows` rows of h (in `dtype`, on `device_type`) the transposed way."""
    if device_type != "cpu" or rows < 2:
        return False
    lo, hi = transposed_rows(dtype)
    return lo <= rows <= hi


def head_matmul(h, weight):
    """h [..., d] @ weight.T → logits [..., V], the output head's product, shaped and valued as `h @ weight.T`.

    On a CPU, with a few rows of h (a verification call, a batch of drafts; which counts: `transposed_rows`),
    it runs on oneDNN's packed weight (`uses_packed`) or as (weight @ h.T).T: for some row counts the BLAS product
    with a few rows on the left is 2–3× slower than either, and which counts depends on the CPU and the dtype. Only
    the summation order differs (float rounding). Elsewhere (GPU, one row, many rows) it is `h @ weight.T`.
    """
    rows = h.numel() // h.shape[-1] if h.shape[-1] else 0
    if uses_packed(h, weight):
        return packed.linear(h, weight)
    if uses_transposed(rows, h.dtype, h.device.type):
        return transposed_matmul(h, weight)
    return h @ weight.T


def transposed_matmul(h, weight):
    """h [..., d] @ weight.T → [..., V] computed as (weight @ h.T).T, contiguous: the same product, only the
    summation order differs (float rounding). The transposed order of `head_matmul` and `few_rows.FewRowsLinear`."""
    rows = h.numel() // h.shape[-1]
    return (weight @ h.reshape(rows, h.shape[-1]).T).T.contiguous().reshape(*h.shape[:-1], weight.shape[0])
