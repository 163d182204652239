"""Token-level selection rules: SpS, K-SEQ (SpecTr), RRS with and without replacement, SpecHub-style hub rule,
sampled verification (theory/sampled.py), the optimal rule for i.i.d. drafts (theory/optimal.py).

Every rule sees a target p and a draft q over one vocabulary ([B, V] tensors) and k draft tokens [B, k]
drawn from the rule's own draft law (`draw_drafts`), and returns one token per row whose law is exactly p.
Every public function checks its inputs (ValueError saying what to pass); `sample(..., check=False)` is the
decoder's hot path for inputs it built itself. A uniform U ∈ [0, 1) accepts with probability a when U < a,
so a token of p = 0 (a = 0) is never accepted, not even when U is exactly 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .dists import as_tensor, check_distribution, check_drafts, check_k, check_pair, normalise, sample_rows
from .kseq import _kseq_residual, _rho_star, kseq_acceptance, kseq_first_pass_row, kseq_residual_row
from .optimal import optimal_iid_acceptance, optimal_iid_pass
from .sampled import sampled_acceptance, sampled_first_pass_row, sampled_pass

# ---------------------------------------------------------------- per-draft pass probabilities

def pass_probabilities(rule: str, p, q, drafts: torch.Tensor):
    """For drafts [B, k]: the probability that draft i passes given drafts < i failed [B, k], and a function
    returning the residual [B, V] (computed only when asked: most rounds never need it).

    This is the whole rule: the output is draft i with probability Π_{j<i}(1 − a_j)·a_i, else a residual draw.
    Sources: K-SEQ, SpecTr (Sun et al. 2023) §4; RRS, SpecInfer (Miao et al. 2024); RRS without replacement,
    Jeon et al. 2024; the hub rule, SpecHub (Sun et al. 2024); sampled verification, Lookahead decoding (Fu et al.
    2024); the optimal rule for i.i.d. drafts, theory/optimal.py (acceptance α*, Hu et al. 2025).
    """
    p, q, drafts = _checked(rule, p, q, drafts)
    return _pass_probabilities(rule, p, q, drafts)


def _checked(rule: str, p, q, drafts):
    """p, q [B, V] float64 and drafts [B, k] after every check of `sample`."""
    p, q = check_pair(p, q)
    if p.ndim == 1:
        p, q = p[None], q[None]
    if not isinstance(drafts, torch.Tensor):
        drafts = torch.as_tensor(drafts)
    if drafts.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"drafts must be integer token ids, got dtype {drafts.dtype}")
    if drafts.ndim == 1 and p.shape[0] == 1:
        drafts = drafts[None]
    if drafts.ndim != 2 or drafts.shape[0] != p.shape[0]:
        raise ValueError(f"drafts must be [B, k] for p, q [B, V]; got {tuple(drafts.shape)} for B = {p.shape[0]}")
    drafts = drafts.long()
    check_rule(rule, drafts.shape[-1])
    check_drafts(q, drafts, in_support=RULES[rule].reads_q)
    if RULES[rule].hub and ((drafts[:, 0] != q.argmax(-1)) | (drafts[:, 1] == drafts[:, 0])).any():
        raise ValueError(f"{rule!r} drafts are (hub, other): the hub is argmax q and the other differs from it")
    if not RULES[rule].iid and drafts.shape[-1] > 1 and (drafts.sort(-1).values.diff(dim=-1) == 0).any():
        raise ValueError(f"{rule!r} drafts are drawn without replacement: a row repeats a token")
    return p, q, drafts


def _pass_probabilities(rule: str, p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor):
    return RULES[rule].pass_probabilities(p, q, drafts)


def _kseq_pass(p, q, drafts):
    """K-SEQ: every draft passes w.p. min(1, p/(ρ*q)); residual ∝ p − γ·min(q, p/ρ*) (SpecTr §4)."""
    k = drafts.shape[-1]
    rho = _rho_star(p, q, torch.full(p.shape[:-1], k, device=p.device))
    a = (p.gather(-1, drafts) / (rho[:, None] * q.gather(-1, drafts))).clamp(max=1.0)
    return a, lambda: _kseq_residual(p, q, rho, k)


def _recursive_pass(p, q, drafts, without_replacement: bool = False):
    """RRS: draft i passes w.p. min(1, p_i/q_i); on rejection p_{i+1} ∝ (p_i − q_i)_+ and, without replacement,
    q_{i+1} = q_i without the rejected token, renormalised by the sum of what is left."""
    p_i, q_i, a = p, q, []
    for i in range(drafts.shape[-1]):
        col = drafts[:, i : i + 1]
        a.append((p_i.gather(-1, col) / q_i.gather(-1, col))[:, 0].clamp(max=1.0))
        p_i = normalise(p_i - q_i, p_i)
        if without_replacement:
            q_i = normalise(q_i.scatter(-1, col, 0.0), q_i)
    return torch.stack(a, -1), lambda: p_i


def _spechub_pass(p, q, drafts):
    """Hub rule for drafts (a, x): a = argmax q is in every pair, x ~ q(·|≠a); optimal transport for that law."""
    a_tok, x_tok = drafts[:, 0:1], drafts[:, 1:2]
    rest = q.scatter(-1, a_tok, 0.0)
    w = rest / rest.sum(-1, keepdim=True)  # law of x, the non-hub draft (1 − q(a) as a sum: exact when q(a) ≈ 1)
    to_x = torch.minimum(p, w).scatter(-1, a_tok, 0.0)  # mass each pair {a, x} sends to its own x
    excess = (w - p).clamp_min(0).scatter(-1, a_tok, 0.0).sum(-1, keepdim=True)
    pa = p.gather(-1, a_tok)
    to_a = torch.minimum(pa, excess)  # what is left over in the pairs may go to the hub, up to p(a)
    pass_x = (p.gather(-1, x_tok) / w.gather(-1, x_tok)).clamp(max=1.0)
    pass_a = torch.where(excess > 0, to_a / excess.clamp_min(1e-300), torch.zeros_like(excess))
    accepted = to_x.scatter_add(-1, a_tok, to_a)
    # Try x first, then the hub: drafts are (a, x), so report the columns in that order of trial.
    return torch.cat([pass_x, pass_a], -1), lambda: normalise(p - accepted, p)


def _kseq_first_pass_row(p, q, drafts, u):
    """K-SEQ for one row (p, q [V] float64 on the CPU), deciding lazily: see kseq.kseq_first_pass_row."""
    i, rho = kseq_first_pass_row(p.numpy(), q.numpy(), drafts.numpy(), u.numpy())
    return i, lambda: torch.from_numpy(kseq_residual_row(p.numpy(), q.numpy(), rho, len(drafts)))


def _recursive_first_pass_row(p, q, drafts, u, without_replacement: bool = False):
    """RRS for one row, trying drafts in order and building the next residual only after a rejection
    (U < min(1, p_i/q_i) ⟺ U·q_i < p_i, q_i(x) > 0 for a drafted x)."""
    p_i, q_i = p, q
    for i, x in enumerate(drafts.tolist()):
        if float(u[i]) * float(q_i[x]) < float(p_i[x]):
            return i, None
        p_i = normalise(p_i - q_i, p_i)
        if without_replacement:
            q_i = normalise(q_i.scatter(-1, drafts[i : i + 1], 0.0), q_i)
    return -1, lambda: p_i


def _trial_order(rule: str, drafts: torch.Tensor) -> torch.Tensor:
    """Drafts in the order the rule tries them (the hub rule tries the non-hub draft first)."""
    return drafts.flip(-1) if RULES[rule].hub else drafts


# ---------------------------------------------------------------- draft laws and samplers

def draw_drafts(rule: str, q, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k draft tokens per row of q [B, V] (or [V]) from the rule's own draft law: i.i.d., without replacement,
    or hub; returns [B, k] (or [k]). Raises ValueError for an invalid q, rule or k."""
    check_rule(rule, k)
    q = as_tensor(q)
    check_distribution(q, "q (draft)")
    if q.ndim != 2:  # one row, or a batch of any shape [..., V]
        return draw_drafts(rule, q.reshape(-1, q.shape[-1]), k, generator).reshape(q.shape[:-1] + (k,))
    if (q > 0).sum(-1).min() < RULES[rule].min_support(k):
        raise ValueError(f"{rule!r} draws {RULES[rule].min_support(k)} distinct drafts, but q has fewer tokens with q > 0")
    return RULES[rule].draw(q, k, generator)


