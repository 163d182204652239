"""A standalone draft (the setting of the SpecTr paper): a small causal LM of the target's own architecture and
tokenizer, a few decoder layers deep, that drafts from tokens alone.

Its embedding and output head are the target's, shared at load time, so a saved draft holds only its decoder
layers and final norm (~3.5 M parameters per layer for SmolLM2-135M, a few MB). Like the feature draft it may
list the head rows this library's decoder reads out (the most frequent tokens, FR-Spec style: the full head
is most of a shallow draft's cost); q is 0 elsewhere and decoding stays exact. The loaded model is a plain
transformers model (`LlamaForCausalLM` for a Llama target): Hugging Face's assisted generation
(`target.generate(..., assistant_model=draft)`) and other pipelines drive it as they would any assistant, and
`draft.save_pretrained(folder)` writes a self-contained copy with the shared weights included.

A fresh draft starts as a copy of chosen target layers (layer dropping: e.g. the first and the last) and the
target's final norm, then is distilled from the target's soft labels (distill/standalone.py).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from .draft_files import CONFIG_NAME, WEIGHTS_NAME, check_shapes
from ..files import write_text

KIND = "standalone_draft"
OWN_PREFIXES = ("model.layers.", "model.norm.")  # what the draft owns and stores; the rest is the target's


def draft_config(target_config, layers: int):
    """The target's config with `layers` decoder layers (the same width, heads, RoPE and vocabulary)."""
    if not isinstance(layers, int) or not 1 <= layers <= target_config.num_hidden_layers:
        raise ValueError(f"a standalone draft needs 1..{target_config.num_hidden_layers} layers (the target's depth), "
                         f"got {layers!r}")
    cfg = copy.deepcopy(target_config)
    cfg.num_hidden_layers = layers
    if getattr(cfg, "layer_types", None):  # per-layer attention kinds (sliding / full) keep the draft's length
        cfg.layer_types = list(cfg.layer_types[:layers])
    return cfg


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "norm"):
        raise ValueError(f"a standalone draft copies decoder layers from `model.layers` (Llama-style models); "
                         f"{type(model).__name__} has none: use a feature draft or a Hugging Face draft instead")
    return inner.layers


def share_from_target(draft: nn.Module, target: nn.Module) -> nn.Module:
    """Point the draft's embedding and output head at the target's modules (no copy; tied when the target's are)."""
    draft.set_input_embeddings(target.get_input_embeddings())
    draft.set_output_embeddings(target.get_output_embeddings())
    return draft


def check_init_layers(target: nn.Module, layer_ids: tuple[int, ...]) -> None:
    """ValueError unless layer_ids are integer indices of the target's decoder layers (negative: from the end)."""
    n = len(_decoder_layers(target))
    if not layer_ids or any(isinstance(i, bool) or int(i) != i or not -n <= int(i) < n for i in layer_ids):
        raise ValueError(f"init layers {tuple(layer_ids)}: give indices of the target's {n} decoder layers, "
                         f"e.g. 0,1,2 or 0,{n - 1}")


def init_from_target(target: nn.Module, layer_ids: tuple[int, ...], dtype: torch.dtype = torch.float32) -> nn.Module:
    """A fresh standalone draft [len(layer_ids) layers]: copies of the target's layers `layer_ids` (negative:
    from the end) and its final norm, the target's embedding and head shared. Raises ValueError for an index
    outside the target's depth."""
    from transformers import AutoModelForCausalLM

    layers = _decoder_layers(target)
    n = len(layers)
    check_init_layers(target, layer_ids)
    cfg = draft_config(target.config, len(layer_ids))
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    with torch.no_grad():
        for mine, i in zip(model.model.layers, layer_ids):
            mine.load_state_dict(layers[int(i)].state_dict())
        model.model.norm.load_state_dict(target.model.norm.state_dict())
    model.spectr_init_layers = [int(i) % n for i in layer_ids]
    model.generation_config = copy.deepcopy(target.generation_config)
    return share_from_target(model.to(dtype), target)


