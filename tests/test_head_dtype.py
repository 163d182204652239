"""The target's output head runs in the pair's `head_dtype`: the models' dtype by default (as Hugging Face's
`generate`), float32 on request; the output law is the target's either way."""
import dataclasses

import pytest
import torch

from spectr_lib.engine import laws
from spectr_lib.engine.costs import costs_key
from spectr_lib.engine.decoder import generate
from spectr_lib.engine.verifiers import make_verifier
from spectr_lib.models.load import load_pair, tiny_pair
from conftest import PROMPT, assert_power, temperature_departures


@pytest.fixture(scope="module")
def pair16():
    return tiny_pair(vocab_size=6, seed=0, dtype=torch.bfloat16)


def test_the_head_runs_in_the_models_dtype_unless_asked_otherwise(pair16):
    assert pair16.head_dtype == torch.bfloat16 and "head" not in repr(pair16)
    wide = dataclasses.replace(pair16, head_dtype=torch.float32)
    assert "head torch.float32" in repr(wide) and costs_key(wide) != costs_key(pair16)
    ids = torch.tensor(PROMPT)
    for pair, dtype in ((pair16, torch.bfloat16), (wide, torch.float32)):
        ver = make_verifier(pair.target, pair.vocab_size, form="tree", head_dtype=pair.head_dtype)
        ver.prefill(ids)
        logits, _ = ver.step()
        assert logits.dtype == dtype and logits.shape[-1] == pair.vocab_size


def test_a_bf16_head_keeps_the_target_law(pair16):
    """SpecTr with the bf16 head follows the bf16 target's exact law (chi-square); the same samples are rejected
    against the law at another temperature (the test has the power to see a wrong law)."""
    counts = laws.empirical_counts(pair16, PROMPT, 3, 3000, 0, method="kseq", k=2, L=2, verify="tree")
    assert laws.chi_square_pvalue(counts, laws.target_sequence_law(pair16, PROMPT, 3)) > 1e-3
    assert laws.chi_square_pvalue(counts, laws.target_sequence_law(pair16, PROMPT, 3, temperature=0.6)) < 1e-6
    assert_power(laws.target_sequence_law(pair16, PROMPT, 3), temperature_departures(pair16, PROMPT, 3), 3000)


@pytest.mark.parametrize("form", ["tree", "batch"])
def test_the_heads_rows_all_at_once_keep_the_target_law(monkeypatch, form):
    """With every scored position's logits computed at the first read (`matmul_order.rows_at_once`, forced on
    whatever this CPU is), SpecTr follows the target's exact law (chi-square, with its power) in both forms."""
    from spectr_lib.models import matmul_order

    monkeypatch.setattr(matmul_order, "AT_ONCE_ROWS", 96)
    pair = tiny_pair(vocab_size=6, seed=0)
    counts = laws.empirical_counts(pair, PROMPT, 3, 3000, 0, method="kseq", k=2, L=2, verify=form)
    assert laws.chi_square_pvalue(counts, laws.target_sequence_law(pair, PROMPT, 3)) > 1e-3
    assert laws.chi_square_pvalue(counts, laws.target_sequence_law(pair, PROMPT, 3, temperature=0.6)) < 1e-6
    assert_power(laws.target_sequence_law(pair, PROMPT, 3), temperature_departures(pair, PROMPT, 3), 3000)


@pytest.mark.parametrize("bad", ["int8", torch.int64, torch.uint8, True, 1])
def test_a_bad_head_dtype_is_refused_before_loading(pair16, bad):
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_pair(head_dtype=bad)
    with pytest.raises(ValueError, match="dtype must be one of"):  # a pair made by hand or replaced
        dataclasses.replace(pair16, head_dtype=bad)
    assert dataclasses.replace(pair16, head_dtype="float32").head_dtype == torch.float32
    assert tiny_pair(vocab_size=6, head_dtype="bf16").head_dtype == torch.bfloat16


def test_greedy_with_a_float32_head_in_a_float32_pair_is_unchanged():
    """In a float32 pair the default head is float32: greedy SpecTr equals greedy AR token for token."""
    pair = tiny_pair(vocab_size=16, seed=2)
    assert pair.head_dtype == torch.float32
    ar = generate(pair, PROMPT, method="ar", max_new_tokens=20, temperature=0).token_ids
    assert torch.equal(generate(pair, PROMPT, method="kseq", k=4, L=3, max_new_tokens=20, temperature=0).token_ids, ar)
