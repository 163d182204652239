"""Files are written whole or not at all."""
import os

import pytest

from spectr_lib import files


def test_write_text_replaces_the_file_whole(tmp_path):
    path = tmp_path / "results.json"
    files.write_text(path, "old")
    assert files.write_text(path, "new") == path and path.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["results.json"]  # no temporary file left


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    path.write_text("previous")

    def killed(src, dst):
        raise KeyboardInterrupt  # the run is stopped between the write and the rename

    monkeypatch.setattr(files.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        files.write_text(path, "half")
    assert path.read_text() == "previous" and sorted(os.listdir(tmp_path)) == ["results.json"]
