"""Files written whole or not at all: a run killed while writing leaves the previous file (or none), never half
of one. Every results, report and settings file the package writes goes through `write_text`."""
from __future__ import annotations

import os
from pathlib import Path


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically: to a temporary file beside it, then renamed over it (a rename within a
    folder is atomic on POSIX and Windows). Returns the path. OSError as `Path.write_text` raises it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
