"""Video ingestion in a bounded pool of worker processes.

Each job runs the project's one preprocessing pipeline (`arc_media.pipeline`, the
code the plugin runs on a raw video) on a file on disk and returns the prepared form in
the container the plugin's `arc` loader reads (`arc_media.prepared`): the compact JPEG/FLAC
encoding in container mode, the raw one (no codec) in shared mode.
Workers are separate processes so a hostile file can only take down a worker: ffmpeg
runs with protocol and demuxer allow-lists, `-nostdin`, no shell, bounded probing, and
address-space, CPU-seconds and wall-clock limits; the frames decode in the worker itself
(PyAV, same allow-lists, a wall-clock limit checked per packet) under a data-size limit;
frames are bounded in pixels before anything is decoded.

Each worker is its own process with its own pipe, so a worker that dies (a hostile file,
the OOM killer) fails only the job it held: that job is retried once in a fresh worker
(the crash may not have been the video's fault), and the dead worker alone is replaced.
A job that runs past its time limit, or whose client went away, has its worker killed.
"""

from __future__ import annotations

import asyncio
import errno
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
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import APIError
from .keys.limits import duration_limit
from .metrics import Metrics
from .priority import INTERACTIVE, PriorityHandout

log = logging.getLogger("arc.gateway")


@dataclass
class VideoSummary:
    """What the gateway tells the client (usage) and logs about a prepared video."""

    frames: int
    duration: int  # D, seconds of audio the model hears (docs/preprocessing.md#reconciling-d-and-n)
    has_audio: bool
    video_duration_s: float
    width: int
    height: int
    video_codec: str | None
    audio_codec: str | None
    source_bytes: int
    prepared_bytes: int
    probe_s: float
    decode_s: float  # the pipeline: probe, frames, audio (docs/architecture.md#where-the-time-goes)
    encode_s: float = 0.0  # the forward form written from the prepared video
    clip: list[float] | None = None
    started_at: float = 0.0  # wall clock when a worker took the job
    wait_s: float = 0.0  # time the job waited for a free worker
    notes: list[str] = field(default_factory=list)  # what was done differently, and why

    def as_dict(self) -> dict:
        return asdict(self)


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
        function, args, out = job
        try:
            container, summary = function(*args)
            # Through a file, not the pipe: a pipe message of N bytes costs the receiver
            # 2-3 N on the way (multiprocessing's growing buffer), a file read N. A job
            # that wrote the file itself (`out`, its last argument) returns None.
            if container is not None:
                Path(out).write_bytes(container)
            del container
        except BaseException as exc:  # noqa: BLE001  (everything goes back to the gateway)
            try:
                conn.send(("error", exc))
            except Exception:  # noqa: BLE001  (one that does not pickle: its text does)
                conn.send(("error", RuntimeError("".join(traceback.format_exception(exc)))))
            continue
        conn.send(("ok", summary))


def prepare_job(
    path: str,
    start: float | None,
    end: float | None,
    max_duration_s: float,
    max_pixels: int,
    timeout_s: float,
    font: str | None,
    encoding: str = "jpeg-flac",
    out: str | None = None,
) -> tuple[bytes | None, dict]:
    """Runs in a worker: file -> (prepared container bytes, summary); `encoding` is the
    container's (arc_media.prepared: "jpeg-flac" or "raw"). Given `out`, the container is
    written there instead (the raw frames go from their array to the file, no copy) and
    None is returned in its place."""
    from arc_media import prepared
    from arc_media.limits import Limits
    from arc_media.pipeline import prepare_video

    started_at = time.time()
    t0 = time.perf_counter()
    probed_at: list[float] = []

    def progress(line: str) -> None:
        if line.startswith("probe:") and not probed_at:
            probed_at.append(time.perf_counter() - t0)

    limits = Limits(max_duration_s=max_duration_s, max_pixels=max_pixels, timeout_s=timeout_s)
    video = prepare_video(
        path, font_path=font, start=start, end=end, limits=limits, progress=progress
    )
    decoded_s = time.perf_counter() - t0
    info = {"intervals": [list(i) for i in video.intervals], "frame_indices": video.frame_indices}
    container: bytes | None = None
    if out is None:
        container = prepared.encode(
            video.frames, video.audio, video.duration, info, encoding=encoding
        )
        size = len(container)
    else:
        with open(out, "wb") as handle:
            prepared.write(
                handle, video.frames, video.audio, video.duration, info, encoding=encoding
            )
            size = handle.tell()
    encode_s = time.perf_counter() - t0 - decoded_s
    probe = video.probe
    summary = VideoSummary(
        frames=video.num_frames,
        duration=int(video.duration),
        has_audio=bool(probe.has_audio),
        video_duration_s=round(float(probe.duration), 3),
        width=probe.width,
        height=probe.height,
        video_codec=probe.video_codec,
        audio_codec=probe.audio_codec,
        source_bytes=int(Path(path).stat().st_size),
        prepared_bytes=size,
        probe_s=round(probed_at[0] if probed_at else 0.0, 4),
        decode_s=round(decoded_s, 4),
        encode_s=round(encode_s, 4),
        clip=list(video.clip) if video.clip else None,
        started_at=started_at,
    )
    if int(0.05 * probe.height) < 1:  # arc_media.overlay.draw_timestamp's font size
        summary.notes.append(
            f"timestamp overlay skipped: frames {probe.height} px high (the authors' font "
            "size, 5% of the height, is 0)"
        )
    return container, summary.as_dict()


