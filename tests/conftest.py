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

    def departures(self) -> dict[str, dict]:
        pair, n, T, top_k = self.made
        return temperature_departures(pair, PROMPT, n, T, top_k)


def exact_law(pair, n_tokens=3, temperature=1.0, top_k=None):
    """The target's exact law of the first n tokens after PROMPT (laws.target_sequence_law), as a `Law`."""
    return Law(laws.target_sequence_law(pair, PROMPT, n_tokens, temperature, top_k), pair, n_tokens, temperature, top_k)


def assert_power(law: dict, departures: dict, n: int) -> None:
    """Assert a chi-square test of n samples against `law` (level 1e-3) rejects each named departure
    ({name: law}) with probability ≥ MIN_POWER (laws.chi_square_power)."""
    for name, departure in departures.items():
        power = laws.chi_square_power(law, departure, n)
        assert power >= MIN_POWER, f"power {power:.3f} < {MIN_POWER} against {name} with {n} samples: draw more"


def temperature_departures(pair, prompt, n_tokens: int, temperature: float = 1.0, top_k=None) -> dict:
    """{name: law}: the target's law of the window at temperature T ± DEPARTURE (the named departure of a
    decoder's law test)."""
    return {f"the target at T = {t:g}": laws.target_sequence_law(pair, prompt, n_tokens, t, top_k)
            for t in (temperature - DEPARTURE, temperature + DEPARTURE) if t > 0}


def rule_departure_law(rule: str, p, q, k: int, verify_q=None, residual_p: bool = False) -> dict:
    """The exact law {(token,): probability} of a rule's output when its drafts come from q (its own draft law)
    but it verifies against verify_q (default q) and, with residual_p, samples p itself after every draft failed:
    enumerated over every draft tuple (theory/exact.py)."""
    from spectr_lib.theory import selection
    from spectr_lib.theory.exact import decision_law, draft_tuples

    tuples, weight = draft_tuples(rule, q, k)
    n, V = len(tuples), p.shape[-1]
    qv = q if verify_q is None else verify_q
    a, residual = selection._pass_probabilities(rule, p.expand(n, V), qv.expand(n, V), tuples)
    out = decision_law(a, p.expand(n, V) if residual_p else residual(), selection._trial_order(rule, tuples))
    return {(x,): float(v) for x, v in enumerate((weight[:, None] * out).sum(0))}


def tempered(q: torch.Tensor, tau: float) -> torch.Tensor:
    """q ** (1 / τ), renormalised: q at draft temperature τ."""
    t = q ** (1 / tau)
    return t / t.sum(-1, keepdim=True)


def rule_departures(rule: str, p, q, k: int) -> dict:
    """{name: law}: the named departures of a token-level rule: drafts verified against q at τ = 1 ± DEPARTURE
    (rules that read q), and (rules with a residual other than SpS's) the residual replaced by p."""
    from spectr_lib.theory import selection

    out = {f"q verified at τ = {t:g}": rule_departure_law(rule, p, q, k, verify_q=tempered(q, t))
           for t in (1 - DEPARTURE, 1 + DEPARTURE) if selection.RULES[rule].reads_q}
    if rule != "sps":
        out["residual = p"] = rule_departure_law(rule, p, q, k, residual_p=True)
    return out


def assert_decodes_the_target_law(method: str, k: int, form: str, n: int = 3000) -> None:
    """generate(method=...) on a tiny pair: chi-square of the first three tokens against the target's exact law
    (p > 1e-3), with its power against the target at T ± DEPARTURE asserted; the same samples are rejected against
    T = 0.6 (p < 1e-6)."""
    pair = tiny_pair(vocab_size=6, seed=0)
    counts = laws.empirical_counts(pair, PROMPT, 3, n, 0, method=method, k=k, L=2, verify=form)
    assert laws.chi_square_pvalue(counts, laws.target_sequence_law(pair, PROMPT, 3)) > 1e-3
    assert laws.chi_square_pvalue(counts, laws.target_sequence_law(pair, PROMPT, 3, temperature=0.6)) < 1e-6
    assert_power(laws.target_sequence_law(pair, PROMPT, 3), temperature_departures(pair, PROMPT, 3), n)


def samples_of(pair, n, **kw):
    """Counts of the first three tokens of `generate` after PROMPT over seeds 0..n − 1 (laws.empirical_counts)."""
    return laws.empirical_counts(pair, PROMPT, 3, n, 0, **kw)


def chi_square_pvalue(counts, law):
    """The chi-square test's p-value of counts against the law (laws.chi_square_pvalue). For a `Law`, first
    asserts the test's power (laws.chi_square_power, at level 1e-3 with this many samples) against the target at
    temperature T ± DEPARTURE is at least MIN_POWER: a test too small to see that departure proves nothing."""
    if isinstance(law, Law):
        assert_power(law, law.departures(), sum(counts.values()))
    return laws.chi_square_pvalue(counts, law)


def target_greedy(pair, prompt, n):
    """The target's own greedy continuation [n] of prompt, one full forward pass per token."""
    ids = torch.tensor([prompt])
    for _ in range(n):
        with torch.no_grad():
            nxt = pair.target(ids).logits[0, -1, : pair.vocab_size].argmax()
        ids = torch.cat([ids, nxt.view(1, 1)], 1)
    return ids[0, len(prompt):]
