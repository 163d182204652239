"""The main job on the embedded default: the target answers a chat prompt, with tokens/s."""
from __future__ import annotations

import argparse
import time

import torch

from .models import load_target
from .prompts import encode_chat

DEFAULT_PROMPT = "Explain in three sentences why the sky is blue."


def main(argv: list[str] | None = None) -> None:
    """Load the embedded target and answer one prompt greedily."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    from transformers.utils import logging

    logging.disable_progress_bar()
    t0 = time.perf_counter()
    model, tokenizer = load_target(device=args.device)
    print(f"loaded SmolLM2-135M-Instruct on {model.device} in {model.dtype} ({time.perf_counter() - t0:.1f} s)")
    ids = encode_chat(tokenizer, args.prompt)[None].to(model.device)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=False)
    dt = time.perf_counter() - t0
    new = out[0, ids.shape[1]:]
    print(f"user: {args.prompt}\nassistant: {tokenizer.decode(new, skip_special_tokens=True)}")
    print(f"{len(new)} tokens in {dt:.2f} s: {len(new) / dt:.1f} tokens/s (greedy, autoregressive)")


if __name__ == "__main__":
    main()
