"""Shared fixtures: the tiny pair and the embedded target (float32 for exactness)."""
import pytest
import torch


@pytest.fixture(scope="session")
def embedded_f32():
    """The embedded SmolLM2-135M-Instruct target and tokenizer, float32 on CPU."""
    from spectr_lib.models.load import load_target

    return load_target(device="cpu", dtype=torch.float32)
