"""The batch benchmark's command line."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from .. import _load_stack as stk
from ..load.cli import DEFAULT_MEDIA, concurrency_levels

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "batch"
# --quick: these become the defaults, so that options given beside it still win.
QUICK = {
    "lines": 12,
    "concurrency": [1, 2],
    "requests": 4,
    "interactive": 4,
    "max_tokens": 2,
    "warmup": 1,
}
DESCRIPTION = (
    "Batch benchmark: a batch of a few hundred lines over the shared clips through the "
    "gateway's Batch API, against the load benchmark's client (streaming chats about the same "
    "stored files) at each concurrency level on the same engine in the same run; and "
    "interactive chat latency at concurrency 1 on the idle stack and beside a running batch."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.batch_bench",
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--lines", type=int, default=300, help="lines of each batch (the videos in turn)"
    )
    parser.add_argument(
        "--concurrency",
        type=concurrency_levels,
        default="1,2,4,8",
        help="the load client's levels (clients sending back to back)",
    )
    parser.add_argument(
        "--requests", type=int, default=32, help="the load client's requests per level"
    )
    parser.add_argument(
        "--interactive",
        type=int,
        default=24,
        help="interactive requests at concurrency 1, idle and beside a batch",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=16, help="tokens every request generates (ignore_eos)"
    )
    parser.add_argument("--question", default="What is happening in the video?")
    parser.add_argument("--task", default="qa", help="chat_template_kwargs.task")
    parser.add_argument(
        "--warmup", type=int, default=2, help="unmeasured requests before anything is measured"
    )
    parser.add_argument(
        "--videos", nargs="+", type=Path, help=f"video files or folders (default {DEFAULT_MEDIA})"
    )
    parser.add_argument(
        "--max-video-s", type=float, default=30.0, help="skip longer videos (0: none skipped)"
    )
    parser.add_argument(
        "--poll-s",
        type=float,
        default=0.25,
        help="how often the batch is polled (its end is seen within this)",
    )
    parser.add_argument(
        "--checkpoint", default="tiny", help="model folder for arc-serve, or tiny (random weights)"
    )
    parser.add_argument(
        "--engine-args",
        help="arc-serve options, one shell-quoted string; default on CPU "
        f"'{shlex.join(stk.CPU_ENGINE_ARGS)}', with a GPU '{shlex.join(stk.GPU_ENGINE_ARGS)}' "
        "(caches off: every request does the full work); arc-serve adds "
        "--scheduling-policy priority itself",
    )
    parser.add_argument(
        "--gateway-args", default="", help="arc-gateway options, e.g. '--batch-concurrency 8'"
    )
    parser.add_argument("--forward-mode", choices=("container", "shared"), default="container")
    parser.add_argument(
        "--gateway-url", help="a running gateway (loopback) instead of the stack this starts"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("ARC_BENCH_API_KEY"),
        help="for --gateway-url (env ARC_BENCH_API_KEY)",
    )
    parser.add_argument("--startup-timeout-s", type=float, default=300.0)
    parser.add_argument("--request-timeout-s", type=float, default=300.0)
    parser.add_argument(
        "--batch-timeout-s", type=float, default=1800.0, help="longest wait for one batch to end"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: " + ", ".join(f"{k} {v}" for k, v in QUICK.items()),
    )
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    if "--quick" in argv:
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    if min(args.lines, args.requests, args.interactive, args.max_tokens) < 1:
        raise SystemExit("--lines, --requests, --interactive and --max-tokens must be >= 1")
    if args.gateway_url:
        args.gateway_url = stk.check_url(args.gateway_url, "--gateway-url", False)
    return args
