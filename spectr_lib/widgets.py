"""Interactive views for the notebooks: each slider calls a plain, tested function defined here."""
from __future__ import annotations

import numpy as np
import torch

from .theory.ot import optimal_acceptance
from .theory.kseq import kseq_acceptance
from .theory.selection import RULES, draw_drafts, rrs_acceptance, sample
from .theory.trees import token_tree

ALPHA_LABEL = "optimum α* (i.i.d. drafts)"


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
    """P(output ∈ drafts) estimated with n draws of the batched sampler (for rules without a closed form); the
    draws run in chunks of at most 2**21 probabilities (16 MB), so a 49k-token vocabulary stays small."""
    g = torch.Generator().manual_seed(seed)
    hits, chunk = 0, max(1, 2**21 // p.shape[-1])
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        P, Q = p.expand(m, -1), q.expand(m, -1)
        drafts = draw_drafts(rule, Q, k, generator=g)
        token, _ = sample(rule, P, Q, drafts, generator=g, check=False)
        hits += int((drafts == token[:, None]).any(-1).sum())
    return hits / n


def acceptance_curves(p: torch.Tensor, q: torch.Tensor, ks=(1, 2, 4, 8), rules=("kseq", "rrs"),
                      n_mc: int = 4000, seed: int = 0) -> dict[str, list[float]]:
    """Acceptance per rule for each k, next to α*: exact for K-SEQ and RRS (closed forms), Monte Carlo with n_mc
    draws for the rules without one (RRS without replacement, SpecHub)."""
    out: dict[str, list[float]] = {"k": list(ks), "alpha": [optimal_acceptance(p, q, k) for k in ks]}
    exact = {"kseq": kseq_acceptance, "sps": kseq_acceptance, "rrs": rrs_acceptance}
    for rule in rules:
        if rule in exact:
            out[rule] = [exact[rule](p, q, k) for k in ks]
        else:
            out[rule] = [monte_carlo_acceptance(rule, p, q, k, n_mc, seed) for k in ks]
    return out


def plot_acceptance(curves: dict, ax=None, title: str = ""):
    """Acceptance vs k for each rule, α* dashed."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    for name, values in curves.items():
        if name == "k":
            continue
        style = dict(ls="--", color="black") if name == "alpha" else dict(marker="o")
        ax.plot(curves["k"], values, label=ALPHA_LABEL if name == "alpha" else RULES[name].label if name in RULES else name, **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(curves["k"], [str(k) for k in curves["k"]])
    ax.set_xlabel("number of drafts k")
    ax.set_ylabel("acceptance P(Y ∈ drafts)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    return ax


def acceptance_panel(logits: torch.Tensor, k_max: int = 16, n_mc: int = 2000):
    """Sliders (k, mismatch, temperature) that redraw acceptance per rule against α* for real logits [V]."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    def show(k, mismatch, temperature):
        p, q = mismatched_pair(logits, mismatch, temperature)
        ks = [2**i for i in range(int(np.log2(k)) + 1)]
        curves = acceptance_curves(p, q, ks, rules=("kseq", "rrs"), n_mc=n_mc)
        fig, ax = plt.subplots(figsize=(6, 4))
        plot_acceptance(curves, ax, f"mismatch {mismatch:.2f}, T = {temperature:.2f}: 1 − TV = {curves['alpha'][0]:.3f}")
        plt.show()

    options = [2**i for i in range(int(np.log2(k_max)) + 1)]
    return w.interactive(show, k=w.SelectionSlider(options=options, value=min(8, options[-1])),
                         mismatch=w.FloatSlider(value=0.5, min=0.0, max=2.0, step=0.1),
                         temperature=w.FloatSlider(value=1.0, min=0.2, max=2.0, step=0.1))


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
                ks=(1, 2, 4, 8), n_mc: int = 2000) -> dict[str, list[float]]:
    """Acceptance per rule vs k at one position of a real target/draft pair (logits [T, V]), both warped by T."""
    if not 0 <= position < len(p_logits):
        raise ValueError(f"position must lie in [0, {len(p_logits)})")
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    p = (p_logits[position].double() / temperature).softmax(-1)
    q = (q_logits[position].double() / temperature).softmax(-1)
    return acceptance_curves(p, q, ks, rules=("kseq", "rrs"), n_mc=n_mc)


def pair_panel(p_logits: torch.Tensor, q_logits: torch.Tensor, tokens: list[str], n_mc: int = 2000):
    """Sliders (position along a real continuation, temperature, k) redrawing acceptance per rule against α*."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    def show(position, temperature, k_max):
        ks = [2**i for i in range(int(np.log2(k_max)) + 1)]
        curves = pair_curves(p_logits, q_logits, position, temperature, ks, n_mc)
        fig, ax = plt.subplots(figsize=(6, 4))
        plot_acceptance(curves, ax, f"next token after {tokens[position]!r}, T = {temperature:.1f}")
        plt.show()

    return w.interactive(show, position=w.IntSlider(value=0, min=0, max=len(p_logits) - 1),
                         temperature=w.FloatSlider(value=1.0, min=0.2, max=2.0, step=0.1),
                         k_max=w.SelectionSlider(options=[2, 4, 8, 16], value=8))
