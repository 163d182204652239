"""What decoding needs to know about a draft besides its weights, as one record checked once, when it is made.

A pair's draft comes with its `DraftSettings` (`ModelPair.draft_settings`): the kind of draft (which drafter
drives it), its temperatures by draft count, whether prompt lookup is on by default and, for a standalone draft,
the head rows it keeps. `load_pair` reads them from the draft folder's spectr_draft.json (models/draft_files.py);
a draft without a folder (any Hugging Face causal LM, a tiny pair) gets the defaults of its kind.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType

import torch

from .draft_files import check_lookup, check_table
from .feature_draft import FeatureDraft

KINDS = ("feature_draft", "standalone_draft", "causal_lm")  # the drafter of each: engine.drafters.DRAFTERS


@dataclass(frozen=True, eq=False)  # holds a tensor: compared by identity
class DraftSettings:
    """A draft's decoding settings, read-only once made.

    kind: one of KINDS. temperatures: {k: τ} for rounds of k drafts (drafts sampled from softmax(logits / (τ·T));
    missing k: τ = 1), kept as a read-only mapping. prompt_lookup: `generate`'s lookup default for this draft
    (engine/lookup.py). head_ids [R]: the distinct head rows a standalone draft or causal LM keeps (q = 0
    elsewhere; None: every row). Raises ValueError for an unknown kind, a malformed τ table, a non-boolean
    prompt_lookup or head_ids that are not distinct non-negative integer ids (what to pass is in the message).
    """

    kind: str = "causal_lm"
    temperatures: dict = field(default_factory=dict)
    prompt_lookup: bool = False
    head_ids: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"draft kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        table = dict(self.temperatures) if isinstance(self.temperatures, MappingProxyType) else self.temperatures
        object.__setattr__(self, "temperatures", MappingProxyType(check_table(table)))
        object.__setattr__(self, "prompt_lookup", check_lookup(self.prompt_lookup))
        ids = self.head_ids
        if ids is not None:
            if self.kind == "feature_draft":
                raise ValueError("a feature draft keeps its head rows in its own model: leave head_ids None")
            ok = (isinstance(ids, torch.Tensor) and ids.ndim == 1 and len(ids) > 0 and not ids.dtype.is_floating_point
                  and not ids.dtype.is_complex and ids.dtype != torch.bool)
            if not ok or int(ids.min()) < 0 or len(ids.unique()) != len(ids):
                raise ValueError("head_ids must be a non-empty 1-D tensor of distinct non-negative integer token ids "
                                 "(the head rows the draft keeps), or None")

    def tau(self, k: int, override: float | None = None) -> float:
        """τ for rounds of k drafts: `override` when given, else this draft's own table, else 1."""
        return float(override) if override is not None else self.temperatures.get(k, 1.0)

    def check_fits(self, draft: torch.nn.Module) -> None:
        """ValueError when these settings name a kind of draft other than `draft`'s (a feature draft's settings on
        a causal LM or the reverse: e.g. `dataclasses.replace(pair, draft=other)` keeps the old draft's settings)."""
        fix = ("give the draft its own settings (load_pair / load_draft return them; pair.with_draft(model, settings) "
               "swaps a draft; draft_settings.default_settings(model) for a plain model)")
        if (self.kind == "feature_draft") != isinstance(draft, FeatureDraft):
            raise ValueError(f"the pair's draft_settings are for a draft of kind {self.kind!r}, but its draft is a "
                             f"{type(draft).__name__}: {fix}")
        head = draft.get_output_embeddings() if hasattr(draft, "get_output_embeddings") else None
        if self.head_ids is not None and head is not None and int(self.head_ids.max()) >= head.weight.shape[0]:
            raise ValueError(f"the pair's draft_settings keep head row {int(self.head_ids.max())}, but the draft's head "
                             f"has {head.weight.shape[0]} rows: {fix}")
        stale = [a for a in ("draft_temperature", "prompt_lookup", "spectr_head_ids") if a in vars(draft)]
        if stale:
            raise ValueError(f"the draft model carries {', '.join(stale)}, which this version reads from "
                             f"pair.draft_settings instead: set them there (pair.draft_settings.replace(...)) and "
                             f"delete the attribute")

    def replace(self, **changes) -> "DraftSettings":
        """A copy with some fields changed (checked again)."""
        return replace(self, **changes)


def default_settings(draft: torch.nn.Module) -> DraftSettings:
    """The settings of a draft loaded without a spectr_lib folder: its kind by type, τ = 1, no lookup."""
    return DraftSettings(kind="feature_draft" if isinstance(draft, FeatureDraft) else "causal_lm")
