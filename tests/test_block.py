"""Block verification (Sun et al., ICLR 2025): exact by enumeration at the block level, never fewer accepted
tokens than token-level verification on average, exact and greedy in the decoder."""
import itertools

import numpy as np
import pytest
import torch

from spectr_lib import generate, tiny_pair
from spectr_lib.theory.block import block_residual, block_verify, block_weights

V, GAMMA = 3, 3


def dist(seed: int, prefix: tuple, sharp: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1000 + hash(prefix) % 997)
    return (sharp * torch.randn(V, generator=g, dtype=torch.float64)).softmax(-1)


def laws(seed: int):
    """Context-dependent target p and draft q over V = 3 tokens: functions of the prefix."""
    return (lambda pre: dist(seed, pre, 2.0)), (lambda pre: dist(seed + 50, pre, 1.5))


def emitted_law(p, q, rule: str):
    """Exact law of the first γ + 1 tokens when a block (rule: 'block' or 'token') is followed by target samples,
    and the expected number of accepted draft tokens."""
    law, accepted = {}, 0.0
    for xs in itertools.product(range(V), repeat=GAMMA):
        px = float(np.prod([q(xs[:i])[xs[i]] for i in range(GAMMA)]))
        P = torch.stack([p(xs[:i]) for i in range(GAMMA + 1)])
        Q = torch.stack([q(xs[:i]) for i in range(GAMMA)])
        drafts = torch.tensor(xs)
        if rule == "block":
            w, h = block_weights(P, Q, drafts)
            cut = [float(h[i - 1]) if i else 1.0 for i in range(GAMMA + 1)]
            p_tau = [cut[t] * float(np.prod([1 - float(h[j - 1]) for j in range(t + 1, GAMMA + 1)])) for t in range(GAMMA + 1)]
            resid = [block_residual(P, Q, w, t) for t in range(GAMMA + 1)]
        else:  # token-level: stop at the first rejection
            a = [min(1.0, float(P[i, xs[i]] / Q[i, xs[i]])) for i in range(GAMMA)]
            p_tau = [float(np.prod(a[:t])) * (1 - a[t] if t < GAMMA else 1) for t in range(GAMMA + 1)]
            resid = [(P[t] - Q[t]).clamp_min(0) / (P[t] - Q[t]).clamp_min(0).sum() if t < GAMMA else P[t] for t in range(GAMMA + 1)]
        for t in range(GAMMA + 1):
            accepted += px * p_tau[t] * t
            for y in range(V):
                head = xs[:t] + (y,)
                for tail in itertools.product(range(V), repeat=GAMMA - t):
                    seq = head + tail
                    cont = float(np.prod([p(seq[:i])[seq[i]] for i in range(t + 1, GAMMA + 1)]))
                    law[seq] = law.get(seq, 0.0) + px * p_tau[t] * float(resid[t][y]) * cont
    return law, accepted


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_verification_is_exact_by_enumeration_and_accepts_more(seed):
    p, q = laws(seed)
    law, acc_block = emitted_law(p, q, "block")
    target = {seq: float(np.prod([p(seq[:i])[seq[i]] for i in range(GAMMA + 1)]))
              for seq in itertools.product(range(V), repeat=GAMMA + 1)}
    assert max(abs(law.get(s, 0.0) - v) for s, v in target.items()) < 1e-12
    _, acc_token = emitted_law(p, q, "token")
    assert acc_block >= acc_token - 1e-12


def test_the_enumeration_has_teeth():
    """Dropping the residual's prefix weight (using (p − q)_+ everywhere) breaks exactness."""
    import spectr_lib.theory.block as block

    p, q = laws(0)
    original = block.block_residual
    try:
        block.block_residual = lambda P, Q, w, t: original(P, Q, torch.ones_like(w), t)
        globals()["block_residual"] = block.block_residual
        law, _ = emitted_law(p, q, "block")
    finally:
        block.block_residual = original
        globals()["block_residual"] = original
    target = {seq: float(np.prod([p(seq[:i])[seq[i]] for i in range(GAMMA + 1)]))
              for seq in itertools.product(range(V), repeat=GAMMA + 1)}
    assert max(abs(law.get(s, 0.0) - v) for s, v in target.items()) > 1e-4


def test_block_verify_checks_its_inputs_and_never_accepts_p_zero():
    P = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
    Q = torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64)
    tau, y = block_verify(P, Q, torch.tensor([0]), uniforms=torch.zeros(1))
    assert tau == 0 and int(y) == 1
    with pytest.raises(ValueError, match="γ"):
        block_verify(P, Q, torch.tensor([0, 1]))


@pytest.fixture(scope="module")
def pair():
    return tiny_pair(vocab_size=6, seed=1, target_layers=1, draft_layers=1, hidden=32)


def test_block_decoding_follows_the_target_law(pair):
    from conftest import chi_square_pvalue, exact_law, samples_of

    assert chi_square_pvalue(samples_of(pair, 5000, method="block", L=3), exact_law(pair)) > 1e-3


def test_block_decoding_greedy_and_stats(pair):
    from conftest import PROMPT, target_greedy

    got = generate(pair, PROMPT, method="block", L=3, max_new_tokens=24, temperature=0).token_ids
    assert torch.equal(got, target_greedy(pair, PROMPT, 24))
    s = generate(pair, PROMPT, method="block", L=4, max_new_tokens=40, seed=3).stats
    assert s.new_tokens == 40 and s.target_calls == sum(s.accepted_hist) + s.plain_steps
    with pytest.raises(ValueError, match="one draft"):
        generate(pair, PROMPT, method="block", k=2)
