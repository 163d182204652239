"""Classes of faults reported against other speculative decoders, replayed here, each with its right value."""
import time

import numpy as np
import pytest
import torch

from spectr_lib import draft_acceptance, generate, load_pair, tiny_pair
from spectr_lib.theory import exact
from spectr_lib.theory.dists import sample_rows, warp
from spectr_lib.theory.selection import RULES, draw_drafts, pass_probabilities, sample, speculative_sampling

PROMPT = [1, 2, 3]


@pytest.fixture(scope="module")
def pair():
    return tiny_pair(vocab_size=8, seed=2)


@pytest.fixture(scope="module")
def self_pair():
    """A draft equal to the target: at T = 0 every draft token is accepted."""
    p = tiny_pair(vocab_size=8, seed=2)
    p.draft = p.target
    return p


# ---------------------------------------------------------------- the decoder

def test_stop_token_inside_a_round_ends_generation_there(self_pair):
    g = generate(self_pair, PROMPT, method="kseq", k=2, L=4, max_new_tokens=40, temperature=0, eos_token_id=6)
    s = g.stats
    assert g.token_ids.tolist() == [0, 6]
    # the accepted stop token closes the round, as a correction or bonus token would: 1 accepted + 1
    assert (s.target_calls, s.draft_calls, s.block_efficiency, s.accepted_hist) == (1, 4, 2.0, [0, 1, 0, 0, 0])
    assert s.mean_acceptance_length == 2.0


