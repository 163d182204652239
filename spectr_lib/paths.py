"""Where the project's files live: the shipped data folder, the default draft, the user cache (no model import)."""
from __future__ import annotations

import os
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
# the default draft: EAGLE-style, reading a fusion of three target layers (its model card is in the folder)
DEFAULT_DRAFT_DIR = DATA_DIR / "models" / "smollm2-draft-fused"
# Spec-Bench's questions sit next to the repository (../shared/...), found from here whatever the working
# directory; $SPECTR_SPEC_BENCH points elsewhere
SPEC_BENCH = Path(os.environ.get("SPECTR_SPEC_BENCH", DATA_DIR.parent.parent / "shared" / "data" / "spec_bench" / "question.jsonl"))


def cache_dir() -> Path:
    """Where converted models and calibrations are kept: $SPECTR_CACHE, else ~/.cache/spectr_lib."""
    return Path(os.environ.get("SPECTR_CACHE", Path.home() / ".cache" / "spectr_lib"))
