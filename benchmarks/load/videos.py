"""The videos the load benchmark sends, and the direct path's input: each video prepared
beforehand by the project's pipeline (untimed), with the forward form's cost measured apart."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".ts", ".mpg"}


@dataclass
class Video:
    name: str
    path: Path
    data: bytes
    duration_s: float
    mp4_data_url: str = ""
    prepared_data_url: str = ""
    frames: int = 0
    prepared_bytes: int = 0
    prepare_s: float = 0.0
    container_encode_s: float = 0.0
    container_decode_s: float = 0.0

    def summary(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "bytes": len(self.data),
            "duration_s": self.duration_s,
            "frames": self.frames,
            "prepared_bytes": self.prepared_bytes,
            "prepare_s": self.prepare_s,
            "container_encode_s": self.container_encode_s,
            "container_decode_s": self.container_decode_s,
        }


def find_videos(sources: list[Path], max_s: float, quick: bool) -> tuple[list[Video], list[str]]:
    """The usable videos of `sources` (files or folders) up to `max_s` seconds long (0: any),
    only the shortest with `quick`; and why each other file was skipped."""
    from arc_media.limits import MediaError
    from arc_media.probe import probe_video

    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files += sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        elif source.is_file():
            files.append(source)
        else:
            raise SystemExit(f"no such video or directory: {source}")
    videos, skipped = [], []
    for path in files:
        try:
            duration = probe_video(path, timeout_s=60).duration
        except MediaError as e:
            skipped.append(f"{path.name}: not a usable video ({e})")
            continue
        if max_s and duration > max_s:
            skipped.append(f"{path.name}: {duration:.0f} s > --max-video-s {max_s:g}")
            continue
        videos.append(Video(path.name, path, path.read_bytes(), duration))
    if quick and videos:
        videos = [min(videos, key=lambda v: (v.duration_s, len(v.data)))]
    return videos, skipped


def prepare(video: Video) -> None:
    """The direct path's input: the project's pipeline and container, once per video
    (what the gateway does per request and forwards); and, timed apart, the container's
    encode and decode (the forward form's cost on each side)."""
    from arc_media import prepared as prepared_media
    from arc_media.pipeline import prepare_video

    t0 = time.perf_counter()
    prepared = prepare_video(video.path)
    video.prepare_s = time.perf_counter() - t0
    info = {
        "intervals": [list(i) for i in prepared.intervals],
        "frame_indices": prepared.frame_indices,
    }
    encodes, decodes = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        container = prepared_media.encode(prepared.frames, prepared.audio, prepared.duration, info)
        t1 = time.perf_counter()
        prepared_media.decode(container)
        encodes.append(t1 - t0)
        decodes.append(time.perf_counter() - t1)
    video.container_encode_s = sorted(encodes)[1]
    video.container_decode_s = sorted(decodes)[1]
    video.frames = prepared.num_frames
    video.prepared_bytes = len(container)
    video.prepared_data_url = (
        f"data:{prepared_media.PREPARED_MIME};base64," + base64.b64encode(container).decode()
    )
    video.mp4_data_url = "data:video/mp4;base64," + base64.b64encode(video.data).decode()
