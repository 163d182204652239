"""Checks of a saved spectr_lib draft folder (feature or standalone draft), run before any model loads, so that
a damaged or mismatched folder is named with what to do instead of surfacing as a JSON, safetensors or torch
error deep inside loading.

A draft folder holds `spectr_draft.json` (its kind and shape) and `draft.safetensors` (its own weights); the
target's embedding and head are shared at load time.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CONFIG_NAME = "spectr_draft.json"
WEIGHTS_NAME = "draft.safetensors"
KINDS = ("feature_draft", "standalone_draft")
FIX = "restore the folder (e.g. `git checkout -- <folder>`) or save the draft again with `python -m spectr_lib.distill save`"


def holds_model(folder) -> bool:
    """Whether `folder` holds a model: a Hugging Face one (config.json) or a spectr_lib draft (spectr_draft.json)."""
    return any((Path(folder) / name).exists() for name in ("config.json", CONFIG_NAME))


def read_draft_config(folder) -> dict | None:
    """The parsed spectr_draft.json of `folder`, or None when the folder has none (a Hugging Face model folder).

    Raises ValueError when the file is unreadable, not a JSON object or names an unknown kind, and
    FileNotFoundError when its weights file (draft.safetensors) is missing or is not a safetensors file.
    """
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path} cannot be read as JSON ({err}): {FIX}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} holds {type(meta).__name__}, not a JSON object: {FIX}")
    kind = meta.get("kind", "feature_draft")  # the first drafts were written before the field existed
    if kind not in KINDS:
        raise ValueError(f"{path} names kind {kind!r}; this version of spectr_lib loads {' and '.join(KINDS)}: "
                         f"upgrade spectr_lib, or {FIX}")
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} has {CONFIG_NAME} but no {WEIGHTS_NAME} (the draft's weights): {FIX}")
    try:
        shapes = stored_shapes(folder)
    except Exception as err:  # safetensors raises its own error types for a truncated or foreign file
        raise FileNotFoundError(f"{weights} is not a readable safetensors file ({err}): {FIX}") from None
    check_sizes(meta, kind, path)
    check_head_rows(meta, shapes.get("head_ids"), path)
    draft_temperatures(meta, path)
    prompt_lookup(meta, path)
    return {**meta, "kind": kind}


SIZE_MAX = 2**22  # no layer of a draft is wider (a larger value would only fail to allocate)
DEPTH_MAX = 1024  # layers
SIZES = {"num_hidden_layers": DEPTH_MAX, "num_layers": DEPTH_MAX, "hidden_size": SIZE_MAX, "vocab_size": SIZE_MAX,
         "head_tokens": SIZE_MAX, "num_heads": SIZE_MAX, "num_kv_heads": SIZE_MAX,
         "intermediate_size": SIZE_MAX}  # whole numbers in [1, the value] where given
POSITIVE = {"rope_theta": (1.0, 1e12), "rms_norm_eps": (1e-12, 0.1)}  # physical ranges where given
REQUIRED = {"standalone_draft": ("num_hidden_layers", "hidden_size", "vocab_size"),  # the fields each kind is built from
            "feature_draft": ("hidden_size", "num_heads", "num_kv_heads", "intermediate_size", "rope_theta",
                              "rms_norm_eps", "vocab_size", "head_tokens")}


def check_sizes(meta: dict, kind: str, path) -> None:
    """ValueError naming the file when a size field is missing (where the kind needs it) or is not a whole number in
    [1, SIZES[name]], rope_theta or rms_norm_eps is outside its physical range, the attention heads do not divide
    the width (num_heads) or each other (num_kv_heads), or feature_layers / init_layers is not a list of whole
    numbers: a damaged file, refused before any model loads."""
    for name in REQUIRED[kind]:
        if name not in meta:
            raise ValueError(f"{path} lacks {name!r}, which a {kind.replace('_', ' ')} needs: {FIX}")
    for name, top in SIZES.items():
        value = meta.get(name)
        if name in meta and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top):
            raise ValueError(f"{path}: {name} must be a whole number in [1, {top}], got {value!r}: {FIX}")
    for name, (lo, hi) in POSITIVE.items():
        value = meta.get(name)
        if name in meta and not (isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi):
            raise ValueError(f"{path}: {name} must be a finite number > 0, in [{lo:g}, {hi:g}], got {value!r}: {FIX}")
    for whole, part in (("hidden_size", "num_heads"), ("num_heads", "num_kv_heads")):
        if whole in meta and part in meta and meta[whole] % meta[part]:
            raise ValueError(f"{path}: {part} ({meta[part]}) must divide {whole} ({meta[whole]}): {FIX}")
    for name, what in (("feature_layers", "hidden-state indices"), ("init_layers", "the target layers it began as")):
        layers = meta.get(name, [-1])
        if not isinstance(layers, list) or not layers or not all(isinstance(i, int) and not isinstance(i, bool)
                                                                 for i in layers):
            raise ValueError(f"{path}: {name} must be a non-empty list of whole numbers ({what}), got {layers!r}: {FIX}")


def check_head_rows(meta: dict, head_ids: tuple[int, ...] | None, path) -> None:
    """ValueError naming the file when its head_tokens disagrees with the head rows the weights keep: the stored
    head_ids' shape (head_ids [head_tokens]), or all vocab_size rows when none are stored."""
    if "head_tokens" not in meta:
        return
    n = meta["head_tokens"]
    if head_ids is not None and head_ids != (n,):
        raise ValueError(f"{path} says head_tokens {n}, but {WEIGHTS_NAME} keeps head_ids of shape {head_ids}: {FIX}")
    if head_ids is None and meta.get("vocab_size", n) != n:
        raise ValueError(f"{path} says head_tokens {n}, but {WEIGHTS_NAME} keeps all {meta['vocab_size']} rows: {FIX}")


