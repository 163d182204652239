"""One decoding round laid open: the K drafts, the drafts still alive at each position, the accepted length,
the correction or bonus token, the positions the target call scored and how far each cache rolls back.

`trace_round` runs exactly the first round of `decoder.generate` with the same seed (same drafter, verifier,
`select_path` and commits, in the same order, drawing from the same generator), and records what the decoder
does not keep. It is for teaching and debugging; `generate` stays the only decoding loop.
Source: SpecTr (Sun et al., NeurIPS 2023), §4 (K-SEQ along the drafts' prefix tree, Algorithm 4).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..models.load import ModelPair
from ..theory.dists import check_sampling, warp
from ..theory.selection import check_rule
from ..theory.trees import token_tree
from .decoder import METHODS, select_path
from .drafters import draft_temperature as draft_temperature_of, draft_warp, make_drafter
from .inputs import MAX_K, check_pair, count, draft_temperature_arg, flag, lookup_arg, prompt_ids, seed_of
from .lookup import Mixer
from .verifiers import make_verifier

# the methods whose rounds are decided by `select_path` (block verification decides a round as a whole)
TRACEABLE = tuple(m for m in METHODS if m not in ("ar", "block"))


class CacheState(NamedTuple):
    """Shape of a KV cache: batch rows and positions per row."""

    rows: int
    positions: int


@dataclass
class PositionTrace:
    """How one draft position (depth 1..L) was decided."""

    depth: int
    alive: list[int]  # draft rows that agree with the accepted prefix when this position is judged (k_i = len)
    candidates: list[int]  # their tokens at this depth, in row order (repeats are drafts sharing a prefix)
    token: int  # the token the rule emitted here
    accepted: bool  # token is one of the candidates; False: a correction (residual) token that ends the round
    survivors: list[int]  # draft rows whose token here equals `token` (empty after a correction)


@dataclass
class RoundTrace:
    """Everything about one round: inputs, decisions, output and both caches."""

    method: str
    k: int
    L: int
    tree: bool  # True: the target scored the drafts' prefix tree in one row; False: k rows of L + 1
    prompt_ids: torch.Tensor  # [T]
    tokens: torch.Tensor  # the drafts [k, L]
    q: torch.Tensor  # warped draft distributions [k, L, V] (float64)
    target_logits: torch.Tensor  # float32 target logits [k, L + 1, V] at every draft position
    positions: list[PositionTrace]  # one per depth the round reached (accepted + 1, at most L)
    new_tokens: torch.Tensor  # [accepted + 1]: the accepted draft tokens, then the correction or bonus token
    accepted: int  # accepted draft tokens
    row: int  # a draft row holding the accepted prefix (the row both caches keep)
    tree_nodes: int  # nodes of the drafts' prefix tree, root (the pending token) included
    positions_scored: int  # positions the verification call fed to the target
    target_after_verify: CacheState
    target_after_commit: CacheState
    draft_after_draft: CacheState
    draft_after_commit: CacheState

    @property
    def bonus(self) -> bool:
        """True when every draft position was accepted and the last token is the free bonus token."""
        return self.accepted == self.L

    @property
    def target_rolled_back(self) -> int:
        """Positions per kept row that the target's cache dropped at the commit."""
        return self.target_after_verify.positions - self.target_after_commit.positions

    @property
    def draft_rolled_back(self) -> int:
        """Positions per kept row that the draft's cache dropped at the commit."""
        return self.draft_after_draft.positions - self.draft_after_commit.positions


def cache_state(cache) -> CacheState:
    """Rows and positions of a Hugging Face DynamicCache (any transformers version) or the feature draft's KVCache."""
    if hasattr(cache, "get_seq_length"):
        layers = getattr(cache, "layers", None)
        keys = getattr(layers[0], "keys", None) if layers else (cache.key_cache[0] if getattr(cache, "key_cache", None) else None)
        return CacheState(0 if keys is None else int(keys.shape[0]), int(cache.get_seq_length()))
    return CacheState(cache.rows, len(cache))


def trace_round(pair: ModelPair, prompt, *, method: str = "kseq", k: int = 4, L: int = 4, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, seed: int = 0, tree: bool | None = None,
                draft_temperature: float | None = None, lookup: bool | None = None) -> RoundTrace:
    """The first round of `generate(pair, prompt, method=method, k=k, L=L, seed=seed, ...)`, traced.

    Its new_tokens are the first accepted + 1 tokens that generate returns for the same arguments (when
    max_new_tokens > L and no stop token comes earlier). prompt: any form `generate` takes. method: one of
    TRACEABLE ("sps", "kseq", "rrs", "rrs_wor"). tree: the verification form (None: the device's default).
    draft_temperature, lookup: as generate's (None: the draft's own τ for k, its own prompt-lookup setting).
    Raises TypeError / ValueError for a bad argument, before any model call (as `generate` does).
    """
    check_pair(pair)
    if method not in TRACEABLE:
        raise ValueError(f"trace_round follows rounds decided position by position: method must be one of "
                         f"{', '.join(TRACEABLE)}, got {method!r}")
    if pair.draft is None:
        raise ValueError("a round needs a draft model: load one with load_pair(target, draft)")
    k, L = count("k", k), count("L", L)
    if k > MAX_K:
        raise ValueError(f"k = {k} drafts is more than {MAX_K}")
    check_rule(method, k)
    check_sampling(temperature, top_k, top_p)
    tree, seed, lookup = flag("tree", tree), seed_of(seed), lookup_arg(pair, lookup)
    draft_temperature = draft_temperature_arg(draft_temperature)
    if seed is None:
        raise ValueError("trace_round needs an integer seed, so that the traced round can be reproduced")
    ids = prompt_ids(pair, prompt)
    gen = torch.Generator(device=pair.device).manual_seed(seed)

    def w(logits: torch.Tensor) -> torch.Tensor:
        return warp(logits, float(temperature), top_k, top_p)

    drafter = make_drafter(pair.draft, pair.vocab_size)
    target = make_verifier(pair.target, pair.vocab_size, need_features=drafter.needs_features, tree=tree)
    drafter.prefill(ids, target.prefill(ids))
    wq = draft_warp(w, draft_temperature_of(pair.draft, k, draft_temperature))
    tokens, q = drafter.draft(k, L, wq, gen, method == "rrs_wor", Mixer(ids) if lookup else None)
    draft_after_draft = cache_state(drafter.cache)
    logits, feats = target.verify(tokens, lazy=True)  # as generate reads them: the head row by row
    target_after_verify = cache_state(target.cache)
    new, row, n_acc = select_path(method, lambda r, i: w(logits[r, i]), q, tokens, gen)
    target.commit(tokens, row, n_acc, new[-1])
    drafter.commit(tokens, row, n_acc, new[-1], feats[row] if feats is not None else None)

    rows, out, steps = tokens.tolist(), new.tolist(), []
    for i in range(min(n_acc + 1, L)):  # the positions select_path judged; alive = rows agreeing so far
        alive = [r for r in range(k) if rows[r][:i] == out[:i]]
        survivors = [r for r in alive if rows[r][i] == out[i]]
        steps.append(PositionTrace(i + 1, alive, [rows[r][i] for r in alive], out[i], bool(survivors), survivors))
    return RoundTrace(method, k, L, type(target).__name__ == "TreeVerifier", ids.cpu(), tokens.cpu(), q.cpu(),
                      logits.dense().cpu(), steps, new.cpu(), n_acc, row, len(token_tree(tokens)[0]), target.positions,
                      target_after_verify, cache_state(target.cache), draft_after_draft, cache_state(drafter.cache))
