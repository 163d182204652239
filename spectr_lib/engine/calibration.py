"""Measuring the cost model (engine/costs.py) on a pair: verification calls of every form (engine/verifiers.py) by
their shapes, draft steps by batch, our autoregressive step, and real K-SEQ rounds on the project's own prompts
for selection, overhead and the acceptance priors. Rounds run through `session.Session`, as `generate` runs them."""
from __future__ import annotations

import json

import numpy as np
import torch


from ..models.load import ModelPair
from ..prompts import encode_chat, read_prompts
from ..theory.dists import warp
from .costs import CALIBRATION_K, CALIBRATION_L, Costs, cache_path, costs_key, progress_bar, timed
from .drafters import make_drafter
from .request import make_request
from .session import Session
from .verifiers import VERIFIERS, default_form, make_verifier
from ..files import write_text

AR_TOKENS = 48  # tokens of each autoregressive run that times `ar_ms` (and the context the calls are timed on)
DISAGREEMENT = 1.5  # a generation whose measured time is off the prediction by more than this factor (either
# way) over at least DISAGREEMENT_MIN_MS of rounds and steps marks the cached calibration for re-measuring
DISAGREEMENT_MIN_MS = 1000.0


def run(pair: ModelPair, prompt, **kw):
    """A generation through the round's one home (what `generate` does for a request without "auto")."""
    return Session(pair, make_request(pair, prompt, **kw)).run()


@torch.no_grad()
def call_ms(pair: ModelPair, context: torch.Tensor, k: int, L: int, form: str) -> float:
    """Median ms of one verification call of `form` verifying k drafts of length L (distinct tokens: no shared
    prefix) on top of a cached context [T]; L = 0 is a plain target step."""
    target = make_verifier(pair.target, pair.vocab_size, form=form, head_dtype=pair.head_dtype)
    target.prefill(context)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, pair.vocab_size, (k, max(L, 1)), generator=g).to(pair.device)
    tokens[:, 0] = torch.randperm(pair.vocab_size - 1, generator=g)[:k].to(pair.device) + 1 if k < pair.vocab_size else tokens[:, 0]

    def call():
        if L == 0:
            target.step()
            target.push(context[-1:])
        else:
            target.verify(tokens, lazy=True)  # as the decoder calls it: the head's rows are booked to selection
            target.commit(tokens, 0, 0, context[-1:])

    return timed(call)


@torch.no_grad()
def draft_step_ms(pair: ModelPair, context: torch.Tensor, k: int) -> float:
    """Median ms of one batched draft step at batch k: drafting L = 3 minus drafting L = 1, halved (each
    followed by the roll-back); never below 0."""
    drafter = make_drafter(pair.draft, pair.vocab_size, pair.draft_settings)
    target = make_verifier(pair.target, pair.vocab_size, need_features=drafter.needs_features, form="batch",
                           head_dtype=pair.head_dtype)
    drafter.prefill(context, target.prefill(context))
    gen = torch.Generator(device=pair.device).manual_seed(0)
    d = pair.target.config.hidden_size

    def round_(L: int) -> None:
        tokens, _ = drafter.draft(k, L, warp, gen)
        drafter.commit(tokens, 0, 0, tokens[0, 0], torch.zeros(1, d, device=pair.device, dtype=pair.dtype))

    return max(0.0, (timed(lambda: round_(3), 5) - timed(lambda: round_(1), 5)) / 2)


