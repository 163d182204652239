"""Loading a draft model: any Hugging Face causal LM, or the project's own draft with parts shared from the target."""
from __future__ import annotations

import json
from pathlib import Path

import torch

SHARED_MARKER = "spectr_draft.json"  # the project's drafts: which weights come from the target at load time


def load_draft(spec: str | Path, target: torch.nn.Module, device: torch.device, dtype: torch.dtype):
    """Load a draft by name or folder; returns (model, tokenizer)."""
    from .models import _load_lm, _load_tokenizer

    marker = Path(spec) / SHARED_MARKER
    model = _load_lm(spec, device, dtype)
    if marker.exists():
        shared = json.loads(marker.read_text()).get("shared_from_target", [])
        if "embed_tokens" in shared:
            with torch.no_grad():  # stored once, in the target; tied to the draft's head too
                model.get_input_embeddings().weight.copy_(target.get_input_embeddings().weight)
    return model, _load_tokenizer(spec)