def own_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors the draft owns (its decoder layers and final norm), by state_dict name."""
    return {k: v for k, v in model.state_dict().items() if k.startswith(OWN_PREFIXES)}


def save(model: nn.Module, folder: Path, head_ids: torch.Tensor | None = None) -> None:
    """Write the draft's own weights (bf16) and a small config; the target's embedding and head are not stored.
    head_ids [R]: the head rows this library's decoder keeps (FR-Spec style; None: all)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in own_state(model).items()}
    if head_ids is not None:
        tensors["head_ids"] = head_ids.to(torch.int32).contiguous()
    save_file(tensors, folder / WEIGHTS_NAME)
    c = model.config
    meta = {"kind": KIND, "model_type": c.model_type, "num_hidden_layers": c.num_hidden_layers,
            "hidden_size": c.hidden_size, "vocab_size": c.vocab_size,
            "init_layers": getattr(model, "spectr_init_layers", None),
            "head_tokens": c.vocab_size if head_ids is None else len(head_ids),
            "shared_from_target": ["embed_tokens", "lm_head"]}
    write_text(folder / CONFIG_NAME, json.dumps(meta, indent=1))


def is_standalone_draft(folder) -> bool:
    """True when a folder holds a standalone draft saved by this module."""
    try:
        path = Path(folder) / CONFIG_NAME
        return path.exists() and json.loads(path.read_text()).get("kind") == KIND
    except (OSError, TypeError, ValueError):
        return False


def load(folder: Path, target: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """The saved draft in `folder` as a transformers causal LM on the target's device, with the target's
    embedding and head. Raises ValueError when the draft was built for another target (model type, width or
    vocabulary differ, or its layers' sizes) or its weights do not match its config."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if not is_standalone_draft(folder):
        raise ValueError(f"{folder} is not a standalone draft folder (no {CONFIG_NAME} of kind {KIND!r}); a feature "
                         f"draft or a Hugging Face model loads with load_draft / load_pair(draft=...)")
    meta = json.loads((folder / CONFIG_NAME).read_text())
    c = target.config
    mine = (meta.get("model_type"), meta.get("hidden_size"), meta.get("vocab_size"))
    theirs = (c.model_type, c.hidden_size, c.vocab_size)
    if mine != theirs:
        raise ValueError(f"the standalone draft in {folder} was built for a {mine[0]} target of width {mine[1]} and "
                         f"vocabulary {mine[2]}, not {theirs[0]} / {theirs[1]} / {theirs[2]}: pair it with its own target")
    dtype = dtype or target.dtype
    model = AutoModelForCausalLM.from_config(draft_config(c, int(meta["num_hidden_layers"])), dtype=dtype)
    check_shapes(folder, {k: v.shape for k, v in model.state_dict().items()}, "standalone draft")
    tensors = load_file(str(folder / WEIGHTS_NAME))
    tensors.pop("head_ids", None)  # read by kept_head_rows
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [m for m in missing if m.startswith(OWN_PREFIXES)]
    if missing or unexpected:
        raise ValueError(f"{folder}: draft weights do not match its config (missing {missing}, unexpected {unexpected})")
    model.spectr_init_layers = meta.get("init_layers")
    model.generation_config = copy.deepcopy(target.generation_config)
    model.name_or_path = model.config._name_or_path = str(folder)
    dev = target.get_input_embeddings().weight.device
    return share_from_target(model.to(device=dev, dtype=dtype), target).eval()


def kept_head_rows(folder, device=None) -> torch.Tensor | None:
    """The head rows [R] a saved standalone draft keeps for this library's decoder (FR-Spec style, engine.drafters.
    LMDrafter reads only these; Hugging Face pipelines use every row), or None when it keeps them all."""
    from safetensors import safe_open

    with safe_open(str(Path(folder) / WEIGHTS_NAME), framework="pt") as f:
        return f.get_tensor("head_ids").long().to(device) if "head_ids" in f.keys() else None
