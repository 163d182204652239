"""The traced round (engine/trace.py) is the decoder's first round: same tokens, consistent survivors, caches."""
import pytest
import torch

from spectr_lib.engine.decoder import generate
from spectr_lib.engine.trace import trace_round
from spectr_lib.engine.verifiers import VERIFIERS
from spectr_lib.models.load import tiny_pair
from spectr_lib.theory.trees import token_tree

PROMPT = [1, 4, 2]


@pytest.fixture(scope="module")
def pair():
    return tiny_pair(vocab_size=6, seed=1, target_layers=1, draft_layers=1, hidden=32)


@pytest.mark.parametrize("method,k,L,form", [("kseq", 4, 3, "tree"), ("kseq", 4, 3, "batch"), ("rrs", 3, 2, "tree"),
                                             ("sps", 1, 4, "batch"), ("rrs_wor", 3, 2, "tree")])
def test_trace_is_the_first_round_of_generate(pair, method, k, L, form):
    for seed in range(15):
        t = trace_round(pair, PROMPT, method=method, k=k, L=L, seed=seed, verify=form)
        g = generate(pair, PROMPT, method=method, k=k, L=L, max_new_tokens=L + 1, seed=seed, verify=form)
        assert torch.equal(t.new_tokens, g.token_ids[: t.accepted + 1])
        assert g.stats.rounds[0].accepted == t.accepted


@pytest.mark.parametrize("form", list(VERIFIERS))
def test_positions_survivors_and_caches_agree(pair, form):
    tree = form != "batch"  # the tree forms: one row of the drafts' prefix tree
    k, L = 4, 3
    bonus = correction = 0
    for seed in range(30):
        t = trace_round(pair, PROMPT, k=k, L=L, seed=seed, verify=form)
        rows, out = t.tokens.tolist(), t.new_tokens.tolist()
        assert len(out) == t.accepted + 1 and t.bonus == (t.accepted == L)
        assert len(t.positions) == min(t.accepted + 1, L)
        assert t.positions[0].alive == list(range(k))
        for i, pos in enumerate(t.positions):
            assert pos.depth == i + 1 and pos.token == out[i]
            assert pos.accepted == (out[i] in pos.candidates) == (i < t.accepted)
            assert pos.survivors == [r for r in pos.alive if rows[r][i] == out[i]]
            if i + 1 < len(t.positions):
                assert t.positions[i + 1].alive == pos.survivors
        assert rows[t.row][: t.accepted] == out[: t.accepted]
        bonus += t.bonus
        correction += not t.bonus
        context = len(PROMPT) - 1  # cached before the round; the last prompt token is pending
        nodes = len(token_tree(t.tokens)[0])
        assert t.tree_nodes == nodes and t.form == form
        assert t.positions_scored == (nodes if tree else k * (L + 1))
        assert t.target_after_verify == ((1, context + nodes) if tree else (k, context + L + 1))
        assert t.target_after_commit == (1, context + 1 + t.accepted)
        assert t.target_rolled_back == t.target_after_verify.positions - context - 1 - t.accepted
        assert t.draft_after_draft.rows == k and t.draft_after_commit.rows == 1
        # a standalone draft LM fed the whole prompt, then L − 1 drafted tokens; it keeps the accepted ones
        assert t.draft_after_draft == (k, len(PROMPT) + L - 1)
        assert t.draft_after_commit == (1, len(PROMPT) + min(t.accepted, L - 1))
    assert bonus and correction  # both endings were exercised


def test_bad_arguments_are_refused(pair):
    with pytest.raises(ValueError, match="method"):
        trace_round(pair, PROMPT, method="block")
    with pytest.raises(ValueError, match="sps"):
        trace_round(pair, PROMPT, method="sps", k=2)
    with pytest.raises(ValueError, match="seed"):
        trace_round(pair, PROMPT, seed=None)
    with pytest.raises(TypeError):
        trace_round(pair, PROMPT, L=1.5)
