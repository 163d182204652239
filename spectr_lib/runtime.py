"""Process settings for long CPU runs: glibc's allocator tunables, applied by re-executing the command once.

On Linux, glibc returns large freed blocks to the kernel (mmap/trim) and the next allocation of that size
faults every page in again. Where page faults are expensive (virtual machines, sandboxes) this dominates
batched generation: allocating and filling a 100 MB tensor 50 times took 4.4 s here (4.0 s of it in the
kernel) against 0.7 s with the tunables below, which keep freed memory in the process.

`sync` waits for a GPU's queued work, so that timings split into phases are honest on CUDA too;
`attention_backends` keeps our model calls off cuDNN attention on CUDA (a new plan per shape).
`cpu_flags` are the CPU's feature flags (the rules of models/matmul_order.py read them).
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


def cpu_kind() -> str:
    """The CPU's kind as the speed rules tell them apart: "AMX", "AVX-512 (bf16)", "AVX-512", "AVX2" or "other"."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512f" in flags:
        return "AVX-512 (bf16)" if "avx512_bf16" in flags else "AVX-512"
    return "AVX2" if "avx2" in flags else "other"
