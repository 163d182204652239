"""Process settings for long CPU runs: glibc's allocator tunables, applied by re-executing the command once.

On Linux, glibc returns large freed blocks to the kernel (mmap/trim) and the next allocation of that size
faults every page in again. Where page faults are expensive (virtual machines, sandboxes) this dominates
batched generation: allocating and filling a 100 MB tensor 50 times took 4.4 s here (4.0 s of it in the
kernel) against 0.7 s with the tunables below, which keep freed memory in the process.

`sync` waits for a GPU's queued work, so that timings split into phases are honest on CUDA too;
`attention_backends` keeps our model calls off cuDNN attention on CUDA (a new plan per shape).
`head_matmul` is the output head's product, in the faster order for a few rows on a CPU (`transposed_rows`).
"""
from __future__ import annotations

import os
import sys

TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"  # 4 GiB each


def keep_freed_memory() -> None:
    """Re-run this command (`python -m ...`) with GLIBC_TUNABLES set, once; no-op off Linux or when already set
    (SPECTR_NO_REEXEC=1 disables it). Call it first thing in a command-line entry point."""
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ or os.environ.get("SPECTR_NO_REEXEC"):
        return
    os.environ["GLIBC_TUNABLES"] = TUNABLES
    argv = [sys.executable] + (["-m", _module_name()] if _module_name() else [sys.argv[0]]) + sys.argv[1:]
    sys.stdout.flush(), sys.stderr.flush()
    os.execv(sys.executable, argv)


def release_freed_memory() -> None:
    """Hand the memory the allocator keeps (see `keep_freed_memory`) back to the kernel: glibc's malloc_trim(0).
    Call it between large units of work (a data shard): with the tunables on, a teacher pass grew by ~0.8 GB per
    shard without it (12.8 GB after 17 shards) and stayed at 3–7 GB with it. No-op off glibc."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
        pass


def _module_name() -> str | None:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name.removesuffix(".__main__") if spec is not None and spec.name else None


def sync(device=None) -> None:
    """Wait until the GPU has finished its queued work, so that a wall-clock split of it is honest (CUDA kernels
    run asynchronously: without this, one phase's time is booked to the next). No-op on a CPU, or when CUDA has
    not been used in this process. `device`: a torch.device, or None for the current CUDA device."""
    import torch

    if (device is None or getattr(device, "type", device) == "cuda") and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def attention_backends(device):
    """The context for our model calls: on CUDA, scaled-dot-product attention may use FlashAttention, the
    memory-efficient kernel or the math kernel, but not cuDNN's. PyTorch prefers cuDNN attention on Hopper
    for masked calls, and cuDNN builds an execution plan for every new shape: decoding grows the context by a
    few tokens per call, so every verification call paid a new plan. Measured on an H200 (SmolLM2-135M shape,
    bf16): a call scoring 1 … 81 positions took 102–126 ms with cuDNN (970 ms at 2 positions) and 21–27 ms
    without. `device`: a torch.device; on a CPU this is a no-op."""
    import contextlib

    if getattr(device, "type", device) != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


FEW_ROWS: tuple[int, int] | None = None  # None: `transposed_rows`' measured rule; (lo, hi): that range, any dtype
BODY_ROWS: tuple[int, int] | None = None  # the same for the models' linear layers (`body_transposed_rows`)


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags: the words of /proc/cpuinfo's "flags" lines (empty where there is none), read once."""
    global _FLAGS
    if _FLAGS is None:
        try:
            with open("/proc/cpuinfo") as f:
                lines = [line.split(":", 1)[1] for line in f if line.split(":", 1)[0].strip() == "flags" and ":" in line]
            _FLAGS = frozenset(word for line in lines for word in line.split())
        except OSError:
            _FLAGS = frozenset()
    return _FLAGS


_FLAGS: frozenset[str] | None = None


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
    it runs as (weight @ h.T).T: for some row counts the BLAS product with a few rows on the left is 2–3× slower
    than the same work with the few rows on the right, and which counts depends on the CPU and the dtype. Only
    the summation order differs (float rounding). Elsewhere (GPU, one row, many rows) it is `h @ weight.T`.
    """
    rows = h.numel() // h.shape[-1] if h.shape[-1] else 0
    if uses_transposed(rows, h.dtype, h.device.type):
        return transposed_matmul(h, weight)
    return h @ weight.T


def transposed_matmul(h, weight):
    """h [..., d] @ weight.T → [..., V] computed as (weight @ h.T).T, contiguous: the same product, only the
    summation order differs (float rounding). The transposed order of `head_matmul` and `few_rows.FewRowsLinear`."""
    rows = h.numel() // h.shape[-1]
    return (weight @ h.reshape(rows, h.shape[-1]).T).T.contiguous().reshape(*h.shape[:-1], weight.shape[0])
