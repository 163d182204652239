"""One generation in progress, and the one place a round is written: draft → verify (one target call) → select →
roll back both caches (SpecTr, Sun et al., NeurIPS 2023, §4). `generate`, `trace_round` and the calibration of
the cost model all run their rounds and plain steps through a `Session`.
"""
from __future__ import annotations

import time
from typing import Callable, NamedTuple

import torch

from ..models.load import ModelPair
from ..runtime import sync
from ..theory.dists import sample_rows
from ..theory.trees import distinct_prefixes
from .auto import K_AUTO, L_MAX, AutoConfig, Round
from .costs import Costs
from .drafters import make_drafter
from .lookup import Mixer
from .metrics import Generation, Stats
from .request import Request
from .verifiers import make_verifier


class RoundResult(NamedTuple):
    """What one round drew and decided: drafts tokens [k, L] and q [k, L, V], the target's lazy logits
    [k, L + 1, V] (and features, for a feature draft), the emitted tokens new [n + 1] (cut after a stop token),
    the draft row both caches kept and the n accepted draft tokens."""

    tokens: torch.Tensor
    q: torch.Tensor
    logits: object
    features: torch.Tensor | None
    new: torch.Tensor
    row: int
    accepted: int


class Session:
    """A request being decoded on a pair: the drafter, the verifier of the request's form and the random generator,
    with the prompt already cached (prefill), the tokens emitted so far (`out`) and the `Stats`.

    `round(k, L)` runs one speculative round, `step()` one plain target step, `run()` the whole generation (each
    round's (k, L) fixed, or chosen by `AutoConfig` from `costs` when the request says "auto"). Raises ValueError
    when the request is "auto" and no costs are given.
    """

    def __init__(self, pair: ModelPair, request: Request, costs: Costs | None = None):
        self.pair, self.request, m = pair, request, request.method
        if request.auto and costs is None:
            raise ValueError("k='auto' / L='auto' choose rounds from the pair's costs: pass costs=pair_costs(pair)")
        self.generator = torch.Generator(device=pair.device).manual_seed(request.seed)
        self.stats = Stats(request.name, "auto" if request.auto_k else request.k,
                           "auto" if request.auto_L else request.L if m is not None else 0)
        self.out: list[torch.Tensor] = []
        self.warp, self.draft_warps = request.warp, {}  # the target's warp; the draft's, by k (its τ for k)
        self.t_start = time.perf_counter()
        self.drafter = make_drafter(pair.draft, pair.vocab_size, pair.draft_settings) if m is not None else None
        self.verifier = make_verifier(pair.target, pair.vocab_size, form=request.form, head_dtype=pair.head_dtype,
                                      need_features=self.drafter.needs_features if self.drafter else False)
        self.auto, self._choice_s = None, 0.0
        if request.auto:
            ks = tuple(x for x in K_AUTO if m.k in (None, x)) if request.auto_k else (request.k,)
            self.auto = AutoConfig(costs, ks, tuple(range(L_MAX + 1)) if request.auto_L else (request.L,), request.form)
        drafted = max(self.auto.ks) * max(self.auto.Ls) if self.auto else (request.k or 1) * request.L if m else 0
        features = self.verifier.prefill(request.ids, room=request.max_new_tokens + 1 + drafted)  # a round's tree fits
        if self.drafter is not None:
            self.drafter.prefill(request.ids, features)
            self.stats.accepted_hist = [0] * (min(request.L, request.max_new_tokens - 1) + 1)  # no round drafts more
        sync(pair.device)  # on a GPU, each phase's time is its own (kernels run asynchronously)
        self.stats.seconds_prefill = time.perf_counter() - self.t_start

    @property
    def done(self) -> bool:
        """max_new_tokens emitted, or the last token emitted is a stop token."""
        return len(self.out) >= self.request.max_new_tokens or bool(self.out) and int(self.out[-1]) in self.request.stop

    def next_config(self) -> tuple[int, int]:
        """(k, L) of the next round: the request's (L shrunk so that no round drafts past max_new_tokens), or
        auto's choice; L = 0 is a plain target step."""
        left = self.request.max_new_tokens - len(self.out)
        if self.auto is not None:
            return self.auto.choose(left)
        return self.request.k, 0 if self.drafter is None else min(self.request.L, left - 1)

    def step(self) -> torch.Tensor:
        """One plain target step: samples, emits and returns one token ([] tensor)."""
        t0 = time.perf_counter()
        logits, feature = self.verifier.step()
        token = sample_rows(self.warp(logits), self.generator)
        self.verifier.push(token)
        t1 = time.perf_counter()
        self.stats.seconds_verify += t1 - t0
        if self.drafter is not None:
            self.drafter.push(token, feature)
            sync(self.pair.device)
            self.stats.seconds_draft += time.perf_counter() - t1
            self.stats.plain_steps += 1
            self.stats.draft_lengths.append(0)
        ms = (time.perf_counter() - t0 + self._choice_s) * 1e3
        self._choice_s = 0.0
        self.stats.plain_ms.append(ms)
        if self.auto is not None:
            self.auto.update_plain(ms)
        self.out.append(token)
        return token

    def round(self, k: int, L: int, observe: Callable[[str], None] | None = None) -> RoundResult:
        """One round of k drafts of length L ≥ 1: draft, verify in one target call, decide by the method's record,
        roll both caches back to the kept path, emit the new tokens. observe(phase) is called after "drafted" and
        after "verified" (trace_round reads the caches there). ValueError for L < 1, a k the method does not take, or
        a session that drafts nothing ("ar")."""
        req, pair, stats = self.request, self.pair, self.stats
        if req.method is None or L < 1 or k < 1 or req.method.k not in (None, k):
            raise ValueError(f"a round of {req.name!r} takes L ≥ 1 and k = {req.method.k if req.method else '–'} "
                             f"(any k ≥ 1 where that is None), got k = {k}, L = {L}")
        t_in = time.perf_counter()
        mix = Mixer(torch.cat([req.ids, *[t.reshape(1) for t in self.out]])) if req.lookup else None
        if k not in self.draft_warps:
            self.draft_warps[k] = req.draft_warp(pair.draft_settings, k)
        t0 = time.perf_counter()
        before_s, self._choice_s = t0 - t_in + self._choice_s, 0.0  # the choice of (k, L) and the Mixer: "other"
        tokens, q = self.drafter.draft(k, L, self.draft_warps[k], self.generator, req.method.first_draw, mix)
        sync(pair.device)
        if observe is not None:
            observe("drafted")
        t1 = time.perf_counter()
        logits, features = self.verifier.verify(tokens, lazy=True)  # the head runs on the positions read
        sync(pair.device)
        if observe is not None:
            observe("verified")
        t2 = time.perf_counter()
        new, row, n_acc = req.method.decide(logits, self.warp, q, tokens, self.generator)
        t3 = time.perf_counter()
        ends = [i for i, t in enumerate(new.tolist()) if t in req.stop]
        if ends:  # a stop token ends the generation here: nothing after it is kept; an accepted stop token closes
            new, n_acc = new[: ends[0] + 1], min(n_acc, ends[0])  # the round, so tokens = Σ (accepted + 1) holds
        self.verifier.commit(tokens, row, n_acc, new[-1])  # roll-backs are booked to the side they belong to
        t4 = time.perf_counter()
        self.drafter.commit(tokens, row, n_acc, new[-1], features[row] if features is not None else None)
        sync(pair.device)
        t5 = time.perf_counter()
        stats.accepted_hist[n_acc] += 1
        stats.draft_lengths.append(L)
        draft_s, verify_s, select_s = t1 - t0 + t5 - t4, t2 - t1 + t4 - t3, t3 - t2
        stats.seconds_draft += draft_s
        stats.seconds_verify += verify_s
        stats.seconds_select += select_s
        self.out.extend(new)
        distinct = tuple(distinct_prefixes(tokens))
        other_s = time.perf_counter() - t5 + before_s  # this round's book-keeping, and what came before t0
        stats.rounds.append(Round(k, L, n_acc, self.verifier.positions, distinct, draft_s * 1e3, verify_s * 1e3,
                                  select_s * 1e3, other_s * 1e3))
        if self.auto is not None:
            self.auto.update(stats.rounds[-1])
        return RoundResult(tokens, q, logits, features, new, row, n_acc)

    def run(self) -> Generation:
        """Rounds and plain steps until done; the generation."""
        while not self.done:
            t0 = time.perf_counter()
            k, L = self.next_config()
            self._choice_s = time.perf_counter() - t0  # booked to the round or step it chose
            if L == 0:
                self.step()
            else:
                self.round(k, L)
        return self.result()

    def result(self) -> Generation:
        """The tokens emitted so far, their text and the completed stats."""
        token_ids = torch.stack(self.out) if self.out else torch.zeros(0, dtype=torch.long)
        s = self.stats
        s.new_tokens, s.target_calls = len(token_ids), self.verifier.calls
        s.draft_calls = self.drafter.calls if self.drafter is not None else 0
        s.seconds_total = time.perf_counter() - self.t_start
        text = self.pair.tokenizer.decode(token_ids, skip_special_tokens=True) if self.pair.tokenizer is not None else ""
        return Generation(token_ids.cpu(), text, s)
