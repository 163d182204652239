"""Teacher pass over the stored answers: the target's features and soft labels, recomputed at training time.

The repository keeps only token ids (data/distill/answers, see answers.py). This pass re-encodes each prompt
exactly as the answer job did (chat template, last `max_prompt_tokens` tokens), appends the answer, runs the
target once per batch of similar-length sequences with its hidden states on, and keeps per sequence

    ids       int64 [T]            prompt + answer
    start     int                  where the answer starts
    features  bfloat16 [T, n·d]    hidden_states[l] for l in `layers` (default: low, middle, last), concatenated
    top_p     float16 [T, TOP_K]   the target's top-k next-token probabilities (T = 1, unwarped)
    top_ids   int32 [T, TOP_K]

in one cache shard per answer shard (`<cache>/distill/teacher/shard-NNNN.pt`, written atomically), so a rerun
labels only shards it has not labelled yet.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import StageError
from ..paths import cache_dir
from ..runtime import release_freed_memory
from . import corpus
from .answers import ANSWERS_DIR, SHARDS, shard_number
from .data import label, save_shard
from ..files import write_text

TEACHER_DIR = cache_dir() / "distill" / "teacher"
# hidden_states indices kept: after layer 4 (low), after layer 16 (middle), the last normed state (high)
LAYERS = (4, 16, -1)


def answer_records(shard: Path, tokenizer, prompts: dict[int, str], max_prompt_tokens: int = 768) -> list[dict]:
    """{"ids", "start", "prompt_id"} of every answer in one answer shard, prompts encoded as the job did."""
    from ..prompts import encode_chat

    z = np.load(shard)
    if "max_prompt_tokens" in z.files:  # the cut the answer job used (stored since settings were recorded)
        max_prompt_tokens = int(z["max_prompt_tokens"])
    out = []
    for i, pid in enumerate(z["prompt_id"]):
        if int(pid) not in prompts:
            raise ValueError(f"{shard.name}: prompt id {int(pid)} is not in the corpus; was the corpus rebuilt?")
        enc = encode_chat(tokenizer, prompts[int(pid)])[-max_prompt_tokens:]
        ans = torch.from_numpy(z["tokens"][z["offsets"][i] : z["offsets"][i + 1]].astype(np.int64))
        out.append({"ids": torch.cat([enc, ans]), "start": len(enc), "prompt_id": int(pid)})
    return out


def shard_range(text: str) -> range:
    """`--answer-shards` parsed: "5-29" (both ends included) or "7" → range of shard numbers.
    ValueError, saying the expected form, for anything else."""
    parts = text.split("-")
    if not 1 <= len(parts) <= 2 or not all(x.strip().isdigit() for x in parts):
        raise ValueError(f"{text!r}: give a shard number or a range of them, e.g. 5-29")
    first, last = int(parts[0]), int(parts[-1])
    if last < first:
        raise ValueError(f"{text!r}: the range is empty (write the smaller number first)")
    return range(first, last + 1)


def select_shards(answers: Path = ANSWERS_DIR, shards: range | None = None) -> list[Path]:
    """The answer shards in `answers` (only those numbered in `shards` when given), in name order.
    ValueError, saying what to do, when there is none."""
    all_shards = sorted(Path(answers).glob(SHARDS))
    if not all_shards:
        raise ValueError(f"no answer shards in {answers}: run `python -m spectr_lib.distill.answers` first")
    picked = all_shards if shards is None else [s for s in all_shards if shard_number(s) in shards]
    if not picked:
        raise ValueError(f"no answer shard in {answers} is numbered {shards.start}-{shards.stop - 1} (they run "
                         f"from {shard_number(all_shards[0])} to {shard_number(all_shards[-1])})")
    return picked


def run(target, tokenizer, out: Path = TEACHER_DIR, answers: Path = ANSWERS_DIR, layers=LAYERS,
        corpus_file: Path = corpus.CORPUS_FILE, batch_tokens: int = 4096, shards: range | None = None) -> list[Path]:
    """Label every answer shard not labelled yet in `out` (only those numbered in `shards` when given: a run
    that continues a draft on answers it has not seen); returns the teacher shards in name order.
    StageError when no answer shard is there (or none in `shards`)."""
    try:
        picked = select_shards(answers, shards)
    except ValueError as err:
        raise StageError(str(err)) from None
    prompts = {r["id"]: r["prompt"] for r in corpus.read(corpus_file, "train")}
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "layers.txt", " ".join(str(i) for i in layers))
    done = []
    for shard in tqdm(picked, desc="teacher shards", unit="shard"):
        path = out / (shard.stem + ".pt")
        if not path.exists():
            save_shard(label(target, answer_records(shard, tokenizer, prompts), layers, batch_tokens), path)
            release_freed_memory()  # the allocator keeps freed blocks (runtime.keep_freed_memory): give them back
        done.append(path)
    return done


def teacher_layers(folder: Path = TEACHER_DIR) -> tuple[int, ...]:
    """The hidden_states indices a teacher folder holds (see `run`)."""
    f = Path(folder) / "layers.txt"
    return tuple(int(i) for i in f.read_text().split()) if f.exists() else (-1,)


def first_answer_tokens(records: list[dict], tokens: int | None) -> list[dict]:
    """The first records, up to the one that reaches `tokens` answer tokens (all when None): a prefix of the
    data, the same for every run of a data-scaling curve."""
    if tokens is None:
        return records
    out, n = [], 0
    for r in records:
        if n >= tokens:
            break
        out.append(r)
        n += len(r["ids"]) - r["start"]
    return out


def load_records(folder: Path = TEACHER_DIR, limit_tokens: int | None = None,
                 shards: range | None = None) -> list[dict]:
    """Teacher records of every shard in name order (only those numbered in `shards` when given;
    `first_answer_tokens` of them with limit_tokens)."""
    out = []
    for shard in sorted(Path(folder).glob("shard-*.pt")):
        if shards is not None and shard_number(shard) not in shards:
            continue
        out.extend(torch.load(shard, weights_only=False))
        if limit_tokens is not None and sum(len(r["ids"]) - r["start"] for r in out) >= limit_tokens:
            break  # no need to read further shards
    return first_answer_tokens(out, limit_tokens)
