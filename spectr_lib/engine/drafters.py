"""K i.i.d. drafts of length L from the draft model, batched, on top of the draft's cache of the context.

Every kind of draft model has one Drafter class (the protocol below); this module is the only part of the
decoding engine that knows the kinds. Two exist: a standalone causal LM (any Hugging Face model with the
target's tokenizer) and a feature draft (reads the target's hidden states; see models/feature_draft.py). Both
keep a cache of the accepted context and pending inputs that the next `draft` call feeds first. A new kind
of draft is one class following `Drafter`, listed in DRAFTERS under the kind its `DraftSettings` name.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch

from ..models import hf_cache
from ..models.heads import OutputHead
from ..models.draft_settings import DraftSettings, default_settings
from ..models.feature_draft import FeatureDraft, KVCache, previous_features
from ..theory.dists import sample_rows
from ..theory.selection import first_iid
from ..runtime import attention_backends

Warp = Callable[[torch.Tensor], torch.Tensor]  # logits [..., V] -> probabilities [..., V] (float64)
# (q [R, V], the round's drafted tokens so far [R, depth]) -> the distributions [R, V] drafts are sampled from
Mix = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (one q row [V], k, generator) -> the round's k first tokens [k]: a rule's draft law (`Rule.first_draw`)
FirstDraw = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]


class Drafter(Protocol):
    """What the decoder, acceptance and timing ask of a draft model's driver."""

    # falsy: no features; True or a tuple of hidden_states indices: prefill/commit/push take the target's hidden
    # states there, concatenated [.., n·d] (what `make_verifier(need_features=...)` returns)
    needs_features: bool | tuple[int, ...]
    calls: int  # draft model forward calls so far

    def prefill(self, ids: torch.Tensor, features: torch.Tensor | None) -> None:
        """Start a sequence from the prompt ids [T] (features [T-1, d] of ids[:-1] when needs_features)."""

    def draft(self, k: int, L: int, warp: Warp, generator: torch.Generator,
              first_draw: FirstDraw = first_iid, mix: Mix | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """k drafts: tokens [k, L] and the warped draft distributions q [k, L, V] they came from; the first tokens
        drawn by `first_draw` (the rule's draft law), deeper ones i.i.d. (see `sample_drafts`); `mix` reshapes each
        step's q before sampling (engine/lookup.py)."""

    def commit(self, tokens: torch.Tensor, row: int, n_accepted: int, new_token: torch.Tensor,
               features: torch.Tensor | None) -> None:
        """Keep draft `row`'s first n_accepted tokens and new_token (target features [n_accepted + 1, d] there)."""

    def push(self, token: torch.Tensor, feature: torch.Tensor | None) -> None:
        """The target took a plain step: token joins the context (feature [d] of the position it came from)."""

    def teacher_forced_logits(self, ids: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """Float32 draft logits [T, V] after each prefix of ids [T] (target features [T, d] when needed)."""


def sample_drafts(first: torch.Tensor, step: Callable[[torch.Tensor, int], torch.Tensor], k: int, L: int, warp: Warp,
                  generator: torch.Generator, first_draw: FirstDraw = first_iid,
                  mix: Mix | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [k, L] and q [k, L, V]: k first tokens drawn by `first_draw` from the logits `first` [V] (the rule's
    draft law: i.i.d., or distinct tokens for RRS without replacement, theory/selection.py), then L − 1 batched
    i.i.d. steps, where step(last tokens [k], depth) returns the next logits [k, V] (the drafter's cache already
    holds k rows). mix (None: q as warped): applied to every step's q before it is sampled; the returned q is the
    mixed one, the distribution the drafts really came from."""
    mix = mix or (lambda q_rows, prefix: q_rows)
    q = [mix(warp(first)[None], first.new_zeros(1, 0, dtype=torch.long)).expand(k, -1)]
    tokens = [first_draw(q[0][0], k, generator)]
    for depth in range(1, L):
        q.append(mix(warp(step(tokens[-1], depth)), torch.stack(tokens, 1)))
        tokens.append(sample_rows(q[-1], generator))
    return torch.stack(tokens, 1), torch.stack(q, 1)


class LMDrafter:
    """Drafts with a standalone causal LM and its Hugging Face cache."""

    needs_features = False

    def __init__(self, model: torch.nn.Module, vocab_size: int, settings: DraftSettings):
        self.model, self.V = model, vocab_size
        # a standalone draft may keep only its most frequent head rows (q = 0 elsewhere: still exact, cheaper)
        self.head = OutputHead(model, vocab_size, rows=settings.head_ids)  # float32: decides only what is drafted
        self.calls = 0

    def prefill(self, ids: torch.Tensor, features: torch.Tensor | None = None) -> None:
        """Start a sequence: every prompt token is pending."""
        self.cache = hf_cache.new_cache()
        self.length = 0  # positions in the cache that belong to the accepted context
        self.pending = ids

    @torch.no_grad()
    def draft(self, k: int, L: int, warp: Warp, generator: torch.Generator,
              first_draw: FirstDraw = first_iid, mix: Mix | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens [k, L] and the draft distributions q [k, L, V] they were sampled from."""
        first = self.head(self.pending[None], self.cache)[0][0, -1]
        self.calls += 1
        self.length += len(self.pending)
        hf_cache.repeat_rows(self.cache, k)

        def step(last: torch.Tensor, depth: int) -> torch.Tensor:
            self.calls += 1
            return self.head(last[:, None], self.cache)[0][:, -1]

        tokens, q = sample_drafts(first, step, k, L, warp, generator, first_draw, mix)
        return tokens.to(self.pending.device), q

    def commit(self, tokens: torch.Tensor, row: int, n_accepted: int, new_token: torch.Tensor,
               features: torch.Tensor | None = None) -> None:
        """Roll the cache back to the accepted prefix of draft `row`; the rest becomes pending."""
        in_cache = min(n_accepted, tokens.shape[1] - 1)  # the last draft token was sampled, never fed
        hf_cache.crop(self.cache, self.length + in_cache)
        hf_cache.keep_row(self.cache, row)
        self.length += in_cache
        self.pending = torch.cat([tokens[row, in_cache:n_accepted], new_token.reshape(1)])

    def push(self, token: torch.Tensor, feature: torch.Tensor | None = None) -> None:
        """The target took a plain step (no drafts): its token joins the pending inputs."""
        self.pending = torch.cat([self.pending, token.reshape(1)])

    @torch.no_grad()
    def teacher_forced_logits(self, ids: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Float32 logits [T, V] of the token after each prefix of ids [T] (one call, no cache kept)."""
        return self.head(ids[None], None)[0][0]


class FeatureDrafter:
    """Drafts with a feature draft: inputs are (target feature h_{t-1}, token x_t) pairs."""

    def __init__(self, model: FeatureDraft, vocab_size: int, settings: DraftSettings | None = None):
        self.model, self.V = model, vocab_size
        self.needs_features = tuple(model.config.feature_layers)
        self.calls = 0

    def prefill(self, ids: torch.Tensor, features: torch.Tensor) -> None:
        """Start a sequence: features [T-1, d] of ids[:-1] from the target; every pair is pending."""
        self.cache = KVCache()
        self.pending_feats = torch.cat([features.new_zeros(1, features.shape[-1]), features])  # h_{t-1} for t = 0..T-1
        self.pending_ids = ids
        self.start = 0  # position of the first pending pair

    @torch.no_grad()
    def draft(self, k: int, L: int, warp: Warp, generator: torch.Generator,
              first_draw: FirstDraw = first_iid, mix: Mix | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens [k, L] and q [k, L, V]; deeper steps feed the draft's own predicted features."""
        with attention_backends(self.pending_ids.device):
            return self._draft(k, L, warp, generator, first_draw, mix)

    def _draft(self, k: int, L: int, warp: Warp, generator: torch.Generator, first_draw: FirstDraw, mix: Mix | None):
        n = len(self.pending_ids)
        pos = torch.arange(self.start, self.start + n, device=self.pending_ids.device)
        f = self.model(self.pending_feats[None], self.pending_ids[None], pos, self.cache)[:, -1:]  # [1, 1, d]
        self.calls += 1
        self.fed = len(self.cache)
        first = self.model.full_logits(f[0, 0]).float()
        self.cache.select(torch.zeros(k, dtype=torch.long, device=f.device))
        f = f.expand(k, -1, -1)

        def step(last: torch.Tensor, depth: int) -> torch.Tensor:
            nonlocal f
            f = self.model(f, last[:, None], pos[-1:] + depth, self.cache)
            self.calls += 1
            return self.model.full_logits(f[:, 0]).float()

        return sample_drafts(first, step, k, L, warp, generator, first_draw, mix)

    def commit(self, tokens: torch.Tensor, row: int, n_accepted: int, new_token: torch.Tensor,
               features: torch.Tensor | None = None) -> None:
        """Drop the drafted steps (they used predicted features); pend the accepted tokens with true features."""
        self.cache.crop(self.fed)
        self.cache.select(torch.tensor([row], device=tokens.device))
        self.start += len(self.pending_ids)
        self.pending_ids = torch.cat([tokens[row, :n_accepted], new_token.reshape(1)])
        self.pending_feats = features[: n_accepted + 1]  # target features at the verified positions of `row`

    def push(self, token: torch.Tensor, feature: torch.Tensor) -> None:
        """The target took a plain step (no drafts): its token joins the pending pairs with the target's
        feature [d] at the position it was sampled from."""
        self.pending_ids = torch.cat([self.pending_ids, token.reshape(1)])
        self.pending_feats = torch.cat([self.pending_feats, feature.reshape(1, -1).to(self.pending_feats.dtype)])

    @torch.no_grad()
    def teacher_forced_logits(self, ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Float32 logits [T, V] of the token after each prefix of ids [T], given the target's features [T, d]
        at those positions: the draft reads (h_{t-1}, x_t), as it does while decoding."""
        pos = torch.arange(len(ids), device=ids.device)
        with attention_backends(ids.device):
            return self.model.full_logits(self.model(previous_features(features)[None], ids[None], pos)[0]).float()


# the drafter of each kind of draft (models/draft_settings.KINDS)
DRAFTERS: dict[str, type] = {"feature_draft": FeatureDrafter, "standalone_draft": LMDrafter, "causal_lm": LMDrafter}


def make_drafter(draft: torch.nn.Module, vocab_size: int, settings: DraftSettings | None = None) -> Drafter:
    """The Drafter for a draft model of the kind its settings name (None: the defaults of its type,
    `draft_settings.default_settings`); ValueError for a kind no drafter is registered for."""
    settings = default_settings(draft) if settings is None else settings
    if settings.kind not in DRAFTERS:
        raise ValueError(f"no drafter for a draft of kind {settings.kind!r}: register one in DRAFTERS")
    return DRAFTERS[settings.kind](draft, vocab_size, settings)


def draft_warp(warp: Warp, tau: float) -> Warp:
    """The warp of the draft's logits at draft temperature τ: warp(logits / τ) (`warp` itself when τ = 1)."""
    return warp if tau == 1.0 else (lambda logits: warp(logits / tau))
