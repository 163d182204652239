"""One target call per round that scores every draft position, on top of the target's cache of the context.

The context's last token is always pending (not yet in the cache): the verification call feeds it in front of
each draft, so one call returns p(·|c), p(·|c, a_1), …, p(·|c, a_1..a_L) for every draft (L + 1 each).
"""
from __future__ import annotations

import torch

from . import hf_cache


class Verifier:
    """The target side of speculative decoding: prefill, batched verification, roll-back."""

    def __init__(self, model: torch.nn.Module, vocab_size: int, need_features: bool = False):
        self.model, self.V, self.need_features = model, vocab_size, need_features
        self.calls = 0

    def _run(self, ids: torch.Tensor):
        out = hf_cache.forward(self.model, ids, self.cache, output_hidden_states=self.need_features)
        feats = out.hidden_states[-1] if self.need_features else None
        return out.logits[..., : self.V], feats

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> torch.Tensor | None:
        """Cache ids[:-1]; the last prompt token stays pending. Returns the features of ids[:-1] if needed."""
        self.cache = hf_cache.new_cache()
        self.length = len(ids) - 1
        self.pending = ids[-1:]
        if len(ids) == 1:
            return ids.new_zeros((0, self.model.config.hidden_size), dtype=self.model.dtype) if self.need_features else None
        _, feats = self._run(ids[None, :-1])
        return feats[0] if feats is not None else None

    @torch.no_grad()
    def verify(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [k, L+1, V] of every draft position (and the features there), in one call."""
        k = tokens.shape[0]
        hf_cache.repeat_rows(self.cache, k)
        ids = torch.cat([self.pending.expand(k, 1), tokens], 1)
        self.calls += 1
        return self._run(ids)

    @torch.no_grad()
    def next_logits(self) -> torch.Tensor:
        """Logits [V] after the pending token (the autoregressive baseline's one call per token)."""
        self.calls += 1
        logits, _ = self._run(self.pending[None])
        self.length += 1
        return logits[0, -1]

    def push(self, token: torch.Tensor) -> None:
        """The autoregressive baseline's new token becomes pending."""
        self.pending = token.reshape(1)

    def commit(self, tokens: torch.Tensor, row: int, n_accepted: int, new_token: torch.Tensor) -> None:
        """Keep draft `row` with its first n_accepted tokens (and the old pending one); new_token is pending."""
        self.length += 1 + n_accepted
        hf_cache.crop(self.cache, self.length)
        hf_cache.keep_row(self.cache, row)
        self.pending = new_token.reshape(1)
