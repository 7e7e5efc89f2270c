"""The batch benchmark's run: the stack (benchmarks/_load_stack.py), the videos uploaded once
(untimed), then in order

1. the load client's sweep (benchmarks/load/client.py, path gateway-second-question:
   streaming chats about the stored files) at each concurrency level: its best throughput;
2. interactive requests at concurrency 1 on the idle stack: their latency;
3. a batch of the same requests alone, from its create request until a poll sees it ended:
   its throughput, its output file checked line by line; then the load client again at its
   best level with as many requests as the batch has lines (the same work, right after);
4. a second batch, and once its first line is done the interactive requests again beside
   it; then it is cancelled (what it finished meanwhile is its throughput beside them).

The report is written after each step (an interrupted run keeps what it measured)."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from .. import _load_stack as stk
from ..load.cli import DEFAULT_MEDIA
from ..load.client import ChatSettings, LoadClient, Target
from ..load.paths import SECOND_QUESTION
from ..load.records import Record, Slo
from ..load.stats import summarize
from ..load.videos import Video, find_videos
from . import report as rep
from .api import ENDED, BatchClient, BatchRun, batch_lines


def log(message: str) -> None:
    print(f"[batch-bench] {message}", file=sys.stderr, flush=True)


def _engine_args(args: argparse.Namespace) -> list[str]:
    if args.engine_args is not None:
        return shlex.split(args.engine_args)
    return list(stk.GPU_ENGINE_ARGS if stk.gpu_present() else stk.CPU_ENGINE_ARGS)


def measure(args: argparse.Namespace, argv: list[str]) -> int:
    """Runs the benchmark of `args` (cli.parse_args); 1 when a request or line failed,
    2 when the stack did not start."""
    t_start = time.monotonic()
    videos, skipped = find_videos(args.videos or [DEFAULT_MEDIA], args.max_video_s, args.quick)
    if not videos:
        raise SystemExit("no usable video: " + "; ".join(skipped or ["none given"]))
    engine_args = [] if args.gateway_url else _engine_args(args)
    report: dict = {
        "benchmark": "batch",
        "started_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "benchmarks.batch_bench", *argv]),
        "environment": stk.environment(),
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("api_key", "videos")
        },
        "videos": [
            {"name": v.name, "duration_s": v.duration_s, "bytes": len(v.data)} for v in videos
        ],
        "skipped": skipped,
        "stack": {},
        "load": [],
        "interactive": {},
        "batches": {},
        "warnings": [],
        "wall_s": 0.0,
    }
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    with tempfile.TemporaryDirectory(prefix="arc-batch-bench-") as tmp:
        stack = None
        try:
            if args.gateway_url:
                base = args.gateway_url
                report["stack"] = {"mode": "external", "gateway_url": base}
            else:
                log(f"starting arc-serve and arc-gateway on loopback (logs in {args.out / 'logs'})")
                stack = stk.launch_stack(
                    Path(tmp), args.checkpoint, engine_args, shlex.split(args.gateway_args),
                    args.out / "logs", say=log, forward_mode=args.forward_mode,
                )  # fmt: skip
                stack.wait_healthy(args.startup_timeout_s)
                base = stack.url("gateway")
                report["stack"] = {
                    "mode": "own (loopback)",
                    "engine_settings": shlex.join(engine_args) + f" (checkpoint {args.checkpoint})",
                    "gateway_settings": args.gateway_args or "(defaults)",
                    "forward_mode": args.forward_mode,
                    "commands": stack.commands(),
                    "engine": stk.engine_info(stack.url("engine"), {}),
                }
            log(f"stack healthy after {time.monotonic() - t_start:.0f} s")
            asyncio.run(_measure(args, base, headers, videos, report, t_start))
        except stk.StackError as e:
            log(f"the stack did not start: {e}")
            return 2
        except KeyboardInterrupt:
            report["warnings"].append("interrupted (Ctrl-C): partial results")
        finally:
            if stack is not None:
                log("stopping the stack")
                stack.stop()
            report["wall_s"] = time.monotonic() - t_start
            rep.write(args.out, report)
    log(f"report in {args.out}")
    print((args.out / "report.md").read_text())
    return 1 if rep.failures(report) else 0


async def _measure(
    args: argparse.Namespace,
    base: str,
    headers: dict[str, str],
    videos: list[Video],
    report: dict,
    t_start: float,
) -> None:
    chat = ChatSettings(args.question, args.task, args.max_tokens, True, args.request_timeout_s)
    client = LoadClient(Target(base, None, None, headers), chat, videos, Slo(None, None, None))
    batches = BatchClient(base, headers, args.poll_s)
    deadline = time.monotonic() + 24 * 3600  # bounded by the batches' own timeouts
    try:
        await client.upload_all()
        log(f"uploaded {len(videos)} videos: {', '.join(v.name for v in videos)}")
        if args.warmup:
            records, seconds = await client.batch(
                SECOND_QUESTION, args.warmup, args.warmup, deadline, lambda r: None
            )
            ok = sum(r.ok for r in records)
            log(f"warm-up: {ok}/{len(records)} ok in {seconds:.1f} s")

        # 1. the load client at each level
        for level in args.concurrency:
            records, seconds = await client.batch(
                SECOND_QUESTION, level, args.requests, deadline, lambda r: None
            )
            summary = summarize(SECOND_QUESTION, level, args.requests, records, seconds)
            report["load"].append(summary)
            log(
                f"load client c={level}: {summary['completed']}/{args.requests} ok, "
                f"{summary['request_throughput']:.2f} req/s"
            )
            rep.write(args.out, report)

        # 2. interactive requests on the idle stack
        report["interactive"]["idle"] = await _interactive(client, args, deadline, "idle")
        rep.write(args.out, report)

        # 3. a batch alone: the same requests, one line each
        bodies = [json_body(client, v) for v in videos]
        alone = BatchRun()
        await batches.create(batch_lines(bodies, args.lines, "alone"), "alone.jsonl", alone)
        log(f"batch {alone.id} ({args.lines} lines) created")
        ended = await batches.poll(alone, "ended", args.batch_timeout_s)
        await batches.check_output(alone, ended)
        report["batches"]["alone"] = alone.as_dict() | {"lines_per_s": alone.lines_per_s}
        log(
            f"batch alone: {alone.status}, {alone.completed}/{alone.lines} done, "
            f"{alone.failed} failed in {alone.ended_s:.1f} s: "
            f"{alone.lines_per_s or 0:.2f} lines/s"
        )
        rep.write(args.out, report)

        # 3b. the load client again at its best level, as many requests as the batch has
        # lines: the same work over the same stretch of time (a shared machine drifts)
        best = rep.best_load(report)
        if best is not None:
            level = best["concurrency"]
            records, seconds = await client.batch(
                SECOND_QUESTION, level, args.lines, deadline, lambda r: None
            )
            report["load_matched"] = summarize(SECOND_QUESTION, level, args.lines, records, seconds)
            log(
                f"load client c={level}, {args.lines} requests: "
                f"{report['load_matched']['request_throughput']:.2f} req/s"
            )
            rep.write(args.out, report)

        # 4. interactive requests beside a running batch
        beside = BatchRun()
        await batches.create(batch_lines(bodies, args.lines, "beside"), "beside.jsonl", beside)
        await batches.poll(beside, "started", args.batch_timeout_s)
        first = (beside.polls[-1][0], beside.completed + beside.failed)
        stop = asyncio.Event()
        follower = asyncio.create_task(_follow(batches, beside, stop, args.poll_s))
        loaded = await _interactive(client, args, deadline, "beside a batch")
        stop.set()
        await follower
        now = await batches.poll(beside, "once", 0)
        last = (beside.polls[-1][0], beside.completed + beside.failed)
        if beside.status in ENDED:
            report["warnings"].append(
                f"the batch beside the interactive requests ended before they did "
                f"({beside.status}): use more --lines"
            )
        loaded["batch_lines_per_s"] = (
            (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else None
        )
        report["interactive"]["beside_batch"] = loaded
        if now["status"] not in ENDED:
            await batches.cancel(beside)
            now = await batches.poll(beside, "ended", args.batch_timeout_s)
        await batches.check_output(beside, now)
        report["batches"]["beside"] = beside.as_dict() | {"lines_per_s": beside.lines_per_s}
        log(f"batch beside: {beside.status} with {beside.completed} done, {beside.failed} failed")
    finally:
        report["ratios"] = rep.ratios(report)
        report["wall_s"] = time.monotonic() - t_start
        rep.write(args.out, report)
        await batches.close()
        await client.delete_uploads()


async def _follow(batches: BatchClient, run: BatchRun, stop: asyncio.Event, every_s: float) -> None:
    """Polls the batch while the interactive requests run (its progress curve)."""
    while not stop.is_set() and run.status not in ENDED:
        await batches.poll(run, "once", 0)
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except (asyncio.TimeoutError, TimeoutError):
            pass


def json_body(client: LoadClient, video: Video) -> dict:
    """The load client's request about the stored `video` (the same bytes it sends)."""
    return json.loads(client.prebuilt(SECOND_QUESTION, video))


async def _interactive(
    client: LoadClient, args: argparse.Namespace, deadline: float, what: str
) -> dict:
    records: list[Record]
    records, seconds = await client.batch(
        SECOND_QUESTION, 1, args.interactive, deadline, lambda r: None
    )
    summary = summarize(SECOND_QUESTION, 1, args.interactive, records, seconds)
    e2e, ttft = summary["e2e_s"] or {}, summary["ttft_s"] or {}
    log(
        f"interactive c=1 {what}: {summary['completed']}/{args.interactive} ok, e2e p50 "
        f"{e2e.get('p50', float('nan')):.3f} s, ttft p50 {ttft.get('p50', float('nan')):.3f} s"
    )
    summary["e2e_values_s"] = [r.e2e_s for r in records if r.ok]
    return summary
