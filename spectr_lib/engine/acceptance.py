"""Token-level acceptance of a draft along a sequence: Σ_x min(p(x), q(x)) per position, whatever the draft's design."""
from __future__ import annotations

import torch

from ..theory.dists import warp
from ..models.feature_draft import FeatureDraft
from ..models.load import ModelPair


@torch.no_grad()
def next_token_probs(pair: ModelPair, token_ids: torch.Tensor, temperature: float = 1.0):
    """p and q [T, V] of the token after each prefix of token_ids (teacher forcing, both models)."""
    ids = torch.as_tensor(token_ids, dtype=torch.long, device=pair.device).reshape(1, -1)
    need_feats = isinstance(pair.draft, FeatureDraft)
    out = pair.target(ids, output_hidden_states=need_feats)
    p = warp(out.logits[0, :, : pair.vocab_size], temperature)
    if need_feats:  # the feature draft reads h_{t-1} and x_t, as it does while decoding
        h = out.hidden_states[-1][0]
        feats_in = torch.cat([torch.zeros_like(h[:1]), h[:-1]])
        f = pair.draft(feats_in[None], ids, torch.arange(ids.shape[1], device=ids.device))[0]
        q_logits = pair.draft.full_logits(f)
    else:
        q_logits = pair.draft(ids).logits[0, :, : pair.vocab_size]
    return p, warp(q_logits, temperature)


def draft_acceptance(pair: ModelPair, token_ids, start: int, temperature: float = 1.0) -> torch.Tensor:
    """Σ_x min(p(x), q(x)) for predicting each token from index `start` on (one value per position)."""
    ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1)
    if not 1 <= start < len(ids):
        raise ValueError(f"start must lie in [1, {len(ids)}) for a sequence of {len(ids)} tokens, got {start}")
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (acceptance compares two sampling distributions)")
    p, q = next_token_probs(pair, ids, temperature)
    return torch.minimum(p, q)[start - 1 : len(ids) - 1].sum(-1).cpu()
