"""Checking losslessness on small pairs: the target's exact law of the first n new tokens (by enumeration),
the decoder's empirical counts over seeded generations, and the bins of a chi-square test between them.

A speculative decoder is lossless when its output sequence has exactly the target's law (SpecTr, Sun et al.,
NeurIPS 2023, §4, Theorem 2 for K-SEQ along the drafts; speculative sampling, Leviathan et al. 2023, §3).
`chi_square_pvalue` gives `chi_square_bins`'s observed and expected counts to `scipy.stats.chisquare`.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from ..models.load import ModelPair
from ..theory.dists import check_sampling, warp
from .decoder import generate
from .inputs import check_pair, count, prompt_ids, seed_of

MAX_SEQUENCES = 100_000  # V^n sequences enumerated at most


@torch.no_grad()
def target_sequence_law(pair: ModelPair, prompt, n_tokens: int = 2, temperature: float = 1.0,
                        top_k: int | None = None, top_p: float | None = None) -> dict[tuple[int, ...], float]:
    """Exact probability of every sequence of the first n_tokens new tokens under the (warped) target:
    {(y_1, …, y_n): Π_i p(y_i | prompt, y_<i)}, by one batched target call over all V^(n−1) prefixes [V^(n−1), T + n − 1].

    Only for small vocabularies (tiny_pair): ValueError when V^n exceeds MAX_SEQUENCES; TypeError / ValueError
    for a bad pair, prompt or sampling argument. No stop token is assumed (tiny pairs have none).
    """
    check_pair(pair)
    n_tokens = count("n_tokens", n_tokens)
    check_sampling(temperature, top_k, top_p)
    V = pair.vocab_size
    if V**n_tokens > MAX_SEQUENCES:
        raise ValueError(f"enumerating V^n = {V}^{n_tokens} = {V**n_tokens:,} sequences is too many (limit "
                         f"{MAX_SEQUENCES:,}): use a small pair such as tiny_pair(vocab_size=6)")
    ids = prompt_ids(pair, prompt)
    prefixes = torch.tensor(list(itertools.product(range(V), repeat=n_tokens - 1)), dtype=torch.long)
    prefixes = prefixes.reshape(V ** (n_tokens - 1), n_tokens - 1)
    batch = torch.cat([ids.cpu().expand(len(prefixes), -1), prefixes], 1).to(pair.device)
    logits = pair.target(batch).logits[:, len(ids) - 1:, :V].float()  # [N, n, V]: after the prompt and each y_<i
    probs = warp(logits, float(temperature), top_k, top_p).cpu()
    law = {}
    for j, prefix in enumerate(prefixes.tolist()):
        p_prefix = float(np.prod([float(probs[j, i, t]) for i, t in enumerate(prefix)]))
        for y in range(V):
            law[tuple(prefix) + (y,)] = p_prefix * float(probs[j, -1, y])
    return law


def empirical_counts(pair: ModelPair, prompt, n_tokens: int = 2, n_samples: int = 1000, seed: int = 0,
                     max_new_tokens: int | None = None, **generate_kw) -> dict[tuple[int, ...], int]:
    """How often each sequence of the first n_tokens tokens came out of `generate(pair, prompt,
    max_new_tokens=max_new_tokens, seed=s, **generate_kw)` for the seeds s = seed … seed + n_samples − 1.

    max_new_tokens (default n_tokens; at least n_tokens): how many tokens each generation makes. A round drafts
    at most max_new_tokens − 1 − (tokens so far) tokens, so a law test that must reach draft depth L and the bonus
    token after it generates at least L + 1 tokens (n_tokens = L + 1) or more (the first n_tokens of a longer
    exact sequence still follow the target's law). Raises what `generate` raises for bad arguments, ValueError
    for max_new_tokens < n_tokens."""
    n_tokens, n_samples, seed = count("n_tokens", n_tokens), count("n_samples", n_samples), seed_of(seed)
    if seed is None:
        raise ValueError("empirical_counts needs an integer seed (the counts must be reproducible)")
    max_new_tokens = n_tokens if max_new_tokens is None else count("max_new_tokens", max_new_tokens)
    if max_new_tokens < n_tokens:
        raise ValueError(f"max_new_tokens ({max_new_tokens}) must be at least n_tokens ({n_tokens}): the counts are "
                         f"of the first n_tokens tokens")
    counts: dict[tuple[int, ...], int] = {}
    for s in range(seed, seed + n_samples):
        out = generate(pair, prompt, max_new_tokens=max_new_tokens, seed=s, **generate_kw).token_ids
        key = tuple(out[:n_tokens].tolist())
        counts[key] = counts.get(key, 0) + 1
    return counts


def chi_square_bins(counts: dict, law: dict, min_expected: float = 5.0) -> tuple[np.ndarray, np.ndarray, list]:
    """Observed and expected counts [B] for a chi-square goodness-of-fit test, and each bin's key.

    Sequences whose expected count is below min_expected are merged into one last bin (key "other"), the
    usual validity condition of the chi-square approximation; expected counts are scaled to sum to the
    observed total. Raises ValueError when counts hold a sequence of probability 0 under law (no test can
    pass then) or when no bin reaches min_expected.
    """
    n = sum(counts.values())
    impossible = [key for key in counts if law.get(key, 0.0) <= 0.0]
    if impossible:
        raise ValueError(f"{len(impossible)} observed sequence(s) have probability 0 under the law, e.g. {impossible[0]}")
    big, expected, rest_exp = _big_bins(law, n, min_expected)
    observed = [counts.get(key, 0) for key in big]
    rest_obs = n - sum(observed)
    if rest_exp > 1e-9 or rest_obs:
        observed, expected, big = observed + [rest_obs], expected + [max(rest_exp, 0.0)], big + ["other"]
    expected = np.array(expected)
    return np.array(observed, dtype=float), expected * n / expected.sum(), big


def chi_square_pvalue(counts: dict, law: dict, min_expected: float = 5.0) -> float:
    """The p-value of the chi-square goodness-of-fit test of `counts` (`empirical_counts`) against `law`
    (`target_sequence_law`), on `chi_square_bins`' bins. Raises ValueError as `chi_square_bins` does."""
    from scipy.stats import chisquare

    observed, expected, _ = chi_square_bins(counts, law, min_expected)
    return float(chisquare(observed, expected).pvalue)


def chi_square_power(law: dict, departure: dict, n_samples: int, alpha: float = 1e-3, min_expected: float = 5.0) -> float:
    """The power of `chi_square_pvalue`'s test at level alpha with n_samples draws against a decoder whose law is
    `departure` instead of `law` (both {sequence: probability}): P(p-value < alpha), from the noncentral
    chi-square distribution of the statistic (noncentrality n Σ (d_b − l_b)² / l_b over `chi_square_bins`' bins of
    `law`; Cohen, Statistical Power Analysis, ch. 7). A test whose power against a named departure is below 0.99
    is too small to prove that departure absent: draw more, or take fewer bins (fewer tokens)."""
    from scipy.stats import chi2, ncx2

    n_samples = count("n_samples", n_samples)
    keys, expected, rest = _big_bins(law, n_samples, min_expected)
    l, d = [e / n_samples for e in expected], [departure.get(key, 0.0) for key in keys]
    if rest > 1e-9:  # the merged bin of the small sequences
        l, d = l + [rest / n_samples], d + [1.0 - sum(d)]
    l, d = np.array(l), np.array(d)
    df = len(l) - 1
    lam = n_samples * float(np.sum((d - l) ** 2 / l))
    return float(ncx2.sf(chi2.isf(alpha, df), df, lam))


def _big_bins(law: dict, n: int, min_expected: float) -> tuple[list, list, float]:
    """The sequences of `law` expected at least min_expected times in n draws (most likely first), their expected
    counts, and the expected count of all the others together. ValueError when no sequence reaches min_expected."""
    keys = sorted(law, key=lambda key: (-law[key], key))
    big = [key for key in keys if law[key] * n >= min_expected]
    if not big:
        raise ValueError(f"no sequence has an expected count ≥ {min_expected} with {n} samples: draw more")
    return big, [law[key] * n for key in big], n * (1.0 - sum(law[key] for key in big))