TAU_RANGE = (0.05, 20.0)  # draft temperatures outside it would only over- or underflow the draft's softmax
TAU_FIX = ("fix or remove its draft_temperature field (then `python -m spectr_lib.tools.draft_temperature --draft "
           "<folder> --write` measures a new table)")


def draft_temperatures(meta: dict, path="spectr_draft.json") -> dict[int, float]:
    """The draft's temperatures by draft count, {k: τ} from the optional field "draft_temperature" ({"1": 0.85}):
    with k drafts per round the drafts are sampled from softmax(logits / (τ·T)) instead of softmax(logits / T).
    Missing counts mean τ = 1. Any τ keeps the output law exact (the rules verify against the q the drafts came
    from); it only moves acceptance. Raises ValueError, naming `path`, for keys that are not counts ≥ 1 (decimal
    digits) or values that are not numbers in TAU_RANGE."""
    table = meta.get("draft_temperature", {})
    if not isinstance(table, dict):
        raise ValueError(f"{path}: draft_temperature must map draft counts to temperatures, like {{\"1\": 0.85}}, "
                         f"got {table!r}: {TAU_FIX}")
    out = {}
    for key, value in table.items():
        ok_key = isinstance(key, str) and key.isascii() and key.isdecimal() and int(key) >= 1 and str(int(key)) == key
        if not (ok_key and _is_tau(value)):
            raise ValueError(f"{path}: draft_temperature maps draft counts (\"1\", \"2\", ...) to temperatures in "
                             f"[{TAU_RANGE[0]}, {TAU_RANGE[1]}]; {key!r}: {value!r} is not one: {TAU_FIX}")
        out[int(key)] = float(value)
    return out


def check_table(table) -> dict[int, float]:
    """A τ table set in code (`DraftSettings.temperatures`: {k: τ}, int keys ≥ 1, τ in TAU_RANGE; None: {}),
    checked; ValueError otherwise (`draft_temperatures` checks the one read from a file)."""
    if table is None:
        return {}
    bad = not isinstance(table, dict) or any(
        not (isinstance(k, int) and not isinstance(k, bool) and k >= 1 and _is_tau(v)) for k, v in table.items())
    if bad:
        raise ValueError(f"a draft's draft_temperature table must map draft counts (int ≥ 1) to temperatures in "
                         f"[{TAU_RANGE[0]}, {TAU_RANGE[1]}], like {{1: 0.85}}, got {table!r}")
    return {k: float(v) for k, v in table.items()}


