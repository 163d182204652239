"""Token-level acceptance of a draft along a sequence: Σ_x min(p(x), q(x)) per position, whatever the draft's design."""
from __future__ import annotations

import numpy as np
import torch

from ..models.load import ModelPair
from ..theory.dists import check_sampling, is_real, warp
from .drafters import draft_warp, make_drafter
from ..models.heads import OutputHead
from . import inputs
from .inputs import check_pair, context_limit, count, draft_temperature_arg, lookup_arg
from .lookup import mix_along


@torch.no_grad()
def next_token_logits(pair: ModelPair, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's and the draft's logits [T, V] of the token after each prefix of token_ids [T] (teacher forcing,
    both models, output heads as in decoding: the target's in `pair.head_dtype`, the draft's as its drafter runs it)."""
    ids = torch.as_tensor(token_ids, dtype=torch.long, device=pair.device).reshape(-1)
    drafter = make_drafter(pair.draft, pair.vocab_size, pair.draft_settings)
    head = OutputHead(pair.target, pair.vocab_size, dtype=pair.head_dtype)
    logits, h = head(ids[None], None, layers=drafter.needs_features or None)
    return logits[0], drafter.teacher_forced_logits(ids, h[0] if drafter.needs_features else None)


def next_token_probs(pair: ModelPair, token_ids: torch.Tensor, temperature: float = 1.0, lookup: bool = False,
                     draft_temperature: float = 1.0):
    """p and q [T, V] (float64) of the token after each prefix of token_ids [T] (`next_token_logits` warped at
    `temperature`, q at draft temperature τ = draft_temperature: softmax(logits / (τ·T))); lookup=True: q mixed
    with prompt lookup as `generate(lookup=True)` drafts (engine/lookup.py)."""
    ids = torch.as_tensor(token_ids, dtype=torch.long, device=pair.device).reshape(-1)
    p_logits, q_logits = next_token_logits(pair, ids)
    q = draft_warp(lambda x: warp(x, temperature), draft_temperature)(q_logits)
    return warp(p_logits, temperature), mix_along(q, ids) if lookup else q


def draft_acceptance(pair: ModelPair, token_ids, start: int, temperature: float = 1.0,
                     draft_temperature: float | None = None, lookup: bool | None = None) -> torch.Tensor:
    """Σ_x min(p(x), q(x)) [T − start] for predicting each token of token_ids from index `start` on (the
    single-draft acceptance of speculative sampling, Leviathan et al. 2023, at every position), q at the
    draft temperature `generate` uses for one draft (None: the draft's own τ for k = 1; see `generate`) and,
    with lookup (None: the draft's own setting, as `generate`), mixed with prompt lookup along token_ids.

    token_ids: a 1-D sequence of ids or a [T] / [1, T] integer tensor (the prompt and its answer). Raises
    TypeError / ValueError, before any model call, as `generate` does: a pair without a draft, ids out of
    range, a sequence longer than the models' context, a start outside [1, T), a temperature that is not a
    finite number > 0.
    """
    check_pair(pair)
    if pair.draft is None:
        raise ValueError("draft_acceptance compares the draft with the target: load a pair with a draft")
    ids = inputs.token_ids(token_ids, pair.vocab_size)
    start = count("start", start)
    if not start < len(ids):
        raise ValueError(f"start must lie in [1, {len(ids)}) for a sequence of {len(ids)} tokens, got {start}")
    if is_real(temperature) and np.isfinite(temperature) and temperature <= 0:
        raise ValueError(f"temperature must be > 0 (acceptance compares two sampling distributions), got {temperature}")
    check_sampling(temperature, None, None)
    limit = context_limit(pair)
    if len(ids) > limit:
        raise ValueError(f"the sequence has {len(ids)} tokens, more than the models' context of {limit}: shorten it")
    tau, lookup = pair.draft_settings.tau(1, draft_temperature_arg(draft_temperature)), lookup_arg(pair, lookup)
    p, q = next_token_probs(pair, ids, float(temperature), lookup, draft_temperature=tau)
    return torch.minimum(p, q)[start - 1 : len(ids) - 1].sum(-1).cpu()

