"""Process and device settings of runtime.py."""
import torch

from spectr_lib.runtime import attention_backends, sync


def test_attention_backends_leave_out_cudnn_on_cuda_only():
    """Our model calls on CUDA keep off cuDNN attention (a new execution plan per shape); CPUs are untouched."""
    before = torch.backends.cuda.cudnn_sdp_enabled()
    with attention_backends(torch.device("cuda")):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
    with attention_backends(torch.device("cpu")):
        assert torch.backends.cuda.cudnn_sdp_enabled() == before


def test_sync_waits_for_cuda_only_when_cuda_is_in_use(monkeypatch):
    """sync() calls torch.cuda.synchronize for a CUDA device (or None) once CUDA is in use, never for a CPU."""
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: calls.append(a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    sync(torch.device("cpu"))
    assert calls == []
    sync(torch.device("cuda"))
    sync()
    assert len(calls) == 2
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # CUDA never used in this process: nothing to wait for
    sync(torch.device("cuda"))
    assert len(calls) == 2