class WorkerDied(Exception):
    """The worker process running a job went away."""


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

    async def run(self, function: Callable, args: tuple, out: Path, timeout_s: float) -> dict:
        """`function(*args)` -> (container, summary): the summary; the container is in `out`."""
        await self.ready
        self.conn.send((function, args, str(out)))
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


class Ingestor:
    """Admission (a bounded queue) in front of the decode workers."""

    def __init__(self, settings: Settings, metrics: Metrics, job: Callable[..., Any] | None = None):
        self.settings = settings
        self.metrics = metrics
        self.job = job or prepare_job  # tests inject faults here
        # The forward form: raw where the engine reads the gateway's files (shared mode).
        self.encoding = "raw" if settings.shared_forward else "jpeg-flac"
        self.pending = 0
        # Where workers leave prepared containers (the file store's, on the same disk).
        self.out_dir = Path(settings.files_dir) / ".incoming"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # Idle workers go to the waiting job with the lowest priority number (interactive
        # before batch), first come first served within one.
        self.idle: PriorityHandout[_Worker] = PriorityHandout()
        self.workers: set[_Worker] = set()
        # One thread per worker waiting on its pipe, and room for killed workers' threads.
        self.threads = ThreadPoolExecutor(2 * settings.decode_workers + 2, "arc-decode-pipe")

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

    async def _run(self, args: tuple, out_dir: Path, priority: int) -> tuple[Path, dict]:
        """One job on an idle worker; a worker that dies gets one retry in a fresh one.
        The prepared container is left in a file in `out_dir` (the caller's to move or
        remove): it is never held whole in the gateway's memory."""
        # A margin over the ffmpeg limit, which normally fires first.
        timeout_s = self.settings.decode_timeout_s + 30
        out = out_dir / f"{os.urandom(12).hex()}.arcz"
        for attempt in (1, 2):
            worker = await self.idle.get(priority)
            try:
                summary = await worker.run(self.job, (*args, str(out)), out, timeout_s)
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
            return out, summary
        raise AssertionError("unreachable")

    async def prepare(
        self,
        path: Path,
        start: float | None = None,
        end: float | None = None,
        out_dir: Path | None = None,
        priority: int = INTERACTIVE,
    ) -> tuple[Path, VideoSummary]:
        """(the prepared container's file, in `out_dir` (default: beside the file store),
        which the caller moves or removes; summary). A job waits for a worker behind the
        jobs of a lower `priority` number (server.priority: batch decodes wait behind
        interactive ones)."""
        from arc_media.limits import FontError, MediaError, MediaTimeoutError

        if self.pending >= self.capacity:
            raise APIError(
                429,
                f"the gateway is decoding {self.pending} videos, its limit; retry shortly",
                "decode_queue_full",
                headers={"Retry-After": "2"},
            )
        self.pending += 1
        self.metrics.queue_depth.set(self.pending)
        s = self.settings
        submitted_at = time.time()
        args = (
            str(path),
            start,
            end,
            min(s.max_duration_s, duration_limit.get()),  # the caller's key may allow less
            s.max_pixels,
            s.decode_timeout_s,
            s.font,
            self.encoding,
        )
        try:
            container, summary = await self._run(args, out_dir or self.out_dir, priority)
        except MediaTimeoutError as e:
            message = f"the video could not be prepared in time: {_no_path(e, path)}"
            raise APIError(422, message, "video_timeout") from None
        except MediaError as e:
            message = f"the video cannot be used: {_no_path(e, path)}"
            raise APIError(400, message, "invalid_video") from None
        except MemoryError:
            raise APIError(
                422,
                "the video needs more memory to decode than the gateway allows "
                f"({s.ffmpeg_memory_mb} MB); send a smaller or shorter video",
                "video_too_large",
            ) from None
        except FontError as e:
            log.error("font problem: %s", e)
            raise APIError(500, "the gateway's overlay font is missing", "font_missing") from None
        except TimeoutError:
            raise APIError(
                422, "the video could not be prepared in time", "video_timeout"
            ) from None
        except WorkerDied:
            raise APIError(
                422,
                "the video crashed the decoder twice (over its memory or CPU limits)",
                "decoder_crashed",
            ) from None
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise _unprocessable(e) from None
            # The container's folder (shared mode: the forward tmpfs) is full.
            raise forward_full() from None
        except Exception as e:  # noqa: BLE001
            # Whatever else a hostile file makes the pipeline raise is about the video.
            raise _unprocessable(e) from None
        finally:
            self.pending -= 1
            self.metrics.queue_depth.set(self.pending)
        result = VideoSummary(**summary)
        result.wait_s = round(max(0.0, result.started_at - submitted_at), 4)
        for note in result.notes:
            log.warning(json.dumps({"event": "video_note", "note": note}))
        self.metrics.decode_wait_seconds.observe(result.wait_s)
        self.metrics.decode_seconds.observe(result.decode_s)
        self.metrics.probe_seconds.observe(result.probe_s)
        self.metrics.frames_sampled.observe(result.frames)
        return container, result


def _unprocessable(error: Exception) -> APIError:
    event = {"event": "decode_failed", "error": type(error).__name__, "detail": str(error)}
    log.error(json.dumps(event))
    return APIError(
        422, f"the video could not be prepared ({type(error).__name__})", "video_unprocessable"
    )


def forward_full() -> APIError:
    log.error(json.dumps({"event": "forward_dir_full"}))
    return APIError(
        507,
        "the gateway has no room left for the videos it is forwarding; retry shortly",
        "storage_full",
        headers={"Retry-After": "10"},
    )


def _no_path(error: Exception, path: Path) -> str:
    """The error's text without the server's file names."""
    text = str(error)
    for name in (str(path.resolve()), str(path)):
        text = text.replace(name, "the video")
    return text
