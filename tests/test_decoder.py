"""The K-draft decoder: exact output law (chi-square), greedy equality, determinism, stats, bad input."""
import itertools

import pytest
import torch

from conftest import PROMPT, V, chi_square_pvalue, exact_law, samples_of, target_greedy
from spectr_lib.engine import session
from spectr_lib.engine.decoder import generate
from spectr_lib.engine.verifiers import VERIFIERS
from spectr_lib.models.load import tiny_pair


CONFIGS = [("ar", 1, 1), ("kseq", 1, 1), ("kseq", 2, 2), ("kseq", 4, 3), ("rrs", 1, 1), ("rrs", 2, 2), ("rrs", 4, 3),
           ("rrs_wor", 2, 2), ("rrs_wor", 4, 3), ("rrs_wor", 8, 2)]  # rrs_wor k = 8 > V = 6: fewer distinct firsts


@pytest.mark.parametrize("method,k,L", CONFIGS)
def test_first_three_tokens_follow_the_target_law(pair, method, k, L):
    law = exact_law(pair)
    assert chi_square_pvalue(samples_of(pair, 5000, method=method, k=k, L=L), law) > 1e-3


@pytest.mark.parametrize("tau", [0.7, 1.3])
def test_drafts_verified_against_q_at_another_temperature_fail_the_law_test(pair, monkeypatch, tau):
    """The negative control of a q mix-up in the decoder: drafts drawn from q at τ = 1 but verified against q at τ
    (a draft temperature applied to one side only). The K-SEQ (4, 3) law test above, at its own sample size, fails
    (measured p ≈ 1e-16 at τ = 0.7, 4e-7 at 1.3; a window of one round at depth 3 with 3,000 samples does not see
    it: tests/test_law_depth.py)."""
    made = session.make_drafter

    def mixed_up(*args, **kwargs):
        drafter = made(*args, **kwargs)
        draw = drafter.draft

        def draft(*a, **k):
            tokens, q = draw(*a, **k)
            tempered = q.clamp_min(1e-300) ** (1 / tau) * (q > 0)
            return tokens, tempered / tempered.sum(-1, keepdim=True)
        drafter.draft = draft
        return drafter

    monkeypatch.setattr(session, "make_drafter", mixed_up)
    assert chi_square_pvalue(samples_of(pair, 5000, method="kseq", k=4, L=3), exact_law(pair)) < 1e-3


def test_rrs_without_replacement_with_top_k_is_exact(pair):
    """top_k = 2 leaves two tokens with q > 0: four drafts get two distinct first tokens, the other rows repeat
    the first one and continue i.i.d."""
    law = exact_law(pair, top_k=2)
    assert chi_square_pvalue(samples_of(pair, 16000, method="rrs_wor", k=4, L=2, top_k=2), law) > 1e-3
    g = generate(pair, PROMPT, method="rrs_wor", k=4, L=2, top_k=2, max_new_tokens=12, seed=0)
    assert len(g.token_ids) == 12


def test_kseq_with_top_k_warping_is_exact(pair):
    law = exact_law(pair, top_k=3)
    assert chi_square_pvalue(samples_of(pair, 8000, method="kseq", k=4, L=3, top_k=3), law) > 1e-3


@pytest.mark.parametrize("method,k,L,tau", [("sps", 1, 3, 0.5), ("kseq", 4, 3, 2.0), ("block", 1, 3, 0.7)])
def test_a_draft_temperature_keeps_the_law_exact(pair, method, k, L, tau):
    """q sharpened or flattened by τ changes acceptance, never the output law."""
    law = exact_law(pair)
    assert chi_square_pvalue(samples_of(pair, 5000, method=method, k=k, L=L, draft_temperature=tau), law) > 1e-3


def test_the_draft_s_own_temperature_is_the_default_per_k(pair, monkeypatch):
    """The draft's τ table {k: τ} (pair.draft_settings) applies to rounds of k drafts; an explicit
    draft_temperature overrides it."""
    monkeypatch.setattr(pair, "draft_settings", pair.draft_settings.replace(temperatures={1: 0.3}))
    for s in range(10):
        own = generate(pair, PROMPT, method="sps", L=3, max_new_tokens=8, seed=s)
        assert torch.equal(own.token_ids, generate(pair, PROMPT, method="sps", L=3, max_new_tokens=8, seed=s,
                                                   draft_temperature=0.3).token_ids)
        four = generate(pair, PROMPT, method="kseq", k=4, L=3, max_new_tokens=8, seed=s)  # no entry for 4: τ = 1
        assert torch.equal(four.token_ids, generate(pair, PROMPT, method="kseq", k=4, L=3, max_new_tokens=8, seed=s,
                                                    draft_temperature=1.0).token_ids)
    runs = [generate(pair, PROMPT, method="sps", L=3, max_new_tokens=8, seed=s, draft_temperature=tau).stats
            for s in range(30) for tau in (None, 1.0)]
    assert [r.accepted_hist for r in runs[0::2]] != [r.accepted_hist for r in runs[1::2]]  # τ = 0.3 drafts other tokens