def prompt_lookup(meta: dict, path="spectr_draft.json") -> bool:
    """Whether `generate` mixes this draft's q with prompt lookup by default (engine/lookup.py): the optional field
    "prompt_lookup" (true / false; missing: false). Raises ValueError, naming `path`, for a value that is not a
    JSON boolean."""
    value = meta.get("prompt_lookup", False)
    if not isinstance(value, bool):
        raise ValueError(f"{path}: prompt_lookup must be true or false (whether generate mixes the draft with prompt "
                         f"lookup by default), got {value!r}: fix or remove the field")
    return value


def check_lookup(value) -> bool:
    """A lookup default set in code (`DraftSettings.prompt_lookup`: a bool; None: False), checked; ValueError
    otherwise (`prompt_lookup` checks the field read from a file)."""
    if value is None or isinstance(value, (bool, np.bool_)):  # numpy's bool too
        return bool(value)
    raise ValueError(f"a draft's prompt_lookup must be True or False (generate's lookup default for this draft), "
                     f"got {value!r}")


def _is_tau(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and TAU_RANGE[0] <= value <= TAU_RANGE[1]


def stored_shapes(folder) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor in the folder's draft.safetensors, read from its header (no weights load)."""
    from safetensors import safe_open

    with safe_open(str(Path(folder) / WEIGHTS_NAME), framework="pt") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}


def check_shapes(folder, expected: dict[str, tuple[int, ...]], what: str) -> None:
    """ValueError when a stored tensor's shape differs from `expected` (state_dict name → shape) for the tensors
    both hold: the draft was built for another target (other MLP or attention sizes)."""
    stored = stored_shapes(folder)
    bad = [f"{name} is {stored[name]} in the file, {tuple(shape)} here" for name, shape in expected.items()
           if name in stored and tuple(stored[name]) != tuple(shape)]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ValueError(f"the {what} in {folder} does not fit this target: {bad[0]}{more}. It was built for another "
                         f"target; pair it with its own target or train one for this target with `python -m spectr_lib.distill`")


def check_fits_target(folder, meta: dict, config) -> None:
    """ValueError when the draft described by `meta` (read_draft_config) was built for a target other than the
    one of Hugging Face `config`: another width or vocabulary, or (feature draft) hidden states it lacks."""
    what = meta["kind"].replace("_", " ")
    if (meta.get("hidden_size"), meta.get("vocab_size")) != (config.hidden_size, config.vocab_size):
        raise ValueError(f"the {what} in {folder} was built for a target of width {meta.get('hidden_size')} and "
                         f"vocabulary {meta.get('vocab_size')}, not {config.hidden_size} / {config.vocab_size}: pair it "
                         f"with its own target")
    if meta["kind"] == "feature_draft":  # its layer is shaped like one of the target's (FeatureDraftConfig.from_target)
        theirs = {"num_heads": config.num_attention_heads,
                  "num_kv_heads": getattr(config, "num_key_value_heads", None) or config.num_attention_heads}
        bad = [f"{k} {meta[k]} (the target's: {v})" for k, v in theirs.items() if k in meta and meta[k] != v]
        if bad:
            raise ValueError(f"the {what} in {folder} has {', '.join(bad)}: its spectr_draft.json is damaged or it was "
                             f"built for another target. {FIX}")
    layers, n = [int(i) for i in meta.get("feature_layers", [-1])], config.num_hidden_layers
    if meta["kind"] == "feature_draft" and any(not -n - 1 <= i <= n for i in layers):
        raise ValueError(f"the {what} in {folder} reads the target's hidden states {', '.join(map(str, layers))}, "
                         f"but this target has {n} layer{'s' * (n != 1)} (indices {-n - 1}..{n}): pair it with its own target")
