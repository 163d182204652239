"""The GPU check on a machine without one: it says so once and stops (exit status 1), running no later phase."""
import json

import pytest
import torch

from spectr_lib.tools.gpu_check import main


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_check_stops_after_env(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--device", "cuda", "--out", str(tmp_path), "--phases", "env", "smoke", "costs"])
    assert exit_.value.code == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(report["phases"]) == ["env"] and report["phases"]["env"]["status"] == "failed"
    assert "no CUDA device" in capsys.readouterr().out


def test_the_forms_phase_gets_the_dtype_and_prompts(tmp_path, monkeypatch):
    from spectr_lib.tools import bench_verify

    seen = []
    monkeypatch.setattr(bench_verify, "main", lambda argv: seen.append(argv))
    with pytest.raises(SystemExit) as exit_:
        main(["--device", "cpu", "--out", str(tmp_path), "--phases", "forms", "--dtype", "float32", "--prompts", "p.jsonl"])
    assert exit_.value.code == 0
    argv = seen[0]
    assert argv[argv.index("--dtype") + 1] == "float32" and argv[argv.index("--prompts") + 1] == "p.jsonl"


def test_bench_verify_names_a_missing_prompts_file_before_loading(monkeypatch):
    from spectr_lib.models import load
    from spectr_lib.tools.bench_verify import main as forms_main

    monkeypatch.setattr(load, "load_pair", lambda **kw: pytest.fail("models loaded before the prompts were read"))
    with pytest.raises(FileNotFoundError, match="nothing.jsonl not found"):
        forms_main(["--prompts", "nothing.jsonl"])


def test_the_smoke_phase_passes_on_a_cpu():
    """The same checks the GPU runs first (greedy equality in every form, chi-square of the first two tokens)."""
    from spectr_lib.tools.gpu_check import smoke

    from spectr_lib.engine.decoder import METHODS
    from spectr_lib.engine.verifiers import VERIFIERS

    out = smoke(200, "cpu")
    assert len(out["greedy_equal"]) == len(METHODS) * len(VERIFIERS) and all(out["greedy_equal"].values())
    assert set(out["chi2_p"]) == {"kseq", "rrs_wor", "block"} and min(out["chi2_p"].values()) > 1e-3
