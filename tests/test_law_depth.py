"""Law tests that reach every draft position and the bonus token: the first round of each generation drafts its
full L (max_new_tokens = L + 2 > L + 1) and the tested window holds L + 1 tokens, so a defect at depth ≥ 2 or in the bonus
changes the tested law. Each test's power against a named departure is computed and asserted, and the named
departures of a decoder are planted and rejected by the same test: depth i judged with the p of depth i − 1 and
K-SEQ's residual replaced by p (drafts verified against q at τ ± 0.3: tests/test_decoder.py, where the test is
large enough to see it, and tests/test_rule_power.py, exactly)."""
import pytest

from spectr_lib.engine import laws
from spectr_lib.models import heads
from spectr_lib.theory import selection
from spectr_lib.models.load import tiny_pair

PROMPT = [1, 3, 2]
L, N_TOKENS, N_SAMPLES = 3, 4, 3000  # the window: the first round's 3 draft positions and its bonus token
CASES = [("sps", 1), ("kseq", 3), ("rrs", 3), ("rrs_wor", 3), ("block", 1)]


@pytest.fixture(scope="module")
def pair():
    return tiny_pair(vocab_size=4, seed=5, target_layers=1, draft_layers=1, hidden=32)


@pytest.fixture(scope="module")
def law(pair):
    return laws.target_sequence_law(pair, PROMPT, N_TOKENS)


def counts_of(pair, method, k, seed=0):
    return laws.empirical_counts(pair, PROMPT, N_TOKENS, N_SAMPLES, seed, max_new_tokens=N_TOKENS + 1, method=method,
                                 k=k, L=L, lookup=False)


def test_the_window_is_reached_and_the_test_has_the_power_it_claims(pair, law):
    """Rounds draft the full L (every accepted-length 0..L occurs) and the chi-square test at N_SAMPLES rejects a
    decoder off by ±0.3 in temperature with power ≥ 0.99 (computed, noncentral chi-square)."""
    from spectr_lib.engine.decoder import generate

    seen = set()
    for s in range(200):
        g = generate(pair, PROMPT, method="kseq", k=3, L=L, max_new_tokens=N_TOKENS + 1, seed=s, lookup=False)
        seen.add(g.stats.rounds[0].accepted)
        assert g.stats.rounds[0].L == L
    assert seen == set(range(L + 1))  # the bonus after depth L included
    for T in (0.7, 1.3):
        departure = laws.target_sequence_law(pair, PROMPT, N_TOKENS, temperature=T)
        assert laws.chi_square_power(law, departure, N_SAMPLES) >= 0.99, T
    assert laws.chi_square_power(law, law, N_SAMPLES) == pytest.approx(1e-3, rel=0.05)  # the level, no departure


@pytest.mark.parametrize("method, k", CASES)
def test_every_method_keeps_the_target_law_through_depth_L_and_the_bonus(pair, law, method, k):
    assert laws.chi_square_pvalue(counts_of(pair, method, k), law) > 1e-3


def test_depth_judged_with_the_previous_positions_p_is_rejected(pair, law, monkeypatch):
    """The negative control: from depth 2 on, selection reads the target's p of the position before (a
    realistic off-by-one); the same test rejects it."""
    read = heads.LazyLogits.__getitem__

    def shifted(self, key):
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], int) and key[1] >= 1:
            key = (key[0], key[1] - 1)
        return read(self, key)

    monkeypatch.setattr(heads.LazyLogits, "__getitem__", shifted)
    assert laws.chi_square_pvalue(counts_of(pair, "kseq", 3), law) < 1e-6


def test_kseq_with_p_as_its_residual_is_rejected(pair, law, monkeypatch):
    """The negative control of the K-SEQ correction: after every draft fails, sample from p itself instead of
    the residual ∝ p − γ·min(q, p/ρ*) (SpecTr §4); the same test rejects it."""
    monkeypatch.setattr(selection, "kseq_residual_row", lambda p, q, rho, k: p / p.sum())
    monkeypatch.setattr(selection, "_kseq_residual", lambda p, q, rho, k: p)
    assert laws.chi_square_pvalue(counts_of(pair, "kseq", 3), law) < 1e-6
