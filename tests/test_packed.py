"""Few-row products on oneDNN's packed weight: the value of F.linear, the rule that picks them, and the decoder's
law unchanged when every linear layer and the head run on it."""
import pytest
import torch
import torch.nn.functional as F

from spectr_lib import runtime
from spectr_lib.engine import laws
from spectr_lib.models import matmul_order, packed
from spectr_lib.models.few_rows import FewRowsLinear, use_few_rows_order
from spectr_lib.models.load import tiny_pair
from spectr_lib.models.matmul_order import head_matmul, packed_rows, uses_packed
from conftest import PROMPT, assert_power, temperature_departures


@pytest.fixture
def packed_calls(monkeypatch):
    """The input shapes of every `packed.linear` call from here on (the product itself still runs)."""
    calls = []
    real = packed.linear
    monkeypatch.setattr(packed, "linear", lambda *a: calls.append(a[0].shape) or real(*a))
    return calls


def test_float32_runs_packed_on_this_build():
    assert packed.usable(torch.float32)  # every x86 CPU build of the pinned torch has oneDNN


@pytest.mark.parametrize("shape", [(24,), (1, 24), (5, 24), (2, 3, 24), (96, 24)])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_is_f_linear(shape, bias):
    g = torch.Generator().manual_seed(len(shape) + shape[0])
    x, w = torch.randn(*shape, generator=g), torch.randn(40, 24, generator=g)
    b = torch.randn(40, generator=g) if bias else None
    got = packed.linear(x, w, b)
    assert got.shape == (*shape[:-1], 40) and got.is_contiguous()
    torch.testing.assert_close(got, F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    strided = torch.randn(*shape[:-1], 48, generator=g)[..., ::2]  # a non-contiguous input
    torch.testing.assert_close(packed.linear(strided, w, b), F.linear(strided, w, b), rtol=1e-5, atol=1e-5)


def test_the_packed_weight_follows_a_weight_changed_in_place():
    w, x = torch.randn(16, 8), torch.randn(3, 8)
    first = packed.linear(x, w)
    with torch.no_grad():
        w.mul_(-2)  # an optimiser's step, a load_state_dict
    torch.testing.assert_close(packed.linear(x, w), -2 * first, rtol=1e-5, atol=1e-5)
    assert packed.packed_weight(w) is packed.packed_weight(w)  # made once per version


@pytest.mark.parametrize("flags, dtype, numel, want", [
    ({"avx2"}, torch.float32, 2**22, (1, 96)),  # measured on an AVX2 EPYC: the head
    ({"avx2"}, torch.float32, 2**18, (5, 96)),  # its MLP and attention weights
    ({"avx2"}, torch.float32, 2**18 - 1, None),  # the key and value projections
    ({"avx2"}, torch.bfloat16, 2**22, None),
    ({"avx2", "avx512f"}, torch.float32, 2**22, None),  # not measured there
    ({"avx2", "avx512f", "amx_bf16"}, torch.float32, 2**22, None),
])
def test_packed_rows_follows_the_cpu_the_dtype_the_weight_and_the_override(monkeypatch, flags, dtype, numel, want):
    monkeypatch.setattr(runtime, "_FLAGS", frozenset(flags))
    assert packed_rows(dtype, numel) == want
    monkeypatch.setattr(matmul_order, "PACKED_ROWS", (3, 4))
    assert packed_rows(dtype, numel) == (None if numel < matmul_order.PACKED_MIN_WEIGHT else (3, 4))


def test_uses_packed_only_outside_autograd_and_in_the_weights_dtype(monkeypatch):
    monkeypatch.setattr(matmul_order, "PACKED_MIN_WEIGHT", 0)
    monkeypatch.setattr(matmul_order, "PACKED_ROWS", (2, 8))
    w = torch.randn(16, 8)
    assert uses_packed(torch.randn(3, 8), w)
    assert not uses_packed(torch.randn(1, 8), w) and not uses_packed(torch.randn(9, 8), w)
    assert not uses_packed(torch.randn(3, 8, dtype=torch.float64), w)
    assert not uses_packed(torch.randn(3, 8, requires_grad=True), w)
    with torch.no_grad():
        assert uses_packed(torch.randn(3, 8, requires_grad=True), w)
    monkeypatch.setitem(packed._USABLE, torch.float32, False)  # a build or CPU without oneDNN's product
    assert not uses_packed(torch.randn(3, 8), w)


def test_linear_layers_and_the_head_take_the_packed_product_by_the_rule_and_keep_gradients(monkeypatch, packed_calls):
    monkeypatch.setattr(runtime, "_FLAGS", frozenset({"avx2"}))
    monkeypatch.setattr(matmul_order, "PACKED_MIN_WEIGHT", 0)  # the rule's row counts for a small weight
    layer = torch.nn.Linear(8, 2**18 // 8)
    use_few_rows_order(torch.nn.Sequential(layer))
    assert type(layer) is FewRowsLinear
    with torch.no_grad():
        for rows, taken in ((1, False), (4, False), (5, True), (96, True), (97, False)):
            packed_calls.clear()
            x = torch.randn(rows, 8)
            torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
            assert bool(packed_calls) == taken, rows
        packed_calls.clear()
        head_matmul(torch.randn(1, 8), torch.randn(2**22 // 8, 8))  # a head-sized weight packs from one row
        assert packed_calls == [(1, 8)]
    x = torch.randn(6, 8, requires_grad=True)
    packed_calls.clear()
    layer(x).square().sum().backward()  # training: the usual product, gradients as nn.Linear's
    assert not packed_calls and x.grad is not None


def test_the_decoders_law_is_the_targets_with_every_product_packed(monkeypatch, packed_calls):
    """SpecTr on a tiny pair whose every linear layer and head run on packed weights (1-96 rows) follows the
    target's exact law (chi-square); the same samples are rejected against the law at another temperature."""
    pair = tiny_pair(vocab_size=6, seed=0)
    for model in (pair.target, pair.draft):
        use_few_rows_order(model)
    monkeypatch.setattr(matmul_order, "PACKED_MIN_WEIGHT", 0)
    monkeypatch.setattr(matmul_order, "PACKED_ROWS", (1, 96))
    counts = laws.empirical_counts(pair, PROMPT, 3, 3000, 0, method="kseq", k=2, L=2, verify="tree")
    assert len(packed_calls) > 3000  # every round's calls went through it
    assert laws.chi_square_pvalue(counts, laws.target_sequence_law(pair, PROMPT, 3)) > 1e-3
    assert laws.chi_square_pvalue(counts, laws.target_sequence_law(pair, PROMPT, 3, temperature=0.6)) < 1e-6
    assert_power(laws.target_sequence_law(pair, PROMPT, 3), temperature_departures(pair, PROMPT, 3), 3000)


def test_plain_products_make_the_layers_stock_and_restore_the_rules(monkeypatch, packed_calls):
    """The benchmark's Hugging Face rows run the model as nobody changed it: no packed, no transposed product."""
    monkeypatch.setattr(runtime, "_FLAGS", frozenset({"avx2"}))
    monkeypatch.setattr(matmul_order, "PACKED_MIN_WEIGHT", 0)
    layer = torch.nn.Linear(8, 64)
    use_few_rows_order(torch.nn.Sequential(layer))
    x = torch.randn(3, 8)
    with torch.no_grad(), matmul_order.plain_products():
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
        head_matmul(torch.randn(9, 8), torch.randn(2**22 // 8, 8))
    assert not packed_calls
    assert (matmul_order.FEW_ROWS, matmul_order.BODY_ROWS, matmul_order.PACKED_ROWS) == (None, None, None)
    with torch.no_grad():
        layer(torch.randn(5, 8))
    assert packed_calls  # the rule again


def test_edits_the_version_counter_misses_and_inference_weights_are_seen():
    w, x = torch.randn(16, 8), torch.randn(3, 8)
    packed.linear(x, w)
    w.data.mul_(0.5)  # through .data: no version bump, seen by the 16 entries the product reads
    torch.testing.assert_close(packed.linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
    w.mul_(2.0)  # in place: the version counter
    torch.testing.assert_close(packed.linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
    w.data[1, 3] += 1.0  # through .data, off the 16 entries: the documented blind spot, which forget() closes
    packed.forget(w)
    torch.testing.assert_close(packed.linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
    for dtype in (torch.bfloat16, torch.float64):  # the entries are read as bits whatever the dtype
        v = torch.randn(16, 8, dtype=dtype)
        before = packed._sample_sum(v, packed._sampled_entries(v))
        v.data[0, 0] += 1.0
        assert packed._sample_sum(v, packed._sampled_entries(v)) != before
    with torch.inference_mode():
        frozen = torch.randn(2**18 // 8, 8)
    with torch.no_grad():
        assert not uses_packed(torch.randn(9, 8), frozen)  # no version counter: the plain product


def test_a_model_edited_through_data_between_calls_is_seen_by_the_next_call(monkeypatch):
    """A generation, then an edit through `.data`: the next product (a generation, or the model called directly as
    Hugging Face would) uses the edited weight, not the packed copy of the old one."""
    from spectr_lib.engine.decoder import generate

    pair = tiny_pair(vocab_size=6, seed=0)
    use_few_rows_order(pair.target)
    monkeypatch.setattr(matmul_order, "PACKED_MIN_WEIGHT", 0)
    monkeypatch.setattr(matmul_order, "PACKED_ROWS", (1, 96))
    generate(pair, PROMPT, method="kseq", k=2, L=2, max_new_tokens=4, seed=0)
    layer = next(m for m in pair.target.modules() if isinstance(m, FewRowsLinear) and m.weight in packed._PACKED)
    x = torch.randn(3, layer.in_features)
    with torch.no_grad():
        layer.weight.data.mul_(3.0)
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
        ids = torch.tensor([PROMPT])
        with matmul_order.plain_products():
            want = pair.target(ids[:, :2]).logits
        torch.testing.assert_close(pair.target(ids[:, :2]).logits, want, rtol=1e-5, atol=1e-5)
