"""On-policy answers at scale, stored as token ids only: `python -m spectr_lib.distill.answers`.

Reads the prompt corpus (data/distill/prompts.jsonl.gz, see corpus.py), samples one answer per prompt from
the target with Hugging Face `generate` (batched, left-padded, prompts of a batch of similar length), and
writes shards data/distill/answers/shard-NNNN.npz every `--shard-size` prompts (numbered on from the last
shard on disk):

    prompt_id  int32 [n]     row of the corpus
    offsets    int64 [n + 1] answer i is tokens[offsets[i]:offsets[i + 1]]
    tokens     uint16 [Σ]    answer token ids (EOS included when reached)
    temperature, top_p  float32 [n]

Prompts are re-encoded from the corpus with the tokenizer's chat template at training time; hidden states
and soft labels are recomputed by a teacher pass, so the repository keeps only these ids. A restart skips
every prompt already answered in a shard on disk (a shard is written atomically), whatever shard size the
earlier runs used, so runs on different machines (a GPU with large batches, a CPU) continue one another. Three prompts in four are answered at T = 1,
one in four at T = 0.7 with top-p 0.9 (fixed by the prompt id, so a rerun gives the same split).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import StageError
from ..paths import DATA_DIR
from ..runtime import attention_backends, keep_freed_memory
from . import corpus
from ..argtypes import THREADS, count

ANSWERS_DIR = DATA_DIR / "distill" / "answers"
SHARDS = "shard-[0-9][0-9][0-9][0-9].npz"  # finished shards only (not a crashed run's shard-NNNN.tmp.npz)


def shard_number(shard: Path) -> int:
    """NNNN of an answer or teacher shard's file name (shard-NNNN.npz, shard-NNNN.pt)."""
    return int(shard.stem.split("-")[1])


def sampling_of(prompt_id: int) -> tuple[float, float]:
    """(temperature, top_p) of a prompt's answer."""
    return (0.7, 0.9) if prompt_id % 4 == 3 else (1.0, 1.0)


def save_shard(path: Path, prompt_ids: list[int], answers: list[torch.Tensor], settings: dict | None = None) -> None:
    """Write one shard atomically (see the module docstring for the arrays); `settings` (max_new_tokens,
    max_prompt_tokens, seed) are stored with it as scalars."""
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in answers])]).astype(np.int64)
    tokens = torch.cat(answers).numpy() if answers else np.zeros(0)
    if tokens.size and tokens.max() >= 2**16:
        raise ValueError("token ids ≥ 65536 do not fit uint16: this store is for vocabularies up to 65,536")
    samp = np.array([sampling_of(i) for i in prompt_ids], dtype=np.float32).reshape(-1, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, prompt_id=np.array(prompt_ids, dtype=np.int32), offsets=offsets,
                        tokens=tokens.astype(np.uint16), temperature=samp[:, 0], top_p=samp[:, 1],
                        **{k: np.int64(v) for k, v in (settings or {}).items()})
    tmp.rename(path)


def load_answers(folder: Path = ANSWERS_DIR, limit_tokens: int | None = None) -> list[tuple[int, np.ndarray]]:
    """(prompt id, answer ids) of every shard in name order, stopping once limit_tokens answer tokens are read."""
    out, n = [], 0
    for shard in sorted(Path(folder).glob(SHARDS)):
        z = np.load(shard)
        for i, pid in enumerate(z["prompt_id"]):
            if limit_tokens is not None and n >= limit_tokens:
                return out
            a = z["tokens"][z["offsets"][i] : z["offsets"][i + 1]].astype(np.int64)
            out.append((int(pid), a))
            n += len(a)
    return out


SHAPING = {"max_new_tokens": 256, "max_prompt_tokens": 768}  # what shards written before settings were stored used


def check_settings(out: Path, **settings) -> None:
    """StageError when a shard in `out` was sampled with other answer/prompt lengths than `settings`: the data
    set would mix two recipes (write to another --out instead)."""
    for shard in sorted(Path(out).glob(SHARDS)):
        z = np.load(shard)
        for key, default in SHAPING.items():
            have = int(z[key]) if key in z.files else default
            if key in settings and have != settings[key]:
                raise StageError(f"{shard.name} was sampled with {key.replace('_', '-')} {have}, not {settings[key]}: "
                                 f"use the same setting to continue this data set, or --out another folder")


