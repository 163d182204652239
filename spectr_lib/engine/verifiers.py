"""One target call per round that scores every draft position, on top of the target's cache of the context.

The context's last token is always pending (not yet in the cache): the verification call feeds it in front of
each draft, so one call returns p(·|c), p(·|c, a_1), …, p(·|c, a_1..a_L) for every draft (L + 1 each).
"""
from __future__ import annotations

import torch

from . import hf_cache
from ..theory.trees import ancestors, token_tree
from .heads import Float32Head, LazyLogits

# Verification form per device type: the faster one measured by `python -m spectr_lib.tools.bench_verify` on a
# CPU. On CUDA it is not measured yet (the first GPU check stopped before its forms phase): the batch form is
# kept there as the one that needs no tree attention mask; `gpu_check --phases forms` measures both.
TREE_BY_DEFAULT = {"cpu": True, "cuda": False}


class Verifier:
    """The target side of speculative decoding (the protocol every verification form follows): prefill, one
    call scoring every draft position (`verify`), roll-back to the accepted path (`commit`), and a plain
    autoregressive `step`. Subclasses differ only in how `verify` lays the drafts out and `commit` rolls back;
    a new verification path (a static cache for CUDA graphs, a fused tree kernel) is one more subclass.
    """

    def __init__(self, model: torch.nn.Module, vocab_size: int, need_features: bool | tuple[int, ...] = False):
        self.model, self.V = model, vocab_size
        # which hidden states a feature draft reads: True is the last one; a tuple names hidden_states indices
        self.layers = ((-1,) if need_features is True else tuple(need_features)) if need_features else None
        self.head = Float32Head(model, vocab_size)
        self.calls = 0
        self.positions = 0  # positions the last verification call scored

    def _run(self, ids: torch.Tensor, lazy: bool = False, **kw):
        """Float32 logits [B, T, V] (a `LazyLogits` when lazy) and, when a feature draft needs them, its
        features [B, T, n·d]."""
        logits, h = self.head(ids, self.cache, layers=self.layers, lazy=lazy, **kw)
        return logits, (h if self.layers is not None else None)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> torch.Tensor | None:
        """Cache ids[:-1]; the last prompt token stays pending. Returns the features of ids[:-1] if needed."""
        self.cache = hf_cache.new_cache()
        self.length = len(ids) - 1
        self.pending = ids[-1:]
        if len(ids) == 1:
            width = self.model.config.hidden_size * len(self.layers or ())
            return ids.new_zeros((0, width), dtype=self.model.dtype) if self.layers is not None else None
        _, feats = self._run(ids[None, :-1])
        return feats[0] if feats is not None else None

    @torch.no_grad()
    def verify(self, tokens: torch.Tensor, lazy: bool = False) -> tuple[torch.Tensor | LazyLogits, torch.Tensor | None]:
        """Logits [k, L+1, V] of every draft position of tokens [k, L] (and the features there), in one call.
        lazy=True returns the logits as a `heads.LazyLogits`: the model call is made, the float32 output head
        runs only on the positions selection reads (the decoder's form)."""
        raise NotImplementedError

    def commit(self, tokens: torch.Tensor, row: int, n_accepted: int, new_token: torch.Tensor) -> None:
        """Keep draft `row` with its first n_accepted tokens (and the old pending one); new_token is pending."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [V] after the pending token, and its feature [d] when needed: one plain autoregressive step."""
        self.calls += 1
        logits, feats = self._run(self.pending[None])
        self.length += 1
        return logits[0, -1], (feats[0, -1] if feats is not None else None)

    def push(self, token: torch.Tensor) -> None:
        """The token sampled after a `step` becomes pending."""
        self.pending = token.reshape(1)


class BatchVerifier(Verifier):
    """K rows of L + 1 tokens, one per draft, on K copies of the context cache (the GPU default)."""

    @torch.no_grad()
    def verify(self, tokens: torch.Tensor, lazy: bool = False) -> tuple[torch.Tensor | LazyLogits, torch.Tensor | None]:
        self.calls += 1
        k = tokens.shape[0]
        self.positions = k * (tokens.shape[1] + 1)
        hf_cache.repeat_rows(self.cache, k)
        return self._run(torch.cat([self.pending.expand(k, 1), tokens], 1), lazy=lazy)

    def commit(self, tokens: torch.Tensor, row: int, n_accepted: int, new_token: torch.Tensor) -> None:
        hf_cache.crop(self.cache, self.length + 1 + n_accepted)
        hf_cache.keep_row(self.cache, row)
        self.length += 1 + n_accepted
        self.pending = new_token.reshape(1)


class TreeVerifier(Verifier):
    """One row holding the drafts' prefix tree, each distinct prefix scored once under a tree-shaped attention
    mask (fewer positions, no copy of the context cache per draft: the CPU default)."""

    @torch.no_grad()
    def verify(self, tokens: torch.Tensor, lazy: bool = False) -> tuple[torch.Tensor | LazyLogits, torch.Tensor | None]:
        self.calls += 1
        dev = tokens.device
        node_tok, parent, depth, self.node_of = token_tree(tokens)
        n = self.positions = len(node_tok)
        ids = torch.tensor(node_tok, device=dev)
        ids[0] = self.pending[0]
        allowed = torch.cat([torch.ones(n, self.length, dtype=torch.bool), ancestors(parent)], 1).to(dev)
        dtype = self.model.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill(~allowed, torch.finfo(dtype).min)
        pos = (self.length + torch.tensor(depth, device=dev))[None]
        logits, feats = self._run(ids[None], lazy=lazy, attention_mask=mask[None, None], position_ids=pos)
        node_of = self.node_of.to(dev)
        feats = feats[0][node_of] if feats is not None else None
        return (logits.take(self.node_of) if lazy else logits[0][node_of]), feats

    def commit(self, tokens: torch.Tensor, row: int, n_accepted: int, new_token: torch.Tensor) -> None:
        path = self.length + self.node_of[row, : n_accepted + 1].to(tokens.device)  # the accepted path's nodes
        hf_cache.keep_path(self.cache, self.length, path)
        self.length += 1 + n_accepted
        self.pending = new_token.reshape(1)


def make_verifier(model: torch.nn.Module, vocab_size: int, need_features: bool | tuple[int, ...] = False,
                  tree: bool | None = None) -> Verifier:
    """The verifier for a target: the tree form (tree=True), the batch form (False), or the faster form measured
    for the model's device (None). need_features: False, True (the last hidden state) or the hidden_states
    indices a feature draft reads (its `feature_layers`)."""
    if tree is None:
        tree = TREE_BY_DEFAULT.get(next(model.parameters()).device.type, False)
    return (TreeVerifier if tree else BatchVerifier)(model, vocab_size, need_features)
