"""The K-draft SpecTr decoder: draft, verify in one target call, select position by position, roll back.

`generate(pair, prompt, method=...)` runs the target alone ("ar"), speculative sampling ("sps", k = 1),
block verification of one draft ("block"), SpecTr ("kseq"), SpecInfer's multi-draft rule ("rrs") or RRS
without replacement ("rrs_wor"); every method returns text distributed exactly as the (warped) target would
produce it.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import torch

from ..models.load import ModelPair
from ..runtime import sync
from ..theory.dists import check_sampling, sample_rows, warp
from ..theory.block import _block_verify
from ..theory.selection import IID_RULES, RULES, check_rule, sample
from ..theory.trees import distinct_prefixes
from .auto import K_AUTO, L_MAX, AutoConfig, Round
from .calibration import load_costs
from .costs import Costs
from .drafters import draft_temperature as draft_temperature_of, draft_warp, make_drafter
from .lookup import Mixer
from .inputs import (MAX_K, SEED_LIMIT, check_pair, context_limit, count, draft_temperature_arg, flag, lookup_arg, prompt_ids, seed_of,
                     stop_token_ids)
from .metrics import acceptance_rate_per_position, mean_acceptance_length  # noqa: F401 (public here too)
from .verifiers import TreeVerifier, make_verifier

# the target alone, block verification of one draft, every token-level rule whose drafts are i.i.d., and RRS
# without replacement (distinct first tokens; deeper, the drafts sharing a prefix are i.i.d. and RRS applies)
METHODS = ("ar", "block") + IID_RULES + ("rrs_wor",)


@dataclass
class Stats:
    """What a generation cost: calls, tokens, accepted lengths and where the time went."""

    method: str
    k: int | str  # "auto": chosen per round (see rounds)
    L: int | str
    new_tokens: int = 0
    target_calls: int = 0  # verification rounds (or one call per token for "ar"); the prefill is not counted
    draft_calls: int = 0
    accepted_hist: list[int] = field(default_factory=list)  # rounds that emitted 0, 1, … accepted draft tokens
    draft_lengths: list[int] = field(default_factory=list)  # tokens drafted in each round (0: a plain target step)
    plain_steps: int = 0  # target steps without drafts (the last token of a run): not rounds, not in accepted_hist
    rounds: list[Round] = field(default_factory=list)  # each round's k, L, accepted drafts and positions scored
    seconds_prefill: float = 0.0
    seconds_draft: float = 0.0
    seconds_verify: float = 0.0
    seconds_select: float = 0.0  # selection, with the target head's float32 logits of the positions it reads
    seconds_total: float = 0.0

    @property
    def block_efficiency(self) -> float:
        """Mean new tokens per target call."""
        return self.new_tokens / max(1, self.target_calls)

    @property
    def tokens_per_second(self) -> float:
        """New tokens per second of decoding (prefill excluded)."""
        return self.new_tokens / max(1e-9, self.seconds_total - self.seconds_prefill)

    @property
    def mean_acceptance_length(self) -> float:
        """1 + accepted draft tokens per round (vLLM's and llama.cpp's definition); 0 for "ar"."""
        return mean_acceptance_length(self.accepted_hist)

    @property
    def acceptance_rate_per_position(self) -> list[float]:
        """Rate i (i = 1..L): rounds that accepted ≥ i draft tokens / rounds that drafted ≥ i (vLLM's rate)."""
        return acceptance_rate_per_position(self.accepted_hist, [d for d in self.draft_lengths if d])

    def as_dict(self) -> dict:
        """Plain dict, with the derived figures."""
        d = dict(self.__dict__)
        d["rounds"] = [r.__dict__ for r in self.rounds]
        d.update(block_efficiency=self.block_efficiency, tokens_per_second=self.tokens_per_second,
                 mean_acceptance_length=self.mean_acceptance_length,
                 acceptance_rate_per_position=self.acceptance_rate_per_position)
        return d


@dataclass
class Generation:
    """The new tokens (EOS included when reached), their text and the stats."""

    token_ids: torch.Tensor
    text: str
    stats: Stats


def select_path(rule: str, p, q: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator):
    """Walk the K drafts position by position with the shrinking set of valid drafts.

    p [k, L+1, V] (or a function (row, position) -> p row, so that only the rows on the path are computed),
    q [k, L, V], tokens [k, L]. Returns (new tokens, a draft row holding the accepted prefix, number of accepted
    draft tokens). Rows with the same prefix share p and q, so row valid[0] speaks for all. For "rrs_wor" the
    first position's distinct tokens (drawn without replacement) go to RRS without replacement, and deeper
    positions, where the rows sharing a prefix continued i.i.d., to RRS.
    """
    p_at = p if callable(p) else (lambda r, i: p[r, i])
    k, L = tokens.shape
    valid = torch.arange(k, device=tokens.device)
    out = []
    for i in range(L):
        r = int(valid[0])
        column = tokens[valid, i]
        toks, rule_i = column, rule
        if rule == "rrs_wor":
            toks = torch.tensor(list(dict.fromkeys(column.tolist())), device=column.device) if i == 0 else column
            rule_i = "rrs_wor" if i == 0 else "rrs"
        y, _ = sample(rule_i, p_at(r, i)[None], q[r, i][None], toks[None], generator, check=False)
        out.append(y[0])
        match = column == y[0]
        if not match.any():
            return torch.stack(out), r, i  # a residual sample: the correction token ends the round
        valid = valid[match]
    r = int(valid[0])
    bonus = sample_rows(p_at(r, L), generator)  # every draft position hit: one more for free
    return torch.stack(out + [bonus]), r, L


def generate(pair: ModelPair, prompt, *, method: str = "kseq", k: int | str | None = None, L: int | str = 4,
             max_new_tokens: int = 128, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, seed: int | None = None, tree: bool | None = None,
             eos_token_id: int | list[int] | None = None, costs: Costs | None = None, lookup: bool | None = None,
             draft_temperature: float | None = None) -> Generation:
    """Generate up to max_new_tokens after the prompt; the output is distributed exactly as the (warped)
    target's own sampling (SpecTr, Sun et al. 2023, §4; every rule's exactness is tested by chi-square).

    prompt: a string (chat template applied), a list of chat messages {"role", "content"}, a 1-D sequence of
    token ids or a [T] / [1, T] integer tensor. method: "ar", "sps" (k = 1), "block" (block verification of one
    draft, Sun et al., ICLR 2025), "kseq" (SpecTr), "rrs" or "rrs_wor" (RRS without replacement, Jeon et al. 2024).
    k drafts (default 8; 1 for "sps"/"ar") of length L per round ("ar" drafts nothing and ignores L, so that one
    loop can pass the same L to every method); each round drafts at most
    min(L, tokens still allowed − 1) tokens, and a round with nothing left to draft is a plain target step.
    Generation ends in the round that emits a stop token: eos_token_id (an id or several), by default every EOS
    id of the tokenizer and of the target's generation config. `tree` picks the verification form: one row per
    draft (False) or one row holding the drafts' prefix tree (True); None takes the faster form measured for
    the device. seed: an integer in [0, 2**32) (None: a random one).

    k="auto" ("kseq", "rrs", "rrs_wor": k ∈ {1, 2, 4, 8}) and L="auto" (L ∈ 0..8, 0 being a plain target step) choose
    each round's configuration with the most predicted tokens/s (engine/auto.py) from the pair's calibrated
    costs (`costs`, default `pair_costs(pair)`: measured once, about a minute, then cached) and the acceptance
    seen in this generation's earlier rounds; the choice depends only on past rounds, so the output law is
    unchanged. stats.rounds records each round's (k, L).

    lookup=True mixes each drafting step's q with a point mass on the token that followed the latest earlier
    occurrence of the sequence's last n ≥ 2 tokens (prompt lookup; engine/lookup.py): drafts copy from the
    context more often, and the output law is unchanged (drafts are verified against the mixed q). None (the
    default) takes the draft's own setting (`model.prompt_lookup`, from its spectr_draft.json; off where it has
    none): the default draft and the standalone draft have it on, measured to raise acceptance without slowing
    rounds (their model cards).

    draft_temperature τ: rounds of k drafts sample them from softmax(draft logits / (τ·temperature)); None takes
    the draft's own τ for that k (`model.draft_temperature`, from its spectr_draft.json; 1 where it has none),
    whatever the rule, temperature or top_k / top_p (the table was chosen at T = 1 by first-step acceptance).
    The default draft sharpens one draft (τ = 0.85: its q is less confident than p) and flattens eight (τ = 1.1:
    i.i.d. drafts gain from spread); chosen on held-out prompts by `tools/draft_temperature.py`. Any τ keeps
    the output law exact (every rule verifies against the q the drafts came from).

    Greedy (temperature 0): the target's output head runs in float32, so bf16 rounding of its logits cannot
    tie two tokens (a bf16 draft's head runs in bf16: a tie there only decides which token is drafted). In float32 the output equals the target's greedy output token for token; in bfloat16 it
    does too except where the top two logits lie within the hidden state's own bf16 noise (a genuine near-tie,
    where the batch shape of the call may decide).

    Raises TypeError / ValueError, before any model call, for a bad argument, prompt or a sequence longer than
    the models' context (prompt + max_new_tokens must fit).
    """
    check_pair(pair)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if method != "ar" and pair.draft is None:
        raise ValueError(f"method {method!r} needs a draft model: load one with load_pair(target, draft)")
    auto_k, auto_L = isinstance(k, str) and k == "auto", isinstance(L, str) and L == "auto"
    if (auto_k or auto_L) and method == "ar":
        raise ValueError("'ar' decodes with the target alone: k and L take no value there, 'auto' neither")
    if auto_k and method in ("sps", "block"):
        raise ValueError(f"{method!r} verifies one draft (k = 1): k='auto' is for 'kseq', 'rrs' and 'rrs_wor'; L='auto' works for every method")
    k = K_AUTO[-1] if auto_k else (1 if method in ("sps", "ar", "block") else 8) if k is None else count("k", k)
    if k > MAX_K:
        raise ValueError(f"k = {k} drafts is more than {MAX_K} (each draft is a row of the draft model's cache)")
    if method == "ar" and k != 1:
        raise ValueError(f"'ar' decodes with the target alone and takes no drafts: leave k out (got k = {k})")
    L, max_new_tokens = (L_MAX if auto_L else count("L", L)), count("max_new_tokens", max_new_tokens)
    if method == "block" and k != 1:
        raise ValueError(f"'block' verifies one draft (k = 1), got k = {k}: use 'kseq' or 'rrs' for several")
    if method not in ("ar", "block"):
        check_rule(method, k)
    if auto_k and not auto_L and L > L_MAX:
        raise ValueError(f"k='auto' chooses among rounds of L ≤ {L_MAX}, got L = {L}: pass L ≤ {L_MAX} or L='auto'")
    if costs is not None and not isinstance(costs, Costs):
        raise TypeError(f"costs must be a Costs from pair_costs(pair), got {type(costs).__name__}")
    check_sampling(temperature, top_k, top_p)
    temperature = float(temperature)
    tree, seed, lookup = flag("tree", tree), seed_of(seed), lookup_arg(pair, lookup)
    draft_temperature = draft_temperature_arg(draft_temperature)
    stop = stop_token_ids(pair, eos_token_id)
    ids = prompt_ids(pair, prompt)
    limit = context_limit(pair)
    if len(ids) + max_new_tokens > limit:
        raise ValueError(f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the models' "
                         f"context of {limit} tokens: shorten the prompt or ask for fewer tokens")
    gen = torch.Generator(device=pair.device).manual_seed(random.randrange(SEED_LIMIT) if seed is None else seed)

    def w(logits: torch.Tensor) -> torch.Tensor:
        return warp(logits, temperature, top_k, top_p)

    auto = None
    if auto_k or auto_L:
        costs = costs if costs is not None else pair_costs(pair)
    stats = Stats(method, "auto" if auto_k else k, "auto" if auto_L else L if method != "ar" else 0)
    t_start = time.perf_counter()
    drafter = make_drafter(pair.draft, pair.vocab_size) if method != "ar" else None
    target = make_verifier(pair.target, pair.vocab_size, need_features=drafter.needs_features if drafter else False, tree=tree)
    if auto_k or auto_L:
        ks = tuple(x for x in K_AUTO if RULES[method].k in (None, x)) if auto_k and method in RULES else (k,)
        auto = AutoConfig(costs, ks, tuple(range(L_MAX + 1)) if auto_L else (L,), isinstance(target, TreeVerifier))
    feats = target.prefill(ids)
    if drafter is not None:
        drafter.prefill(ids, feats)
        stats.accepted_hist = [0] * (min(L, max_new_tokens - 1) + 1)  # no round drafts more than that
    sync(pair.device)  # on a GPU, each phase's time is its own (kernels run asynchronously)
    stats.seconds_prefill = time.perf_counter() - t_start
    out: list[torch.Tensor] = []
    while len(out) < max_new_tokens and not (out and int(out[-1]) in stop):
        k_now, L_now = k, 0 if drafter is None else min(L, max_new_tokens - len(out) - 1)
        if auto is not None:
            k_now, L_now = auto.choose(max_new_tokens - len(out))
        if L_now == 0:  # a plain target step: "ar", or the last token of a speculative run
            t0 = time.perf_counter()
            logits, feat = target.step()
            token = sample_rows(w(logits), gen)
            target.push(token)
            stats.seconds_verify += time.perf_counter() - t0
            if drafter is not None:
                drafter.push(token, feat)
                stats.plain_steps += 1
                stats.draft_lengths.append(0)
            out.append(token)
            continue
        t0 = time.perf_counter()
        mix = Mixer(torch.cat([ids.to(pair.device), *[t.reshape(1) for t in out]])) if lookup else None
        wq = draft_warp(w, draft_temperature_of(pair.draft, k_now, draft_temperature))
        tokens, q = drafter.draft(k_now, L_now, wq, gen, method == "rrs_wor", mix)
        sync(pair.device)
        t1 = time.perf_counter()
        logits, feats = target.verify(tokens, lazy=True)  # the float32 head runs on the positions read below
        sync(pair.device)
        t2 = time.perf_counter()
        if method == "block":
            n_acc, y = _block_verify(w(logits[0]), q[0], tokens[0], gen)
            new, row = torch.cat([tokens[0, :n_acc], y.reshape(1)]), 0
        else:
            new, row, n_acc = select_path(method, lambda r, i: w(logits[r, i]), q, tokens, gen)
        t3 = time.perf_counter()
        ends = [i for i, t in enumerate(new.tolist()) if t in stop]
        if ends:  # a stop token inside the round ends the generation here: nothing after it is kept or paid for
            # an accepted draft that is a stop token closes the round as a correction/bonus token would, so
            # tokens = Σ (accepted + 1) over rounds still holds
            new, n_acc = new[: ends[0] + 1], min(n_acc, ends[0])
        else:
            target.commit(tokens, row, n_acc, new[-1])  # roll-backs are booked to the side they belong to
        t4 = time.perf_counter()
        if not ends:
            drafter.commit(tokens, row, n_acc, new[-1], feats[row] if feats is not None else None)
        stats.seconds_draft += t1 - t0 + time.perf_counter() - t4
        stats.seconds_verify += t2 - t1 + t4 - t3
        stats.seconds_select += t3 - t2
        stats.accepted_hist[n_acc] += 1
        stats.draft_lengths.append(L_now)
        stats.rounds.append(Round(k_now, L_now, n_acc, target.positions, tuple(distinct_prefixes(tokens))))
        if auto is not None:
            auto.update(stats.rounds[-1])
        out.extend(new)
    token_ids = torch.stack(out) if out else torch.zeros(0, dtype=torch.long)
    stats.new_tokens = len(token_ids)
    stats.target_calls = target.calls
    stats.draft_calls = drafter.calls if drafter is not None else 0
    stats.seconds_total = time.perf_counter() - t_start
    text = pair.tokenizer.decode(token_ids, skip_special_tokens=True) if pair.tokenizer is not None else ""
    return Generation(token_ids.cpu(), text, stats)


def pair_costs(pair: ModelPair, recalibrate: bool = False, progress: bool = True) -> Costs:
    """The pair's calibrated cost model (engine/costs.py), measured on first use (about a minute for the
    embedded pair on a CPU, with a progress bar) and cached under the user cache folder; recalibrate=True
    measures again. Raises ValueError for a pair without a draft."""
    check_pair(pair)
    return load_costs(pair, generate, recalibrate, progress)
