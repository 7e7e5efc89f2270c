"""The load benchmark's run: its typed state, the stack it starts on loopback
(benchmarks/_load_stack.py) unless URLs are given, and the sweep (warm-up, then every
concurrency level on every path), which an interrupt or the duration limit cuts short
without losing what was measured."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .. import _load_stack as stk
from .cli import DEFAULT_MEDIA
from .client import ChatSettings, LoadClient, Target
from .console import Progress, log
from .paths import SECOND_QUESTION, UPLOAD
from .records import Record, Slo
from .stats import summarize
from .videos import Video, find_videos, prepare

Urls = tuple[str | None, str | None]  # gateway, engine


@dataclass
class PartialBatch:
    """The batch in flight: an interrupted run still reports the requests it finished."""

    path: str
    level: int
    records: list[Record]
    started: float  # time.perf_counter()


@dataclass
class RunState:
    """What the run knows of its setting and has measured so far; the report is built from it."""

    started_at: str  # local time, ISO 8601
    t_start: float  # time.monotonic(): the run's wall time and deadline count from here
    deadline: float  # time.monotonic() of --duration-limit-s
    environment: dict  # the machine (benchmarks/_load_stack.environment)
    videos: list[Video]
    skipped: list[str]  # videos left out, and why
    stack: dict  # the stack: mode, URLs, settings, what the engine says of itself
    records: list[Record] = field(default_factory=list)
    levels: list[dict] = field(default_factory=list)  # stats.summarize per batch
    warmup: list[Record] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False  # the duration limit stopped the sweep
    interrupted: bool = False  # Ctrl-C or SIGTERM
    startup_s: float | None = None  # the own stack's start, until healthy
    partial: PartialBatch | None = None


def new_state(args: argparse.Namespace, t_start: float, external: bool) -> RunState:
    """The run's state before anything is sent: the machine, and the videos found
    (`args.videos` defaults to the shared media here)."""
    started_at = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    environment = stk.environment()
    args.videos = args.videos or [DEFAULT_MEDIA]
    videos, skipped = find_videos(args.videos, args.max_video_s, args.quick)
    if not videos:
        raise SystemExit("no usable video: " + "; ".join(skipped or ["none given"]))
    for line in skipped:
        log(f"skipped {line}")
    return RunState(
        started_at=started_at,
        t_start=t_start,
        deadline=t_start + args.duration_limit_s,
        environment=environment,
        videos=videos,
        skipped=skipped,
        stack={"mode": "external" if external else "own (loopback)"},
    )


def measure(args: argparse.Namespace, state: RunState, slo: Slo, urls: Urls) -> int:
    """Starts the stack unless `urls` name one (preparing the videos meanwhile), then the
    sweep. 2 when the stack did not start; an interrupted sweep sets `state.interrupted`."""
    engine_args = [] if urls != (None, None) else _engine_args(args)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        with _serving_stack(args, state, urls, engine_args) as stack:
            for video in state.videos:
                prepare(video)
                log(
                    f"prepared {video.name}: {video.frames} frames, {video.prepared_bytes} "
                    f"bytes in {video.prepare_s:.2f} s"
                )
            if stack is not None:
                urls = _wait_healthy(stack, args, state, engine_args)
            client = LoadClient(
                _target(urls, headers, state), ChatSettings.from_args(args), state.videos, slo
            )
            Sweep(args, state, client).run()
    except stk.StackError as e:
        log(f"the stack did not start: {e}")
        return 2
    return 0


def _engine_args(args: argparse.Namespace) -> list[str]:
    if args.engine_args is not None:
        return shlex.split(args.engine_args)
    return list(stk.GPU_ENGINE_ARGS if stk.gpu_present() else stk.CPU_ENGINE_ARGS)


@contextmanager
def _serving_stack(
    args: argparse.Namespace, state: RunState, urls: Urls, engine_args: list[str]
) -> Iterator[stk.Stack | None]:
    """The stack this run starts on loopback (stopped on the way out, whatever happens), or
    None when `urls` name a running one."""
    if urls != (None, None):
        state.stack.update(
            gateway_url=urls[0],
            engine_url=urls[1],
            engine_settings=args.engine_settings or "(not given: pass --engine-settings)",
        )
        yield None
        return
    workdir = Path(tempfile.mkdtemp(prefix="arc-load-bench-"))
    stack = None
    try:
        log(f"starting arc-serve and arc-gateway on loopback (logs in {args.out / 'logs'})")
        stack = stk.launch_stack(
            workdir,
            args.checkpoint,
            engine_args,
            shlex.split(args.gateway_args),
            args.out / "logs",
            forward_mode=args.forward_mode,
            say=log,
        )
        yield stack
    finally:
        if stack is not None:
            log("stopping the stack")
            stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_healthy(
    stack: stk.Stack, args: argparse.Namespace, state: RunState, engine_args: list[str]
) -> Urls:
    t0 = time.monotonic()
    stack.wait_healthy(min(args.startup_timeout_s, max(1.0, state.deadline - t0)))
    state.startup_s = time.monotonic() - state.t_start
    log(f"stack healthy after {state.startup_s:.0f} s")
    gateway_url, engine_url = stack.url("gateway"), stack.url("engine")
    commands = stack.commands()
    state.stack.update(
        gateway_url=gateway_url,
        engine_url=engine_url,
        engine_command=commands["engine"],
        gateway_command=commands["gateway"],
        engine_settings=shlex.join(engine_args) + f" (checkpoint {args.checkpoint})",
        gateway_settings=args.gateway_args or "(defaults)",
        forward_mode=args.forward_mode,
    )
    return gateway_url, engine_url


def _target(urls: Urls, headers: dict[str, str], state: RunState) -> Target:
    """Where requests go; the engine's own account of itself goes into the report."""
    gateway_url, engine_url = urls
    model = None
    if engine_url:
        state.stack["engine"] = stk.engine_info(engine_url, headers)
        models = state.stack["engine"].get("models") or []
        if not models:
            raise SystemExit(f"the engine at {engine_url} lists no model")
        model = models[0]["id"]
    return Target(gateway_url, engine_url, model, headers)


