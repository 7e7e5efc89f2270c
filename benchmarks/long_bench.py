"""Long-video benchmark: one question about a synthetic 10-, 30- and 60-minute video, asked
through the gateway in segments (`video.segments`), against the same segments asked as
clip requests one after another (a) and all at once by a client (b), in the same run; a
second question about the same stored file; the gateway's peak memory per video length.

Goals (issue 20): the segmented request at most 0.6x of (a), at most 1.15x of (b) plus its
integration pass; a second question at most 0.5x of the first; the gateway's memory flat
in the video's length (segments in flight only).

    python -m benchmarks.long_bench                    # own loopback stack, tiny checkpoint
    python -m benchmarks.long_bench --minutes 10,30    # lengths of your choice
    python -m benchmarks.long_bench --quick            # smoke run: a 2-minute video in
                                                       # segments of 60 s (about 2 minutes)

Each path asks about a video of its own (same length and content structure, other cards:
`_long_media.py`), so the engine's caches, on as in production, serve no path with another's
work; the second question finds what the first left in them and in the gateway's file store.
The stack (arc-serve, arc-gateway on loopback) is started by `_load_stack.py`; the paths are
run by `_long_runs.py`, the report written by `_long_report.py` (report.json, report.csv,
report.md, long.png).
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import tempfile
import time
from pathlib import Path

from server.video.segments import plan_segments, segment_length

from . import _load_stack as stk
from . import _long_media as media
from . import _long_report as rep
from . import _long_runs as runs

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "long"
QUICK = {"minutes": [2.0], "segments": "60", "max_tokens": 2, "size": "160x90", "fps": 2.0}


def log(message: str) -> None:
    print(f"[long-bench] {message}", file=sys.stderr, flush=True)


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
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--minutes", type=_minutes, default=[10.0, 30.0, 60.0],
                        help="video lengths, comma-separated")  # fmt: skip
    parser.add_argument("--segments", default="auto",
                        help='video.segments of the segmented request: "auto" or seconds')  # fmt: skip
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
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "arc-long-bench",
                        help="where the synthetic videos are kept between runs")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: " + ", ".join(f"{k} {v}" for k, v in QUICK.items()))  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    segments: str | float = (
        args.segments if args.segments in ("auto", "off") else float(args.segments)
    )
    length = segment_length(segments)
    if length is None:
        raise SystemExit("--segments off measures no segments; use auto or seconds")
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t_start = time.monotonic()
    environment = stk.environment()
    # vLLM's own cache settings (prefix caching, the multimodal cache), as in production;
    # on CPU a KV cache that holds a long video's segments (1 GiB: about a million tokens
    # of the tiny model, 60 segments), as a GPU's does, instead of arc-serve's 4 requests.
    cached = [a for a in stk.GPU_ENGINE_ARGS if a not in stk.NO_CACHE_ARGS]
    cpu = ["--dtype", "float32", "--kv-cache-memory-bytes", "1G"]
    engine_args = cached if stk.gpu_present() else cpu
    gateway_args = ["--max-duration-s", str(max(args.minutes) * 60 + 60)]
    if args.decode_workers:
        gateway_args += ["--decode-workers", str(args.decode_workers)]
    if args.segments_in_flight:
        gateway_args += ["--segments-in-flight", str(args.segments_in_flight)]
    report: dict = {
        "started_at": started,
        "command": shlex.join(["python", "-m", "benchmarks.long_bench", *(argv or sys.argv[1:])]),
        "environment": environment,
        "video_size": args.size,
        "video_fps": args.fps,
        "max_tokens": args.max_tokens,
        "segments": segments,
        "stack": {
            "engine_settings": " ".join(engine_args) + f" (checkpoint {args.checkpoint})",
            "gateway_settings": " ".join(gateway_args) or "defaults",
        },
        "videos": [],
        "wall_s": 0.0,
    }
    with tempfile.TemporaryDirectory(prefix="arc-long-bench-") as tmp:
        work = Path(tmp)
        stack = stk.launch_stack(
            work, args.checkpoint, engine_args, gateway_args, args.out / "logs", say=log
        )
        try:
            videos = []
            for minutes in args.minutes:
                log(f"making the {minutes:g}-minute videos ({args.size}, {args.fps:g} fps)")
                videos.append(
                    [
                        media.long_video(args.cache, minutes, args.size, args.fps, k)
                        for k in range(3)
                    ]
                )
            stack.wait_healthy(600)
            base = stack.url("gateway")
            pid = next(p.proc.pid for p in stack.processes if p.name == "gateway")
            report["stack"]["engine"] = stk.engine_info(stack.url("engine"), {})
            # The engine's first request of a size pays for its kernels (CPU): a whole
            # segment's worth, untimed, so that no path pays for it.
            log(f"warming up the engine (one untimed {length:g} s clip request)")
            warm_video = media.long_video(args.cache, length / 60, args.size, args.fps, 99)
            runs.sequential(base, runs.upload(base, warm_video), [(0.0, length)], 2)
            for minutes, video in zip(args.minutes, videos):
                report["videos"].append(
                    _one_video(base, pid, minutes, video, segments, length, args.max_tokens)
                )
                report["wall_s"] = time.monotonic() - t_start
                rep.write(args.out, report)
        finally:
            stack.stop()
    report["wall_s"] = time.monotonic() - t_start
    rep.write(args.out, report)
    log(f"report in {args.out}")
    print((args.out / "report.md").read_text())
    failed = [r for v in report["videos"] for r in v["runs"].values() if r["ok"] < r["requests"]]
    return 1 if failed else 0


def _one_video(
    base: str,
    gateway_pid: int,
    minutes: float,
    videos: list[Path],
    segments: str | float,
    length: float,
    max_tokens: int,
) -> dict:
    clips = [(s.start, s.end) for s in plan_segments(0.0, minutes * 60, length)]
    log(f"{minutes:g} min: {len(clips)} segments; uploading the three videos (untimed)")
    first, sequential_file, concurrent_file = (runs.upload(base, video) for video in videos)
    done: dict[str, dict] = {}
    # The second question right after the first, as a user's follow-up: it finds the
    # segments in the gateway's file store and their prompts in the engine's caches.
    plan = (
        ("segmented", lambda: runs.segmented(base, first, segments, max_tokens, "segmented")),
        (
            "second-question",
            lambda: runs.segmented(base, first, segments, max_tokens, "second-question"),
        ),
        ("sequential", lambda: runs.sequential(base, sequential_file, clips, max_tokens)),
        ("concurrent", lambda: runs.concurrent(base, concurrent_file, clips, max_tokens)),
    )
    load = runs.load_average()
    for name, run_path in plan:
        run = runs.measured(run_path, gateway_pid)
        done[name] = run.as_dict()
        log(
            f"{minutes:g} min {name}: {run.seconds:.1f} s, {run.ok}/{run.requests} ok, "
            f"gateway peak {run.peak_gateway_mb:.0f} MB"
            + (f"; errors: {run.errors[:1]}" if run.errors else "")
        )
    return {
        "minutes": minutes,
        "seconds": minutes * 60,
        "segments": len(clips),
        "file_bytes": videos[0].stat().st_size,
        "load_average_at_start": load,
        "runs": {path: done[path] for path in runs.PATHS},
        "ratios": rep.ratios(done),
    }


if __name__ == "__main__":
    sys.exit(main())
