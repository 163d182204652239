"""One decoding round laid open: the K drafts, the drafts still alive at each position, the accepted length,
the correction or bonus token, the positions the target call scored and how far each cache rolls back.

`trace_round` runs the first round of `generate` with the same seed through the same `session.Session.round`
(the round's one home), and records what the decoder does not keep. It is for teaching and debugging.
Source: SpecTr (Sun et al., NeurIPS 2023), §4 (K-SEQ along the drafts' prefix tree, Algorithm 4).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..models.load import ModelPair
from ..theory.trees import token_tree
from .inputs import count
from .methods import AR, get_method, method_names
from .request import make_request
from .session import Session


def traceable() -> tuple[str, ...]:
    """The methods whose rounds are decided draft position by draft position (`Method.by_position`)."""
    return tuple(n for n in method_names() if n != AR and get_method(n).by_position)



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
    form: str  # the verification form (engine/verifiers.py): "tree", one row holding the drafts' prefix tree; "batch", k rows
    prompt_ids: torch.Tensor  # [T]
    tokens: torch.Tensor  # the drafts [k, L]
    q: torch.Tensor  # warped draft distributions [k, L, V] (float64)
    target_logits: torch.Tensor  # target logits [k, L + 1, V] at every draft position (in the pair's head dtype)
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
    def tree(self) -> bool:
        """True when the round was verified in the prefix-tree form (`form == "tree"`)."""
        return self.form == "tree"

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
                top_k: int | None = None, top_p: float | None = None, seed: int = 0, verify: str | None = None,
                draft_temperature: float | None = None, lookup: bool | None = None,
                tree: bool | None = None) -> RoundTrace:
    """The first round of `generate(pair, prompt, method=method, k=k, L=L, seed=seed, ...)`, traced.

    Its new_tokens are the first accepted + 1 tokens that generate returns for the same arguments (when
    max_new_tokens > L and no stop token comes earlier: the traced round is never cut at one). prompt: any form `generate` takes. method:
    one decided position by position (`traceable()`: "sps", "kseq", "rrs", "rrs_wor"). verify: the verification
    form (None: the device's default; tree= its deprecated spelling). draft_temperature, lookup: as generate's.
    Raises TypeError / ValueError for a bad argument, before any model call (as `generate` does).
    """
    if method not in traceable():
        raise ValueError(f"trace_round follows rounds decided position by position: method must be one of "
                         f"{', '.join(traceable())}, got {method!r}")
    if seed is None:
        raise ValueError("trace_round needs an integer seed, so that the traced round can be reproduced")
    k, L = count("k", k), count("L", L)
    request = make_request(pair, prompt, method=method, k=k, L=L, max_new_tokens=L + 1, temperature=temperature,
                           top_k=top_k, top_p=top_p, seed=seed, verify=verify, tree=tree,
                           draft_temperature=draft_temperature, lookup=lookup, eos_token_id=[])
    session = Session(pair, request)
    states = {}

    def observe(phase: str) -> None:
        states[phase] = (cache_state(session.verifier.cache), cache_state(session.drafter.cache))

    r = session.round(k, L, observe)
    rows, out, steps = r.tokens.tolist(), r.new.tolist(), []
    for i in range(min(r.accepted + 1, L)):  # the positions the rule judged; alive = rows agreeing so far
        alive = [j for j in range(k) if rows[j][:i] == out[:i]]
        survivors = [j for j in alive if rows[j][i] == out[i]]
        steps.append(PositionTrace(i + 1, alive, [rows[j][i] for j in alive], out[i], bool(survivors), survivors))
    return RoundTrace(method, k, L, request.form, request.ids.cpu(), r.tokens.cpu(), r.q.cpu(), (r.logits.dense() if hasattr(r.logits, "dense") else r.logits).cpu(),
                      steps, r.new.cpu(), r.accepted, r.row, len(token_tree(r.tokens)[0]), session.verifier.positions,
                      states["verified"][0], cache_state(session.verifier.cache), states["drafted"][1],
                      cache_state(session.drafter.cache))
