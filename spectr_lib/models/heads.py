"""The output head, run apart from the model's body: in a dtype of its own, lazily on the positions read.

By default the decoder's head runs in the model's own dtype (`ModelPair.head_dtype`), as Hugging Face's
`generate` does: the output law is exact whatever the head's dtype, since every rule verifies against the p it
computed. In bfloat16 a logit near 17.5 is resolved only to 0.125, so two tokens whose logits differ by less can
come out equal, and which one wins then depends on the batch shape of the call (one token at a time, a batch of
drafts, a token tree); a float32 head (`load_pair(head_dtype="float32")`) removes those ties, at about 3× the
head's cost in a bf16 model on a CPU; what remains are genuine near-ties of the hidden state itself (see
`generate`'s docstring).
"""
from __future__ import annotations

import operator
import weakref

import torch

from . import hf_cache
from .matmul_order import head_matmul, rows_at_once

_WEIGHTS: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()  # model -> heads by dtype
_SCALED = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")


class OutputHead:
    """Runs a Hugging Face causal LM as body (in its dtype) + output head (in `dtype`, default float32).

    `__call__(ids [B, T], cache, layers, **kw)` returns (logits [B, T, V] in `dtype`, features [B, T, n·d]: the
    last hidden state by default, or the states of several layers for a draft that fuses them). With `rows`
    [R] (a draft's kept head rows, FR-Spec style) only those R logits are computed, the rest are −inf. Models
    whose config scales or caps logits after the head (Gemma 2, Cohere, ...) keep their own forward, with the
    logits cast to `dtype`.
    """

    def __init__(self, model: torch.nn.Module, vocab_size: int, rows: torch.Tensor | None = None,
                 dtype: torch.dtype = torch.float32):
        self.model, self.V, self.dtype = model, vocab_size, dtype
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        body = model.get_decoder() if hasattr(model, "get_decoder") else None
        scaled = any(getattr(model.config, name, None) not in (None, 1, 1.0) for name in _SCALED)
        self.own = head is None or body is None or scaled or not isinstance(head, torch.nn.Linear)
        self.rows = None if self.own or rows is None else rows.to(head.weight.device).long()
        if not self.own:
            self.body = body
            self.weight, self.bias = _head_weights(model, head, vocab_size, self.rows, dtype)

    def __call__(self, ids: torch.Tensor, cache, layers: tuple[int, ...] | None = None, lazy: bool = False,
                 **kw) -> tuple["torch.Tensor | LazyLogits", torch.Tensor]:
        """Logits [B, T, V] (in the head's dtype) and features [B, T, n·d]: the hidden states at the given indices of the
        model's hidden_states, concatenated (default (-1,): the last, normed state the head reads). lazy=True
        returns the logits as a `LazyLogits` [B, T, V] that runs the head only on the positions read."""
        layers = tuple(layers) if layers else (-1,)
        if self.own:
            out = hf_cache.forward(self.model, ids, cache, output_hidden_states=True, **kw)
            logits = out.logits[..., : self.V].to(self.dtype)
            return (LazyLogits(logits, lambda x: x) if lazy else logits), _pick(out.hidden_states, layers)
        if layers == (-1,):
            h = feats = hf_cache.forward(self.body, ids, cache, **kw).last_hidden_state
        else:
            out = hf_cache.forward(self.body, ids, cache, output_hidden_states=True, **kw)
            h, feats = out.last_hidden_state, _pick(out.hidden_states, layers)
        if not lazy:
            return self.logits(h), feats
        return LazyLogits(h, self.logits, at_once=rows_at_once(h.numel() // h.shape[-1], self.dtype, h.device.type)), feats

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Logits [..., V] in the head's dtype of the model's last hidden states h [..., d] (−inf outside `rows` if
        set)."""
        logits = head_matmul(h.to(self.dtype), self.weight)
        logits = logits + self.bias if self.bias is not None else logits
        if self.rows is not None:  # kept rows only: the other tokens get logit −inf (probability 0)
            logits = logits.new_full(logits.shape[:-1] + (self.V,), float("-inf")).scatter_(
                -1, self.rows.expand(logits.shape), logits)
        return logits


class LazyLogits:
    """A verification call's logits [k, L + 1, V], computed when read: `logits[r, i]` runs the output head on
    that one position (once; positions that share a node of the drafts' tree share it), `logits[r]` on row r,
    `dense()` on all. Selection reads only the accepted path and one position after it, so a round pays the head
    for about accepted + 1 positions instead of every scored one: on a 2-core AMX Xeon, the 49,152-row float32
    head took ~3 ms for one position and 9–14 ms for the 9–17 of a k = 4, L = 4 tree. Where one product of all
    the scored positions costs less than two of one (`matmul_order.rows_at_once`: float32 on an AVX2 CPU),
    `at_once=True` computes them all at the first read of one position and keeps them.

    h [N, d] (or [B, T, d]: N = B·T): the hidden states of the scored positions; head: h rows -> logits [.., V];
    index [k, L + 1]: the row of h that each draft position reads (default: h's own layout)."""

    def __init__(self, h: torch.Tensor, head, index: torch.Tensor | None = None, at_once: bool = False):
        self.h = h.reshape(-1, h.shape[-1])
        self.head, self.at_once = head, at_once
        self.index = torch.arange(len(self.h)).view(h.shape[:-1]) if index is None else index.cpu()
        self._rows: dict[int, torch.Tensor] = {}

    def take(self, index: torch.Tensor) -> "LazyLogits":
        """The same scored positions, read through another index [k, L + 1] of rows of h."""
        return LazyLogits(self.h, self.head, index, self.at_once)

    def __getitem__(self, key) -> torch.Tensor:
        """logits[r, i] -> [V] (integers of any kind: computed once, then cached; with `at_once`, every scored
        position's at the first such read); any other index of [k, L + 1] (logits[r] -> [L + 1, V], slices,
        tensors) computes those rows. IndexError out of range."""
        if isinstance(key, tuple) and len(key) == 2:
            try:
                r, i = operator.index(key[0]), operator.index(key[1])
            except TypeError:
                pass  # slices or index tensors: the general path below
            else:
                row = int(self.index[r, i])
                if row not in self._rows:
                    if self.at_once:
                        self._rows = dict(enumerate(self.head(self.h)))
                    else:
                        self._rows[row] = self.head(self.h[row])
                return self._rows[row]
        if isinstance(key, torch.Tensor):
            key = key.cpu()
        elif isinstance(key, tuple):
            key = tuple(k.cpu() if isinstance(k, torch.Tensor) else k for k in key)
        return self.head(self.h[self.index[key].to(self.h.device)])

    def dense(self) -> torch.Tensor:
        """All logits [*index.shape, V] (in the head's dtype)."""
        return self.head(self.h[self.index.to(self.h.device)])


def _pick(hidden_states: tuple[torch.Tensor, ...], layers: tuple[int, ...]) -> torch.Tensor:
    """The hidden states at the given indices [B, T, d] each, concatenated along the last axis."""
    return hidden_states[layers[0]] if len(layers) == 1 else torch.cat([hidden_states[i] for i in layers], -1)


def _head_weights(model: torch.nn.Module, head: torch.nn.Linear, V: int, rows: torch.Tensor | None, dtype: torch.dtype):
    """The head's first V rows [V, d] (or the given rows [R, d]) and bias in `dtype` (the model's own tensors,
    not copies, where the dtype is theirs and all rows are kept), made once per model, dtype and weight version."""
    key = (head.weight.data_ptr(), head.weight._version, V, None if rows is None else rows.data_ptr())
    cached = _WEIGHTS.setdefault(model, {})
    hit = cached.get(dtype)
    if hit is None or hit[0] != key:
        pick = slice(0, V) if rows is None else rows
        bias = head.bias[pick].detach().to(dtype) if head.bias is not None else None
        hit = (key, head.weight[pick].detach().to(dtype), bias)
        cached[dtype] = hit
    return hit[1], hit[2]
