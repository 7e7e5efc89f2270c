"""The decode workers: a bounded pool of processes that run `PrepareJob`s (`jobs.py`).

Workers are separate processes so a hostile file can only take down a worker: ffmpeg
runs with protocol and demuxer allow-lists, `-nostdin`, no shell, bounded probing, and
address-space, CPU-seconds and wall-clock limits; the frames decode in the worker itself
(PyAV, same allow-lists, a wall-clock limit checked per packet) under a data-size limit;
frames are bounded in pixels before anything is decoded.

Each worker is its own process with its own pipe, so a worker that dies (a hostile file,
the OOM killer) fails only the job it held: that job is retried once in a fresh worker
(the crash may not have been the video's fault), and the dead worker alone is replaced.
A job that runs past its time limit, or whose client went away, has its worker killed.
The prepared container goes through a file (`job.out`), never through the pipe; the pipe
carries the job and its small answer (`VideoSummary` or `VideoLength`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import APIError
from ..keys.limits import duration_limit
from ..metrics import Metrics
from ..priority import INTERACTIVE, PriorityHandout
from .errors import WorkerDied, job_error
from .jobs import JobResult, PrepareJob, VideoLength, run_job

log = logging.getLogger("arc.gateway")


def _exit_with(parent_pid: int) -> None:
    # A worker outlives a gateway that was killed (or exited before joining its pool):
    # it notices the new parent and leaves instead of holding its memory forever.
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)


# What a worker holds besides a decoder's own memory: imports (~260 MB), one prepared
# 150-frame video and its container (~0.5 GB), thread stacks.
WORKER_BASE_MB = 2048


def limit_worker_memory(memory_mb: int) -> None:
    """Frames decode inside the worker (PyAV), so the worker's heap gets the bound an ffmpeg
    child gets, over what the worker itself needs: a hostile stream that makes the decoder
    allocate without end fails with MemoryError here instead of waking the OOM killer
    (which might pick the engine). RLIMIT_DATA counts heap and private writable mappings,
    not the address space reserved by imports, as RLIMIT_AS would."""
    import resource

    limit = (memory_mb + WORKER_BASE_MB) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def _worker_main(conn: Connection, memory_mb: int, cpu_s: int, parent_pid: int) -> None:
    """A decode worker: runs the jobs that come down its pipe, one at a time."""
    # The parent handles Ctrl-C and shutdown; workers just finish or get terminated.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(parent_pid,), daemon=True).start()
    from arc_media import pipeline, prepared  # noqa: F401  (import cost up front)
    from arc_media.ffmpeg import set_child_limits

    set_child_limits(memory_mb, cpu_s)
    if memory_mb:
        limit_worker_memory(memory_mb)
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        run, prepare = job
        try:
            result = run(prepare)
        except BaseException as exc:  # noqa: BLE001  (everything goes back to the gateway)
            try:
                conn.send(("error", exc))
            except Exception:  # noqa: BLE001  (one that does not pickle: its text does)
                conn.send(("error", RuntimeError("".join(traceback.format_exception(exc)))))
            continue
        conn.send(("ok", result))


class _Worker:
    """One decode process and its pipe."""

    def __init__(self, settings: Settings, threads: ThreadPoolExecutor):
        self.threads = threads  # waits on the pipe happen on these
        context = multiprocessing.get_context("spawn")  # nothing inherited: sockets, loop
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_worker_main,
            args=(child, settings.ffmpeg_memory_mb, settings.ffmpeg_cpu_s, os.getpid()),
            daemon=True,
            name="arc-decode-worker",
        )
        self.process.start()
        child.close()
        self.ready = asyncio.get_running_loop().run_in_executor(threads, self._receive)

    def _receive(self) -> tuple[str, Any]:
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.process.join(1)
            raise WorkerDied(f"exit code {self.process.exitcode}") from None

    async def run(self, run: Callable, job: PrepareJob, timeout_s: float) -> JobResult:
        """`run(job)` in the worker: its answer (the container is in `job.out`)."""
        await self.ready
        self.conn.send((run, job))
        receiving = asyncio.get_running_loop().run_in_executor(self.threads, self._receive)
        kind, value = await asyncio.wait_for(receiving, timeout_s)
        if kind == "error":
            raise value
        return value

    def kill(self) -> None:
        # The pipe is left open: a thread may still be reading it (it gets EOF now), and
        # a closed descriptor could be reused by the next worker's pipe under that thread.
        self.process.kill()
        self.process.join(5)

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


class DecodeWorkers:
    """The worker processes, behind admission (a bounded queue): `run(job)`."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        run: Callable[[PrepareJob], JobResult] | None = None,
    ):
        self.settings = settings
        self.metrics = metrics
        self.run_in_worker = run or run_job  # tests inject faults here
        # The forward form: raw where the engine reads the gateway's files (shared mode).
        self.encoding = "raw" if settings.shared_forward else "jpeg-flac"
        self.pending = 0
        # Idle workers go to the waiting job with the lowest priority number (interactive
        # before batch), first come first served within one.
        self.idle: PriorityHandout[_Worker] = PriorityHandout()
        self.workers: set[_Worker] = set()
        # One thread per worker waiting on its pipe, and room for killed workers' threads.
        self.threads = ThreadPoolExecutor(2 * settings.decode_workers + 2, "arc-decode-pipe")

    def job(
        self,
        path: Path,
        out: Path,
        start: float | None = None,
        end: float | None = None,
        split_above_s: float | None = None,
    ) -> PrepareJob:
        """A job for `path` under the gateway's limits, its container written to `out`."""
        s = self.settings
        return PrepareJob(
            path=str(path),
            out=str(out),
            start=start,
            end=end,
            max_duration_s=min(s.max_duration_s, duration_limit.get()),  # a key may allow less
            max_pixels=s.max_pixels,
            timeout_s=s.decode_timeout_s,
            font=s.font,
            encoding=self.encoding,
            split_above_s=split_above_s,
        )

    def _new_worker(self) -> _Worker:
        worker = _Worker(self.settings, self.threads)
        self.workers.add(worker)
        return worker

    def _replace(self, worker: _Worker) -> None:
        # Only the job that held a worker replaces it: a replacement never hurts another job.
        worker.kill()
        self.workers.discard(worker)
        self.idle.put_nowait(self._new_worker())

    async def warm_up(self) -> None:
        started = [self._new_worker() for _ in range(self.settings.decode_workers)]
        for worker in started:
            await worker.ready
            self.idle.put_nowait(worker)

    def shutdown(self) -> None:
        # Called after uvicorn has drained accepted requests: only idle workers are left.
        for worker in list(self.workers):
            worker.stop()
        self.workers.clear()
        self.threads.shutdown(wait=False, cancel_futures=True)

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self.workers if w.process.pid is not None]

    @property
    def capacity(self) -> int:
        return self.settings.max_queue + self.settings.decode_workers

    async def _on_a_worker(self, job: PrepareJob, priority: int) -> JobResult:
        """One job on an idle worker; a worker that dies gets one retry in a fresh one.
        A failed job leaves no container behind."""
        out = Path(job.out)
        # A margin over the ffmpeg limit, which normally fires first.
        timeout_s = self.settings.decode_timeout_s + 30
        for attempt in (1, 2):
            worker = await self.idle.get(priority)
            try:
                result = await worker.run(self.run_in_worker, job, timeout_s)
            except WorkerDied as e:
                event = {"event": "decode_worker_died", "attempt": attempt, "how": str(e)}
                log.warning(json.dumps(event))
                self._replace(worker)
                out.unlink(missing_ok=True)
                if attempt == 2:
                    raise
                continue
            except (TimeoutError, asyncio.CancelledError):
                self._replace(worker)  # it is still busy with the job: stop it
                out.unlink(missing_ok=True)
                raise
            except BaseException:
                self.idle.put_nowait(worker)
                out.unlink(missing_ok=True)
                raise
            self.idle.put_nowait(worker)
            return result
        raise AssertionError("unreachable")

    async def run(
        self,
        job: PrepareJob,
        *,
        admit: bool = True,
        priority: int = INTERACTIVE,
        param: str | None = None,
    ) -> JobResult:
        """Runs `job` in a worker: a `VideoSummary` with the container in `job.out` (the
        caller's to move or remove; never held whole in the gateway's memory), or a
        `VideoLength`. Errors are the gateway's answers (APIError). `admit=False` skips
        the queue's limit: a long video's later segments, whose request was admitted with
        its first (the request's own window bounds them). A job waits for a worker behind
        the jobs of a lower `priority` number (server.priority: batch decodes wait behind
        interactive ones). `param`: where the request gave the video, named by the errors
        about it (server.video.errors)."""
        if admit and self.pending >= self.capacity:
            raise APIError(
                429,
                f"the gateway is decoding {self.pending} videos, its limit (--decode-workers "
                "and --max-queue); retry shortly",
                "decode_queue_full",
                headers={"Retry-After": "2"},
            )
        self.pending += 1
        self.metrics.queue_depth.set(self.pending)
        submitted_at = time.time()
        try:
            result = await self._on_a_worker(job, priority)
        except APIError:
            raise
        except Exception as e:  # noqa: BLE001  (cancellation is no Exception: it goes on)
            clipped = job.start is not None or job.end is not None
            raise job_error(e, self.settings, Path(job.path), clipped, param) from None
        finally:
            self.pending -= 1
            self.metrics.queue_depth.set(self.pending)
        result = replace(result, wait_s=round(max(0.0, result.started_at - submitted_at), 4))
        self.metrics.decode_wait_seconds.observe(result.wait_s)
        self.metrics.probe_seconds.observe(result.probe_s)
        if isinstance(result, VideoLength):
            return result
        for note in result.notes:
            log.warning(json.dumps({"event": "video_note", "note": note}))
        self.metrics.decode_seconds.observe(result.decode_s)
        self.metrics.frames_sampled.observe(result.frames)
        return result
