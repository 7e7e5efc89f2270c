"""The client side of the long-video benchmark: the four ways of asking about one long
video, each timed end to end, and the gateway's memory sampled while they run.

    segmented        one request, `video.segments` (the gateway cuts, asks in parallel,
                     integrates)
    sequential       (a) the same segments as clip requests (`video.start`/`end`), one
                     after another
    concurrent       (b) the same clip requests, all sent at once by the client
    second-question  the segmented request again, about the same stored file (run right
                     after the first)

Each other path asks about a stored file of its own (uploaded just before, untimed, of a
video of its own), so that no path finds another's prepared segments in the file store or
its prompts in the engine's caches.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

PATHS = ("segmented", "sequential", "concurrent", "second-question")


@dataclass
class PathRun:
    path: str
    seconds: float
    requests: int
    ok: int
    errors: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    decode_s: float = 0.0  # the gateway's decode stage, summed over the path's requests
    integration_s: float | None = None  # segmented paths: the integration pass
    segments_s: float | None = None  # segmented paths: all segments prepared and answered
    peak_gateway_mb: float = 0.0  # the gateway's main process, RSS
    peak_workers_mb: float = 0.0  # its decode workers, RSS summed
    segments: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


class MemorySampler:
    """The peak RSS of a process and of its children, sampled every `every_s` seconds."""

    def __init__(self, pid: int, every_s: float = 0.1):
        self.pid = pid
        self.every_s = every_s
        self.main_mb = self.children_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        children = _children(self.pid)
        next_scan = time.monotonic() + 2
        while not self._stop.is_set():
            if time.monotonic() > next_scan:  # a worker replaced meanwhile
                children, next_scan = _children(self.pid), time.monotonic() + 2
            self.main_mb = max(self.main_mb, _rss_mb(self.pid))
            self.children_mb = max(self.children_mb, sum(_rss_mb(c) for c in children))
            self._stop.wait(self.every_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def upload(base: str, video: Path) -> str:
    with video.open("rb") as handle:
        reply = httpx.post(
            base + "/v1/files",
            files={"file": (video.name, handle, "video/mp4")},
            data={"purpose": "user_data"},
            timeout=3600,
        )
    reply.raise_for_status()
    return reply.json()["id"]


def _body(file_id: str, video: dict, max_tokens: int) -> dict:
    return {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": file_id}},
                    {"type": "text", "text": "What colour is the card, and what is heard?"},
                ],
            }
        ],
        "max_tokens": max_tokens,
        "ignore_eos": True,  # every request generates exactly max_tokens
        "temperature": 0,
        "video": video,
    }


def _stages(reply: httpx.Response) -> dict[str, float]:
    """The Server-Timing stages, in seconds."""
    found = {}
    for item in reply.headers.get("server-timing", "").split(","):
        name, _, duration = item.strip().partition(";dur=")
        if duration:
            found[name] = float(duration) / 1000
    return found


def _note(run: PathRun, reply: httpx.Response | BaseException) -> None:
    if isinstance(reply, BaseException):
        run.errors.append(f"{type(reply).__name__}: {reply}"[:300])
        return
    if reply.status_code != 200:
        run.errors.append(f"HTTP {reply.status_code}: {reply.text[:300]}")
        return
    run.ok += 1
    usage = reply.json().get("usage") or {}
    run.prompt_tokens += usage.get("prompt_tokens", 0)
    run.completion_tokens += usage.get("completion_tokens", 0)
    stages = _stages(reply)
    run.decode_s += stages.get("decode", 0.0)
    if "integration" in stages:
        run.integration_s = stages["integration"]
        run.segments_s = stages.get("segments")
        run.segments = [
            {k: s[k] for k in ("start", "end", "frames", "has_audio")}
            for s in usage.get("video", {}).get("segments", [])
        ]


def segmented(
    base: str, file_id: str, segments: str | float, max_tokens: int, path: str
) -> PathRun:
    run = PathRun(path, 0.0, 1, 0)
    t0 = time.perf_counter()
    try:
        reply: httpx.Response | BaseException = httpx.post(
            base + "/v1/chat/completions",
            json=_body(file_id, {"segments": segments}, max_tokens),
            timeout=7200,
        )
    except httpx.HTTPError as e:
        reply = e
    run.seconds = time.perf_counter() - t0
    _note(run, reply)
    return run


def sequential(
    base: str, file_id: str, clips: list[tuple[float, float]], max_tokens: int
) -> PathRun:
    run = PathRun("sequential", 0.0, len(clips), 0)
    t0 = time.perf_counter()
    with httpx.Client(timeout=3600) as client:
        for start, end in clips:
            try:
                reply: httpx.Response | BaseException = client.post(
                    base + "/v1/chat/completions",
                    json=_body(file_id, {"start": start, "end": end}, max_tokens),
                )
            except httpx.HTTPError as e:
                reply = e
            _note(run, reply)
    run.seconds = time.perf_counter() - t0
    return run


def concurrent(
    base: str, file_id: str, clips: list[tuple[float, float]], max_tokens: int
) -> PathRun:
    run = PathRun("concurrent", 0.0, len(clips), 0)

    async def all_at_once() -> list[httpx.Response | BaseException]:
        limits = httpx.Limits(max_connections=len(clips))
        async with httpx.AsyncClient(timeout=3600, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        base + "/v1/chat/completions",
                        json=_body(file_id, {"start": start, "end": end}, max_tokens),
                    )
                    for start, end in clips
                ),
                return_exceptions=True,
            )

    t0 = time.perf_counter()
    replies = asyncio.run(all_at_once())
    run.seconds = time.perf_counter() - t0
    for reply in replies:
        _note(run, reply)
    return run


def measured(run_path: Callable[[], PathRun], gateway_pid: int) -> PathRun:
    """`run_path()` with the gateway's memory sampled meanwhile."""
    memory = MemorySampler(gateway_pid)
    memory.start()
    try:
        run = run_path()
    finally:
        memory.stop()
    run.peak_gateway_mb = round(memory.main_mb, 1)
    run.peak_workers_mb = round(memory.children_mb, 1)
    return run


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
