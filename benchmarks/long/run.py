"""The long-video benchmark's run: the stack it starts, the warm-up, each video length's
four paths, the report after each length (an interrupted run keeps what it measured)."""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import tempfile
import time
from pathlib import Path

from arc_media.segments import plan_segments, segment_length

from .. import _load_stack as stk
from . import paths as runs
from . import report as rep
from . import videos as media


def log(message: str) -> None:
    print(f"[long-bench] {message}", file=sys.stderr, flush=True)


def measure(args: argparse.Namespace, argv: list[str]) -> int:
    """Runs the benchmark of `args` (cli.parse_args); 1 when a request failed."""
    segments: str | float = args.segments
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
        "command": shlex.join(["python", "-m", "benchmarks.long_bench", *argv]),
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
