"""Video ingestion in a bounded pool of worker processes.

Each job runs the project's one preprocessing pipeline (`vllm_plugin.preprocess`, the
code the plugin runs on a raw video) on a file on disk and returns the prepared form in
the compact container the plugin's `arc` loader reads (`vllm_plugin.prepared_media`).
Workers are separate processes so a hostile file can only take down a worker: ffmpeg
runs with protocol and demuxer allow-lists, `-nostdin`, no shell, bounded probing, and
address-space, CPU-seconds and wall-clock limits; the frames decode in the worker itself
(PyAV, same allow-lists, a wall-clock limit checked per packet) under a data-size limit;
frames are bounded in pixels before anything is decoded.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import Settings
from .errors import APIError
from .metrics import Metrics

log = logging.getLogger("arc.gateway")


@dataclass
class VideoSummary:
    """What the gateway tells the client (usage) and logs about a prepared video."""

    frames: int
    duration: int  # D, seconds of audio the model hears (§3.6)
    has_audio: bool
    video_duration_s: float
    width: int
    height: int
    video_codec: str | None
    audio_codec: str | None
    source_bytes: int
    prepared_bytes: int
    probe_s: float
    decode_s: float
    clip: list[float] | None = None
    started_at: float = 0.0  # wall clock when a worker took the job
    wait_s: float = 0.0  # time the job waited for a free worker

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


def _worker_init(memory_mb: int, cpu_s: int, parent_pid: int) -> None:
    # The parent handles Ctrl-C and shutdown; workers just finish or get terminated.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(parent_pid,), daemon=True).start()
    from vllm_plugin import preprocess

    preprocess.set_child_limits(memory_mb, cpu_s)
    if memory_mb:
        limit_worker_memory(memory_mb)


def _warm() -> bool:
    from vllm_plugin import prepared_media, preprocess  # noqa: F401  (import cost up front)

    return True


def prepare_job(
    path: str,
    start: float | None,
    end: float | None,
    max_duration_s: float,
    max_pixels: int,
    timeout_s: float,
    font: str | None,
) -> tuple[bytes, dict]:
    """Runs in a worker: file -> (prepared container bytes, summary)."""
    from vllm_plugin import prepared_media, preprocess

    started_at = time.time()
    t0 = time.perf_counter()
    probed_at: list[float] = []

    def progress(line: str) -> None:
        if line.startswith("probe:") and not probed_at:
            probed_at.append(time.perf_counter() - t0)

    limits = preprocess.Limits(
        max_duration_s=max_duration_s, max_pixels=max_pixels, timeout_s=timeout_s
    )
    video = preprocess.prepare_video(
        path, font_path=font, start=start, end=end, limits=limits, progress=progress
    )
    info = {"intervals": [list(i) for i in video.intervals], "frame_indices": video.frame_indices}
    container = prepared_media.encode(video.frames, video.audio, video.duration, info)
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
        prepared_bytes=len(container),
        probe_s=round(probed_at[0] if probed_at else 0.0, 4),
        decode_s=round(time.perf_counter() - t0, 4),
        clip=list(video.clip) if video.clip else None,
        started_at=started_at,
    )
    return container, summary.as_dict()


class Ingestor:
    """Admission (a bounded queue) in front of a process pool."""

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.pending = 0
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn: workers never inherit the server's sockets, threads or event loop.
        return ProcessPoolExecutor(
            max_workers=self.settings.decode_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(self.settings.ffmpeg_memory_mb, self.settings.ffmpeg_cpu_s, os.getpid()),
        )

    async def warm_up(self) -> None:
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(self.pool, _warm) for _ in range(self.settings.decode_workers)]
        await asyncio.gather(*jobs)

    def shutdown(self) -> None:
        # Called after uvicorn has drained accepted requests: nothing is left to wait for
        # but idle workers, which are joined so none is left behind.
        self.pool.shutdown(wait=True, cancel_futures=True)

    @property
    def capacity(self) -> int:
        return self.settings.max_queue + self.settings.decode_workers

    async def prepare(
        self, path: Path, start: float | None = None, end: float | None = None
    ) -> tuple[bytes, VideoSummary]:
        from vllm_plugin.preprocess import FontError, MediaError, MediaTimeoutError

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
        try:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(
                self.pool,
                prepare_job,
                str(path),
                start,
                end,
                s.max_duration_s,
                s.max_pixels,
                s.decode_timeout_s,
                s.font,
            )
            # A margin over the ffmpeg limit, which normally fires first.
            container, summary = await asyncio.wait_for(future, s.decode_timeout_s + 30)
        except MediaTimeoutError as e:
            raise APIError(422, f"the video could not be prepared in time: {e}", "video_timeout")
        except MediaError as e:
            raise APIError(400, f"the video cannot be used: {e}", "invalid_video") from None
        except MemoryError:
            raise APIError(
                422,
                "the video needs more memory to decode than the gateway allows "
                f"({s.ffmpeg_memory_mb} MB); send a smaller or shorter video",
                "video_too_large",
            ) from None
        except FontError as e:
            log.error("font problem: %s", e)
            raise APIError(500, "the gateway's overlay font is missing", "font_missing")
        except TimeoutError:
            raise APIError(
                422, "the video could not be prepared in time", "video_timeout"
            ) from None
        except BrokenProcessPool:
            # A worker died (memory limit, crash on a hostile file): replace the pool.
            log.warning("a decode worker died; starting a new pool")
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            raise APIError(
                422,
                "the video crashed the decoder (over its memory or CPU limits)",
                "decoder_crashed",
            ) from None
        finally:
            self.pending -= 1
            self.metrics.queue_depth.set(self.pending)
        result = VideoSummary(**summary)
        result.wait_s = round(max(0.0, result.started_at - submitted_at), 4)
        self.metrics.decode_wait_seconds.observe(result.wait_s)
        self.metrics.decode_seconds.observe(result.decode_s)
        self.metrics.probe_seconds.observe(result.probe_s)
        self.metrics.frames_sampled.observe(result.frames)
        return container, result
