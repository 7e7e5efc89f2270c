"""The load benchmark's command line: its options (`--help` explains each), the smoke
run's values, and the checks of what is given."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from .. import _load_stack as stk
from .console import log
from .paths import DIRECT_PATHS, PATH_HELP, PATHS

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "load"
DEFAULT_MEDIA = Path(os.environ.get("ARC_SHARED", REPO_ROOT.parent / "shared")) / "media"
# --quick: these become the defaults, so that options given beside it still win.
QUICK = {"concurrency": [1], "requests": 2, "max_tokens": 2, "warmup": 1}
DESCRIPTION = (
    "Load benchmark of the whole service: concurrent clients sending real videos through "
    "the gateway and, in the same run, the same requests sent straight to vLLM, so that the "
    "gateway's cost is a measured ratio against vLLM alone."
)


def concurrency_levels(text: str) -> list[int]:
    try:
        levels = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError("concurrency levels are integers >= 1")
    return levels


def _paths(text: str) -> list[str]:
    paths = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in paths if p not in PATHS]
    if unknown or not paths:
        raise argparse.ArgumentTypeError(f"paths are a comma list of {', '.join(PATHS)}")
    return [p for p in PATHS if p in paths]


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where it says something (not for flags, None or '')."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, "", True, False) or action.nargs == 0:
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load_bench",
        description=DESCRIPTION,
        epilog="Paths: "
        + "; ".join(f"{k}: {v}" for k, v in PATH_HELP.items())
        + ". Without --gateway-url/--engine-url the benchmark starts its own stack on "
        "loopback (a tiny random-weight checkpoint unless --checkpoint is given) and stops "
        "it at the end, also on Ctrl-C and errors.",
        formatter_class=_Help,
    )
    _target_options(parser.add_argument_group("what to measure"))
    _stack_options(
        parser.add_argument_group("the stack started on loopback (when no URL is given)")
    )
    _load_options(parser.add_argument_group("load"))
    slo = parser.add_argument_group("SLOs for goodput (0 disables one)")
    slo.add_argument("--slo-ttft-s", type=float, default=5.0, help="time to first token")
    slo.add_argument("--slo-tpot-ms", type=float, default=100.0, help="time per output token")
    slo.add_argument("--slo-e2e-s", type=float, default=10.0, help="end-to-end latency")
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for reports")
    output.add_argument("--label", default="", help="a name for this run, kept in the report")
    output.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: concurrency 1, 2 requests per path, max_tokens 2, 1 warmup, the "
        "shortest video",
    )
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _target_options(target: argparse._ArgumentGroup) -> None:
    target.add_argument(
        "--gateway-url",
        help="base URL of a running gateway (e.g. http://127.0.0.1:8080 of the compose "
        "stack); with it or --engine-url the benchmark starts nothing",
    )
    target.add_argument(
        "--engine-url",
        help="base URL of the running vLLM server behind that gateway (e.g. "
        "http://127.0.0.1:8000), for the direct path",
    )
    target.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow URLs that are not loopback (by default load goes to this machine only)",
    )
    target.add_argument(
        "--api-key",
        default=os.environ.get("ARC_BENCH_API_KEY"),
        help="sent as 'Authorization: Bearer KEY' to both URLs (env ARC_BENCH_API_KEY)",
    )
    target.add_argument(
        "--engine-settings",
        help="how the external engine was started (free text recorded in the report, e.g. "
        "'compose GPU stack: TP 2, bfloat16, gpu-memory-utilization 0.90')",
    )
    target.add_argument(
        "--paths",
        type=_paths,
        default=",".join(PATHS),
        help="comma list of paths to measure",
    )


def _stack_options(own: argparse._ArgumentGroup) -> None:
    own.add_argument(
        "--checkpoint",
        default="tiny",
        help="checkpoint directory or hub id for arc-serve; 'tiny' writes a tiny "
        "random-weight checkpoint (vllm_plugin.tiny_checkpoint) into a temporary directory",
    )
    own.add_argument(
        "--engine-args",
        help="arc-serve (vLLM) options, one shell-quoted string; default on CPU: "
        f"'{shlex.join(stk.CPU_ENGINE_ARGS)}', with a CUDA GPU: "
        f"'{shlex.join(stk.GPU_ENGINE_ARGS)}' (caches off: both paths do the full work)",
    )
    own.add_argument(
        "--forward-mode",
        choices=("container", "shared"),
        default="container",
        help="how the gateway hands prepared videos to the engine: 'container' (a "
        "compressed data URL, for an engine anywhere) or 'shared' (raw frames and audio in a "
        "directory both read, by file://; same host)",
    )
    own.add_argument(
        "--gateway-args",
        default="",
        help="arc-gateway options, one shell-quoted string (e.g. '--decode-workers 4')",
    )
    own.add_argument(
        "--startup-timeout-s",
        type=float,
        default=300.0,
        help="limit for the engine and gateway to answer /health",
    )


def _load_options(load: argparse._ArgumentGroup) -> None:
    load.add_argument(
        "--videos",
        nargs="+",
        type=Path,
        help="video files or directories of videos; requests take them in turn (default: "
        f"{DEFAULT_MEDIA}, or $ARC_SHARED/media)",
    )
    load.add_argument(
        "--max-video-s",
        type=float,
        default=30.0,
        help="skip videos longer than this (0: no limit); a 150-frame video takes about "
        "30 s per request on the CPU engine",
    )
    load.add_argument(
        "--concurrency",
        type=concurrency_levels,
        default="1,2,4",
        help="comma list of concurrency levels (clients sending back to back)",
    )
    load.add_argument("--requests", type=int, default=8, help="requests per level and path")
    load.add_argument("--max-tokens", type=int, default=16, help="max_tokens of each request")
    load.add_argument(
        "--no-ignore-eos",
        dest="ignore_eos",
        action="store_false",
        help="let generation stop at EOS (by default ignore_eos makes every answer "
        "max_tokens long, so runs compare)",
    )
    load.add_argument(
        "--question", default="What is happening in the video?", help="the text of each request"
    )
    load.add_argument(
        "--task",
        default="qa",
        help="chat_template_kwargs.task (qa, summary, grounding, mcq, chapters, none)",
    )
    load.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="unmeasured requests per path before the sweep (sent at once, first videos)",
    )
    load.add_argument(
        "--request-timeout-s", type=float, default=300.0, help="limit for one request"
    )
    load.add_argument(
        "--duration-limit-s",
        type=float,
        default=500.0,
        help="hard bound on the whole run (startup included): at the limit requests in "
        "flight are cancelled, no more are sent, and the report holds what was measured",
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    if "--quick" in argv:
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.max_tokens < 1:
        raise SystemExit("--requests and --max-tokens must be >= 1")
    return args


def external_urls(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The gateway and engine URLs given (checked; loopback unless --allow-remote), and
    `args.paths` narrowed to the paths they can serve. (None, None): no URL, own stack."""
    if not (args.gateway_url or args.engine_url):
        return None, None
    gateway_url = (
        stk.check_url(args.gateway_url, "--gateway-url", args.allow_remote)
        if args.gateway_url
        else None
    )
    engine_url = (
        stk.check_url(args.engine_url, "--engine-url", args.allow_remote)
        if args.engine_url
        else None
    )
    usable = [
        p for p in args.paths if (engine_url if p in DIRECT_PATHS else gateway_url) is not None
    ]
    if not usable:
        raise SystemExit("no path can run with the URLs given")
    if usable != args.paths:
        log(f"measuring only {', '.join(usable)} (a URL is missing for the others)")
    args.paths = usable
    return gateway_url, engine_url