class Sweep:
    """Warm-up requests on every path (unmeasured), then `--requests` requests per path at
    each concurrency level, the paths' order rotated from level to level."""

    def __init__(self, args: argparse.Namespace, state: RunState, client: LoadClient):
        self.args = args
        self.state = state
        self.client = client
        total = args.requests * len(args.concurrency) * len(args.paths)
        self.progress = Progress(total, not args.no_progress)

    def run(self) -> None:
        try:
            asyncio.run(self._all())
        except KeyboardInterrupt:
            self._interrupted()
        finally:
            self.progress.close()
            try:
                asyncio.run(self.client.delete_uploads())
            except (KeyboardInterrupt, httpx.HTTPError, OSError) as e:
                log(f"could not delete the uploaded files: {e!r}")
        if self.state.truncated:
            self.state.warnings.append(
                f"--duration-limit-s {self.args.duration_limit_s:g} reached: partial results"
            )

    async def _all(self) -> None:
        await self._warm_up()
        paths = self.args.paths
        for k, level in enumerate(self.args.concurrency):
            # Paths in a rotated order per level, so that drift on a shared machine does not
            # always favour the same path.
            order = paths[k % len(paths) :] + paths[: k % len(paths)]
            for path in order:
                if time.monotonic() >= self.state.deadline:
                    self.state.truncated = True
                    return
                await self._level(path, level)

    async def _warm_up(self) -> None:
        """Workers, imports and first-call costs on every path, unmeasured."""
        count = self.args.warmup
        for path in self.args.paths:
            if count <= 0 or time.monotonic() >= self.state.deadline:
                break
            if path == SECOND_QUESTION:
                await self.client.upload_all()
            records, seconds = await self.client.batch(
                path, count, count, self.state.deadline, lambda r: None, first_index=0
            )
            self.state.warmup += records
            errors = [r.error for r in records if not r.ok]
            self.progress.line(
                f"warm-up {path}: {len(records) - len(errors)}/{len(records)} ok in "
                f"{seconds:.1f} s" + (f" ({errors[0]})" if errors else "")
            )
        await self.client.delete_uploads()

    async def _level(self, path: str, level: int) -> None:
        """One measured batch: `--requests` requests on `path`, `level` clients at once."""
        planned = self.args.requests
        if path == SECOND_QUESTION:
            await self.client.upload_all()
        self.state.partial = PartialBatch(path, level, [], time.perf_counter())
        records, seconds = await self.client.batch(
            path,
            level,
            planned,
            self.state.deadline,
            self.progress.step,
            records=self.state.partial.records,
        )
        self.state.partial = None
        self.state.records += records
        summary = summarize(path, level, planned, records, seconds)
        self.state.levels.append(summary)
        if summary["cancelled"] or summary["requests_sent"] < planned:
            self.state.truncated = True
        e2e = summary["e2e_s"]
        self.progress.line(
            f"{path} c={level}: {summary['completed']}/{planned} ok, "
            f"e2e p50 {e2e['p50'] if e2e else float('nan'):.3f} s, "
            f"{summary['request_throughput']:.2f} req/s, {seconds:.1f} s"
        )
        if path in (UPLOAD, SECOND_QUESTION):
            await self.client.delete_uploads()

    def _interrupted(self) -> None:
        state = self.state
        state.interrupted = True
        partial = state.partial
        if partial is not None and partial.records:
            state.records += partial.records
            summary = summarize(
                partial.path,
                partial.level,
                self.args.requests,
                partial.records,
                time.perf_counter() - partial.started,
            )
            summary["interrupted"] = True
            state.levels.append(summary)
        state.warnings.append("interrupted (Ctrl-C / SIGTERM): partial results")
        log("interrupted: writing what was measured")
