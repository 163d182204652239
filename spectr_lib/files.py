"""Files written whole or not at all: a run killed while writing leaves the previous file (or none), never half
of one. Every results, report and settings file the package writes goes through `write_text`."""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically: to a temporary file in the same folder, then renamed over it (a rename
    within a folder is atomic on POSIX and Windows). A symbolic link is written through (its target is replaced)
    and an existing file keeps its permission bits. Returns `path`. OSError as `Path.write_text` raises it (a
    missing folder, a folder at `path`, no permission)."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    if real.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a file")
    mode = stat.S_IMODE(real.stat().st_mode) if real.exists() else None
    fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, mode if mode is not None else 0o666 & ~_umask())
        os.replace(tmp, real)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
