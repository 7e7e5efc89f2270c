"""What a decode worker is asked to do and what it answers: `PrepareJob` in, `VideoSummary`
(the video was prepared) or `VideoLength` (it is longer than the job's `split_above_s`, so
the caller cuts it into segments) out.

`run_job` runs in the worker process: the project's one preprocessing pipeline
(`arc_media.pipeline.prepare_video`) on a file on disk, its stage timings through the
pipeline's `timings` hook, and the prepared form written to `job.out` in the container the
plugin's `arc` loader reads (`arc_media.prepared`): JPEG/FLAC in container mode, raw in
shared mode. This module imports only the standard library at load time (the worker pays
for `arc_media` once, when it starts).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class PrepareJob:
    """One video (or clip of it) to prepare, and the bounds it is prepared under."""

    path: str  # the video on disk (never the client's name for it)
    out: str  # where the prepared container is written
    start: float | None = None  # a clip of the video, seconds (video.start / a segment's)
    end: float | None = None
    max_duration_s: float | None = None  # of the clip (its span), as check_limits counts it
    max_pixels: int | None = None
    timeout_s: float | None = None  # wall clock of each step (ffmpeg, decoding)
    font: str | None = None
    encoding: str = "jpeg-flac"  # arc_media.prepared: "jpeg-flac" or "raw"
    # A clip longer than this is measured, not prepared: the answer is a VideoLength.
    split_above_s: float | None = None


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
    clip: list[float] | None = None  # the clip used (an end past the end cut to it)
    started_at: float = 0.0  # wall clock when a worker took the job
    wait_s: float = 0.0  # time the job waited for a free worker
    notes: list[str] = field(default_factory=list)  # what was done differently, and why
    stages: dict[str, float] = field(default_factory=dict)  # prepare_video's timings hook

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class VideoLength:
    """A video (or clip) longer than the job's `split_above_s`: what the probe said, so
    that the caller can cut it into segments. Nothing was decoded."""

    video_duration_s: float  # the whole video's (the container's duration)
    clip: list[float] | None  # the clip asked for, within the video (None: all of it)
    width: int
    height: int
    has_audio: bool
    video_codec: str | None
    audio_codec: str | None
    source_bytes: int
    probe_s: float
    started_at: float = 0.0
    wait_s: float = 0.0

    @property
    def span(self) -> tuple[float, float]:
        """[start, end) seconds of what is asked about: the clip, or the whole video."""
        if self.clip is not None:
            return self.clip[0], self.clip[1]
        return 0.0, self.video_duration_s

    def as_dict(self) -> dict:
        return asdict(self)


JobResult = VideoSummary | VideoLength


def run_job(job: PrepareJob) -> JobResult:
    """Runs in a decode worker: the file -> its prepared container in `job.out` and its
    summary, or its length when it is longer than `job.split_above_s`."""
    from arc_media import prepared
    from arc_media.limits import Limits
    from arc_media.pipeline import prepare_video

    started_at = time.time()
    t0 = time.perf_counter()
    limits = Limits(
        max_duration_s=job.max_duration_s, max_pixels=job.max_pixels, timeout_s=job.timeout_s
    )
    if job.split_above_s is not None:
        length = _length_if_longer(job, limits, started_at)
        if length is not None:
            return length
    stages: dict[str, float] = {}
    video = prepare_video(
        job.path,
        font_path=job.font,
        start=job.start,
        end=job.end,
        limits=limits,
        timings=stages,
    )
    decoded_s = time.perf_counter() - t0
    info = {"intervals": [list(i) for i in video.intervals], "frame_indices": video.frame_indices}
    with open(job.out, "wb") as handle:
        # The raw frames go from their array to the file, no copy.
        prepared.write(
            handle, video.frames, video.audio, video.duration, info, encoding=job.encoding
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
        source_bytes=int(Path(job.path).stat().st_size),
        prepared_bytes=size,
        probe_s=round(stages.get("probe", 0.0), 4),
        decode_s=round(decoded_s, 4),
        encode_s=round(encode_s, 4),
        clip=_seconds(video.clip),
        started_at=started_at,
        stages={name: round(seconds, 4) for name, seconds in stages.items()},
    )
    if int(0.05 * probe.height) < 1:  # arc_media.overlay.draw_timestamp's font size
        summary.notes.append(
            f"timestamp overlay skipped: frames {probe.height} px high (the authors' font "
            "size, 5% of the height, is 0)"
        )
    return summary


def _length_if_longer(job: PrepareJob, limits: object, started_at: float) -> VideoLength | None:
    """The video's length when the clip asked about is longer than `split_above_s` (after
    the same checks as a preparation: a readable video within the limits), else None."""
    from arc_media.limits import check_limits
    from arc_media.plan import resolve_clip
    from arc_media.probe import probe_video

    t0 = time.perf_counter()
    probe = probe_video(job.path, timeout_s=job.timeout_s, count=False)
    clip = resolve_clip(probe.duration, job.start, job.end)
    span = (clip[1] - clip[0]) if clip else probe.duration
    check_limits(probe, span, limits)  # type: ignore[arg-type]
    assert job.split_above_s is not None
    if span <= job.split_above_s:
        return None
    return VideoLength(
        video_duration_s=round(float(probe.duration), 3),
        clip=_seconds(clip),
        width=probe.width,
        height=probe.height,
        has_audio=bool(probe.has_audio),
        video_codec=probe.video_codec,
        audio_codec=probe.audio_codec,
        source_bytes=int(Path(job.path).stat().st_size),
        probe_s=round(time.perf_counter() - t0, 4),
        started_at=started_at,
    )


def _seconds(clip: tuple[float, float] | None) -> list[float] | None:
    """A clip as usage shows it: seconds to the millisecond, as the video's duration."""
    return [round(float(t), 3) for t in clip] if clip else None


__all__ = ["JobResult", "PrepareJob", "VideoLength", "VideoSummary", "run_job"]
