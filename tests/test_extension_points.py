"""The extension points of docs/architecture.md cost what it says: a verification form is one class and one registry
line, a selection rule (its draft law included) is one record; each is then run by `generate` and proven exact by
the chi-square harness, and a wrong variant of each is rejected by the same test (its power, measured on this tiny
pair: the row-shifted form gives p ≈ 1e-43 with 1,000 samples and 1e-192 with 2,000; the accept-all rule p = 0.0
with 2,000; the threshold is 1e-6). The engine names no method in its code outside engine/methods.py, and no
engine function is longer than 60 lines."""
import ast
from pathlib import Path

import pytest
import torch

from conftest import chi_square_pvalue, exact_law, samples_of
from spectr_lib.engine import verifiers
from spectr_lib.engine.decoder import generate
from spectr_lib.engine.methods import get_method, method_names
from spectr_lib.theory import selection

ENGINE = Path(__file__).resolve().parent.parent / "spectr_lib" / "engine"


class DedupBatch(verifiers.BatchVerifier):
    """A new form: the batch form scoring each distinct draft once (drafts can repeat)."""

    def verify(self, tokens, lazy=False):
        unique, self.inverse = torch.unique(tokens, dim=0, return_inverse=True)
        logits, features = super().verify(unique)
        self.positions = unique.shape[0] * (tokens.shape[1] + 1)
        return logits[self.inverse], features[self.inverse] if features is not None else None

    def commit(self, tokens, row, n_accepted, new_token):
        super().commit(tokens, int(self.inverse[row]), n_accepted, new_token)


class ShiftedRows(DedupBatch):
    """A planted defect: the scores are mapped back to the drafts one row off (each draft judged by its
    neighbour's target distributions)."""

    def verify(self, tokens, lazy=False):
        logits, features = super().verify(tokens, lazy)
        return logits.roll(1, 0), features


def test_a_new_verification_form_is_one_class_and_one_registry_line(pair, monkeypatch):
    monkeypatch.setitem(verifiers.VERIFIERS, "dedup", DedupBatch)
    g = generate(pair, [1, 4, 2], method="kseq", k=4, L=3, max_new_tokens=12, seed=3, verify="dedup")
    assert g.stats.rounds and min(r.positions for r in g.stats.rounds) <= 4 * 4  # repeated drafts scored once
    assert chi_square_pvalue(samples_of(pair, 5000, method="kseq", k=4, L=3, verify="dedup"), exact_law(pair)) > 1e-3
    monkeypatch.setitem(verifiers.VERIFIERS, "shifted", ShiftedRows)  # the negative control, by the same test
    assert chi_square_pvalue(samples_of(pair, 3000, method="kseq", k=4, L=3, verify="shifted"), exact_law(pair)) < 1e-6
    with pytest.raises(ValueError, match=", ".join(f"'{name}'" for name in verifiers.VERIFIERS)) as info:
        generate(pair, [1, 4, 2], verify="fused")
    assert "'dedup', 'shifted'" in str(info.value)  # the registered forms are named


def _distinct_rrs(**changes):
    """A new rule assembled as one record: RRS judging distinct first drafts (drawn without replacement), deeper
    positions decided by RRS on the i.i.d. continuations."""
    fields = dict(name="rrs_distinct", label="RRS, distinct first drafts", source="Jeon et al. 2024", iid=False,
                  pass_probabilities=selection.RULES["rrs_wor"].pass_probabilities,
                  draw=selection.RULES["rrs_wor"].draw, tuple_law=selection.RULES["rrs_wor"].tuple_law,
                  first_draw=selection.first_distinct, deeper="rrs")
    return selection.Rule(**{**fields, **changes})


def test_a_new_rule_with_its_own_draft_law_is_one_record(pair, monkeypatch):
    monkeypatch.setitem(selection.RULES, "rrs_distinct", _distinct_rrs())
    assert "rrs_distinct" in method_names() and get_method("rrs_distinct").by_position
    assert chi_square_pvalue(samples_of(pair, 5000, method="rrs_distinct", k=4, L=3), exact_law(pair)) > 1e-3
    # the negative control: a record whose pass probabilities accept every draft (the output follows q, not p)
    def accept_all(p, q, drafts):
        return torch.ones(drafts.shape, dtype=p.dtype), lambda: p

    monkeypatch.setitem(selection.RULES, "accept_all", _distinct_rrs(name="accept_all", pass_probabilities=accept_all,
                                                                     first_draw=selection.first_iid, iid=True,
                                                                     deeper=None))
    assert chi_square_pvalue(samples_of(pair, 3000, method="accept_all", k=2, L=3), exact_law(pair)) < 1e-6


def test_a_rule_without_a_round_draft_law_is_not_a_method(pair):
    """SpecHub's record has no `first_draw` (its drafts are a hub and one other token): generate refuses it."""
    assert "spechub" in selection.RULES and "spechub" not in method_names()
    with pytest.raises(ValueError, match="the rule 'spechub' has no draft law for a decoding round"):
        generate(pair, [1, 4, 2], method="spechub", k=2)


def _engine_sources():
    return {p.name: ast.parse(p.read_text()) for p in ENGINE.glob("*.py")}


def test_the_engine_names_no_method_outside_its_registry():
    names = set(method_names()) - {"ar"}
    found = []
    for file, tree in _engine_sources().items():
        if file == "methods.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for c in [node.left, *node.comparators]:
                    elts = c.elts if isinstance(c, (ast.Tuple, ast.List, ast.Set)) else [c]
                    found += [f"{file}:{node.lineno} {e.value!r}" for e in elts
                              if isinstance(e, ast.Constant) and e.value in names]
    assert not found, found


def test_no_engine_function_is_longer_than_60_lines():
    long = [f"{file}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for file, tree in _engine_sources().items() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60]
    assert not long, long


def test_settings_of_another_kind_of_draft_are_refused(pair):
    """dataclasses.replace(pair, draft=other) keeps the old draft's settings: a feature draft's settings on a causal
    LM are refused before any model call, with what to do instead."""
    from dataclasses import replace

    from spectr_lib.models.draft_settings import DraftSettings

    wrong = replace(pair, draft_settings=DraftSettings(kind="feature_draft"))
    with pytest.raises(ValueError, match="give the draft its own settings"):
        generate(wrong, [1, 4, 2], method="sps", L=2)


def test_trace_round_lays_open_a_round_of_a_new_form(pair, monkeypatch):
    """A form whose verify returns plain tensors (not lazy logits) is traced too."""
    from spectr_lib.engine.trace import trace_round

    monkeypatch.setitem(verifiers.VERIFIERS, "dedup", DedupBatch)
    t = trace_round(pair, [1, 4, 2], method="kseq", k=4, L=3, seed=1, verify="dedup")
    g = generate(pair, [1, 4, 2], method="kseq", k=4, L=3, max_new_tokens=4, seed=1, verify="dedup")
    assert t.form == "dedup" and torch.equal(t.new_tokens, g.token_ids[: t.accepted + 1])
    assert t.target_logits.shape == (4, 4, pair.vocab_size)
