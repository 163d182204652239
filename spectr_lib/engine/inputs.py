"""What users pass to `generate` and `draft_acceptance`, checked and converted before any model call.

Wrong types raise TypeError, wrong values ValueError; each message says what to pass instead. numpy
scalars are accepted wherever a Python number is.
"""
from __future__ import annotations

import numpy as np
import torch

from ..models.draft_files import TAU_RANGE
from ..models.draft_settings import DraftSettings
from ..models.load import ModelPair
from ..prompts import encode_chat, is_chat
from ..theory.dists import is_int, is_real

TOKEN_FORMS = "a 1-D sequence of token ids, or a [T] / [1, T] integer tensor or array"
PROMPT_FORMS = f"a string (the chat template is applied), a list of chat messages {{'role', 'content'}}, {TOKEN_FORMS}"
MAX_K = 1024  # drafts per round: each is a row of the draft's cache
SEED_LIMIT = 2**32  # torch's CPU generator keeps 32 bits of its seed: larger seeds would repeat smaller ones


def check_pair(pair) -> None:
    """`pair` is a ModelPair whose draft, if any, comes with its `DraftSettings` (checked when they were made) of
    the draft's kind: TypeError / ValueError otherwise, before any model call."""
    if not isinstance(pair, ModelPair):
        raise TypeError(f"pair must be a ModelPair (from load_pair() or tiny_pair()), got {type(pair).__name__}")
    if pair.draft is not None and not isinstance(pair.draft_settings, DraftSettings):
        raise TypeError(f"pair.draft_settings must be a DraftSettings (models/draft_settings.py), got "
                        f"{type(pair.draft_settings).__name__}: set pair.draft_settings = "
                        f"spectr_lib.models.draft_settings.default_settings(pair.draft) for the defaults")
    if pair.draft is not None:
        pair.draft_settings.check_fits(pair.draft)


def lookup_arg(pair, value) -> bool:
    """A `lookup` argument: True or False, or None for the draft's own default (`pair.draft_settings.prompt_lookup`,
    from its spectr_draft.json; False for a draft without one or no draft); TypeError for another value."""
    value = flag("lookup", value)
    if value is None:
        return bool(pair.draft_settings is not None and pair.draft_settings.prompt_lookup)
    return value