def measure(pair: ModelPair, prompts: list[torch.Tensor], max_new_tokens: int, progress: bool) -> Costs:
    """Every number of `Costs` for the pair (see engine/costs.py). Each term is measured on its own (no term is a
    residual of the others): our autoregressive step over AR_TOKENS tokens, verification calls and draft steps on
    top of a context as long as a generation's (the prompt and AR_TOKENS generated tokens), and from real rounds
    the selection per visited position and the rest of a round as each round's own timers split it."""
    form = default_form(pair.device)
    shapes = {name: cls.calibration_shapes() for name, cls in VERIFIERS.items()}
    n_steps = 1 + sum(map(len, shapes.values())) + len(CALIBRATION_K) * (1 + len(prompts))
    bar = progress_bar(n_steps, progress, "calibrating the cost model")
    run(pair, prompts[0], method="ar", max_new_tokens=4, seed=0)  # warm-up
    ar_runs = [run(pair, prompts[0], method="ar", max_new_tokens=AR_TOKENS, seed=i) for i in range(2)]
    ar = float(np.median([(g.stats.seconds_total - g.stats.seconds_prefill) / g.stats.new_tokens * 1e3 for g in ar_runs]))
    context = torch.cat([prompts[0], ar_runs[0].token_ids.to(pair.device)])
    bar.update(1)
    verify_ms = {}
    for name, cls in VERIFIERS.items():
        verify_ms[name] = []
        for k, L in shapes[name]:
            verify_ms[name].append([*cls.layout(k, L), call_ms(pair, context, k, L, name)])
            bar.update(1)
    draft_ms = []
    for k in CALIBRATION_K:
        draft_ms.append([k, draft_step_ms(pair, context, k)])
        bar.update(1)
    costs = Costs(costs_key(pair), ar, verify_ms, draft_ms, select_ms=0.0, overhead_ms=0.0)
    # real rounds: selection per visited position, the rest of a round, acceptance priors
    select_ms, other_ms, visited, n_rounds = 0.0, 0.0, 0, 0
    for k in CALIBRATION_K:
        accepted, tried, nodes, seen = np.zeros(CALIBRATION_L), np.zeros(CALIBRATION_L), np.zeros(CALIBRATION_L), np.zeros(CALIBRATION_L)
        for i, ids in enumerate(prompts):
            g = run(pair, ids, method="sps" if k == 1 else "kseq", k=k, L=CALIBRATION_L, max_new_tokens=max_new_tokens,
                    seed=i, verify=form)
            s = g.stats
            # a round cut by a stop token books an accepted stop token as the round's end: leave it out
            rounds = s.rounds[:-1] if s.new_tokens < max_new_tokens and s.rounds else s.rounds
            for r in s.rounds:
                visited += r.accepted + 1
                n_rounds += 1
                select_ms += r.select_ms
                other_ms += r.other_ms
            for r in rounds:
                d = np.arange(r.L)
                tried[d[d <= r.accepted]] += 1  # depth d + 1 was tried when d drafts before it were accepted
                accepted[d[d < r.accepted]] += 1
                nodes[d] += r.distinct
                seen[d] += 1
            bar.update(1)
        # conditional acceptance per depth with one pseudo-round at the overall rate (depths rarely reached)
        overall = accepted.sum() / max(1.0, tried.sum())
        costs.alpha[str(k)] = ((accepted + overall) / (tried + 1)).round(4).tolist()
        costs.nodes[str(k)] = (nodes / np.maximum(seen, 1)).round(3).tolist()
    bar.close()
    costs.select_ms = select_ms / max(1, visited)
    costs.overhead_ms = other_ms / max(1, n_rounds)
    return costs


def load_costs(pair: ModelPair, recalibrate: bool = False, progress: bool = True) -> Costs:
    """The pair's costs from the user cache, calibrating first (about a minute for the embedded pair on a
    CPU) when none is stored for this key or when recalibrate=True; `decoder.pair_costs` is the public door.
    Raises ValueError for a pair without a draft."""
    if pair.draft is None:
        raise ValueError("a cost model needs a draft model: load one with load_pair(target, draft)")
    key = costs_key(pair)
    path = cache_path(key)
    if path.is_dir():
        raise ValueError(f"{path} is a folder where the cost model's cache file belongs: remove it, or set "
                         "SPECTR_CACHE to another folder")
    if path.exists() and not recalibrate:
        try:
            costs = Costs(**json.loads(path.read_text()))
            if costs.key == key and set(VERIFIERS) <= set(costs.verify_ms):  # a form registered since: measure again
                return costs
        except (TypeError, ValueError, AttributeError, KeyError, OSError):
            pass  # an old, damaged or unreadable file (Costs checks every number): measure again
    costs = calibrate(pair, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, costs.to_json())
    return costs


def check_agreement(costs: Costs, pair: ModelPair, measured_ms: float, predicted_ms: float) -> bool:
    """After a generation with "auto" on `pair`: when its rounds and plain steps took more than DISAGREEMENT times
    (or less than 1/DISAGREEMENT of) what the costs predicted for them, over at least DISAGREEMENT_MIN_MS, and the
    costs are this pair's calibration (their key is the pair's `costs_key`), the cached calibration is dropped
    (with a warning) so that the next `pair_costs` measures again (the running generation already corrected its
    own estimate from its rounds). Costs of another pair or made by hand are never dropped. Returns whether it
    was dropped."""
    if measured_ms < DISAGREEMENT_MIN_MS or predicted_ms <= 0 or not costs.key:
        return False
    ratio = measured_ms / predicted_ms
    if 1 / DISAGREEMENT <= ratio <= DISAGREEMENT or costs.key != costs_key(pair):
        return False
    try:
        cache_path(costs.key).unlink()  # the file of this very key (the pair's): nothing else to compare
    except OSError:
        return False
    import warnings

    warnings.warn(f"this generation took {ratio:.2f}× the time the cached cost model predicted for its rounds: "
                  "the calibration will be measured again on the next pair_costs(pair)", RuntimeWarning, stacklevel=3)
    return True


def calibration_prompts(pair: ModelPair, n: int = 2) -> list[torch.Tensor]:
    """Prompt ids for calibration: the project's training-side prompts (never an evaluation set), or fixed
    random ids for a pair without a tokenizer."""
    if pair.tokenizer is None:
        g = torch.Generator().manual_seed(0)
        return [torch.randint(1, pair.vocab_size, (6,), generator=g).to(pair.device) for _ in range(n)]
    return [encode_chat(pair.tokenizer, r["prompt"]).to(pair.device) for r in read_prompts(split="train")[:n]]


def calibrate(pair: ModelPair, progress: bool = True, max_new_tokens: int = 40) -> Costs:
    """Measure the pair's costs (medians after a warm-up; see the module docstring) and acceptance priors."""
    return measure(pair, calibration_prompts(pair), max_new_tokens, progress)