@pytest.mark.parametrize("method,k", [("ar", 1), ("sps", 1), ("kseq", 3), ("rrs", 2)])
def test_any_of_several_stop_tokens_ends_generation(self_pair, method, k):
    free = generate(self_pair, PROMPT, method=method, k=k, L=3, max_new_tokens=30, temperature=0).token_ids.tolist()
    stops = [free[5], free[9]]  # the first time either appears, generation must end, counted once
    end = min(free.index(t) for t in stops) + 1
    g = generate(self_pair, PROMPT, method=method, k=k, L=3, max_new_tokens=30, temperature=0, eos_token_id=stops)
    assert g.token_ids.tolist() == free[:end]
    expected_calls = end if method == "ar" else -(-end // 4)  # every draft accepted: 4 tokens per round
    assert g.stats.target_calls == expected_calls and g.stats.new_tokens == end


def test_draft_length_is_capped_by_what_is_left(pair):
    g = generate(pair, PROMPT, method="kseq", k=4, L=8, max_new_tokens=1)
    assert (len(g.token_ids), g.stats.target_calls, g.stats.draft_calls, g.stats.plain_steps) == (1, 1, 0, 1)
    assert g.stats.accepted_hist == [0]  # a plain step is not a round: it leaves the acceptance metrics alone
    g = generate(pair, PROMPT, method="kseq", k=2, L=10**6, max_new_tokens=3, seed=0)
    assert len(g.stats.accepted_hist) == 3 and len(g.stats.acceptance_rate_per_position) == 2
    g = generate(pair, PROMPT, method="kseq", k=4, L=8, max_new_tokens=3, seed=1)
    assert len(g.token_ids) == 3 and g.stats.draft_lengths[0] == 2


@pytest.mark.parametrize("method", ["ar", "kseq", "rrs"])
def test_a_sequence_that_fills_the_context_exactly_runs(pair, method):
    k = None if method == "ar" else 2
    g = generate(pair, [1] * 250, method=method, k=k, L=4, max_new_tokens=6, seed=0)
    assert len(g.token_ids) == 6
    with pytest.raises(ValueError, match="context of 256"):
        generate(pair, [1] * 250, method=method, k=k, L=4, max_new_tokens=7)


@pytest.mark.parametrize("T", [1e-39, 1e-38, 1e-30, 1e-12])
def test_tiny_temperature_is_greedy(pair, T):
    greedy = generate(pair, PROMPT, method="ar", max_new_tokens=8, temperature=0).token_ids
    for method, k in (("ar", 1), ("kseq", 2)):
        assert torch.equal(generate(pair, PROMPT, method=method, k=k, L=3, max_new_tokens=8, temperature=T, seed=0).token_ids, greedy)


def test_warp_at_tiny_temperature_is_finite_and_shares_ties():
    probs = warp(torch.tensor([[1.0, 3.0, 3.0, -2.0]]), 1e-39)
    assert torch.isfinite(probs).all() and probs[0].tolist() == [0.0, 0.5, 0.5, 0.0]


@pytest.mark.parametrize("row", [[0.0, 0.0, 0.0], [0.5, float("nan"), 0.5], [float("inf"), 0.0, 0.0]])
def test_sample_rows_refuses_rows_that_are_not_distributions(row):
    with pytest.raises(ValueError, match="all zero or holds NaN"):
        sample_rows(torch.tensor([row], dtype=torch.float64))


def test_seeds_are_never_silently_folded(pair):
    a = generate(pair, PROMPT, max_new_tokens=20, seed=7).token_ids
    assert torch.equal(a, generate(pair, PROMPT, max_new_tokens=20, seed=np.int64(7)).token_ids)
    for bad in (7 + 2**32, -1):
        with pytest.raises(ValueError, match=r"\[0, 2\*\*32\)"):
            generate(pair, PROMPT, max_new_tokens=2, seed=bad)
    with pytest.raises(TypeError, match="seed"):
        generate(pair, PROMPT, max_new_tokens=2, seed=7.0)


# ---------------------------------------------------------------- prompts and argument types

@pytest.mark.parametrize("prompt", [[[1, 2, 3], [4, 5, 6]], [1.5, 2.7, 3.9], [True, False], ["a", "b"], [b"x"], None,
                                    {"x": 1}, torch.tensor([1.0, 2.0]), torch.tensor([[1, 2], [3, 4]]), 3.5])
def test_prompts_are_never_coerced(pair, prompt):
    with pytest.raises((TypeError, ValueError), match="prompt"):
        generate(pair, prompt, max_new_tokens=2)


@pytest.mark.parametrize("prompt", [[1, 2, 3], (1, 2, 3), np.array([1, 2, 3]), np.array([[1, 2, 3]]),
                                    torch.tensor([1, 2, 3]), torch.tensor([[1, 2, 3]]), [np.int32(1), 2, np.int64(3)]])
def test_every_accepted_prompt_form_gives_the_same_output(pair, prompt):
    want = generate(pair, PROMPT, max_new_tokens=6, seed=3).token_ids
    assert torch.equal(generate(pair, prompt, max_new_tokens=6, seed=3).token_ids, want)


def test_numpy_scalars_are_accepted_like_python_numbers(pair):
    want = generate(pair, PROMPT, k=2, L=3, max_new_tokens=8, temperature=0.7, top_k=5, top_p=0.9, seed=1).token_ids
    got = generate(pair, PROMPT, k=np.int64(2), L=np.int32(3), max_new_tokens=np.int64(8), temperature=np.float32(0.7),
                   top_k=np.int64(5), top_p=np.float64(0.9), seed=np.uint32(1)).token_ids
    assert torch.equal(got, want)


@pytest.mark.parametrize("kw,err,match", [
    (dict(top_p="0.9"), TypeError, "top_p"), (dict(top_k=True), TypeError, "top_k"), (dict(tree="no"), TypeError, "tree"),
    (dict(k="2"), TypeError, "k must be"), (dict(k=2.0), TypeError, "k must be"), (dict(temperature="1"), TypeError, "temperature"),
    (dict(temperature=None), TypeError, "temperature"), (dict(eos_token_id=99), ValueError, "eos_token_id"),
])
def test_bad_argument_types_are_refused_clearly(pair, kw, err, match):
    with pytest.raises(err, match=match):
        generate(pair, PROMPT, max_new_tokens=2, **kw)


def test_bad_pair_and_tiny_pair_arguments():
    with pytest.raises(TypeError, match="ModelPair"):
        generate(None, PROMPT)
    with pytest.raises(TypeError, match="vocab_size"):
        tiny_pair(vocab_size=8.0)
    with pytest.raises(ValueError, match="dtype"):
        tiny_pair(dtype="float8")
    assert tiny_pair(vocab_size=np.int64(8), dtype="float32").vocab_size == 8


def test_load_pair_checks_every_name_before_loading_and_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for target, draft in ((None, "missing/folder"), ("unknown-org/unknown-model", None)):
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match="local folder"):
            load_pair(target, draft, dtype="float32")
        assert time.perf_counter() - t0 < 2.0
    with pytest.raises(ValueError, match="dtype"):
        load_pair(dtype="float33")


def test_chat_messages_without_a_tokenizer_name_the_accepted_forms(pair):
    with pytest.raises(ValueError, match="no tokenizer.*Accepted prompts"):
        generate(pair, [{"role": "user", "content": "Hi"}], max_new_tokens=2)


# ---------------------------------------------------------------- draft_acceptance: the same checks

