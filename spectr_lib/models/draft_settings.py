"""What decoding needs to know about a draft besides its weights, as one record checked once, when it is made.

A pair's draft comes with its `DraftSettings` (`ModelPair.draft_settings`): the kind of draft (which drafter
drives it), its temperatures by draft count, whether prompt lookup is on by default and, for a standalone draft,
the head rows it keeps. `load_pair` reads them from the draft folder's spectr_draft.json (models/draft_files.py);
a draft without a folder (any Hugging Face causal LM, a tiny pair) gets the defaults of its kind.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .draft_files import check_lookup, check_table
from .feature_draft import FeatureDraft

KINDS = ("feature_draft", "standalone_draft", "causal_lm")  # the drafter of each: engine.drafters.DRAFTERS


@dataclass(frozen=True)
class DraftSettings:
    """A draft's decoding settings.

    kind: one of KINDS. temperatures: {k: τ} for rounds of k drafts (drafts sampled from softmax(logits / (τ·T));
    missing k: τ = 1). prompt_lookup: `generate`'s lookup default for this draft (engine/lookup.py). head_ids [R]:
    the head rows a standalone draft keeps (q = 0 elsewhere; None: every row). Raises ValueError for an unknown
    kind, a malformed τ table or a non-boolean prompt_lookup (what to pass is in the message).
    """

    kind: str = "causal_lm"
    temperatures: dict = field(default_factory=dict)
    prompt_lookup: bool = False
    head_ids: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"draft kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "temperatures", check_table(self.temperatures))
        object.__setattr__(self, "prompt_lookup", check_lookup(self.prompt_lookup))
        if self.head_ids is not None and (not isinstance(self.head_ids, torch.Tensor) or self.head_ids.ndim != 1
                                          or self.head_ids.dtype.is_floating_point):
            raise ValueError("head_ids must be a 1-D integer tensor of the head rows the draft keeps, or None")

    def tau(self, k: int, override: float | None = None) -> float:
        """τ for rounds of k drafts: `override` when given, else this draft's own table, else 1."""
        return float(override) if override is not None else self.temperatures.get(k, 1.0)

    def replace(self, **changes) -> "DraftSettings":
        """A copy with some fields changed (checked again)."""
        return replace(self, **changes)


def default_settings(draft: torch.nn.Module) -> DraftSettings:
    """The settings of a draft loaded without a spectr_lib folder: its kind by type, τ = 1, no lookup."""
    return DraftSettings(kind="feature_draft" if isinstance(draft, FeatureDraft) else "causal_lm")
