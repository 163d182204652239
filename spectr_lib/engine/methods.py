"""The decoding methods `generate(method=...)` runs: one `Method` record each, read by the round (engine/session.py),
the request checks, tracing and the tools; no method name appears in an `if` elsewhere in the engine.

Every token-level rule of theory/selection.py whose record says how a round's drafts are drawn (`Rule.first_draw`)
is a method, decided position by position along the drafts (theory/path.py): a new rule is one `Rule` record.
Block verification judges one draft's block as a whole (theory/block.py): it is the one method of its kind here.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from ..theory.block import decide_block
from ..theory.path import decide_path
from ..theory.selection import RULES, first_iid

AR = "ar"  # the target alone: no drafts, no method record


@dataclass(frozen=True)
class Method:
    """How a round of one method draws its drafts and decides what to keep.

    k: the only number of drafts it takes (None: any k ≥ 1). first_draw (q [V], k, generator) -> the round's k
    first tokens [k]; deeper tokens continue each draft i.i.d. from q. decide (logits [k, L+1, V] (the target's,
    lazy: rows are computed when read), warp (logits -> p), q [k, L, V], tokens [k, L], generator) ->
    (new tokens [n + 1], a draft row holding the accepted prefix, n accepted draft tokens). by_position: decided
    draft position by draft position (`trace_round` lays those open).
    """

    name: str
    label: str
    source: str
    k: int | None
    first_draw: Callable
    decide: Callable
    by_position: bool = True


BLOCK_METHODS = {"block": Method("block", "block verification", "Sun et al., ICLR 2025 (arXiv 2403.10444), Algorithm 2",
                                 1, first_iid, decide_block, by_position=False)}


def _path_method(name: str) -> Method:
    rule = RULES[name]
    return Method(name, rule.label, rule.source, rule.k, rule.first_draw, partial(decide_path, name))


def method_names() -> tuple[str, ...]:
    """Every method `generate` runs: "ar", block verification, then each rule whose drafts a round can draw."""
    return (AR,) + tuple(BLOCK_METHODS) + tuple(name for name, r in RULES.items() if r.first_draw is not None)


def get_method(name: str) -> Method | None:
    """The record of a method (None for "ar"); ValueError naming the choices for an unknown name."""
    if not isinstance(name, str):
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(method_names())}")
    if name == AR:
        return None
    if name in BLOCK_METHODS:
        return BLOCK_METHODS[name]
    if name in RULES and RULES[name].first_draw is not None:
        return _path_method(name)
    if name in RULES:
        raise ValueError(f"the rule {name!r} has no draft law for a decoding round (its Rule record's first_draw is "
                         f"None): choose one of {', '.join(method_names())}")
    raise ValueError(f"unknown method {name!r}: choose one of {', '.join(method_names())}")
