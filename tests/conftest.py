"""Shared fixtures and the chi-square harness of the tests: the decoder's tiny pair, the embedded target (float32
for exactness), and exactness checks built on the library's own engine/laws.py."""
import pytest
import torch

from spectr_lib.engine import laws
from spectr_lib.models.load import tiny_pair

PROMPT = [1, 4, 2]
V = 6


@pytest.fixture(scope="session")
def embedded_f32():
    """The embedded SmolLM2-135M-Instruct target and tokenizer, float32 on CPU."""
    from spectr_lib.models.load import load_target

    return load_target(device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def pair():
    """1-layer tiny models keep each generate call to a few milliseconds (thousands of samples per test)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_pair(vocab_size=V, seed=1, target_layers=1, draft_layers=1, hidden=32)
    torch.set_num_threads(threads)


DEPARTURE = 0.3  # every chi-square test against an exact law must detect the target at temperature T ± 0.3
MIN_POWER = 0.99


class Law(dict):
    """The target's exact law of a window ({sequence: probability}) that knows how it was made, so that a test of
    it can compute its power against the named departure: the same target at temperature T ± DEPARTURE."""

    def __init__(self, law, pair, n_tokens, temperature, top_k):
        super().__init__(law)
        self.made = (pair, n_tokens, temperature, top_k)

    def departures(self) -> dict[float, dict]:
        pair, n, T, top_k = self.made
        return {t: laws.target_sequence_law(pair, PROMPT, n, t, top_k) for t in (T - DEPARTURE, T + DEPARTURE) if t > 0}


def exact_law(pair, n_tokens=3, temperature=1.0, top_k=None):
    """The target's exact law of the first n tokens after PROMPT (laws.target_sequence_law), as a `Law`."""
    return Law(laws.target_sequence_law(pair, PROMPT, n_tokens, temperature, top_k), pair, n_tokens, temperature, top_k)


def samples_of(pair, n, **kw):
    """Counts of the first three tokens of `generate` after PROMPT over seeds 0..n − 1 (laws.empirical_counts)."""
    return laws.empirical_counts(pair, PROMPT, 3, n, 0, **kw)


def chi_square_pvalue(counts, law):
    """The chi-square test's p-value of counts against the law (laws.chi_square_pvalue). For a `Law`, first
    asserts the test's power (laws.chi_square_power, at level 1e-3 with this many samples) against the target at
    temperature T ± DEPARTURE is at least MIN_POWER: a test too small to see that departure proves nothing."""
    if isinstance(law, Law):
        n = sum(counts.values())
        for t, departure in law.departures().items():
            power = laws.chi_square_power(law, departure, n)
            assert power >= MIN_POWER, (f"this chi-square test has power {power:.3f} < {MIN_POWER} against the target "
                                        f"at temperature {t:g} with {n} samples: draw more samples")
    return laws.chi_square_pvalue(counts, law)


def target_greedy(pair, prompt, n):
    """The target's own greedy continuation [n] of prompt, one full forward pass per token."""
    ids = torch.tensor([prompt])
    for _ in range(n):
        with torch.no_grad():
            nxt = pair.target(ids).logits[0, -1, : pair.vocab_size].argmax()
        ids = torch.cat([ids, nxt.view(1, 1)], 1)
    return ids[0, len(prompt):]
