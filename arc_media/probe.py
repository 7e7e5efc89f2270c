"""What a video file holds: size, rotation, frame rate, frame count, duration, audio codec.

The probe reads the container in process (PyAV, the same libraries ffprobe is a front end
to): the same numbers as `ffprobe -show_format -show_streams` on every shared and test video,
in 2-30 ms instead of the ~80 ms an ffprobe process takes to start. The frame count is what
decord's `len()` gives (the frames the decoder delivers); containers without one in their
header (Matroska, WebM) are counted by demuxing, which `count_frames` also does for a clip.
A stream's display rotation reaches PyAV on decoded frames only, so the probe decodes the
first frame, unless the picture is over `PROBE_DECODE_MAX_PIXELS` (a bomb the limits will
refuse; a rotated video that large is read as unrotated).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import av

from . import frame_decode
from .ffmpeg import demuxer_options
from .limits import MediaError, MediaTimeoutError

PROBE_DECODE_MAX_PIXELS = 8192 * 8192


@dataclass
class VideoProbe:
    duration: float  # container duration, seconds
    width: int  # display size, rotation applied
    height: int
    rotation: int  # degrees the player turns the picture clockwise (0, 90, 180, 270)
    has_audio: bool
    video_codec: str | None
    audio_codec: str | None
    fps: float  # average frame rate
    num_frames: int  # vlen: frames the decoder delivers (decord's len())
    audio_profile: str | None = None  # "HE-AAC" needs the SBR delay (audio.py)
    start_time: float = 0.0  # the file's first timestamp, seconds: where clips count from

    @property
    def video_duration(self) -> float:
        """decord's duration: vlen / fps."""
        return self.num_frames / self.fps

    def window(self, clip: tuple[float, float] | None) -> tuple[float, float] | None:
        """A clip (seconds from the video's start) on the file's own timeline."""
        if clip is None:
            return None
        return self.start_time + clip[0], self.start_time + clip[1]


def open_media(path: Path) -> av.container.InputContainer:
    try:
        return frame_decode.open_input(path, demuxer_options())
    except av.error.FFmpegError as exc:
        # strerror, not str(exc): that one names the server's path
        raise MediaError(f"could not read the file as a video: {exc.strerror}") from None


def count_frames(
    path: Path, timeout_s: float | None, window: tuple[float, float] | None = None
) -> int:
    """Video packets, one per frame: demuxing only, no decoding. With a window: packets
    whose timestamp falls in [start, end) seconds of the file's timeline."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def check() -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise MediaTimeoutError(
                f"counting the frames took longer than the time limit of {timeout_s:g} s"
            )

    with open_media(path) as container:
        stream = frame_decode.first_video_stream(container)
        if stream is None:
            raise MediaError("no video stream in the file")
        base = stream.time_base
        lo, hi = frame_decode.window_ticks(stream, window)
        count = 0
        # A window is read from the keyframe before it to its end, not from the file's start.
        for packet in frame_decode.window_packets(container, stream, lo, hi, check):
            if packet.size == 0:
                continue
            if window is None:
                count += 1
            elif packet.pts is not None and base:
                seconds = float(packet.pts * base)
                count += window[0] <= seconds < window[1]
        return count


def probe_video(
    source: str | Path, *, timeout_s: float | None = 60.0, count: bool = True
) -> VideoProbe:
    """What the file holds. MediaError when it is not a usable video.

    `count=False` (a caller that prepares a clip and counts the clip's frames itself): a
    container without a frame count in its header (Matroska, WebM) gets duration x frame
    rate as its count instead of a demux of the whole file, which for a segment of a long
    video would read all of it."""
    path = Path(source)
    if not path.is_file():
        raise MediaError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise MediaError("could not read the file as a video: the file is empty")
    with open_media(path) as container:
        video = frame_decode.first_video_stream(container)
        audio = next(iter(container.streams.audio), None)
        if video is None:
            what = "an audio-only file" if audio is not None else "no playable streams"
            raise MediaError(f"no video stream in the file ({what})")
        codec = video.codec_context
        width, height = int(codec.width or 0), int(codec.height or 0)
        if width <= 0 or height <= 0:
            raise MediaError(
                "could not read the file as a video: the video stream has no picture size"
            )
        rotation = 0
        if width * height <= PROBE_DECODE_MAX_PIXELS:
            codec.thread_count = 1
            try:
                for frame in container.decode(video):
                    # counter-clockwise degrees, as ffprobe's side data prints them
                    rotation = round(-frame.rotation) % 360
                    break
            except av.error.FFmpegError:
                pass  # undecodable first frame: the frame decoder will say so
        if rotation in (90, 270):
            width, height = height, width
        duration = container.duration / 1e6 if container.duration else 0.0
        if duration <= 0 and video.duration and video.time_base:
            duration = float(video.duration * video.time_base)
        audio_codec = audio.codec_context if audio is not None else None
        probe = VideoProbe(
            duration=duration,
            width=width,
            height=height,
            rotation=rotation,
            has_audio=audio is not None,
            video_codec=codec.codec.canonical_name,
            audio_codec=audio_codec.codec.canonical_name if audio_codec else None,
            fps=float(video.average_rate or 0) or float(video.base_rate or 0),
            num_frames=int(video.frames or 0),
            audio_profile=audio_codec.profile if audio_codec else None,
            start_time=container.start_time / 1e6 if container.start_time else 0.0,
        )
    if probe.num_frames <= 0 and not count and probe.duration > 0 and probe.fps > 0:
        probe.num_frames = max(1, round(probe.duration * probe.fps))
    if probe.num_frames <= 0:
        # Matroska/WebM and others keep no frame count in the header.
        probe.num_frames = count_frames(path, timeout_s)
    if probe.fps <= 0 and probe.duration > 0:
        probe.fps = probe.num_frames / probe.duration
    if probe.num_frames <= 0 or probe.fps <= 0:
        raise MediaError("could not read the file as a video: the video stream has no frames")
    if probe.duration <= 0:
        probe.duration = probe.num_frames / probe.fps
    return probe


__all__ = ["VideoProbe", "count_frames", "open_media", "probe_video"]
