"""The device-calibrated cost model of a speculative round, measured once per (device, dtype, model pair).

A round of k drafts of length L costs (`Costs.round_ms`, docs/cheatsheet.md, "Rounds and speed"):

    draft(1) + (L − 1)·draft(k) + target(form, k, L) + select·(positions visited) + overhead

where draft(b) is one draft step at batch b, target one verification call of the form (engine/verifiers.py:
the tree form scores the drafts' distinct prefixes in one row, the batch form k rows of L + 1; measured per form
at its `calibration_shapes` and predicted from calls of the same `layout`; the model's body: its output head
(in `ModelPair.head_dtype`) runs lazily, on the positions selection reads), select the selection work per position on the accepted
path (the head's logits and warping p included) and overhead the rest of a round (book-keeping), each measured
on its own by the round's timers (engine/session.py), never as the residual of the others.
Everything is in milliseconds and, divided by `ar_ms` (one token of our own autoregressive decoding), in
autoregressive steps. `calibration.calibrate` measures it all on the pair, with priors for the acceptance per depth;
`calibration.load_costs` keeps the result under the user cache folder (`cache_path`), keyed by device, dtype,
threads, torch version and the pair (with its draft temperatures and prompt-lookup default, which move the
priors; a `generate(..., draft_temperature=)` or `lookup=` override is not in the key: auto then starts from
priors measured with the draft's own settings and learns from the rounds), and recalibrates on request or when
the key changes.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..models.load import ModelPair
from ..paths import cache_dir
from ..runtime import sync
from .verifiers import VERIFIERS

CALIBRATION_K = (1, 2, 4, 8)  # the draft counts auto chooses among
CALIBRATION_L = 6  # depth of the calibration rounds (priors beyond it repeat the last depth)


@dataclass
class Costs:
    """Measured costs of one pair on one device (ms), and acceptance priors measured on the project's own
    training-side prompts at T = 1: alpha[k][d − 1] = P(draft position d accepted | d − 1 accepted) with k
    i.i.d. K-SEQ drafts, nodes[k][d − 1] = distinct draft prefixes of length d."""

    key: dict
    ar_ms: float
    verify_ms: dict[str, list[list[float]]]  # form -> [[rows, positions per row, ms], ...] (Verifier.layout)
    draft_ms: list[list[float]]  # [[batch, ms per step], ...]
    select_ms: float  # per position on the accepted path
    overhead_ms: float  # per round: what a round's own timers book outside drafting, verification and selection
    alpha: dict[str, list[float]] = field(default_factory=dict)
    nodes: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self):
        _check(self)
        # each form's calls grouped by rows once, when made: [(rows, [[positions per row, ms], ...]), ...] sorted
        # by rows, made monotone as physics says (more positions per row, or more rows, never cost less: a noisy
        # call timed cheaper than a smaller one takes the smaller one's time); verify_ms keeps what was measured
        self._by_rows = {}
        for form, calls in self.verify_ms.items():
            grouped: dict[float, list[list[float]]] = {}
            for r, c, ms in calls:
                grouped.setdefault(r, []).append([c, ms])
            tables = []
            for rows, table in sorted(grouped.items()):
                table = [[c, ms] for c, ms in sorted(table)]
                for point in table:
                    if tables and tables[-1][1][0][0] <= point[0] <= tables[-1][1][-1][0]:
                        point[1] = max(point[1], _interp(point[0], tables[-1][1]))
                tables.append((rows, _cummax(table)))
            self._by_rows[form] = tables
        self._draft = _cummax([list(t) for t in sorted(self.draft_ms)])

    def draft(self, batch: int) -> float:
        """ms of one draft step at this batch (linear between measured batches and beyond)."""
        return _interp(batch, self._draft)

    def target(self, k: int, L: int, form: str, positions: float | None = None) -> float:
        """ms of one verification call of k drafts of length L in `form` (a name in VERIFIERS; the tree form
        counts the positions it scores, default 1 + kL: no shared prefix): interpolated between the measured calls
        by rows, then by positions per row (`Verifier.layout`). ValueError for a form this calibration lacks."""
        form = form_name(form)
        if form not in self.verify_ms:
            raise ValueError(f"these costs hold no measurement of the {form!r} verification form (they have "
                             f"{', '.join(map(repr, self.verify_ms))}): recalibrate with pair_costs(pair, recalibrate=True)")
        rows, cols = VERIFIERS[form].layout(k, L, positions)
        tables = self._by_rows[form]
        lo = max([t for t in tables if t[0] <= rows] or tables[:1])
        hi = min([t for t in tables if t[0] >= rows] or tables[-1:])
        a, b = _interp(cols, lo[1]), _interp(cols, hi[1])
        return a if hi[0] == lo[0] else a + (b - a) * (rows - lo[0]) / (hi[0] - lo[0])

    def round_ms(self, k: int, L: int, form: str, visited: float, positions: float | None = None) -> float:
        """ms of one round of k drafts of length L ≥ 1, verified in `form`, whose accepted path visits `visited`
        positions."""
        return (self.draft(1) + (L - 1) * self.draft(k) + self.target(k, L, form, positions)
                + self.select_ms * visited + self.overhead_ms)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def _check(c: "Costs") -> None:
    """ValueError, naming the field, for costs that no machine measures: a missing or non-finite number, a
    negative time, ar_ms ≤ 0, an empty table, a call of < 1 row or position, an acceptance outside [0, 1]."""
    import math

    def bad(what: str):
        raise ValueError(f"these costs are not a calibration: {what} (measure again with pair_costs(pair, "
                         "recalibrate=True))")

    def real(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if not isinstance(c.key, dict):
        bad(f"key must be a dict, got {type(c.key).__name__}")
    if not real(c.ar_ms) or c.ar_ms <= 0:
        bad(f"ar_ms must be a finite number > 0, got {c.ar_ms!r}")
    for name in ("select_ms", "overhead_ms"):
        if not real(getattr(c, name)) or getattr(c, name) < 0:
            bad(f"{name} must be a finite number ≥ 0, got {getattr(c, name)!r}")
    tables = {f"verify_ms[{f!r}]": t for f, t in c.verify_ms.items()} if isinstance(c.verify_ms, dict) else None
    if not tables:
        bad(f"verify_ms must map verification forms to their measured calls, got {c.verify_ms!r}")
    for name, table, width in [(n, t, 3) for n, t in tables.items()] + [("draft_ms", c.draft_ms, 2)]:
        if not isinstance(table, list) or not table:
            bad(f"{name} must be a non-empty list of measurements, got {table!r}")
        for point in table:
            if (not isinstance(point, (list, tuple)) or len(point) != width or not all(map(real, point))
                    or min(point[:-1]) < 1 or point[-1] < 0):
                bad(f"{name} holds {point!r}: each measurement is [{'rows, positions per row' if width == 3 else 'batch'}"
                    f" (≥ 1), ms (finite, ≥ 0)]")
    for name, table, top in (("alpha", c.alpha, 1.0), ("nodes", c.nodes, math.inf)):
        if not isinstance(table, dict):
            bad(f"{name} must map draft counts to a list per depth, got {type(table).__name__}")
        for k, row in table.items():
            if not (isinstance(k, str) and k.isdigit() and int(k) >= 1):
                bad(f"{name} has key {k!r}: keys are draft counts ≥ 1 written as strings ('1', '2', ...)")
            if not isinstance(row, list) or not all(real(x) and 0 <= x <= top for x in row):
                bad(f"{name}[{k!r}] must be a list of finite numbers in [0, {top}], got {row!r}")


def form_name(form) -> str:
    """A verification form's name from a name in VERIFIERS or the old flag (True: "tree", False: "batch", with a
    DeprecationWarning); ValueError for anything else."""
    if isinstance(form, bool):
        import warnings

        warnings.warn("a verification form is a name now: pass 'tree' or 'batch' instead of True / False",
                      DeprecationWarning, stacklevel=3)
        return "tree" if form else "batch"
    if not isinstance(form, str) or form not in VERIFIERS:
        raise ValueError(f"form must name a verification form, one of {', '.join(map(repr, VERIFIERS))}, got {form!r}")
    return form


def _cummax(table: list[list[float]]) -> list[list[float]]:
    """[[x, y], ...] sorted by x with each y raised to the largest y before it."""
    top = -np.inf
    for point in table:
        top = point[1] = max(top, point[1])
    return table


def _interp(x: float, table: list[list[float]]) -> float:
    """Piecewise-linear through the measured points [[x, y], ...] (sorted by x), extended linearly past both ends,
    never below 0 (plain Python: auto predicts every option after each round)."""
    if len(table) == 1:
        return float(table[0][1])
    i = min(max(bisect.bisect_left(table, [x]), 1), len(table) - 1)  # the segment [i - 1, i] holding x, or the end one
    (x0, y0), (x1, y1) = table[i - 1], table[i]
    if x0 <= x <= x1 and x1 > x0:
        return float(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
    return max(0.0, float(y0 + (y1 - y0) / (x1 - x0) * (x - x0))) if x1 > x0 else float(y1)


ENGINE_VERSION = 9  # bumped when the engine's own cost changes (2: the head's product for a few rows on a CPU;
# 3: the verification head runs lazily, a bf16 feature draft's head in bf16; 4: the head's order by dtype and CPU;
# 5: the models' linear layers in the faster order for a few rows, models/few_rows.py; 6: costs kept per form;
# 7: every term measured on its own at a generation's context length, overhead no longer a residual;
# 8: few-row products on oneDNN's packed weights where measured faster, models/packed.py; 9: a packed copy checked
# through a view of 16 entries, the lazy head's rows all at once where one product is cheaper, matmul_order.rows_at_once)


def costs_key(pair: ModelPair) -> dict:
    """What the costs depend on: device, dtype, threads, torch version, the pair (names, a weight hash, the
    draft's temperatures and its prompt-lookup default, which move the acceptance priors) and ENGINE_VERSION (a calibration cached by an older,
    slower engine is not reused)."""
    device = torch.cuda.get_device_name(pair.device) if pair.device.type == "cuda" else (platform.processor() or platform.machine())
    if pair.device.type == "cpu":
        try:
            with open("/proc/cpuinfo") as f:
                device = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
    weights = [float(next(m.parameters()).detach().float().sum()) for m in (pair.target, pair.draft) if m is not None]
    settings = pair.draft_settings
    taus = {str(k): t for k, t in sorted(settings.temperatures.items())} if settings is not None else {}
    return {"device": device, "device_type": pair.device.type, "dtype": str(pair.dtype), "head_dtype": str(pair.head_dtype),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__, "pair": repr(pair), "weights": [round(w, 4) for w in weights],
            "engine": ENGINE_VERSION, **({"draft_temperature": taus} if taus else {}),
            **({"prompt_lookup": True} if settings is not None and settings.prompt_lookup else {})}


def cache_path(key: dict):
    """Where the costs of this key are kept."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "costs" / f"{digest}.json"


def timed(fn, repeat: int = 3, warmup: int = 1) -> float:
    """Median ms of fn() over `repeat` runs after `warmup` untimed runs (a GPU's queued work included)."""
    import time

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] * 1e3


def progress_bar(total: int, progress: bool, desc: str):
    return tqdm(total=total, desc=desc, disable=not progress, leave=False)
