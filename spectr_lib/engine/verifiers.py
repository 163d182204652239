"""One target call per round that scores every draft position, on top of the target's cache of the context.

The context's last token is always pending (not yet in the cache): the verification call feeds it in front of
each draft, so one call returns p(·|c), p(·|c, a_1), …, p(·|c, a_1..a_L) for every draft (L + 1 each).
"""
from __future__ import annotations

import torch

from . import hf_cache
from .heads import Float32Head


def token_tree(tokens: torch.Tensor) -> tuple[list[int], list[int], list[int], torch.Tensor]:
    """Nodes of the drafts' prefix tree, root (the pending token) first: token, parent, depth of each node, and
    node_of [k, L+1], the node that ends each draft's prefix of length i (i = 0: the root)."""
    k, L = tokens.shape
    node_tok, parent, depth, index = [-1], [-1], [0], {(): 0}
    node_of = torch.zeros(k, L + 1, dtype=torch.long)
    for j, row in enumerate(tokens.tolist()):
        for i in range(1, L + 1):
            prefix = tuple(row[:i])
            if prefix not in index:
                index[prefix] = len(node_tok)
                node_tok.append(row[i - 1]), parent.append(index[prefix[:-1]]), depth.append(i)
            node_of[j, i] = index[prefix]
    return node_tok, parent, depth, node_of


class Verifier:
    """The target side of speculative decoding: prefill, batched verification, roll-back.

    `tree=False` scores K rows of L + 1 tokens (the batch form); `tree=True` scores each distinct prefix once in
    one row, with a tree-shaped attention mask (fewer positions, and no copy of the context cache per draft).
    """

    def __init__(self, model: torch.nn.Module, vocab_size: int, need_features: bool = False, tree: bool = False):
        self.model, self.V, self.need_features, self.tree = model, vocab_size, need_features, tree
        self.head = Float32Head(model, vocab_size)
        self.calls = 0

    def _run(self, ids: torch.Tensor, **kw):
        """Float32 logits [B, T, V] and, when a feature draft needs them, the last hidden states [B, T, d]."""
        logits, h = self.head(ids, self.cache, **kw)
        return logits, (h if self.need_features else None)

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
        self.calls += 1
        if self.tree:
            return self._verify_tree(tokens)
        k = tokens.shape[0]
        hf_cache.repeat_rows(self.cache, k)
        return self._run(torch.cat([self.pending.expand(k, 1), tokens], 1))

    def _verify_tree(self, tokens: torch.Tensor):
        dev = tokens.device
        node_tok, parent, depth, self.node_of = token_tree(tokens)
        n = len(node_tok)
        ids = torch.tensor(node_tok, device=dev)
        ids[0] = self.pending[0]
        ancestor = torch.eye(n, dtype=torch.bool)
        for i in range(1, n):  # parents come before children, so each row extends its parent's row
            ancestor[i] |= ancestor[parent[i]]
        allowed = torch.cat([torch.ones(n, self.length, dtype=torch.bool), ancestor], 1).to(dev)
        dtype = self.model.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill(~allowed, torch.finfo(dtype).min)
        pos = (self.length + torch.tensor(depth, device=dev))[None]
        logits, feats = self._run(ids[None], attention_mask=mask[None, None], position_ids=pos)
        node_of = self.node_of.to(dev)
        return logits[0][node_of], (feats[0][node_of] if feats is not None else None)

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

    def commit(self, tokens: torch.Tensor, row: int, n_accepted: int, new_token: torch.Tensor) -> None:
        """Keep draft `row` with its first n_accepted tokens (and the old pending one); new_token is pending."""
        if self.tree:  # keep the context and the accepted path's nodes, drop the other branches
            path = self.length + self.node_of[row, : n_accepted + 1].to(tokens.device)
            hf_cache.keep_path(self.cache, self.length, path)
        else:
            hf_cache.crop(self.cache, self.length + 1 + n_accepted)
            hf_cache.keep_row(self.cache, row)
        self.length += 1 + n_accepted
        self.pending = new_token.reshape(1)
