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


def test_links_are_written_through_and_permissions_kept(tmp_path):
    target, link = tmp_path / "target.json", tmp_path / "link.json"
    target.write_text("old")
    target.chmod(0o600)
    link.symlink_to(target)
    files.write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o600
    long_name = tmp_path / ("x" * 250)  # the temporary name stays short: any name the folder takes works
    files.write_text(long_name, "ok")
    assert long_name.read_text() == "ok"
    fresh = tmp_path / "fresh.txt"
    files.write_text(fresh, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (fresh.stat().st_mode & 0o777) == 0o666 & ~umask  # as a plain write would make it
    with pytest.raises(IsADirectoryError):
        files.write_text(tmp_path, "x")
