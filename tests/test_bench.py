"""The benchmark runner on a tiny pair: every method, Hugging Face baselines included, yields counted rows."""
import torch

from spectr_lib.tools.bench import run
from spectr_lib.tools.bench_results import Config, category_table, from_json, profile_table, render, table, to_json
from spectr_lib.models.load import tiny_pair


def test_every_row_counts_tokens_calls_and_time():
    pair = tiny_pair(vocab_size=32, seed=3)
    prompts = [{"category": c, "ids": torch.tensor(ids)} for c, ids in (("a", [1, 5, 7, 2]), ("b", [3, 3, 9]))]
    configs = [Config("hf_ar"), Config("hf_assisted"), Config("hf_lookup", 1, 3), Config("ar"), Config("sps", 1, 3),
               Config("kseq", 2, 3), Config("rrs", 2, 3)]
    seen = []
    results = run(pair, prompts, configs, max_new_tokens=12, temperature=1.0, seed=0, progress=False,
                  on_prompt=lambda res, done: seen.append((done, sum(r.tokens for r in res))))
    assert seen == [(1, 12 * len(configs)), (2, 24 * len(configs))]  # partial results after each prompt
    by = {r.config.name: r for r in results}
    assert all(r.tokens == 24 and r.seconds > 0 for r in results), [(r.config.name, r.tokens) for r in results]
    assert by["hf_ar"].block_efficiency == 1.0 and by["ar"].block_efficiency == 1.0
    for name in ("hf_assisted", "sps k=1 L=3", "kseq k=2 L=3", "rrs k=2 L=3"):
        assert 1.0 <= by[name].block_efficiency <= 4.0, name
    assert set(by["kseq k=2 L=3"].per_category) == {"a", "b"}
    md = table(results)
    assert "speed-up vs hf_ar | speed-up vs ar" in md and md.count("\n") == len(configs) + 1


def test_category_table_has_one_column_per_category():
    pair = tiny_pair(vocab_size=32, seed=4)
    prompts = [{"category": c, "ids": torch.tensor([1, 2, 3])} for c in ("x", "y")]
    results = run(pair, prompts, [Config("ar"), Config("kseq", 2, 2)], max_new_tokens=6, temperature=1.0, seed=0,
                  progress=False)
    md = category_table(results)
    assert "| method | k | L | x | y |" in md and "| kseq | 2 | 2 |" in md and "×" in md
    assert category_table(results[:1]) != "" and category_table([]) == ""


def test_saved_results_render_back_to_the_same_table(tmp_path):
    pair = tiny_pair(vocab_size=32, seed=5)
    prompts = [{"category": c, "ids": torch.tensor([4, 5, 6])} for c in ("x", "y")]
    results = run(pair, prompts, [Config("ar"), Config("sps", 1, 2), Config("kseq", 2, 2)], max_new_tokens=6,
                  temperature=1.0, seed=0, progress=False)
    again = from_json(to_json(results))
    assert table(again) == table(results)
    report = {"pair": "tiny", "device": "cpu", "prompts": 2, "max_new_tokens": 6, "notes": ["a note"],
              "runs": {"1.0": {"results": to_json(results), "token_acceptance": {"overall": 0.5}}}}
    md = render(report, tmp_path)
    assert "a note" in md and table(results) in md and (tmp_path / "plots_T1.0.png").exists()
    assert (tmp_path / "table.md").read_text() == md + "\n"


def test_the_round_profile_splits_each_configurations_time(tmp_path):
    """bench --profile: per configuration and (k, L) chosen, rounds, tokens per round and ms by phase; the rounds
    and tokens add up to the row's, it survives the JSON round trip, and render prints it only when asked."""
    pair = tiny_pair(vocab_size=32, seed=6)
    prompts = [{"category": c, "ids": torch.tensor([4, 5, 6])} for c in ("x", "y")]
    results = run(pair, prompts, [Config("ar"), Config("kseq", 2, 3)], max_new_tokens=10, temperature=1.0, seed=0,
                  progress=False)
    for r in results:
        assert sum(row["tokens"] for row in r.profile.values()) == r.tokens == 20
        assert all(row["verify_ms"] > 0 for row in r.profile.values())
    assert set(results[0].profile) == {"plain"} and "2,3" in results[1].profile
    md = profile_table(results)
    assert "| ar | 1 | – | plain | 20 | 1.00 |" in md and "| kseq | 2 | 3 | 2,3 |" in md
    assert profile_table(from_json(to_json(results))) == md
    report = {"pair": "tiny", "device": "cpu", "prompts": 2, "max_new_tokens": 10,
              "runs": {"1.0": {"results": to_json(results), "token_acceptance": {}}}}
    assert md not in render(report, tmp_path) and md in render({**report, "profile": True}, tmp_path)


def test_machine_note_names_threads_and_warns_when_busy(monkeypatch):
    import os

    from spectr_lib.tools.timing import machine_note

    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert "torch threads" in machine_note() and "WARNING" not in machine_note()
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 0.0, 0.0))
    assert "WARNING" in machine_note()


def test_a_partial_run_renders_as_partial(tmp_path):
    pair = tiny_pair(vocab_size=32, seed=5)
    results = run(pair, [{"category": "x", "ids": torch.tensor([4, 5, 6])}], [Config("ar")], max_new_tokens=4,
                  temperature=1.0, seed=0, progress=False)
    report = {"pair": "tiny", "device": "cpu", "prompts": 3, "max_new_tokens": 4,
              "runs": {"1.0": {"results": to_json(results), "token_acceptance": {}, "prompts_done": 1}}}
    assert "## T = 1.0 (partial: the first 1 prompts)" in render(report, tmp_path)


import pytest


