"""One target call per round that scores every draft position, on top of the target's cache of the context.

The context's last token is always pending (not yet in the cache): the verification call feeds it in front of
each draft, so one call returns p(·|c), p(·|c, a_1), …, p(·|c, a_1..a_L) for every draft (L + 1 each).
"""
from __future__ import annotations

import torch

from ..models import hf_cache
from ..theory.trees import ancestors, token_tree
from ..models.heads import LazyLogits, OutputHead

TREE_POSITIONS = (1, 2, 3, 5, 9, 17, 33, 49, 65, 81)  # positions of the tree-form calls the cost model times
BATCH_K, BATCH_L = (1, 2, 4, 8), (1, 2, 4, 8)  # drafts and lengths of the batch-form calls it times


class Verifier:
    """The target side of speculative decoding (the protocol every verification form follows): prefill, one
    call scoring every draft position (`verify`), roll-back to the accepted path (`commit`), and a plain
    autoregressive `step`. Subclasses differ only in how `verify` lays the drafts out and `commit` rolls back;
    a new verification path (a fused tree kernel, a compiled call) is one more subclass, listed in VERIFIERS under
    its name.

    The cost model (engine/costs.py) times each form at its `calibration_shapes` (k drafts of length L) and
    predicts a call from the measured calls of the same `layout` (rows, positions per row), interpolating.
    """

    @staticmethod
    def layout(k: int, L: int, positions: float | None = None) -> tuple[float, float]:
        """(rows, positions per row) of a call verifying k drafts of length L (positions: the distinct prefixes
        the call scores, when known)."""
        raise NotImplementedError("a verification form gives layout(k, L, positions): how it lays out a call, for the "
                                  "cost model")

    @staticmethod
    def calibration_shapes() -> list[tuple[int, int]]:
        """The (k, L) calls the cost model times for this form (drafts with no shared prefix)."""
        raise NotImplementedError("a verification form gives calibration_shapes(): the (k, L) calls the cost model "
                                  "times")

    def __init__(self, model: torch.nn.Module, vocab_size: int, need_features: bool | tuple[int, ...] = False,
                 head_dtype: torch.dtype = torch.float32):
        self.model, self.V = model, vocab_size
        # which hidden states a feature draft reads: True is the last one; a tuple names hidden_states indices
        self.layers = ((-1,) if need_features is True else tuple(need_features)) if need_features else None
        self.head = OutputHead(model, vocab_size, dtype=head_dtype)
        self.calls = 0
        self.positions = 0  # positions the last verification call scored

    def _run(self, ids: torch.Tensor, lazy: bool = False, **kw):
        """Logits [B, T, V] in the head's dtype (a `LazyLogits` when lazy) and, when a feature draft needs them, its
        features [B, T, n·d]."""
        logits, h = self.head(ids, self.cache, layers=self.layers, lazy=lazy, **kw)
        return logits, (h if self.layers is not None else None)

    def _new_cache(self, prompt: int, room: int | None):
        """An empty cache for a prompt of `prompt` tokens and `room` positions more (None: not known)."""
        return hf_cache.new_cache()

    def _make_room(self, n: int) -> None:
        """Room for n more positions in the cache (a dynamic cache always has it)."""

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, room: int | None = None) -> torch.Tensor | None:
        """Cache ids[:-1]; the last prompt token stays pending. Returns the features of ids[:-1] if needed.
        room: how many positions past the prompt the generation may use (a static cache allocates them once)."""
        self.cache = self._new_cache(len(ids), room)
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
        lazy=True returns the logits as a `heads.LazyLogits`: the model call is made, the output head
        runs only on the positions selection reads (the decoder's form)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement verify()")

    def commit(self, tokens: torch.Tensor, row: int, n_accepted: int, new_token: torch.Tensor) -> None:
        """Keep draft `row` with its first n_accepted tokens (and the old pending one); new_token is pending."""
        raise NotImplementedError(f"{type(self).__name__} does not implement commit()")

    @torch.no_grad()
    def step(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [V] after the pending token, and its feature [d] when needed: one plain autoregressive step."""
        self.calls += 1
        self._make_room(1)
        logits, feats = self._run(self.pending[None])
        self.length += 1
        return logits[0, -1], (feats[0, -1] if feats is not None else None)

    def push(self, token: torch.Tensor) -> None:
        """The token sampled after a `step` becomes pending."""
        self.pending = token.reshape(1)


class BatchVerifier(Verifier):
    """K rows of L + 1 tokens, one per draft, on K copies of the context cache (the GPU default)."""

    @staticmethod
    def layout(k: int, L: int, positions: float | None = None) -> tuple[float, float]:
        return k, L + 1

    @staticmethod
    def calibration_shapes() -> list[tuple[int, int]]:
        return [(k, L) for k in BATCH_K for L in BATCH_L]

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

    @staticmethod
    def layout(k: int, L: int, positions: float | None = None) -> tuple[float, float]:
        return 1, (1 + k * L if positions is None else positions)

    @staticmethod
    def calibration_shapes() -> list[tuple[int, int]]:
        return [(1, n - 1) for n in TREE_POSITIONS]

    @torch.no_grad()
    def verify(self, tokens: torch.Tensor, lazy: bool = False) -> tuple[torch.Tensor | LazyLogits, torch.Tensor | None]:
        self.calls += 1
        dev = tokens.device
        node_tok, parent, depth, self.node_of = token_tree(tokens)
        n = self.positions = len(node_tok)
        self._make_room(n)
        ids = torch.tensor(node_tok, device=dev)
        ids[0] = self.pending[0]
        allowed = torch.cat([torch.ones(n, self.length, dtype=torch.bool), ancestors(parent), self._unused(n)], 1).to(dev)
        dtype = self.model.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill(~allowed, torch.finfo(dtype).min)
        pos = (self.length + torch.tensor(depth, device=dev))[None]
        logits, feats = self._run(ids[None], lazy=lazy, attention_mask=mask[None, None], position_ids=pos)
        node_of = self.node_of.to(dev)
        feats = feats[0][node_of] if feats is not None else None
        return (logits.take(self.node_of) if lazy else logits[0][node_of]), feats

    def _unused(self, n: int) -> torch.Tensor:
        """Mask columns [n, ·] of cache positions past the call's own (none in a dynamic cache)."""
        return torch.zeros(n, 0, dtype=torch.bool)

    def commit(self, tokens: torch.Tensor, row: int, n_accepted: int, new_token: torch.Tensor) -> None:
        path = self.length + self.node_of[row, : n_accepted + 1].to(tokens.device)  # the accepted path's nodes
        hf_cache.keep_path(self.cache, self.length, path)
        self.length += 1 + n_accepted
        self.pending = new_token.reshape(1)


class StaticTreeVerifier(TreeVerifier):
    """The tree form on one preallocated, position-indexed cache per generation (transformers' `StaticCache`, the
    layout of gpt-fast's caches): a call writes its positions in place, the roll-back moves the accepted path down
    and the cache's length back, and nothing is concatenated or cropped by copy. The attention reads the whole
    allocation under the tree's mask (positions past the context masked), so the allocation is sized to the
    generation (prompt + `room`) and doubled, copied once, if a caller goes past it."""

    ROOM = 256  # positions allocated past the prompt when the caller does not say

    def _new_cache(self, prompt: int, room: int | None):
        return hf_cache.new_static_cache(self.model.config, prompt + (self.ROOM if room is None else max(room, 1)))

    def _make_room(self, n: int) -> None:
        size = hf_cache.capacity(self.cache)
        if self.length + n > size:
            self.cache = hf_cache.grown(self.cache, self.model.config, max(2 * size, self.length + n))

    def _unused(self, n: int) -> torch.Tensor:
        return torch.zeros(n, hf_cache.capacity(self.cache) - self.length - n, dtype=torch.bool)


# The verification forms by name. A new form is one subclass of Verifier and one line here; `generate(verify=...)`,
# the cost model, auto, trace_round and the tools read this registry.
VERIFIERS: dict[str, type[Verifier]] = {"batch": BatchVerifier, "tree": TreeVerifier, "static": StaticTreeVerifier}

# The form a device uses when none is asked for: the faster one measured by `python -m spectr_lib.tools.bench_verify`
# on a CPU. The static form saved 2-3 ms of a ~72 ms plain step on a 2-core AVX2 CPU (the dynamic cache's per-layer
# concatenation, against attention over the whole allocation), within the run-to-run noise of whole generations:
# not the default; it is the layout a compiled, fixed-shape call needs. On CUDA it is not measured yet (the first
# GPU check stopped before its forms phase): the batch form is kept there as the one that needs no tree attention
# mask; `gpu_check --phases forms` measures every form.
DEFAULT_FORM = {"cpu": "tree", "cuda": "batch"}


def default_form(device: torch.device | str) -> str:
    """The verification form used on this device when none is asked for ("batch" on a device not listed)."""
    return DEFAULT_FORM.get(torch.device(device).type, "batch")


def form_arg(verify) -> str:
    """A `verify` argument checked: the name of a registered form (TypeError for a non-string, ValueError naming
    the forms for an unknown name)."""
    if not isinstance(verify, str):
        raise TypeError(f"verify must be the name of a verification form, one of {', '.join(map(repr, VERIFIERS))} "
                        f"(None: the device's default), got {type(verify).__name__}")
    if verify not in VERIFIERS:
        raise ValueError(f"verify must name a verification form, one of {', '.join(map(repr, VERIFIERS))} (None: "
                         f"the device's default), got {verify!r}")
    return verify


def make_verifier(model: torch.nn.Module, vocab_size: int, need_features: bool | tuple[int, ...] = False,
                  form: str | None = None, head_dtype: torch.dtype = torch.float32) -> Verifier:
    """The verifier of `form` (a name in VERIFIERS; None: the default for the model's device) for a target.
    need_features: False, True (the last hidden state) or the hidden_states indices a feature draft reads (its
    `feature_layers`); head_dtype: the output head's dtype (the decoder passes `ModelPair.head_dtype`). Raises
    ValueError for an unknown form."""
    form = default_form(next(model.parameters()).device) if form is None else form_arg(form)
    return VERIFIERS[form](model, vocab_size, need_features, head_dtype)