def plan_shards(records: list[dict], out: Path, shard_size: int) -> list[tuple[int, list[dict]]]:
    """(shard number, records) of the shards still to write: the records no shard in `out` answers yet, in
    corpus order, `shard_size` per shard, numbered on from the highest shard number on disk."""
    done, last = set(), -1
    for shard in sorted(Path(out).glob(SHARDS)):
        done.update(int(i) for i in np.load(shard)["prompt_id"])
        last = max(last, shard_number(shard))
    todo = [r for r in records if r["id"] not in done]
    return [(last + 1 + j // shard_size, todo[j : j + shard_size]) for j in range(0, len(todo), shard_size)]


def run(target, tokenizer, out: Path, *, split: str = "train", shard_size: int = 256, batch: int = 64,
        max_new_tokens: int = 256, max_prompt_tokens: int = 768, limit: int | None = None, seed: int = 0,
        batch_tokens: int = 24576,
        corpus_file: Path = corpus.CORPUS_FILE) -> None:
    """Answer the corpus' prompts of one split, shard by shard, skipping prompts already answered on disk."""
    from ..prompts import encode_chat, sample_answers

    records = corpus.read(corpus_file, split)[:limit]
    eos = getattr(tokenizer, "eos_token_id", None)
    check_settings(out, max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens)
    plan = plan_shards(records, out, shard_size)
    bar = tqdm(total=len(records), initial=len(records) - sum(len(rows) for _, rows in plan), desc="answers",
               unit="prompt", smoothing=0.05)
    for s, rows in plan:
        t0 = time.perf_counter()
        torch.manual_seed(seed * 100_003 + s)  # a shard redone after a crash is drawn the same way
        enc = {r["id"]: encode_chat(tokenizer, r["prompt"])[-max_prompt_tokens:] for r in rows}
        answers: dict[int, torch.Tensor] = {}
        for setting in {sampling_of(r["id"]) for r in rows}:
            ids = sorted((r["id"] for r in rows if sampling_of(r["id"]) == setting), key=lambda i: len(enc[i]))
            b = 0
            while b < len(ids):  # rows of one batch hold at most batch_tokens prompt + answer tokens
                rows_fit = max(1, batch_tokens // (len(enc[ids[min(len(ids) - 1, b + batch - 1)]]) + max_new_tokens))
                chunk = ids[b : b + min(batch, rows_fit)]
                b += len(chunk)
                with attention_backends(target.device):  # no cuDNN attention plan per shape on a GPU
                    new = sample_answers(target, [enc[i] for i in chunk], eos, max_new_tokens, *setting, batch_size=batch,
                                         progress=False)
                for pid, a in zip(chunk, new):
                    answers[pid] = a
                bar.update(len(chunk))
        order = [r["id"] for r in rows]
        save_shard(out / f"shard-{s:04d}.npz", order, [answers[i] for i in order],
                   {"max_new_tokens": max_new_tokens, "max_prompt_tokens": max_prompt_tokens, "seed": seed})
        n_tok = sum(len(a) for a in answers.values())
        bar.write(f"shard-{s:04d}: {len(rows)} answers, {n_tok} tokens, {n_tok / (time.perf_counter() - t0):.0f} tokens/s")
    bar.close()


def main(argv: list[str] | None = None) -> None:
    """Command line of the answer job."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.distill.answers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ANSWERS_DIR)
    ap.add_argument("--split", default="train", choices=["train", "heldout"])
    ap.add_argument("--shard-size", type=count(1), default=256)
    ap.add_argument("--batch", type=count(1), default=64, help="rows per generate call at most")
    ap.add_argument("--batch-tokens", type=count(1), default=24576, help="prompt + answer tokens per generate call at most")
    ap.add_argument("--max-new-tokens", type=count(1), default=256)
    ap.add_argument("--limit", type=count(1), default=None, help="answer only the first N prompts of the split")
    ap.add_argument("--threads", type=THREADS, default=1, help="torch CPU threads (mind other jobs on the machine)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                    help="default: the library's for the device (float32 keeps a GPU's samples closest to the CPU's)")
    ap.add_argument("--seed", type=count(0, 40_000), default=0, help="seeds each shard as seed * 100003 + shard number")
    args = ap.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging

    logging.disable_progress_bar()
    from ..models.load import load_target

    target, tokenizer = load_target(device=args.device, dtype=getattr(torch, args.dtype) if args.dtype else None)
    try:
        run(target, tokenizer, args.out, split=args.split, shard_size=args.shard_size, batch=args.batch,
            max_new_tokens=args.max_new_tokens, limit=args.limit, seed=args.seed, batch_tokens=args.batch_tokens)
    except StageError as err:
        raise SystemExit(str(err)) from None


if __name__ == "__main__":
    main()
