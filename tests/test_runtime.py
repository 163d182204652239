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


def test_sync_is_a_no_op_without_cuda():
    sync(torch.device("cpu"))
    sync()