@pytest.mark.parametrize("argv,message", [
    (["--k", "0"], "argument --k: 0 is out of range: give a whole number in [1, 64]"),
    (["--L", "2", "-1"], "argument --L: -1 is out of range"),
    (["--limit", "0"], "argument --limit: 0 is out of range: give a whole number ≥ 1"),
    (["--max-new-tokens", "0"], "argument --max-new-tokens: 0 is out of range"),
    (["--temperature", "-1"], "argument --temperature: -1 is out of range: give a finite number ≥ 0"),
    (["--temperature", "nan"], "finite"), (["--L", "4", "--max-new-tokens", "3"], "shorter than --max-new-tokens (3)"),
    (["--render", "no/such/results.json"], "no such file"), (["--prompts", "no/such.jsonl"], "no such file"),
])
def test_bench_rejects_bad_arguments_before_loading_models(argv, message, capsys):
    from spectr_lib.tools.bench import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_lookup_rows_are_their_own_rows_and_survive_a_round_trip():
    pair = tiny_pair(vocab_size=8, seed=5)
    prompts = [{"category": "x", "ids": torch.tensor([4, 5, 6, 4, 5, 6, 4, 5])}]  # repeats: lookups in play
    configs = [Config("ar"), Config("kseq", 2, 3), Config("kseq", 2, 3, lookup=True)]
    results = run(pair, prompts, configs, max_new_tokens=16, temperature=1.0, seed=0, progress=False)
    assert [r.config.name for r in results] == ["ar", "kseq k=2 L=3", "kseq+lookup k=2 L=3"]
    assert all(r.tokens == 16 for r in results)
    again = from_json(to_json(results))
    assert [r.config.lookup for r in results] == [False, False, True]  # None: the draft's own setting (off here)
    assert [r.config for r in again] == [r.config for r in results] and table(again) == table(results)
    assert "| kseq+lookup | 2 | 3 |" in table(results)


def test_a_draft_with_lookup_on_runs_its_rows_with_lookup(monkeypatch):
    """Rows left at the draft's own setting take prompt lookup where the draft has it on (the shipped draft),
    and say so in the table; an explicit lookup=False row stays without it."""
    from spectr_lib.tools import bench

    pair = tiny_pair(vocab_size=8, seed=5)
    monkeypatch.setattr(pair, "draft_settings", pair.draft_settings.replace(prompt_lookup=True))
    prompts = [{"category": "x", "ids": torch.tensor([4, 5, 6, 4, 5, 6, 4, 5])}]
    configs = [Config("ar"), Config("sps", 1, 3), Config("sps", 1, 3, lookup=False)]
    seen, real = [], bench.generate
    monkeypatch.setattr(bench, "generate", lambda *a, **kw: seen.append((kw["method"], kw["lookup"])) or real(*a, **kw))
    results = run(pair, prompts, configs, max_new_tokens=16, temperature=1.0, seed=0, progress=False)
    assert [r.config.label for r in results] == ["ar", "sps+lookup", "sps"]
    assert seen == [("ar", False), ("sps", True), ("sps", False)]  # what generate was told, row by row
    for bad, error in ((Config("sps", 1, 3, lookup="yes"), TypeError), (Config("ar", lookup=True), ValueError)):
        with pytest.raises(error, match="lookup"):
            run(pair, prompts, [bad], max_new_tokens=4, temperature=1.0, seed=0, progress=False)


def test_tokens_per_round_and_its_standard_error():
    from spectr_lib.tools.bench_results import tokens_per_round

    hist = [3, 1, 0, 2]  # rounds accepting 0, 1, 2, 3 drafts: tokens 1,1,1,2,4,4
    mean, se = tokens_per_round(hist)
    tokens = torch.tensor([1, 1, 1, 2, 4, 4], dtype=torch.float64)
    assert mean == pytest.approx(tokens.mean().item())
    assert se == pytest.approx(tokens.std().item() / 6 ** 0.5)  # sample standard deviation / sqrt(rounds)
    with pytest.raises(ValueError, match="two rounds"):
        tokens_per_round([1, 0])


def test_paired_by_category_takes_categories_as_the_units():
    from scipy import stats

    from spectr_lib.tools.bench_results import paired_by_category

    a = {"per_category": {"x": {"block_efficiency": 1.5}, "y": {"block_efficiency": 2.9}, "z": {"block_efficiency": 1.2}}}
    b = {"per_category": {"x": {"block_efficiency": 1.6}, "y": {"block_efficiency": 1.5}, "z": {"block_efficiency": 1.4},
                          "w": {"block_efficiency": 9.0}}}  # a category only one row has is left out
    mean, se, n = paired_by_category(a, b)
    t = stats.ttest_rel([1.6, 1.5, 1.4], [1.5, 2.9, 1.2])  # scipy's paired t-test: the same statistic
    assert n == 3 and mean == pytest.approx((0.1 - 1.4 + 0.2) / 3) and mean / se == pytest.approx(t.statistic)
    with pytest.raises(ValueError, match="two categories"):
        paired_by_category(a, {"per_category": {"x": {"block_efficiency": 1.0}}})
    with pytest.raises(ValueError, match="no spread"):  # a row against itself: every difference 0
        paired_by_category(a, a)


def test_bench_refuses_files_that_are_not_what_the_flag_takes(tmp_path, capsys):
    from spectr_lib.tools.bench import main

    (tmp_path / "notes.txt").write_text("not json")
    (tmp_path / "other.json").write_text('{"a": 1}')
    for argv, message in ((["--render", str(tmp_path / "notes.txt")], "--render"),
                          (["--render", str(tmp_path / "other.json")], "not a benchmark report"),
                          (["--out", str(tmp_path / "notes.txt")], "is a file: give a folder")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err
