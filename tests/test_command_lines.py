"""Every command line refuses a bad flag up front: argparse's one error line naming the flag, exit status 2, no
traceback, no model loaded, under a timeout (a refused flag must never hang)."""
import importlib
import signal

import pytest

BAD = {  # command module -> [(argv, the flag the error line names)]
    "spectr_lib.distill.cli": [
        (["--shard-size", "0"], "--shard-size"), (["--checkpoint-every", "0"], "--checkpoint-every"),
        (["--max-new-tokens", "0"], "--max-new-tokens"), (["--temperature", "-1"], "--temperature"),
        (["--temperature", "0"], "--temperature"), (["--lr", "nan"], "--lr"), (["--lr", "0"], "--lr"),
        (["--batch-seqs", "0"], "--batch-seqs"), (["--depth", "0"], "--depth"), (["--steps", "0"], "--steps"),
        (["--max-prompt", "0"], "--max-prompt"), (["--train-tokens", "0"], "--train-tokens"),
        (["--max-prompts", "0"], "--max-prompts"), (["--gen-batch", "0"], "--gen-batch"),
        (["--head-tokens", "-1"], "--head-tokens"), (["--threads", "0"], "--threads"), (["--seed", "-5"], "--seed"),
        (["--threads", "99999999999999999999"], "--threads"), (["--seed", "40001"], "--seed"),
        (["--seed", "x"], "--seed"), (["--num-layers", "0"], "--num-layers"),
        (["--feature-weight", "-1"], "--feature-weight"), (["--tv-weight", "inf"], "--tv-weight"),
        (["--steps", "1.5"], "--steps")],
    "spectr_lib.tools.draft_eval": [
        (["--temperature", "-1"], "--temperature"), (["--temperature", "1", "nan"], "--temperature"),
        (["--per-category", "0"], "--per-category"), (["--max-new-tokens", "0"], "--max-new-tokens"),
        (["--seed", "-1"], "--seed")],
    "spectr_lib.tools.microbench": [(["--k", "0"], "--k"), (["--L", "0"], "--L"), (["--context", "0"], "--context")],
    "spectr_lib.tools.demo": [
        (["--max-new-tokens", "0"], "--max-new-tokens"), (["--temperature", "-1"], "--temperature"),
        (["--temperature", "nan"], "--temperature"), (["--seed", "-5"], "--seed"), (["--seed", "4294967295"], "--seed")],
    "spectr_lib.tools.bench_verify": [(["--limit", "0"], "--limit"), (["--max-new-tokens", "0"], "--max-new-tokens")],
    "spectr_lib.tools.head_order": [(["--max-new-tokens", "0"], "--max-new-tokens"), (["--repeats", "0"], "--repeats")],
    "spectr_lib.tools.draft_temperature": [
        (["--per-category", "0"], "--per-category"), (["--temperature", "0"], "--temperature"),
        (["--max-new-tokens", "0"], "--max-new-tokens"), (["--seed", "-1"], "--seed")],
    "spectr_lib.tools.gpu_check": [
        (["--smoke-samples", "0"], "--smoke-samples"), (["--per-category", "0"], "--per-category"),
        (["--skip-per-category", "-1"], "--skip-per-category"), (["--limit", "0"], "--limit"),
        (["--max-new-tokens", "0"], "--max-new-tokens"), (["--smoke-samples", "10"], "--smoke-samples"),
        (["--L", "8", "--max-new-tokens", "8"], "--L 8"),
        (["--k", "0"], "--k"), (["--L", "9"], "--L"), (["--temperature", "nan"], "--temperature")],
    "spectr_lib.distill.answers": [
        (["--shard-size", "0"], "--shard-size"), (["--batch", "0"], "--batch"), (["--batch-tokens", "0"], "--batch-tokens"),
        (["--max-new-tokens", "0"], "--max-new-tokens"), (["--limit", "0"], "--limit"), (["--threads", "0"], "--threads"),
        (["--seed", "-1"], "--seed")],
    "spectr_lib.distill.corpus": [(["--n", "0"], "--n"), (["--seed", "-1"], "--seed")],
    "spectr_lib.distill.scaling": [(["--budgets", "1k", "--passes", "0"], "--passes"),
                                   (["--budgets", "1k", "--passes", "nan"], "--passes")],
    "spectr_lib.tools.offline_bundle": [(["pack", "bundle", "--part-mib", "0"], "--part-mib")],
    "spectr_lib.tools.bench": [
        (["--max-new-tokens", "0"], "--max-new-tokens"), (["--k", "0"], "--k"), (["--temperature", "-1"], "--temperature"),
        (["--limit", "0"], "--limit"), (["--lookup-L", "0"], "--lookup-L"), (["--seed", "-1"], "--seed"),
        (["--k", "100"], "--k"), (["--L", "1000"], "--L"), (["--L", "8", "--max-new-tokens", "8"], "--L 8"),
        (["--per-category", "0"], "--per-category"), (["--skip-per-category", "-1"], "--skip-per-category"),
        (["--temperature", "1", "inf"], "--temperature"), (["--k", "two"], "--k"),
        (["--device", "cuda:99"], "--device"), (["--skip-per-category", "3"], "--per-category too"),
        (["--categories", "no-such-category"], "--categories no-such-category")],
}
CASES = [(module, argv, flag) for module, cases in BAD.items() for argv, flag in cases]


@pytest.fixture
def within_60_s():
    """A case still running after 60 s fails (a refused flag must not hang)."""
    def late(*_):
        raise TimeoutError("the command did not return within 60 s")

    old = signal.signal(signal.SIGALRM, late)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: a refused flag is refused before one."""
    from spectr_lib.models import load

    def loaded(*a, **k):
        raise AssertionError("a model was loaded")

    for name in ("load_pair", "load_target", "tiny_pair", "load_draft"):
        monkeypatch.setattr(load, name, loaded)


def test_the_table_covers_at_least_one_bad_value_per_numeric_flag_and_enough_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize("module, argv, flag", CASES, ids=[f"{m.rsplit('.', 1)[1]} {' '.join(a)}" for m, a, _ in CASES])
def test_a_bad_flag_is_refused_with_one_error_line_and_exit_2(module, argv, flag, no_model, within_60_s, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[0].startswith("usage:") and "error:" in err[-1]  # argparse's usage, then one error line
    assert flag in err[-1] and "Traceback" not in "\n".join(err)
