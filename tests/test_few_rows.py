"""The models' linear layers in the faster order for a few rows: the rule by CPU and dtype, the same values as
nn.Linear (float rounding only), the order the rule says, and the swap in place (parameters, ties, counts)."""
import pytest
import torch

from spectr_lib import runtime
from spectr_lib.models.few_rows import FewRowsLinear, use_few_rows_order
from spectr_lib.models.matmul_order import body_transposed_rows

AVX2 = frozenset({"avx2", "fma"})


@pytest.mark.parametrize("flags, dtype, want", [
    (AVX2, torch.float32, (2, 4)),  # measured on a 2-core AVX2 EPYC
    (AVX2, torch.bfloat16, None),
    (AVX2 | {"avx512f"}, torch.float32, None),  # not measured: off
    ({"avx2", "avx512f", "amx_bf16"}, torch.float32, None),
    (frozenset(), torch.float32, None),
])
def test_body_rule_follows_the_cpu_and_dtype(monkeypatch, flags, dtype, want):
    monkeypatch.setattr(runtime, "_FLAGS", frozenset(flags))
    assert body_transposed_rows(dtype) == want


def spy_linear(bias: bool, calls: list) -> FewRowsLinear:
    """A FewRowsLinear whose weight records which order multiplied it."""
    class Spy(torch.Tensor):
        def __matmul__(self, other):
            calls.append("transposed")
            return torch.Tensor.__matmul__(self.as_subclass(torch.Tensor), other)

    layer = torch.nn.Linear(8, 12, bias=bias)
    torch.nn.init.normal_(layer.weight, generator=torch.Generator().manual_seed(1))
    use_few_rows_order(layer)
    layer.weight = torch.nn.Parameter(layer.weight.detach().as_subclass(Spy), requires_grad=False)
    return layer


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 8), (2, 8), (1, 3, 8), (4, 8), (5, 8), (2, 2, 8), (17, 8)])
def test_values_and_order_match_the_rule(monkeypatch, bias, shape):
    monkeypatch.setattr(runtime, "_FLAGS", AVX2)
    calls = []
    layer = spy_linear(bias, calls)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[0]))
    with torch.no_grad():
        got = layer(x)
        want = torch.nn.functional.linear(x, layer.weight.as_subclass(torch.Tensor), layer.bias)
    rows = x.numel() // 8
    assert got.shape == want.shape == (*shape[:-1], 12)
    torch.testing.assert_close(got.as_subclass(torch.Tensor), want, rtol=1e-5, atol=1e-5)
    assert calls == (["transposed"] if 2 <= rows <= 4 else []), rows
    calls.clear()
    monkeypatch.setattr(runtime, "_FLAGS", frozenset({"amx_bf16", "avx512f", "avx2"}))  # rule off: F.linear, bit for bit
    with torch.no_grad():
        assert torch.equal(layer(x).as_subclass(torch.Tensor), want) and calls == []


def test_gradients_flow_through_the_transposed_order(monkeypatch):
    monkeypatch.setattr(runtime, "_FLAGS", AVX2)
    layer = torch.nn.Linear(6, 5)
    ref = torch.nn.Linear(6, 5)
    ref.load_state_dict(layer.state_dict())
    use_few_rows_order(layer)
    x = torch.randn(3, 6)
    layer(x).square().sum().backward()
    ref(x).square().sum().backward()
    for a, b in ((layer.weight, ref.weight), (layer.bias, ref.bias)):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_swap_in_place_keeps_parameters_ties_and_skips_subclasses(monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    monkeypatch.setattr(runtime, "_FLAGS", AVX2)
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    params = {name: p for name, p in model.named_parameters()}
    ids = torch.tensor([[3, 7, 1]])  # 3 rows: the transposed order on the rule's CPU
    with torch.no_grad():
        before = model(ids).logits
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]

    class Quantized(torch.nn.Linear):
        pass

    model.model.layers[0].mlp.down_proj.__class__ = Quantized
    n = use_few_rows_order(model)
    assert n == len(linears) - 1 and isinstance(model.model.layers[0].mlp.down_proj, Quantized)
    assert all(type(m) is FewRowsLinear for m in model.modules() if isinstance(m, torch.nn.Linear) and type(m) is not Quantized)
    assert all(p is params[name] for name, p in model.named_parameters()) and len(params) == len(list(model.parameters()))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before, rtol=1e-5, atol=1e-5)
    assert use_few_rows_order(model) == 0  # already done
    off_cpu = torch.nn.Linear(4, 3, device="meta")
    assert use_few_rows_order(off_cpu) == 0 and type(off_cpu) is torch.nn.Linear  # off a CPU: left as it is


def test_other_dtypes_devices_and_shapes_run_f_linear_bit_for_bit(monkeypatch):
    monkeypatch.setattr(runtime, "_FLAGS", AVX2)
    calls = []
    layer = spy_linear(True, calls)
    plain = lambda x: torch.nn.functional.linear(x, layer.weight.as_subclass(torch.Tensor).to(x.dtype),  # noqa: E731
                                                 layer.bias.to(x.dtype))
    with torch.no_grad():
        for x in (torch.randn(3, 8, dtype=torch.bfloat16),  # bf16: the rule is off
                  torch.randn(0, 8), torch.randn(2, 0, 8),  # no rows
                  torch.randn(8)):  # one row, 1-D
            layer.weight.data, layer.bias.data = layer.weight.data.to(x.dtype), layer.bias.data.to(x.dtype)
            assert torch.equal(layer(x).as_subclass(torch.Tensor), plain(x)) and calls == [], x.shape
        x = torch.randn(8, 3).T  # 3 rows, not contiguous: transposed, same values
        layer.weight.data, layer.bias.data = layer.weight.data.float(), layer.bias.data.float()
        got = layer(x).as_subclass(torch.Tensor)
        assert calls == ["transposed"] and got.is_contiguous()
        torch.testing.assert_close(got, plain(x), rtol=1e-5, atol=1e-5)


def test_gradient_with_respect_to_the_input(monkeypatch):
    monkeypatch.setattr(runtime, "_FLAGS", AVX2)
    layer = torch.nn.Linear(6, 5)
    use_few_rows_order(layer)
    x = torch.randn(2, 6, requires_grad=True)
    layer(x).square().sum().backward()
    gx = x.grad.clone()
    x.grad = None
    torch.nn.functional.linear(x, layer.weight, layer.bias).square().sum().backward()
    torch.testing.assert_close(gx, x.grad, rtol=1e-5, atol=1e-5)