@pytest.mark.parametrize("args,err,match", [
    (([1, 2, 99], 1), ValueError, r"\[0, 8\)"), (([1, 2, 3], 1, float("nan")), ValueError, "temperature"),
    (([1, 2, 3], 1, float("inf")), ValueError, "temperature"), (([1] * 400, 1), ValueError, "context"),
    (([1, 2, 3], 0), ValueError, "start"), (([1, 2, 3], 3), ValueError, "start"), (([1.5, 2], 1), TypeError, "integer"),
])
def test_draft_acceptance_checks_its_inputs(pair, args, err, match):
    with pytest.raises(err, match=match):
        draft_acceptance(pair, *args)


def test_draft_acceptance_without_a_draft():
    p = tiny_pair(vocab_size=8)
    p.draft = None
    with pytest.raises(ValueError, match="draft"):
        draft_acceptance(p, [1, 2, 3], 1)


# ---------------------------------------------------------------- token-level rules: inputs, u = 0, peaked laws

@pytest.mark.parametrize("q", [[0.5, float("nan"), 0.5], [0.5, 0.6, 0.1], [-0.1, 0.6, 0.5], [0.2, 0.3]])
def test_draw_drafts_validates_q(q):
    with pytest.raises(ValueError):
        draw_drafts("kseq", torch.tensor([q], dtype=torch.float64), 2)


def test_every_public_rule_function_validates_its_inputs():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match="q"):
        pass_probabilities("kseq", p, torch.tensor([0.9, 0.9]), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="ids"):
        pass_probabilities("kseq", p, q, torch.tensor([[0, 5]]))
    with pytest.raises(ValueError, match="uniforms"):
        sample("kseq", p, q, torch.tensor([[0, 1]]), uniforms=torch.tensor([[1.0, 0.2]]))
    with pytest.raises(ValueError, match="without replacement"):
        sample("rrs_wor", p, q, torch.tensor([[0, 0]]))


@pytest.mark.parametrize("rule", ["sps", "kseq", "rrs", "rrs_wor"])
def test_a_token_of_target_probability_zero_is_never_accepted_at_u_zero(rule):
    p, q = torch.tensor([0.0, 1.0, 0.0, 0.0]), torch.tensor([0.5, 0.5, 0.0, 0.0])
    k = 1 if rule == "sps" else 2
    drafts = torch.tensor([[0, 1]]) if rule == "rrs_wor" else torch.zeros(1, k, dtype=torch.long)
    token, _ = sample(rule, p, q, drafts, uniforms=torch.zeros(1, k))  # one row: the decoder's lazy path
    assert token.item() == 1
    tokens, _ = sample(rule, p.expand(3, -1), q.expand(3, -1), drafts.expand(3, -1), uniforms=torch.zeros(3, k))
    assert tokens.tolist() == [1, 1, 1]  # a batch: the path of batches and of CUDA decoding
    tok, accepted = speculative_sampling(p, q, torch.tensor([0]), torch.tensor([0.0]))
    assert tok.item() == 1 and not accepted.item()


def _peaked(top: float, V: int = 3) -> np.ndarray:
    rest = (1 - top) * np.array([0.4, 0.6] + [1.0] * (V - 3))
    q = np.concatenate([[top], rest / rest.sum() * (1 - top)])
    return q / q.sum()


PEAKS = [1 - 1e-9, 1 - 1e-12, 1 - 2e-13, 1 - 1e-15, 1 - 1e-16]


@pytest.mark.parametrize("top", PEAKS)
@pytest.mark.parametrize("rule", RULES)
def test_exact_law_is_p_for_a_peaked_draft_and_a_peaked_target(rule, top):
    k = 1 if rule == "sps" else 2
    p = np.array([0.2, 0.5, 0.3])
    for pp, qq in ((p, _peaked(top)), (_peaked(top)[[1, 0, 2]], p), (_peaked(top), _peaked(top)[[2, 1, 0]])):
        np.testing.assert_allclose(exact.output_distribution(rule, pp, qq, k), pp, atol=1e-12)


def test_the_reported_peaked_cases():
    p = [0.2, 0.5, 0.3]
    q = np.array([1 - 2e-13, 1e-13, 1e-13])
    np.testing.assert_allclose(exact.output_distribution("rrs_wor", p, q / q.sum(), 2), p, atol=1e-12)
    q = np.array([1, 1e-17, 1e-17])
    np.testing.assert_allclose(exact.output_distribution("rrs_wor", p, q / q.sum(), 2), p, atol=1e-12)
    q = np.array([1 - 2e-15, 1e-15, 1.5e-15])
    np.testing.assert_allclose(exact.output_distribution("spechub", p, q / q.sum(), 2), p, atol=1e-12)


