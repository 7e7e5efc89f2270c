"""`arc-tiny-checkpoint OUT [--seed N] [--untied]`: writes a small random-weight checkpoint
of the real architecture (vllm_plugin/tiny_checkpoint.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..tiny_checkpoint import summary, write_tiny_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="arc-tiny-checkpoint",
        description="Write a small random-weight ARC-Hunyuan-Video checkpoint (real "
        "config schema, tensor names and special tokens; toy sizes: text 256 wide, "
        "2 layers, 4 query / 2 KV heads, tied head) for tests and plumbing checks. "
        "Same seed, same bytes. Answers from it are noise.",
    )
    parser.add_argument("out", type=Path, help="output directory (created if needed)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument(
        "--untied",
        action="store_true",
        help="write tie_word_embeddings false and a separate language_model.lm_head.weight",
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {"tie_word_embeddings": False} if args.untied else {}
    out = write_tiny_checkpoint(args.out, seed=args.seed, **overrides)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    print(out)
    print(summary(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