def count(name: str, value, minimum: int = 1) -> int:
    """An integer ≥ minimum (Python or numpy), as a Python int."""
    if not is_int(value):
        raise TypeError(f"{name} must be an integer ≥ {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def flag(name: str, value) -> bool | None:
    """True, False or None (numpy bools accepted)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    raise TypeError(f"{name} must be True, False or None, got {value!r}")


def seed_of(seed) -> int | None:
    """A seed in [0, 2**32), or None."""
    if seed is None:
        return None
    if not is_int(seed):
        raise TypeError(f"seed must be an integer in [0, 2**32) or None, got {seed!r}")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must lie in [0, 2**32) (torch's CPU generator keeps 32 bits, so larger seeds would "
                         f"repeat smaller ones), got {seed}")
    return int(seed)


def draft_temperature_arg(value) -> float | None:
    """A `draft_temperature` argument: None (the draft's own) or a number in draft_files.TAU_RANGE; TypeError
    for another type, ValueError for a number outside the range."""
    if value is None:
        return None
    if not is_real(value):
        raise TypeError(f"draft_temperature must be a number (or None: the draft's own), got {type(value).__name__}")
    if not TAU_RANGE[0] <= value <= TAU_RANGE[1]:
        raise ValueError(f"draft_temperature must lie in [{TAU_RANGE[0]}, {TAU_RANGE[1]}] (or be None: the draft's "
                         f"own), got {value!r}")
    return float(value)


def prompt_ids(pair: ModelPair, prompt, continue_final_message: bool = False) -> torch.Tensor:
    """Token ids [T] on the pair's device from any accepted prompt form (see PROMPT_FORMS); a chat ending in an
    assistant message is continued when continue_final_message (`prompts.encode_chat`), which ValueError refuses
    for a prompt that is not a chat."""
    if continue_final_message and not is_chat(prompt):
        raise ValueError("continue_final_message=True continues the final assistant message of a chat: pass a list "
                         "of {'role', 'content'} messages ending with an assistant one (token ids are used as given)")
    if isinstance(prompt, str) or is_chat(prompt):
        if pair.tokenizer is None:
            raise ValueError(f"this pair has no tokenizer (e.g. tiny_pair()), so text and chat messages cannot be "
                             f"encoded: pass token ids. Accepted prompts: {PROMPT_FORMS}")
        return encode_chat(pair.tokenizer, prompt, continue_final_message).to(pair.device)
    return token_ids(prompt, pair.vocab_size, "prompt", PROMPT_FORMS).to(pair.device)


def token_ids(x, vocab_size: int, name: str = "token_ids", forms: str = TOKEN_FORMS) -> torch.Tensor:
    """A 1-D int64 CPU tensor from a sequence of ints or a [T] / [1, T] integer tensor or array (ids checked
    against the vocabulary before any conversion, so huge values get this message, not an overflow)."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        dtype_ok = (not x.dtype.is_floating_point and not x.dtype.is_complex and x.dtype != torch.bool
                    if isinstance(x, torch.Tensor) else np.issubdtype(x.dtype, np.integer))
        if not dtype_ok:
            raise TypeError(f"{name} must hold integer token ids, got dtype {x.dtype}. Accepted: {forms}")
        if not (x.ndim == 1 or (x.ndim == 2 and x.shape[0] == 1)):
            raise ValueError(f"{name} must be [T] or [1, T] (one sequence), got shape {tuple(x.shape)}")
        if x.size if isinstance(x, np.ndarray) else x.numel():
            lo, hi = (int(x.min()), int(x.max()))
            if lo < 0 or hi >= vocab_size:
                raise ValueError(f"{name} token ids must lie in [0, {vocab_size}), got min {lo}, max {hi}")
        ids = torch.as_tensor(np.asarray(x, dtype=np.int64) if isinstance(x, np.ndarray) else x).reshape(-1).long().cpu()
    elif isinstance(x, (list, tuple)):
        if not all(is_int(t) for t in x):
            bad = next(t for t in x if not is_int(t))
            raise TypeError(f"{name} must be a flat sequence of integer token ids; found {bad!r} "
                            f"({type(bad).__name__}). Accepted: {forms}")
        bad = [int(t) for t in x if not 0 <= int(t) < vocab_size]
        if bad:
            raise ValueError(f"{name} token ids must lie in [0, {vocab_size}), got {bad[0]}")
        ids = torch.tensor([int(t) for t in x], dtype=torch.long)
    else:
        raise TypeError(f"{name} must be one of: {forms}; got {type(x).__name__}")
    if len(ids) == 0:
        raise ValueError(f"the {name} is empty: give a non-empty string or a non-empty list of token ids")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"{name} token ids must lie in [0, {vocab_size}), got min {int(ids.min())}, max {int(ids.max())}")
    return ids


def stop_token_ids(pair: ModelPair, eos_token_id=None) -> frozenset[int]:
    """The tokens that end a generation: eos_token_id (an int or several) when given, else every EOS id of the
    pair's tokenizer and of the target's generation config."""
    if eos_token_id is None:
        found = [getattr(pair.tokenizer, "eos_token_id", None),
                 getattr(getattr(pair.target, "generation_config", None), "eos_token_id", None)]
        ids = [i for f in found for i in (f if isinstance(f, (list, tuple)) else [f]) if i is not None]
    else:
        if isinstance(eos_token_id, (torch.Tensor, np.ndarray)):
            eos_token_id = eos_token_id.tolist()
        ids = list(eos_token_id) if isinstance(eos_token_id, (list, tuple, set, frozenset)) else [eos_token_id]
        if not all(is_int(i) for i in ids):
            raise TypeError(f"eos_token_id must be a token id (int) or a list of them, got {eos_token_id!r}")
        if not all(0 <= i < pair.vocab_size for i in ids):
            raise ValueError(f"eos_token_id must lie in [0, {pair.vocab_size}), got {eos_token_id!r}")
    return frozenset(int(i) for i in ids)


def context_limit(pair: ModelPair) -> int:
    """The smallest context window of the pair's models (10**9 when none states one)."""
    limits = [getattr(getattr(m, "config", None), "max_position_embeddings", None) for m in (pair.target, pair.draft)]
    return min([n for n in limits if isinstance(n, int)] or [10**9])