@pytest.mark.parametrize("rule", RULES)
def test_batched_sampler_is_exact_for_a_peaked_draft(rule):
    from scipy import stats as st

    n, k = 200_000, (1 if rule == "sps" else 2)
    p = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    q = torch.tensor(_peaked(1 - 2e-13))
    g = torch.Generator().manual_seed(11)
    P, Q = p.expand(n, 3), q.expand(n, 3)
    token, _ = sample(rule, P, Q, draw_drafts(rule, Q, k, g), g)
    counts = torch.bincount(token, minlength=3).numpy()
    assert st.chisquare(counts, p.numpy() * n).pvalue > 1e-3


@pytest.mark.parametrize("method,k", [("kseq", 4), ("rrs", 2), ("sps", 1), ("block", 1)])
def test_tokens_add_up_per_round_whatever_stops_them(method, k):
    """Σ over rounds of (accepted + 1) + plain steps = new tokens, with stop tokens inside rounds too."""
    pair = tiny_pair(vocab_size=4, seed=0)
    for s in range(60):
        g = generate(pair, [1], method=method, k=k, L=4, max_new_tokens=12, seed=s, eos_token_id=2)
        st = g.stats
        assert sum((i + 1) * c for i, c in enumerate(st.accepted_hist)) + st.plain_steps == st.new_tokens
        assert st.target_calls == sum(st.accepted_hist) + st.plain_steps


@pytest.mark.parametrize("kw,err,match", [
    (dict(k=10**12), ValueError, "more than"), (dict(method="ar", k=4), ValueError, "no drafts"),
    (dict(top_p=1e-46), None, None), (dict(eos_token_id=True), TypeError, "eos_token_id"),
    (dict(eos_token_id="3"), TypeError, "eos_token_id"), (dict(eos_token_id=np.array([3, 4])), None, None),
])
def test_more_arguments_found_by_a_new_user(pair, kw, err, match):
    if err is None:
        assert len(generate(pair, PROMPT, max_new_tokens=3, seed=0, **kw).token_ids) >= 1
    else:
        with pytest.raises(err, match=match):
            generate(pair, PROMPT, max_new_tokens=3, **kw)


def test_huge_ids_and_token_id_messages(pair):
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        generate(pair, [2**70])
    with pytest.raises(ValueError, match="18446744073709551615"):
        generate(pair, np.array([2**64 - 1], dtype=np.uint64))
    with pytest.raises(TypeError) as info:
        draft_acceptance(pair, "hello", 1)
    assert "chat" not in str(info.value)
    with pytest.raises(ValueError, match="> 0"):
        draft_acceptance(pair, [1, 2, 3], 1, temperature=-1)


def test_block_verify_and_rule_shapes_are_checked():
    from spectr_lib.theory.block import block_verify

    P = torch.tensor([[.2, .3, .5], [.1, .1, .8], [.3, .3, .4]], dtype=torch.float64)
    Q = torch.tensor([[.5, .25, .25], [.3, .4, .3]], dtype=torch.float64)
    for kw in (dict(uniforms=torch.tensor([2.0, 5.0])), dict(uniforms=torch.tensor([0.5]))):
        with pytest.raises(ValueError, match="uniforms"):
            block_verify(P, Q, torch.tensor([0, 1]), **kw)
    with pytest.raises(ValueError, match="integer"):
        block_verify(P, Q, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="γ ≥ 1"):
        block_verify(P[:1], Q[:0], torch.zeros(0, dtype=torch.long))
    assert block_verify(P, Q, [0, 1], uniforms=[0.0, 0.0])[0] in (0, 1, 2)
    p, q = [.2, .3, .5], [.5, .25, .25]
    with pytest.raises(ValueError, match="drafts must be"):
        sample("kseq", [p, p], [q, q], torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="uniforms"):
        sample("kseq", p, q, torch.tensor([[0, 1]]), uniforms=[0.5])
    assert draw_drafts("rrs_wor", torch.full((2, 2, 3), 1 / 3, dtype=torch.float64), 2).shape == (2, 2, 2)
    with pytest.raises(ValueError, match="vectors"):
        exact.output_distribution("kseq", 1.0, 1.0, 2)


def test_chat_messages_with_an_unknown_role_are_rejected_before_the_template():
    from spectr_lib.prompts import encode_chat

    with pytest.raises(ValueError, match="role 'robot': use one of system, user, assistant"):
        encode_chat(object(), [{"role": "robot", "content": "Hi"}])