def test_sps_is_kseq_with_one_draft(pair):
    for s in range(20):
        a = generate(pair, PROMPT, method="sps", L=3, max_new_tokens=6, seed=s)
        b = generate(pair, PROMPT, method="kseq", k=1, L=3, max_new_tokens=6, seed=s)
        assert torch.equal(a.token_ids, b.token_ids)


def test_a_biased_rule_is_caught(pair):
    """The chi-square test has teeth: sampling the draft instead of the target is rejected."""
    swapped = tiny_pair(vocab_size=V, seed=1, target_layers=1, draft_layers=1, hidden=32)
    swapped.target = pair.draft
    assert chi_square_pvalue(samples_of(swapped, 5000, method="ar"), exact_law(pair)) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sps", "kseq", "rrs"])
@pytest.mark.parametrize("k,L", list(itertools.product([1, 2, 4], [1, 2, 3])))
def test_full_grid(pair, method, k, L):
    if method == "sps" and k != 1:
        pytest.skip("sps has one draft")
    assert chi_square_pvalue(samples_of(pair, 20000, method=method, k=k, L=L), exact_law(pair)) > 1e-3


@pytest.mark.parametrize("method,k", [("ar", 1), ("sps", 1), ("kseq", 4), ("rrs", 3), ("rrs_wor", 3)])
def test_greedy_equals_target_greedy(pair, method, k):
    want = target_greedy(pair, PROMPT, 24)
    got = generate(pair, PROMPT, method=method, k=k, L=3, max_new_tokens=24, temperature=0, seed=5).token_ids
    assert torch.equal(got, want)


def test_same_seed_same_output_different_seed_different_output(pair):
    a = generate(pair, PROMPT, k=4, L=3, max_new_tokens=30, seed=7).token_ids
    b = generate(pair, PROMPT, k=4, L=3, max_new_tokens=30, seed=7).token_ids
    c = generate(pair, PROMPT, k=4, L=3, max_new_tokens=30, seed=8).token_ids
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("method,k,L", [("sps", 1, 4), ("kseq", 4, 3), ("rrs", 8, 2)])
def test_stats_add_up(pair, method, k, L):
    g = generate(pair, PROMPT, method=method, k=k, L=L, max_new_tokens=40, seed=3)
    s = g.stats
    assert s.target_calls == sum(s.accepted_hist) + s.plain_steps  # one target call per round or plain step
    emitted = sum((n + 1) * c for n, c in enumerate(s.accepted_hist)) + s.plain_steps
    assert len(g.token_ids) == s.new_tokens == 40 == emitted  # rounds never draft past max_new_tokens
    assert s.block_efficiency == pytest.approx(40 / s.target_calls)
    assert 1 <= s.block_efficiency <= L + 1
    assert s.draft_calls == sum(s.draft_lengths) and len(s.draft_lengths) == s.target_calls
    assert max(s.draft_lengths) == L


