"""One generation request, checked once: what `generate` (and `trace_round`, calibration) asks of a pair, validated
and converted before any model call, as a frozen record the round (engine/session.py) reads.
"""
from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from functools import partial

import torch

from ..models.load import ModelPair
from ..theory.dists import check_sampling, warp
from ..theory.selection import RULES
from .auto import K_AUTO, L_MAX
from .costs import Costs
from .drafters import draft_warp
from .inputs import (MAX_K, SEED_LIMIT, check_pair, context_limit, count, draft_temperature_arg, flag, lookup_arg,
                     prompt_ids, seed_of, stop_token_ids)
from .methods import Method, get_method, method_names
from .verifiers import default_form, form_arg


@dataclass(frozen=True, eq=False)  # holds a tensor: compared by identity
class Request:
    """A checked request. method: its record (None for "ar"); k, L: the fixed configuration, or the largest
    when auto_k / auto_L (chosen per round); form: the verification form's name (engine/verifiers.py); ids [T]:
    the prompt on the pair's device; seed: the generator's seed (drawn at random when the caller gave none)."""

    name: str
    method: Method | None
    k: int
    L: int
    auto_k: bool
    auto_L: bool
    max_new_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int
    form: str
    stop: frozenset
    ids: torch.Tensor
    lookup: bool
    draft_temperature: float | None

    @property
    def auto(self) -> bool:
        return self.auto_k or self.auto_L

    @property
    def warp(self):
        """logits [..., V] -> target probabilities [..., V] (float64) at this request's temperature, top_k, top_p."""
        return partial(warp, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)

    def draft_warp(self, settings, k: int):
        """The warp of the draft's logits in rounds of k drafts: at the draft's τ for k (or the request's τ)."""
        return draft_warp(self.warp, settings.tau(k, self.draft_temperature))


def make_request(pair: ModelPair, prompt, *, method: str = "kseq", k=None, L=4, max_new_tokens=128, temperature=1.0,
                 top_k=None, top_p=None, seed=None, verify=None, tree=None, eos_token_id=None, costs=None,
                 lookup=None, draft_temperature=None, continue_final_message=False) -> Request:
    """Every argument of `generate`, checked (the meanings are in its docstring). Raises TypeError / ValueError,
    saying what to pass instead, before any model call: an unknown method or form, a k the method does not take,
    "auto" where it cannot apply, a bad prompt, or a prompt + max_new_tokens longer than the models' context."""
    check_pair(pair)
    m = get_method(method)
    if m is not None and pair.draft is None:
        raise ValueError(f"method {method!r} needs a draft model: load one with load_pair(target, draft)")
    auto_k, auto_L = isinstance(k, str) and k == "auto", isinstance(L, str) and L == "auto"
    if (auto_k or auto_L) and m is None:
        raise ValueError("'ar' decodes with the target alone: k and L take no value there, 'auto' neither")
    if auto_k and m.k is not None:
        anyk = ", ".join(repr(n) for n in method_names() if n in RULES and RULES[n].k is None)
        raise ValueError(f"{method!r} takes k = {m.k} draft{'s' * (m.k != 1)}: k='auto' is for {anyk}; L='auto' "
                         f"works for every method")
    k = K_AUTO[-1] if auto_k else ((m.k or 8) if m is not None else 1) if k is None else count("k", k)
    if k > MAX_K:
        raise ValueError(f"k = {k} drafts is more than {MAX_K} (each draft is a row of the draft model's cache)")
    if m is None and k != 1:
        raise ValueError(f"'ar' decodes with the target alone and takes no drafts: leave k out (got k = {k})")
    L, max_new_tokens = (L_MAX if auto_L else count("L", L)), count("max_new_tokens", max_new_tokens)
    if m is not None and m.k is not None and k != m.k:
        takes, hint = ("one draft (k = 1)", ": use 'kseq' or 'rrs' for several") if m.k == 1 else (f"k = {m.k} drafts", "")
        raise ValueError(f"{method!r} ({m.label}) takes {takes}, got k = {k}{hint}")
    if auto_k and not auto_L and L > L_MAX:
        raise ValueError(f"k='auto' chooses among rounds of L ≤ {L_MAX}, got L = {L}: pass L ≤ {L_MAX} or L='auto'")
    if costs is not None and not isinstance(costs, Costs):
        raise TypeError(f"costs must be a Costs from pair_costs(pair), got {type(costs).__name__}")
    check_sampling(temperature, top_k, top_p)
    form = verification_form(pair, verify, tree)
    if (auto_k or auto_L) and costs is not None and form not in costs.verify_ms:
        raise ValueError(f"these costs hold no measurement of the {form!r} verification form (they have "
                         f"{', '.join(map(repr, costs.verify_ms))}): pass verify= one of those, or costs=None to "
                         f"calibrate every registered form")
    seed, lookup = seed_of(seed), lookup_arg(pair, lookup)
    draft_temperature = draft_temperature_arg(draft_temperature)
    stop = stop_token_ids(pair, eos_token_id)
    ids = prompt_ids(pair, prompt, flag("continue_final_message", continue_final_message) or False)
    limit = context_limit(pair)
    if len(ids) + max_new_tokens > limit:
        raise ValueError(f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the models' "
                         f"context of {limit} tokens: shorten the prompt or ask for fewer tokens")
    seed = random.randrange(SEED_LIMIT) if seed is None else seed
    return Request(method if m is None else m.name, m, k, L, auto_k, auto_L, max_new_tokens, float(temperature),
                   top_k, top_p, seed, form, stop, ids, lookup, draft_temperature)


def verification_form(pair: ModelPair, verify, tree) -> str:
    """The form's name from `verify` (a name in VERIFIERS, or None: the device's default) and the deprecated
    `tree` flag (True: "tree", False: "batch"); ValueError when both are given or for an unknown name, TypeError
    for a `verify` that is not a string or a `tree` that is not a bool."""
    tree = flag("tree", tree)
    if tree is not None:
        if verify is not None:
            raise ValueError("pass the verification form once: verify='tree' / 'batch' (tree= is its old spelling)")
        warnings.warn("tree=True / False is deprecated: pass verify='tree' / verify='batch'", DeprecationWarning,
                      stacklevel=4)
        return "tree" if tree else "batch"
    return default_form(pair.device) if verify is None else form_arg(verify)

