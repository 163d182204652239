"""The output head's product in the order chosen by row count: the same logits as h @ W.T, shape and values."""
import pytest
import torch

from spectr_lib import runtime
from spectr_lib.models import matmul_order
from spectr_lib.models.matmul_order import head_matmul, transposed_rows


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (4, 1), (2, 5), (1, 16), (1, 17), (3, 9), (64,), (2, 3, 4)])
def test_head_matmul_equals_the_plain_product(shape):
    g = torch.Generator().manual_seed(len(shape) * 100 + shape[-1])
    h, w = torch.randn(*shape, 24, generator=g), torch.randn(50, 24, generator=g)
    got, want = head_matmul(h, w), h @ w.T
    assert got.shape == want.shape == (*shape, 50) and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_head_matmul_takes_the_transposed_order_for_a_few_rows_and_keeps_gradients():
    h = torch.randn(1, transposed_rows(torch.float32)[0] + 1, 8, requires_grad=True)
    w = torch.randn(30, 8, requires_grad=True)
    out = head_matmul(h, w)
    assert torch.equal(out, (w @ h[0].T).T[None])  # bit for bit the transposed order
    out.square().sum().backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    (h @ w.T).square().sum().backward()
    torch.testing.assert_close(gh, h.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, w.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flags, dtype, want", [
    ({"avx2", "amx_bf16", "avx512_bf16"}, torch.float32, (8, 15)),  # measured on an AMX Xeon
    ({"avx2", "amx_bf16", "avx512_bf16"}, torch.bfloat16, (2, 16)),
    ({"avx2"}, torch.float32, (2, 16)),  # measured on an AVX2 EPYC
    (set(), torch.bfloat16, (2, 16)),
])
def test_transposed_rows_follows_the_cpu_and_dtype_and_the_override(monkeypatch, flags, dtype, want):
    monkeypatch.setattr(runtime, "_FLAGS", frozenset(flags))
    assert transposed_rows(dtype) == want
    assert [r for r in range(0, 40) if matmul_order.uses_transposed(r, dtype)] == list(range(want[0], want[1] + 1))
    assert not matmul_order.uses_transposed(want[0], dtype, "cuda")
    monkeypatch.setattr(matmul_order, "FEW_ROWS", (3, 4))
    assert transposed_rows(dtype) == (3, 4) and matmul_order.uses_transposed(3, dtype) and not matmul_order.uses_transposed(2, dtype)


@pytest.mark.parametrize("flags, dtype, positions, device, want", [
    ({"avx2"}, torch.float32, 9, "cpu", True),  # measured on an AVX2 EPYC: SpecTr (4, 2)'s tree
    ({"avx2"}, torch.float32, 17, "cpu", True),
    ({"avx2"}, torch.float32, 18, "cpu", False),  # more than two single rows cost
    ({"avx2"}, torch.bfloat16, 9, "cpu", False),
    ({"avx2"}, torch.float32, 9, "cuda", False),
    ({"avx2", "avx512f"}, torch.float32, 9, "cpu", False),  # not measured there
    ({"avx2", "avx512f", "amx_bf16"}, torch.float32, 9, "cpu", False),  # one row per read measured faster
])
def test_rows_at_once_follows_the_cpu_the_dtype_the_positions_and_the_override(monkeypatch, flags, dtype, positions,
                                                                               device, want):
    monkeypatch.setattr(runtime, "_FLAGS", frozenset(flags))
    assert matmul_order.rows_at_once(positions, dtype, device) == want
    monkeypatch.setattr(matmul_order, "AT_ONCE_ROWS", 0)
    assert not matmul_order.rows_at_once(positions, dtype, device)
    monkeypatch.setattr(matmul_order, "AT_ONCE_ROWS", 96)
    assert matmul_order.rows_at_once(positions, dtype, device) == (device == "cpu")


def test_head_matmul_takes_the_order_the_rule_says(monkeypatch):
    """A counting weight tells the two orders apart: W @ h.T runs W's matmul, h @ W.T runs h's."""
    calls = []

    class Spy(torch.Tensor):
        def __matmul__(self, other):
            calls.append("transposed")
            return torch.Tensor.__matmul__(self.as_subclass(torch.Tensor), other)

        def __rmatmul__(self, other):
            calls.append("plain")
            return torch.Tensor.__matmul__(other, self.as_subclass(torch.Tensor))

    monkeypatch.setattr(runtime, "_FLAGS", frozenset({"amx_bf16"}))
    w = torch.randn(30, 8).as_subclass(Spy)
    for rows, want in ((1, "plain"), (2, "plain"), (7, "plain"), (8, "transposed"), (15, "transposed"), (16, "plain")):
        calls.clear()
        head_matmul(torch.randn(rows, 8), w)
        assert calls[:1] == [want], rows
    monkeypatch.setattr(runtime, "_FLAGS", frozenset())
    calls.clear()
    head_matmul(torch.randn(2, 8), w)
    assert calls[:1] == ["transposed"]


def test_cpu_flags_reads_the_flags_lines_only(monkeypatch, tmp_path):
    import builtins

    fake = tmp_path / "cpuinfo"
    fake.write_text("model name\t: Some amx_bf16 CPU\nflags\t\t: fpu avx2 avx512_bf16\n\nflags\t\t: fpu avx2 avx512_bf16\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(fake if path == "/proc/cpuinfo" else path, *a, **k))
    monkeypatch.setattr(runtime, "_FLAGS", None)
    assert runtime.cpu_flags() == {"fpu", "avx2", "avx512_bf16"}
    monkeypatch.setattr(runtime, "_FLAGS", None)


def test_head_order_tool_runs_every_setting_and_restores_it(capsys):
    from spectr_lib.tools.head_order import main

    before = matmul_order.FEW_ROWS
    main(["--tiny", "--max-new-tokens", "4", "--repeats", "1"])
    out = capsys.readouterr().out
    assert matmul_order.FEW_ROWS == before
    assert "| kseq | 4 | 4 |" in out and "| block | 1 | 2 |" in out and "| ar | 1 | – |" in out
    assert "transposed / plain" in out and "packed / plain" in out and "rule / plain" in out and "this CPU's rule" in out
    assert matmul_order.PACKED_ROWS is None
    with pytest.raises(SystemExit):
        main(["--tiny", "--repeats", "0"])


def test_head_order_tool_compares_the_body_too_and_restores_it(capsys, monkeypatch):
    from spectr_lib.models import few_rows
    from spectr_lib.tools.head_order import compare, main

    seen = []
    rule = few_rows.body_transposed_rows
    monkeypatch.setattr(few_rows, "body_transposed_rows", lambda dtype: seen.append(rule(dtype)) or rule(dtype))
    main(["--tiny", "--part", "body", "--max-new-tokens", "4", "--repeats", "1"])
    out = capsys.readouterr().out
    assert matmul_order.BODY_ROWS is None and matmul_order.FEW_ROWS is None
    assert "this CPU's rule for the body" in out and "| kseq | 2 | 2 |" in out and "| sps | 1 | 1 |" in out
    assert {(2**62, 2**62), (2, 16)} <= set(seen)  # the body's linear layers saw the plain and transposed settings
    with pytest.raises(ValueError, match="part must be one of"):
        compare(None, part="tail")

