"""Interactive views for the notebooks: each slider calls a plain, tested function defined here.

Acceptance curves are exact wherever a formula exists: K-SEQ's closed form (theory.kseq), RRS with i.i.d.
drafts (theory.selection.rrs_acceptance) and the optimum α* (theory.ot), each O(k·V) or one sort, so a redraw on
a 49,152-token vocabulary stays far below a second. Rules without a formula (RRS without replacement, SpecHub)
are enumerated exactly when |V|^k is small and otherwise estimated by a chunked, seeded Monte Carlo.
"""
from __future__ import annotations

import numpy as np
import torch

from .theory.exact import MAX_TUPLES, acceptance as enumerated_acceptance
from .theory.ot import optimal_acceptance
from .theory.selection import RULES, check_rule, draw_drafts, sample
from .theory.trees import token_tree

ALPHA_LABEL = "optimum α* (i.i.d. drafts)"
MC_CHUNK = 2**21  # probabilities per Monte Carlo chunk (16 MB in float64), whatever the vocabulary


def mismatched_pair(logits: torch.Tensor, mismatch: float, temperature: float = 1.0, seed: int = 0):
    """Target p = softmax(logits/T) and a draft q whose logits are perturbed by `mismatch` × Gaussian noise."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 here (the views compare sampled distributions)")
    if mismatch < 0:
        raise ValueError("mismatch must be ≥ 0")
    logits = logits.double()
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(logits.shape, generator=g, dtype=torch.float64)
    p = (logits / temperature).softmax(-1)
    q = ((logits + mismatch * noise * logits.std(-1, keepdim=True)) / temperature).softmax(-1)
    return p, q


def monte_carlo_acceptance(rule: str, p: torch.Tensor, q: torch.Tensor, k: int, n: int = 4000, seed: int = 0) -> float:
    """P(output ∈ drafts) estimated with n draws of the batched sampler (p, q [V]; for rules without a formula).

    The draws run in chunks of at most MC_CHUNK probabilities (rows × V), so memory stays bounded on a 49k-token
    vocabulary; the generator is seeded, so the estimate is reproducible. Standard error ≤ 0.5/√n.
    """
    g = torch.Generator().manual_seed(seed)
    hits, chunk = 0, max(1, MC_CHUNK // p.shape[-1])
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        P, Q = p.expand(m, -1), q.expand(m, -1)
        drafts = draw_drafts(rule, Q, k, generator=g)
        token, _ = sample(rule, P, Q, drafts, generator=g, check=False)
        hits += int((drafts == token[:, None]).any(-1).sum())
    return hits / n


def rule_acceptance(rule: str, p: torch.Tensor, q: torch.Tensor, k: int, n_mc: int = 20_000,
                    seed: int = 0) -> tuple[float, bool]:
    """(acceptance, exact) of one rule for p, q [V] and k drafts.

    Exact for the rules with a closed form (`Rule.closed_form`: K-SEQ / SpS, SpecTr §4; RRS with i.i.d. drafts;
    sampled verification); for the other rules exact by enumerating draft tuples when |V|^k ≤ theory.exact.MAX_TUPLES, otherwise a Monte Carlo
    estimate with n_mc seeded draws (exact = False). Raises ValueError for an unknown rule or a k it does not take.
    """
    check_rule(rule, k)
    if RULES[rule].closed_form is not None:
        return float(RULES[rule].closed_form(p, q, k)), True
    if p.ndim == 1 and p.shape[-1] ** k <= MAX_TUPLES:
        return enumerated_acceptance(rule, p, q, k), True
    return monte_carlo_acceptance(rule, p, q, k, n_mc, seed), False


def acceptance_curves(p: torch.Tensor, q: torch.Tensor, ks=(1, 2, 4, 8), rules=("kseq", "rrs"),
                      n_mc: int = 20_000, seed: int = 0) -> dict[str, list]:
    """Acceptance of each rule for each k in ks, next to α* (p, q [V]).

    Returns {"k": ks, "alpha": [α*], rule: [acceptance], ..., "estimated": [rules with a Monte Carlo point]}:
    see rule_acceptance for which values are exact.
    """
    out: dict[str, list] = {"k": list(ks), "alpha": [float(optimal_acceptance(p, q, k)) for k in ks], "estimated": []}
    for rule in rules:
        values = [rule_acceptance(rule, p, q, k, n_mc, seed) for k in ks]
        out[rule] = [v for v, _ in values]
        if not all(exact for _, exact in values):
            out["estimated"].append(rule)
    return out


def plot_acceptance(curves: dict, ax=None, title: str = ""):
    """Acceptance vs k for each rule, α* dashed; a rule estimated by Monte Carlo says so in its label."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    estimated = curves.get("estimated", [])
    for name, values in curves.items():
        if name in ("k", "estimated"):
            continue
        if name == "alpha":
            ax.plot(curves["k"], values, ls="--", color="black", label=ALPHA_LABEL)
            continue
        label = RULES[name].label if name in RULES else name
        ax.plot(curves["k"], values, marker="o", label=label + (" (Monte Carlo)" if name in estimated else ""))
    ax.set_xscale("log", base=2)
    ax.set_xticks(curves["k"], [str(k) for k in curves["k"]])
    ax.set_xlabel("number of drafts k")
    ax.set_ylabel("acceptance P(Y ∈ drafts)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    return ax


def _powers_of_two(k_max: int) -> list[int]:
    """1, 2, 4, …, k_max (k_max a power of two, else ValueError)."""
    if not isinstance(k_max, (int, np.integer)) or k_max < 1 or k_max & (k_max - 1):
        raise ValueError(f"k_max must be a power of two ≥ 1, got {k_max!r}")
    return [2**i for i in range(int(k_max).bit_length())]


def acceptance_view(logits: torch.Tensor, k_max: int = 8, mismatch: float = 0.5, temperature: float = 1.0,
                    ax=None) -> dict[str, list]:
    """Plot exact acceptance of K-SEQ and RRS against α* for k = 1, 2, 4, …, k_max, with p = softmax(logits/T)
    for real logits [V] and q its perturbed copy (mismatched_pair); returns the curves. This is one frame of
    acceptance_panel (no Monte Carlo: a redraw costs a few vocabulary-wide passes)."""
    p, q = mismatched_pair(logits, mismatch, temperature)
    curves = acceptance_curves(p, q, _powers_of_two(k_max), rules=("kseq", "rrs"))
    plot_acceptance(curves, ax, f"mismatch {mismatch:.2f}, T = {temperature:.2f}: 1 − TV = {curves['alpha'][0]:.3f}")
    return curves


def acceptance_panel(logits: torch.Tensor, k_max: int = 16):
    """Sliders (k_max: the largest k drawn, mismatch, temperature) redrawing acceptance_view for logits [V].
    Sliders act on release (continuous_update=False)."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    def show(k_max, mismatch, temperature):
        fig, ax = plt.subplots(figsize=(6, 4))
        acceptance_view(logits, k_max, mismatch, temperature, ax)
        plt.show()

    options = _powers_of_two(k_max)
    return w.interactive(show,
                         k_max=w.SelectionSlider(options=options, value=min(8, options[-1]), description="k_max",
                                                 continuous_update=False),
                         mismatch=w.FloatSlider(value=0.5, min=0.0, max=2.0, step=0.1, continuous_update=False),
                         temperature=w.FloatSlider(value=1.0, min=0.2, max=2.0, step=0.1, continuous_update=False))


def draft_tree(tokens: torch.Tensor) -> tuple[list[tuple[int, ...]], list[int]]:
    """The distinct prefixes of K drafts [k, L] (the nodes of their prefix tree, root first) and each node's
    parent index (−1 for the root)."""
    node_tok, parents, _, _ = token_tree(tokens)
    nodes: list[tuple[int, ...]] = [()]
    for tok, parent in zip(node_tok[1:], parents[1:]):
        nodes.append(nodes[parent] + (tok,))
    return nodes, parents


def plot_draft_tree(tokens: torch.Tensor, accepted: list[int], label=str, ax=None):
    """Draw the K drafts as a prefix tree; the accepted tokens' path in red (label maps a token id to text)."""
    import matplotlib.pyplot as plt

    nodes, parents = draft_tree(tokens)
    ax = ax or plt.gca()
    leaves = [n for n in nodes if not any(m[:-1] == n for m in nodes if m)]
    y_of: dict[tuple, float] = {leaf: i for i, leaf in enumerate(sorted(leaves))}
    for n in sorted(nodes, key=len, reverse=True):  # a parent sits at the mean height of its children
        if n not in y_of:
            kids = [y_of[m] for m in nodes if m and m[:-1] == n]
            y_of[n] = sum(kids) / len(kids)
    path = {tuple(accepted[:d]) for d in range(len(accepted) + 1)}
    for n, parent in zip(nodes, parents):
        if parent >= 0:
            on_path = n in path
            ax.plot([len(n) - 1, len(n)], [y_of[nodes[parent]], y_of[n]], color="red" if on_path else "gray",
                    lw=2.5 if on_path else 1)
            ax.text(len(n), y_of[n], " " + label(n[-1]), va="center", fontsize=9,
                    color="red" if on_path else "black", bbox=dict(fc="white", ec="none", alpha=0.7))
    ax.scatter([0], [y_of[()]], color="black")
    ax.set_xlabel("draft position")
    ax.set_yticks([])
    ax.set_xlim(-0.3, tokens.shape[1] + 1.2)
    ax.set_title(f"{tokens.shape[0]} drafts, {len(nodes) - 1} distinct prefixes of {tokens.numel()} draft tokens")
    return ax


def pair_curves(p_logits: torch.Tensor, q_logits: torch.Tensor, position: int, temperature: float = 1.0,
                ks=(1, 2, 4, 8), n_mc: int = 2000) -> dict[str, list]:
    """Acceptance per rule vs k at one position of a real target/draft pair (logits [T, V]), both warped by T.
    K-SEQ and RRS are exact (closed forms); n_mc only matters for a rule without a formula."""
    if not 0 <= position < len(p_logits):
        raise ValueError(f"position must lie in [0, {len(p_logits)})")
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    p = (p_logits[position].double() / temperature).softmax(-1)
    q = (q_logits[position].double() / temperature).softmax(-1)
    return acceptance_curves(p, q, ks, rules=("kseq", "rrs"), n_mc=n_mc)


def pair_view(p_logits: torch.Tensor, q_logits: torch.Tensor, tokens: list[str], position: int = 0,
              temperature: float = 1.0, k_max: int = 8, ax=None, n_mc: int = 2000) -> dict[str, list]:
    """Plot pair_curves for k = 1, 2, …, k_max at one position (one frame of pair_panel); returns the curves."""
    curves = pair_curves(p_logits, q_logits, position, temperature, _powers_of_two(k_max), n_mc)
    plot_acceptance(curves, ax, f"next token after {tokens[position]!r}, T = {temperature:.1f}")
    return curves


def pair_panel(p_logits: torch.Tensor, q_logits: torch.Tensor, tokens: list[str], n_mc: int = 2000):
    """Sliders (position along a real continuation, temperature, k_max) redrawing pair_view; they act on release."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    def show(position, temperature, k_max):
        fig, ax = plt.subplots(figsize=(6, 4))
        pair_view(p_logits, q_logits, tokens, position, temperature, k_max, ax, n_mc)
        plt.show()

    return w.interactive(show, position=w.IntSlider(value=0, min=0, max=len(p_logits) - 1, continuous_update=False),
                         temperature=w.FloatSlider(value=1.0, min=0.2, max=2.0, step=0.1, continuous_update=False),
                         k_max=w.SelectionSlider(options=[2, 4, 8, 16], value=8, continuous_update=False))
