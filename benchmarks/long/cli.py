"""The long-video benchmark's command line."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "long"
QUICK = {"minutes": [2.0], "segments": "60", "max_tokens": 2, "size": "160x90", "fps": 2.0}
DESCRIPTION = (
    "Long-video benchmark: one question about a synthetic 10-, 30- and 60-minute video, asked "
    "through the gateway in segments (video.segments), against the same segments asked as clip "
    "requests one after another (a) and all at once by a client (b), in the same run; a second "
    "question about the same stored file; the gateway's peak memory per video length."
)


def _minutes(text: str) -> list[float]:
    try:
        found = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of minutes: {text!r}") from None
    if not found or found[0] <= 0:
        raise argparse.ArgumentTypeError("video lengths are minutes > 0")
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.long_bench",
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--minutes", type=_minutes, default=[10.0, 30.0, 60.0],
                        help="video lengths, comma-separated")  # fmt: skip
    parser.add_argument("--segments", default="auto",
                        help='video.segments of the segmented request: "auto" or '
                             "seconds")  # fmt: skip
    parser.add_argument("--max-tokens", type=int, default=16,
                        help="tokens every request generates (ignore_eos)")  # fmt: skip
    parser.add_argument("--size", default="320x180", help="the videos' picture size")
    parser.add_argument("--fps", type=float, default=5.0, help="the videos' frame rate")
    parser.add_argument("--checkpoint", default="tiny",
                        help="model folder for arc-serve, or tiny (random weights)")  # fmt: skip
    parser.add_argument("--decode-workers", type=int, help="the gateway's (default: its own)")
    parser.add_argument("--segments-in-flight", type=int,
                        help="the gateway's (default: its own, 4)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "arc-long-bench",
                        help="where the synthetic videos are kept between runs")  # fmt: skip
    quick = ", ".join(f"{k} {v}" for k, v in QUICK.items())
    parser.add_argument("--quick", action="store_true", help="smoke run: " + quick)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options, the quick run's applied, `segments` as video.segments takes it."""
    args = build_parser().parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.segments not in ("auto", "off"):
        args.segments = float(args.segments)
    return args