def _draw_iid(q, k, generator):
    return sample_rows(q, generator, n=k)


def first_iid(q: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """A decoding round's k first draft tokens [k], i.i.d. from one q row [V]."""
    return sample_rows(q, generator, n=k)


def first_distinct(q: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """A decoding round's k first draft tokens [k] from one q row [V]: n = min(k, tokens with q > 0) draws without
    replacement, in draw order, then rows n..k − 1 repeat row 0's token, so that every prefix's rows continue
    i.i.d. from there (the draft law of RRS without replacement in a round of drafts of length L)."""
    n = min(k, int((q > 1e-200).sum()))  # multinomial may round a sub-normal q to a tie with q = 0
    firsts = torch.multinomial(q, n, replacement=False, generator=generator)
    return torch.cat([firsts, firsts[:1].expand(k - n)])


def _draw_without_replacement(q, k, generator):
    return torch.multinomial(q, k, replacement=False, generator=generator)


def _draw_hub(q, k, generator):
    hub = q.argmax(-1, keepdim=True)
    return torch.cat([hub, torch.multinomial(q.scatter(-1, hub, 0.0), 1, generator=generator)], -1)


def _iid_law(q: torch.Tensor, tuples: torch.Tensor) -> torch.Tensor:
    return q[tuples].prod(-1)


def _without_replacement_law(q: torch.Tensor, tuples: torch.Tensor) -> torch.Tensor:
    """P(tuple) drawing without replacement; the mass left before draw i is the sum of the entries not drawn yet
    (never 1 − drafted mass: it rounds to 0 when q is peaked)."""
    N, k = tuples.shape
    drawn = torch.zeros(N, k, q.shape[-1], dtype=torch.bool)
    for i in range(1, k):
        drawn[:, i] = drawn[:, i - 1].scatter(-1, tuples[:, i - 1 : i], True)
    left = (q * ~drawn).sum(-1)  # [N, k]
    distinct = ~drawn.gather(-1, tuples[:, :, None])[..., 0].any(-1)
    return torch.where(distinct, (q[tuples] / left.clamp_min(1e-300)).prod(-1), torch.zeros(N, dtype=q.dtype))


def _hub_law(q: torch.Tensor, tuples: torch.Tensor) -> torch.Tensor:
    hub = int(q.argmax())
    rest = torch.cat([q[:hub], q[hub + 1 :]]).sum()  # q(≠ hub) as a sum, never 1 − q(hub)
    ok = (tuples[:, 0] == hub) & (tuples[:, 1] != hub)
    return torch.where(ok, q[tuples[:, 1]] / rest, torch.zeros(len(tuples), dtype=q.dtype))


def sample(rule: str, p, q, drafts: torch.Tensor, generator: torch.Generator | None = None,
           uniforms: torch.Tensor | None = None, *, check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen token [B] and the index of the draft it came from [B] (−1: drawn from the residual).

    p, q [B, V] (or [V]), drafts [B, k] from `draw_drafts`, optional uniforms [B, k] in [0, 1) (one per trial).
    check=False skips every input check: the decoder's hot path, for [B, V] float64 inputs it built itself.
    """
    if check:
        p, q, drafts = _checked(rule, p, q, drafts)
        if uniforms is not None:
            uniforms = as_tensor(uniforms)
            if uniforms.numel() != drafts.numel() or not ((uniforms >= 0) & (uniforms < 1)).all():
                raise ValueError(f"uniforms must be {tuple(drafts.shape)} values in [0, 1) (one per draft), got {uniforms}")
            uniforms = uniforms.reshape(drafts.shape)
        return sample(rule, p, q, drafts, generator, uniforms, check=False)
    if uniforms is None:
        uniforms = torch.rand(drafts.shape, generator=generator, dtype=p.dtype, device=p.device)
    ordered = _trial_order(rule, drafts)
    first_pass_row = RULES[rule].first_pass_row
    if first_pass_row is not None and p.shape[0] == 1 and p.device.type == "cpu" and p.dtype == torch.float64:
        # one row on the CPU (the decoder): the same decisions, taken lazily (no residual unless every draft fails)
        i, residual = first_pass_row(p[0], q[0], drafts[0], uniforms[0].to(p.dtype))
        token = ordered[:, i] if i >= 0 else sample_rows(residual()[None], generator)
        return token, torch.tensor([i], device=p.device)
    a, residual = _pass_probabilities(rule, p, q, drafts)
    passed = uniforms.to(a.dtype) < a
    first = torch.where(passed.any(-1), passed.to(torch.int8).argmax(-1), torch.full_like(passed[:, 0], -1, dtype=torch.long))
    token = ordered.gather(-1, first.clamp_min(0)[:, None])[:, 0]
    failed = first < 0
    if failed.any():  # the residual draw is only paid for when every draft failed
        token = torch.where(failed, sample_rows(residual(), generator), token)
    return token, (torch.where(first >= 0, 1 - first, first) if RULES[rule].hub else first)


def rrs_acceptance(p, q, k: int):
    """Exact acceptance of RRS with k i.i.d. drafts, batched over [..., V]: 1 − Π_{i=1..k} (1 − Σ_x min(p_i(x), q(x)))
    with p_1 = p and p_{i+1} ∝ (p_i − q)_+ (each draft passes independently of the earlier ones given it is tried).
    No Monte Carlo: exact on real vocabularies in O(k·V)."""
    p, q = check_pair(p, q, k)
    if isinstance(k, torch.Tensor):
        raise ValueError("rrs_acceptance takes one integer k (loop over k for several)")
    fail = torch.ones(p.shape[:-1], dtype=p.dtype, device=p.device)
    p_i = p
    for _ in range(int(k)):
        fail = fail * (1 - torch.minimum(p_i, q).sum(-1)).clamp_min(0)
        p_i = normalise(p_i - q, p_i)
    acc = 1 - fail
    return float(acc) if acc.ndim == 0 else acc


def speculative_sampling(p, q, draft: torch.Tensor, uniform: torch.Tensor, generator: torch.Generator | None = None):
    """Textbook single-draft speculative sampling (Leviathan et al. 2023; Chen et al. 2023): accept the draft [B]
    if U < p(x)/q(x) (U [B] in [0, 1)), else sample ∝ (p − q)_+. Returns tokens [B] and accepted [B]."""
    p, q = check_pair(p, q)
    draft = torch.as_tensor(draft)
    if p.ndim == 1:  # one distribution for every draft
        p, q = p.expand(draft.shape + p.shape), q.expand(draft.shape + q.shape)
    check_drafts(q, draft[..., None])
    accept = uniform < (p.gather(-1, draft[..., None]) / q.gather(-1, draft[..., None]))[..., 0]
    residual = normalise(p - q, p)
    fallback = sample_rows(residual.reshape(-1, p.shape[-1]), generator).reshape(draft.shape)
    return torch.where(accept, draft, fallback), accept


# ---------------------------------------------------------------- the rules

@dataclass(frozen=True)
class Rule:
    """Everything the library needs to know about one lossless selection rule.

    A new rule is one record here (plus its tests): the decoder (through `first_draw` and `deeper`), the exact
    laws, the benchmark and the widgets read these records. `iid`: drafts are i.i.d. from q, so the decoder can run the rule (the drafts of a round
    are sampled i.i.d. position by position) and its acceptance is bounded by α*(p, q^⊗k).
    """

    name: str
    label: str
    source: str
    iid: bool
    pass_probabilities: Callable  # (p [B, V], q [B, V], drafts [B, k]) -> (a [B, k], residual() -> [B, V])
    draw: Callable  # (q [B, V], k, generator) -> drafts [B, k] from the rule's draft law
    tuple_law: Callable  # (q [V], tuples [N, k]) -> probability [N] of each draft tuple (exact enumeration)
    k: int | None = None  # the only number of drafts the rule takes (None: any k ≥ 1)
    hub: bool = False  # drafts are (hub = argmax q, other); the other is tried first
    # optional fast path for one row on the CPU: (p [V], q [V], drafts [k], uniforms [k]) -> (index of the first
    # passing draft in trial order or −1, residual() -> [V] when −1); the same decisions as pass_probabilities
    first_pass_row: Callable | None = None
    # the rule in a decoding round of k drafts of length L (theory/path.py): how the round's k first tokens are
    # drawn from one q row, (q [V], k, generator) -> [k] (None: the decoder cannot run the rule), and the rule that
    # decides deeper positions, where the drafts sharing a prefix continue i.i.d. (None: this rule itself)
    first_draw: Callable | None = None
    deeper: str | None = None
    reads_q: bool = True  # False: the pass probabilities never read q, so any draft law is verified exactly
    # the exact acceptance with k drafts from the rule's own draft law in closed form, batched over [..., V]:
    # (p, q, k) -> float or [...] (None: only by enumeration, theory/exact.py, or Monte Carlo)
    closed_form: Callable | None = None

    def min_support(self, k: int) -> int:
        """Tokens with q > 0 the draft law needs."""
        return 1 if self.iid else k


RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("sps", "speculative sampling", "Leviathan et al. 2023; Chen et al. 2023", True, _kseq_pass, _draw_iid,
         _iid_law, k=1, first_pass_row=_kseq_first_pass_row, first_draw=first_iid, closed_form=kseq_acceptance),
    Rule("kseq", "K-SEQ (SpecTr)", "Sun et al., NeurIPS 2023, §4", True, _kseq_pass, _draw_iid, _iid_law,
         first_pass_row=_kseq_first_pass_row, first_draw=first_iid, closed_form=kseq_acceptance),
    Rule("rrs", "RRS (SpecInfer)", "Miao et al., ASPLOS 2024", True, _recursive_pass, _draw_iid, _iid_law,
         first_pass_row=_recursive_first_pass_row, first_draw=first_iid, closed_form=rrs_acceptance),
    Rule("rrs_wor", "RRS w/o replacement", "Jeon et al. 2024", False,
         lambda p, q, d: _recursive_pass(p, q, d, without_replacement=True), _draw_without_replacement,
         _without_replacement_law,
         first_pass_row=lambda p, q, d, u: _recursive_first_pass_row(p, q, d, u, without_replacement=True),
         first_draw=first_distinct, deeper="rrs"),
    Rule("spechub", "SpecHub", "Sun et al., EMNLP 2024", False, _spechub_pass, lambda q, k, g: _draw_hub(q, k, g),
         _hub_law, k=2, hub=True),
    Rule("sampled", "sampled verification", "Fu et al., ICML 2024 (Lookahead decoding); RRS with one-hot q", True,
         sampled_pass, _draw_iid, _iid_law, first_pass_row=sampled_first_pass_row, first_draw=first_iid, reads_q=False,
         closed_form=sampled_acceptance),
    Rule("optimal", "optimal i.i.d. rule", "α* of Hu et al., ICLR 2025, reached as theory/optimal.py constructs it", True,
         optimal_iid_pass, _draw_iid, _iid_law, first_draw=first_iid, closed_form=optimal_iid_acceptance),
)}
IID_RULES = tuple(name for name, r in RULES.items() if r.iid)  # acceptance bounded by α*(p, q^⊗k)


def check_rule(rule: str, k: int | None = None) -> None:
    """Refuse unknown rule names and a k that the rule does not support (ValueError)."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}: choose one of {', '.join(RULES)}")
    if k is not None:
        check_k(k)
        if RULES[rule].k is not None and k != RULES[rule].k:
            n = "one draft (k = 1)" if RULES[rule].k == 1 else f"k = {RULES[rule].k} drafts"
            hint = ": use 'kseq' or 'rrs'" if rule == "sps" else ""
            raise ValueError(f"{rule!r} ({RULES[rule].label}) is defined for {n}, got k = {k}{hint}")