@pytest.mark.parametrize("kw,match", [
    (dict(k=0), "k must be"), (dict(L=0), "L must be"), (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(temperature=-1), "temperature"), (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
    (dict(method="beam"), "unknown method"), (dict(method="sps", k=4), "k = 1"), (dict(top_k=0), "top_k"),
    (dict(draft_temperature=0), "draft_temperature"), (dict(draft_temperature=float("inf")), "draft_temperature"),
    (dict(draft_temperature=25.0), "draft_temperature"), (dict(draft_temperature=float("nan")), "draft_temperature"),
])
def test_bad_arguments_are_refused(pair, kw, match):
    with pytest.raises(ValueError, match=match):
        generate(pair, PROMPT, **kw)


def test_bad_prompts_are_refused(pair):
    with pytest.raises(ValueError, match="empty"):
        generate(pair, [])
    with pytest.raises(ValueError, match="context"):
        generate(pair, [1] * 250, max_new_tokens=10)
    with pytest.raises(ValueError, match="token ids"):
        generate(pair, [1, 99])
    with pytest.raises(ValueError, match="token ids"):
        generate(pair, "hello")  # a tiny pair has no tokenizer


@pytest.mark.parametrize("form", [f for f in VERIFIERS if f != "batch"])
@pytest.mark.parametrize("room", [None, 1])  # 1: a static cache grows on the first call
def test_every_form_scores_as_the_batch_form_and_rolls_back_to_the_kept_path(pair, form, room):
    from spectr_lib.engine.verifiers import make_verifier
    from spectr_lib.theory.trees import token_tree

    tokens = torch.tensor([[3, 1, 2], [3, 1, 4], [5, 0, 0], [3, 2, 2]])
    node_tok, parent, depth, node_of = token_tree(tokens)
    assert len(node_tok) == 1 + 9 and depth[node_of[1, 3]] == 3 and node_of[0, 2] == node_of[1, 2]
    outs = []
    for name in ("batch", form):
        ver = make_verifier(pair.target, V, form=name)
        ver.prefill(torch.tensor(PROMPT), room=room)
        logits, _ = ver.verify(tokens)
        ver.commit(tokens, row=2, n_accepted=2, new_token=torch.tensor(5))  # a path off the tree's first branch
        step = ver.step()[0]
        ver.push(torch.tensor(0))
        again, _ = ver.verify(tokens.flip(0))  # a second round over the first one's stale positions
        ver.commit(tokens.flip(0), row=2, n_accepted=2, new_token=torch.tensor(4))
        outs.append((logits, step, again, ver.step()[0]))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)  # same scores, roll-backs kept the same paths
    with torch.no_grad():
        ref = pair.target(torch.tensor([PROMPT + [5, 0, 5]])).logits[0, -1]
        ref2 = pair.target(torch.tensor([PROMPT + [5, 0, 5, 0, 3, 1, 4]])).logits[0, -1]
    torch.testing.assert_close(outs[1][1], ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[1][3], ref2, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", list(VERIFIERS))
def test_both_verification_forms_are_exact(pair, form):
    samples = samples_of(pair, 5000, method="kseq", k=4, L=3, verify=form)
    assert chi_square_pvalue(samples, exact_law(pair)) > 1e-3


def test_field_metrics_follow_the_vllm_definitions():
    from spectr_lib.engine.metrics import acceptance_rate_per_position, mean_acceptance_length

    hist = [2, 1, 0, 1]  # 4 rounds accepting 0, 0, 1 and 3 drafts
    assert mean_acceptance_length(hist) == 1 + 4 / 4
    assert acceptance_rate_per_position(hist) == [2 / 4, 1 / 4, 1 / 4]
    assert mean_acceptance_length([]) == 0.0 and acceptance_rate_per_position([]) == []


@pytest.mark.parametrize("at_once", [False, True])
@pytest.mark.parametrize("tree", [False, True])
def test_lazy_verification_logits_equal_the_dense_ones_and_run_the_head_on_what_is_read(pair, tree, at_once,
                                                                                         monkeypatch):
    """One position per read, or (`matmul_order.rows_at_once`) every scored position at the first read, kept."""
    from spectr_lib.engine.verifiers import make_verifier
    from spectr_lib.models import matmul_order

    monkeypatch.setattr(matmul_order, "AT_ONCE_ROWS", 96 if at_once else 0)
    tokens = torch.tensor([[3, 1, 2], [3, 1, 4], [5, 0, 0], [3, 2, 2]])
    got = {}
    for lazy in (False, True):
        ver = make_verifier(pair.target, V, form="tree" if tree else "batch")
        ver.prefill(torch.tensor(PROMPT))
        got[lazy] = ver.verify(tokens, lazy=lazy)[0]
    dense, lazy = got[False], got[True]
    assert lazy.at_once == at_once
    head, reads = lazy.head, []
    lazy.head = lambda h: reads.append(h.shape) or head(h)
    d, scored = pair.target.config.hidden_size, len(lazy.h)  # tree: the root and 9 distinct prefixes; batch: 4 x 4
    assert scored == (10 if tree else 16)
    torch.testing.assert_close(lazy[1, 2], dense[1, 2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lazy[0, 2], dense[0, 2], atol=1e-5, rtol=1e-5)  # the same tree node as [1, 2]
    torch.testing.assert_close(lazy[3, 0], dense[3, 0], atol=1e-5, rtol=1e-5)
    one_by_one = [torch.Size([d])] * (2 if tree else 3)
    assert reads == ([torch.Size([scored, d])] if at_once else one_by_one)
    torch.testing.assert_close(lazy[torch.tensor(1), torch.tensor(2)], dense[1, 2], atol=1e-5, rtol=1e-5)
    assert len(reads) == (1 if at_once else len(one_by_one))  # 0-d tensor keys read the kept rows too
    torch.testing.assert_close(lazy[2], dense[2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lazy.dense(), dense, atol=1e-5, rtol=1e-5)
