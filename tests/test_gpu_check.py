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
