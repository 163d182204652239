"""Loading a draft model: any Hugging Face causal LM, or the project's own feature draft (parts shared with the target)."""
from __future__ import annotations

from pathlib import Path

import torch

from .feature_draft import FeatureDraft, is_feature_draft


def load_draft(spec: str | Path, target: torch.nn.Module, device: torch.device, dtype: torch.dtype):
    """Load a draft by name or folder; returns (model, tokenizer)."""
    from .models import _load_lm, _load_tokenizer

    if is_feature_draft(spec):
        if target.config.hidden_size != FeatureDraft.hidden_size_of(spec):
            raise ValueError(f"the feature draft in {spec} was built for a target with hidden size "
                             f"{FeatureDraft.hidden_size_of(spec)}, not {target.config.hidden_size}: pair it with its own target")
        return FeatureDraft.load(spec, target, dtype=dtype), _load_tokenizer(spec)
    return _load_lm(spec, device, dtype), _load_tokenizer(spec)
