"""`warp` against an implementation it does not share code with: transformers' temperature, top-k and top-p
logits processors, in the order `generate` applies them. Every law test builds its expected law with `warp`
itself, so a defect there (top-p dropping the token that crosses the threshold, top-k keeping k − 1) moves both
sides of a chi-square test together; only an outside reference sees it."""
import pytest
import torch
from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)

from spectr_lib.theory.dists import warp

SETTINGS = [(1.0, None, None), (0.7, None, None), (1.3, 5, None), (1.0, 1, None), (1.0, 17, None), (1.0, None, 0.9),
            (0.7, None, 0.5), (1.0, None, 0.05), (1.2, 10, 0.8), (0.6, 3, 0.95)]


def reference(logits: torch.Tensor, temperature: float, top_k, top_p) -> torch.Tensor:
    procs = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k is not None:
        procs.append(TopKLogitsWarper(top_k))
    if top_p is not None:
        procs.append(TopPLogitsWarper(top_p))
    return procs(None, logits.double()).softmax(-1)


def ambiguous(logits: torch.Tensor, temperature: float, top_k, top_p, eps: float = 1e-6) -> torch.Tensor:
    """Rows where a token's mass above it lies within eps of top_p: float summation order decides them."""
    if top_p is None:
        return torch.zeros(len(logits), dtype=torch.bool)
    probs = warp(logits, temperature, top_k)
    before = probs.sort(-1, descending=True).values.cumsum(-1) - probs.sort(-1, descending=True).values
    return ((before - top_p).abs() < eps).any(-1)


@pytest.mark.parametrize("temperature,top_k,top_p", SETTINGS)
def test_warp_equals_transformers_logits_processors(temperature, top_k, top_p):
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(400, 60, generator=gen) * 3
    ours, theirs = warp(logits, temperature, top_k, top_p), reference(logits, temperature, top_k, top_p)
    fair = ~ambiguous(logits, temperature, top_k, top_p)
    assert fair.sum() >= 390
    assert torch.equal(ours[fair] > 0, theirs[fair] > 0)  # the same tokens kept
    assert torch.allclose(ours[fair], theirs[fair], rtol=0, atol=1e-6)
    if top_k is not None:
        assert ((ours > 0).sum(-1) <= top_k).all()
    if top_p is not None:  # the kept mass reaches top_p: the token that crosses the threshold is kept
        kept = torch.softmax(logits.double() / temperature, -1)
        if top_k is not None:
            kept = warp(logits, temperature, top_k)
        assert ((kept * (ours > 0)).sum(-1)[fair] >= top_p - 1e-9).all()


def test_the_reference_sees_a_planted_top_p_defect():
    """The negative control: top-p without its crossing token (keep while the mass including the token is below
    top_p) differs from the reference, so the comparison above can fail."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(50, 60, generator=gen) * 3
    probs = warp(logits)
    sorted_p, order = probs.sort(-1, descending=True)
    keep_sorted = sorted_p.cumsum(-1) < 0.9
    keep_sorted[:, 0] = True
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, keep_sorted)
    wrong = probs * keep / (probs * keep).sum(-1, keepdim=True)
    assert not torch.allclose(wrong, reference(logits, 1.0, None, 0.9), atol=1e-6)
