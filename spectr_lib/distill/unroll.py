"""Training-time test: the feature draft's first `depth` drafting steps, unrolled in one pass over a sequence.

While decoding, draft step j at position s reads (f_{j-1}[s-1], x_s): the draft's own output one step back,
not the target's feature. Its attention sees the draft's keys of the verified context (made from the target's
features, up to the position where the round started, s − j + 1) and the keys of its own earlier steps of this
round, one per depth on the diagonal. Training on the target's features alone (step 1) leaves steps 2..L out
of distribution; EAGLE-3 (Li et al. 2025, §3.2 "training-time test") unrolls the steps with exactly this
attention pattern. Here all depths run over the whole sequence at once:

    depth 1:  queries at s see K1[u] for u ≤ s                          (ordinary causal attention)
    depth j:  queries at s see K1[u] for u ≤ s − j + 1, and K_i[s − j + i] for i = 2..j

so depth j's output at s is what the j-th drafting step would produce for the token after x_s, given the
context up to s − j + 1. A draft of several layers applies the same pattern in each layer, to that layer's keys.
"""
from __future__ import annotations

import torch

from ..models.feature_draft import FeatureDraft, previous_features


def unroll_mask(T: int, depth: int, device=None) -> torch.Tensor:
    """Boolean attention mask [T, depth·T] of depth `depth`'s queries over the keys of depths 1..depth (see the
    module docstring). Every row allows at least its own diagonal key."""
    s = torch.arange(T, device=device)[:, None]
    u = torch.arange(T, device=device)[None, :]
    blocks = [u <= s - depth + 1]
    blocks += [u == s - depth + i for i in range(2, depth + 1)]
    return torch.cat(blocks, 1)


def unrolled_outputs(model: FeatureDraft, feats_in: torch.Tensor, ids: torch.Tensor, depth: int) -> list[torch.Tensor]:
    """Draft outputs [B, T, d] of steps 1..depth at every position.

    feats_in [B, T, n·d]: the target's features shifted one step right (`previous_features`); ids [B, T].
    Step j > 1 reads step j − 1's output shifted one step right. Raises ValueError for depth < 1.
    """
    if depth < 1:
        raise ValueError(f"depth must be ≥ 1, got {depth}")
    T = ids.shape[1]
    pos = torch.arange(T, device=ids.device)
    layers, emb = model.layers, model.embed(ids)
    keys, values, outs = [[] for _ in layers], [[] for _ in layers], []  # per layer, one entry per depth
    inp = feats_in
    for j in range(1, depth + 1):
        x = model.fc(torch.cat([model.fused(inp), emb.to(model.fc.weight.dtype)], -1))
        mask = unroll_mask(T, j, ids.device)
        for i, layer in enumerate(layers):
            q, k, v = layer.qkv(x, pos)
            keys[i].append(k)
            values[i].append(v)
            x = layer.attend(x, q, torch.cat(keys[i], 2), torch.cat(values[i], 2), mask)
        f = model.norm(x)
        outs.append(f)
        inp = previous_features(f)
    return outs
