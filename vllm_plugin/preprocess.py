"""The project's one video preprocessing pipeline (ARC_MODEL.md §3.1, §3.2, §3.6, §4).

video file -> probe (PyAV) -> frame plan -> decode of only the planned frames (PyAV) ->
timestamp overlay (PIL) -> 640x640 bicubic (PIL) ; in parallel: audio track -> 16 kHz mono
float32 -> Whisper log-mel features per 30 s piece ; then reconcile the audio length D with
the frame count N.

Used by the vLLM plugin (video loader, processor), the HTTP gateway and `arc-prepare`.
Every ffmpeg call runs without a shell, with `-nostdin`, only the `file`/`pipe`
protocols, a whitelist of container formats and a wall-clock timeout, because the input
may come from anyone.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import ffmpeg
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from . import frame_decode

SAMPLE_RATE = 16000
IMAGE_SIZE = 640
MAX_FRAMES = 150
# Threads that stamp and resize decoded frames (PIL releases the GIL while resizing).
STAMP_THREADS = max(1, min(4, os.cpu_count() or 1))
MAX_AUDIO_SECONDS = 300
SNIPPET_SAMPLES = 2 * SAMPLE_RATE
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # one Whisper piece: 480000 samples
N_FFT = 400
HOP = 160
N_MELS = 128
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

FFMPEG = os.environ.get("ARC_FFMPEG", "ffmpeg")
# Demuxers we accept. Playlist-like formats (hls, concat, image2, ...) are left out on
# purpose: they open other files named inside the upload.
ALLOWED_DEMUXERS = (
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,ogg,asf,wav,mp3,aac,flac,ivf"
)
# Bounds for probing untrusted input (bytes / microseconds).
PROBE_SIZE = 20_000_000
ANALYZE_DURATION = 20_000_000

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
)

# Audio path decision (§3.1). Measured on the golden clips (2-core machine, ffmpeg 5.1):
# mean |Δ| of our log-mel features vs golden audio_features.npy, and the wall time of the
# waveform step for the 7.5 / 26 / 30 s clips. Unless a row says otherwise the downmix is
# TO_MONO and the resampler soxr:
#
#   path                                   w33698kgs05  c3522vbgwaw  q35134y59x8  time
#   direct, ffmpeg -ac 1, swr              0.1064       0.1511       0.1367       0.13-0.14 s
#   mp3 round trip, ffmpeg -ac 1           0.0968       0.1458       0.1316       0.28-0.66 s
#   direct                                 0.0443       0.1279       0.1151       0.09-0.12 s
#   direct + HE-AAC lag                    0.0111       0.0244       0.0223       0.09-0.13 s
#   mp3 round trip                         0.0405       0.1268       0.1151       0.25-0.62 s
#   mp3 round trip + HE-AAC lag (chosen)   0.0069       0.0271       0.0231       0.24-0.62 s
#
#   synthetic clips (mono LC-AAC tones)    syn_short    syn_200s     syn_400s
#   direct, mono kept as is                0.0861 0.08s 0.0869 0.23s 0.0892 0.27s
#   direct                                 0.0110 0.08s 0.0159 0.29s 0.0178 0.31s
#   mp3 round trip (chosen)                0.0005 0.16s 0.0076 1.89s 0.0091 3.51s
#
# Findings beyond the spec:
# (1) moviepy reads every track as stereo (ffmpeg's `-ac 2`, which upmixes mono at -3 dB)
#     and librosa averages the two channels; ffmpeg's `-ac 1` does neither, so we go
#     through stereo and `pan` ourselves (TO_MONO).
# (2) The three real clips are HE-AAC (SBR), and the authors' decoder delivered their
#     audio ~19.8 ms (~950 samples at 48 kHz, about the 2x481-sample SBR decoder delay)
#     later than ffmpeg 5.1 does; LC-AAC (syn_short) needs no shift. We delay HE-AAC audio
#     by HE_AAC_LAG_S, keeping its length.
# (3) moviepy writes exactly int(44100 * d) samples, d = the container duration as ffmpeg
#     prints it (1/100 s). We pad/cut the same way: syn_200s' AAC decodes to 200.02 s,
#     which would make D 201 where the golden says 200.
# Decision: the mp3 round trip (libmp3lame 128 kb/s, 44.1 kHz stereo s16, as moviepy
# exports it) is the default. It is what the model was trained on, as close as direct on
# speech and 2-20x closer on clean tones, where the mp3 noise floor decides the -8 clamp.
# It costs one mp3 encode (~120x real time on one core, in parallel with the frames).
# Through a pipe the mp3 has no LAME header, so the decoder cannot drop the encoder delay
# (it would come back ~25 ms late and too long): we drop MP3_DELAY_SAMPLES ourselves.
# audio_mode="direct" stays available where speed matters more.
HE_AAC_LAG_S = 0.0198
# Samples before the first real one when an mp3 from libmp3lame is decoded: LAME's encoder
# delay (576) plus the mp3 decoder's (528 + 1). The LAME header of an mp3 file says so to
# a reader (ffmpeg, libsndfile); our pipe has none.
MP3_DELAY_SAMPLES = 576 + 529
AUDIO_MODES = ("mp3", "direct")
EXPORT_RATE = 44100


class MediaError(ValueError):
    """The input cannot be used as a video (unreadable, no video stream, over a limit)."""


class MediaTimeoutError(MediaError):
    """ffmpeg or a decoding step ran past the wall-clock limit."""


class FontError(RuntimeError):
    """No font for the timestamp overlay: a setup problem, not a bad input."""


@dataclass(frozen=True)
class Limits:
    """Bounds for untrusted input. None means no bound."""

    max_duration_s: float | None = None
    max_pixels: int | None = None
    timeout_s: float | None = 600.0


DEFAULT_LIMITS = Limits()


@dataclass
class VideoProbe:
    duration: float  # container duration, seconds
    width: int  # display size, rotation applied
    height: int
    rotation: int  # degrees the player turns the picture clockwise (0, 90, 180, 270)
    has_video: bool
    has_audio: bool
    video_codec: str | None
    audio_codec: str | None
    fps: float  # average frame rate
    num_frames: int  # vlen: frames the decoder delivers (decord's len())
    format_name: str
    size_bytes: int
    audio_profile: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    start_time: float = 0.0

    @property
    def video_duration(self) -> float:
        """decord's duration: vlen / fps."""
        return self.num_frames / self.fps


@dataclass
class PreparedVideo:
    frames: np.ndarray  # uint8 [N, 640, 640, 3], stamped and resized
    audio: np.ndarray  # float32 16 kHz mono after §3.1
    duration: int  # D after §3.6
    frame_indices: list[int]
    intervals: list[tuple[int, int]]
    probe: VideoProbe
    seconds_frames: float = 0.0
    seconds_audio: float = 0.0
    audio_duration: int = 0  # ceil(len(audio) / 16000), before reconciliation
    vlen: int = 0  # frames of the (clipped) video the plan was made over
    fps: float = 0.0
    audio_features: np.ndarray | None = None  # [W, 128, 3000] float32 when asked for
    clip: tuple[float, float] | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def video_duration(self) -> float:
        return self.vlen / self.fps if self.fps else 0.0


# ---------------------------------------------------------------------------------------
# running ffmpeg


def _input_name(path: Path) -> str:
    # "file:" + absolute path: a name can neither start an option ("-x") nor pick a
    # protocol ("concat:...").
    return "file:" + str(path.resolve())


def _last_lines(stderr: bytes, limit: int = 300) -> str:
    """ffmpeg's last error lines, without its "[demuxer @ 0x...]" prefixes and file names
    (no server paths in messages that go back to users)."""
    text = stderr.decode("utf-8", "replace")
    text = re.sub(r"\[[^\]]*@ 0x[0-9a-fA-F]+\]\s*", "", text)
    text = re.sub(r"file:\S+?: ", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(dict.fromkeys(lines[-3:]))[-limit:] if lines else "no details"


# Resource limits for every ffmpeg child (untrusted input): address space and
# CPU seconds. Off by default; the gateway's decode workers set them (`set_child_limits`).
_CHILD_LIMITS: dict[int, int] = {}


def set_child_limits(memory_mb: int | None = None, cpu_s: int | None = None) -> None:
    import resource

    _CHILD_LIMITS.clear()
    if memory_mb:
        _CHILD_LIMITS[resource.RLIMIT_AS] = int(memory_mb) * 1024 * 1024
    if cpu_s:
        _CHILD_LIMITS[resource.RLIMIT_CPU] = int(cpu_s)


def _limit_child(pid: int) -> None:
    # Set right after the start (no preexec_fn: unsafe in threaded parents); the child
    # has done nothing costly yet when it lands.
    if not _CHILD_LIMITS:
        return
    import resource

    for kind, value in _CHILD_LIMITS.items():
        try:
            resource.prlimit(pid, kind, (value, value))
        except (ProcessLookupError, PermissionError, OSError):
            pass


class _Process:
    """A child process with a wall-clock limit; stderr is drained in a thread."""

    def __init__(self, args: list[str], timeout_s: float | None, what: str, stdin=None):
        self.what = what
        self.timeout_s = timeout_s
        self.timed_out = False
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _limit_child(self.proc.pid)
        self._stderr = bytearray()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self._timer = None
        if timeout_s is not None:
            self._timer = threading.Timer(timeout_s, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for chunk in iter(lambda: self.proc.stderr.read(4096), b""):
            self._stderr += chunk
            del self._stderr[:-16384]  # keep the tail only

    def _expire(self) -> None:
        self.timed_out = True
        self.proc.kill()

    def finish(self) -> tuple[int, bytes]:
        returncode = self.proc.wait()
        self._close()
        if self.timed_out:
            raise MediaTimeoutError(
                f"{self.what} took longer than the time limit of {self.timeout_s:g} s"
            )
        return returncode, bytes(self._stderr)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._reader.join(timeout=5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def _run(args: list[str], timeout_s: float | None, what: str) -> bytes:
    """Run to the end, return stdout; MediaError with ffmpeg's last words on failure."""
    proc = _Process(args, timeout_s, what)
    assert proc.proc.stdout is not None
    out = proc.proc.stdout.read()
    code, err = proc.finish()
    if code != 0:
        raise MediaError(f"{what} failed: {_last_lines(err)}")
    return out


def _ffmpeg_args(stream: ffmpeg.nodes.OutputStream) -> list[str]:
    """ffmpeg-python builds the command; we add the hardening options in front."""
    global_args = [
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
    ]
    return [FFMPEG, *global_args, *ffmpeg.get_args(stream)]


def _safe_input(path: Path, **options) -> ffmpeg.nodes.FilterableStream:
    return ffmpeg.input(
        _input_name(path),
        protocol_whitelist="file,pipe",
        format_whitelist=ALLOWED_DEMUXERS,
        **options,
    )


@functools.lru_cache(maxsize=1)
def _ffmpeg_has_fps_mode() -> bool:
    """`-fps_mode` exists from ffmpeg 5.1; older ones only know `-vsync`."""
    try:
        out = subprocess.run(
            [FFMPEG, "-hide_banner", "-h", "full"], capture_output=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return True
    return b"-fps_mode" in out


# ---------------------------------------------------------------------------------------
# probe

# The probe reads the container in process (PyAV, the same libraries ffprobe is a front end
# to): the same numbers as `ffprobe -show_format -show_streams` on every shared and test
# video, in 2-30 ms instead of the ~80 ms an ffprobe process takes to start.
# A stream's display rotation reaches PyAV on decoded frames only, so the probe decodes the
# first frame, unless the picture is this large (a bomb the limits will refuse; a rotated
# video that large is read as unrotated).
PROBE_DECODE_MAX_PIXELS = 8192 * 8192


def _container_options() -> dict[str, str]:
    return {
        "protocol_whitelist": "file",
        "format_whitelist": ALLOWED_DEMUXERS,
        "probesize": str(PROBE_SIZE),
        "analyzeduration": str(ANALYZE_DURATION),
    }


def _open_media(path: Path) -> av.container.InputContainer:
    try:
        return frame_decode.open_input(path, _container_options())
    except av.error.FFmpegError as exc:
        # strerror, not str(exc): that one names the server's path
        raise MediaError(f"could not read the file as a video: {exc.strerror}") from None


def _count_frames(
    path: Path, timeout_s: float | None, start: float | None = None, end: float | None = None
) -> int:
    """Video packets, one per frame: demuxing only, no decoding. With start/end: packets
    whose timestamp falls in [start, end) seconds of the file's timeline."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with _open_media(path) as container:
        stream = frame_decode.first_video_stream(container)
        if stream is None:
            raise MediaError("no video stream in the file")
        base = stream.time_base
        count = 0
        for packet in container.demux(stream):
            if deadline is not None and time.monotonic() > deadline:
                raise MediaTimeoutError(
                    f"counting the frames took longer than the time limit of {timeout_s:g} s"
                )
            if packet.size == 0:
                continue
            if start is None and end is None:
                count += 1
            elif packet.pts is not None and base:
                seconds = float(packet.pts * base)
                count += (start or 0.0) <= seconds < (math.inf if end is None else end)
        return count


def probe_video(source: str | Path, *, timeout_s: float | None = 60.0) -> VideoProbe:
    """What the file holds. MediaError when it is not a usable video."""
    path = Path(source)
    if not path.is_file():
        raise MediaError(f"no such file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise MediaError("could not read the file as a video: the file is empty")
    with _open_media(path) as container:
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
        fps = float(video.average_rate or 0) or float(video.base_rate or 0)
        num_frames = int(video.frames or 0)
        audio_codec = audio.codec_context if audio is not None else None
        probe = VideoProbe(
            duration=duration,
            width=width,
            height=height,
            rotation=rotation,
            has_video=True,
            has_audio=audio is not None,
            video_codec=codec.codec.canonical_name,
            audio_codec=audio_codec.codec.canonical_name if audio_codec else None,
            fps=fps,
            num_frames=num_frames,
            format_name=container.format.name,
            size_bytes=size,
            audio_profile=audio_codec.profile if audio_codec else None,
            audio_sample_rate=(audio_codec.sample_rate or None) if audio_codec else None,
            audio_channels=(audio_codec.layout.nb_channels or None) if audio_codec else None,
            start_time=container.start_time / 1e6 if container.start_time else 0.0,
        )
    if probe.num_frames <= 0:
        # Matroska/WebM and others keep no frame count in the header.
        probe.num_frames = _count_frames(path, timeout_s)
    if probe.fps <= 0 and probe.duration > 0:
        probe.fps = probe.num_frames / probe.duration
    if probe.num_frames <= 0 or probe.fps <= 0:
        raise MediaError("could not read the file as a video: the video stream has no frames")
    if probe.duration <= 0:
        probe.duration = probe.num_frames / probe.fps
    return probe


# ---------------------------------------------------------------------------------------
# frame plan and overlay (§4)


def sample_plan(
    num_frames: int, fps: float, max_frames: int = MAX_FRAMES
) -> tuple[list[int], list[tuple[int, int]]]:
    """Frame index (middle of each interval) and the overlay seconds of each interval."""
    if num_frames <= 0 or fps <= 0:
        raise ValueError("sample_plan needs at least one frame and a positive fps")
    duration = num_frames / fps
    bounds: list[tuple[int, int]] = []
    intervals: list[tuple[int, int]] = []
    if duration <= max_frames:
        for i in range(math.ceil(duration)):
            bounds.append((int(i * fps), int((i + 1) * fps)))
            intervals.append((i, i + 1))
    else:
        seg = duration / max_frames
        for i in range(max_frames):
            # left to right in double, as the authors compute it
            bounds.append((int(i * seg * fps), int((i + 1) * seg * fps)))
            intervals.append((round(i * seg), round((i + 1) * seg)))
    indices = []
    for start, end in bounds:
        # below 1 fps an interval can hold no frame: take the one it starts in
        end = min(max(end, start + 1), num_frames)
        start = min(start, end - 1)
        indices.append((start + end) // 2)
    return indices, intervals


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def default_font_path() -> str:
    """Liberation Sans (metric-compatible with the authors' Arial); `ARC_FONT` overrides."""
    override = os.environ.get("ARC_FONT")
    if override:
        if not Path(override).is_file():
            raise FontError(f"ARC_FONT points to a missing file: {override}")
        return override
    for candidate in FONT_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    if shutil.which("fc-match"):
        try:
            found = subprocess.run(
                ["fc-match", "--format=%{file}", "Liberation Sans:style=Regular"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            found = ""
        if found and "liberation" in found.lower() and Path(found).is_file():
            return found
    raise FontError(
        "no font for the timestamp overlay: install Liberation Sans (Debian: fonts-liberation) "
        "or set ARC_FONT to a .ttf file"
    )


_fonts = threading.local()


def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    # One cache per thread: a FreeType face must not render in two threads at once.
    cache = _fonts.__dict__.setdefault("cache", {})
    key = (path, size)
    if key not in cache:
        cache[key] = ImageFont.truetype(path, size)
    return cache[key]


def draw_timestamp(
    frame: Image.Image, start_sec: float, end_sec: float, font_path: str | None = None
) -> Image.Image:
    """Burn `HH:MM:SS-HH:MM:SS` top right, with the authors' exact geometry (§4.4).
    Draws on `frame` in place and returns it."""
    width, height = frame.size
    size = int(0.05 * height)
    if size < 1:
        # Under 20 px high the authors' font size is 0 (PIL refuses it): there is no
        # readable stamp to burn, so the frame goes unstamped (the gateway logs it).
        return frame
    font = _font(font_path or default_font_path(), size)
    draw = ImageDraw.Draw(frame)
    text = f"{_hms(start_sec)}-{_hms(end_sec)}"
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    w, h = x1 - x0, y1 - y0
    x, y = width - w - 20, 20
    # The authors pass alpha 180; on an RGB image it is ignored: the box is opaque.
    draw.rectangle([x - 10, y - 10, x + w + 10, y + h + 10], fill=(0, 0, 0))
    draw.text((x, y), text, font=font, fill=(255, 255, 255))
    return frame


# ---------------------------------------------------------------------------------------
# frames


def _select_expr(indices: Sequence[int]) -> str:
    """`eq(n,a)+eq(n,b)+...` as a balanced tree: ffmpeg's expression parser gives up on a
    flat sum of ~100 terms (nesting depth), a tree stays ~8 levels deep."""
    terms = [f"eq(n,{i})" for i in sorted(set(indices))]
    while len(terms) > 1:
        pairs = [f"({a}+{b})" for a, b in zip(terms[0::2], terms[1::2])]
        terms = pairs + ([terms[-1]] if len(terms) % 2 else [])
    return terms[0]


def _ffmpeg_frames(
    path: Path,
    probe: VideoProbe,
    wanted: Sequence[int],
    *,
    clip: tuple[float, float] | None,
    timeout_s: float | None,
    threads: int | None,
) -> Iterator[tuple[int, np.ndarray]]:
    """The `ffmpeg` decoder: one ffmpeg process, `select` keeps the wanted frame numbers,
    ffmpeg's autorotate turns the picture, rgb24 comes through a pipe one frame at a time.
    ffmpeg decodes every frame to get there."""
    width, height = probe.width, probe.height
    input_options: dict[str, object] = {}
    if threads:
        input_options["threads"] = threads
    if clip is not None:
        input_options["ss"] = f"{clip[0]:.6f}"
        input_options["t"] = f"{clip[1] - clip[0]:.6f}"
    stream = _safe_input(path, **input_options).video
    stream = stream.filter("select", _select_expr(wanted))
    # scale to the probed display size: a no-op normally, but it keeps every raw frame
    # the size we slice by even if the stream changes resolution midway.
    stream = stream.filter("scale", width, height).filter("format", "rgb24")
    sync = {"fps_mode": "passthrough"} if _ffmpeg_has_fps_mode() else {"vsync": "passthrough"}
    out = stream.output(
        "pipe:1",
        format="rawvideo",
        pix_fmt="rgb24",
        an=None,
        sn=None,
        # stop as soon as the last wanted frame has come out
        **{"frames:v": len(wanted)},
        **sync,
    )
    frame_bytes = width * height * 3
    proc = _Process(_ffmpeg_args(out), timeout_s, "ffmpeg (video)")
    got = 0
    try:
        assert proc.proc.stdout is not None
        while got < len(wanted):
            buf = proc.proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            yield wanted[got], np.frombuffer(buf, np.uint8).reshape(height, width, 3)
            got += 1
    except BaseException:
        proc.kill()
        raise
    if got == len(wanted):
        proc.kill()  # -frames:v makes it exit by itself; this only reaps it
        if proc.timed_out:
            raise MediaTimeoutError(
                f"ffmpeg (video) took longer than the time limit of {timeout_s:g} s"
            )
        return
    code, err = proc.finish()
    if got == 0:
        detail = _last_lines(err) if code != 0 else "the decoder returned no frames"
        raise MediaError(f"could not decode the video: {detail}")


def _pyav_frames(
    path: Path,
    probe: VideoProbe,
    wanted: Sequence[int],
    *,
    clip: tuple[float, float] | None,
    timeout_s: float | None,
    threads: int | None,
) -> Iterator[tuple[int, np.ndarray]]:
    """The `pyav` decoder (default): in process, non-reference frames nothing needs are
    left out (`frame_decode`)."""
    window = None
    if clip is not None:
        window = (probe.start_time + clip[0], probe.start_time + clip[1])
    got = 0
    try:
        for item in frame_decode.decode_selected(
            path,
            wanted,
            width=probe.width,
            height=probe.height,
            rotation=probe.rotation,
            window=window,
            container_options=_container_options(),
            timeout_s=timeout_s,
            threads=threads,
        ):
            got += 1
            yield item
    except frame_decode.DecodeTimeout:
        raise MediaTimeoutError(
            f"decoding the video took longer than the time limit of {timeout_s:g} s"
        ) from None
    except (frame_decode.DecodeError, av.error.FFmpegError) as exc:
        raise MediaError(f"could not decode the video: {exc}") from None
    if got == 0:
        raise MediaError("could not decode the video: the decoder returned no frames")


DECODERS = {"pyav": _pyav_frames, "ffmpeg": _ffmpeg_frames}


def decode_frames(
    path: Path,
    probe: VideoProbe,
    indices: Sequence[int],
    intervals: Sequence[tuple[int, int]],
    *,
    font_path: str,
    size: int = IMAGE_SIZE,
    clip: tuple[float, float] | None = None,
    timeout_s: float | None = None,
    threads: int | None = None,
    decoder: str | None = None,
) -> np.ndarray:
    """Decode only the frames at `indices` (decoded-frame numbers, like decord's), stamp
    each at full resolution, resize to size x size. Returns uint8 [N, size, size, 3].
    Only one full-size frame is in memory at once.

    `decoder`: "pyav" (default, in process, fastest) or "ffmpeg" (an ffmpeg process);
    both give the same frames. `ARC_DECODER` sets the default."""
    name = decoder or os.environ.get("ARC_DECODER") or "pyav"
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}")
    wanted = sorted(set(indices))
    # Below 1 fps two intervals can pick the same frame: each gets its own stamp.
    slots: dict[int, list[int]] = {}
    for k, index in enumerate(indices):
        slots.setdefault(index, []).append(k)
    stamped = np.empty((len(indices), size, size, 3), dtype=np.uint8)

    def finish_frame(rgb: np.ndarray, index: int) -> None:
        for k in slots[index]:
            image = Image.fromarray(rgb)  # a copy: the overlay draws on it
            draw_timestamp(image, *intervals[k], font_path)
            stamped[k] = np.asarray(image.resize((size, size), Image.BICUBIC))

    last: np.ndarray | None = None
    done: set[int] = set()
    frames = DECODERS[name](path, probe, wanted, clip=clip, timeout_s=timeout_s, threads=threads)
    # Overlay and resize run on stamping threads while the next frames decode (PIL and
    # libav release the GIL); at most a few full-size frames wait in between.
    in_flight: list = []
    with ThreadPoolExecutor(max_workers=STAMP_THREADS) as stamper:
        try:
            for index, rgb in frames:
                in_flight.append(stamper.submit(finish_frame, rgb, index))
                if len(in_flight) >= 2 * STAMP_THREADS + 2:
                    in_flight.pop(0).result()
                done.add(index)
                last = rgb
        finally:
            frames.close()
            for job in in_flight:
                job.result()
    # The header promised more frames than the decoder delivered: the missing ones (at the
    # end) repeat the last decoded picture, each with its own stamp.
    assert last is not None
    for index in wanted:
        if index not in done:
            finish_frame(last, index)
    return stamped


# ---------------------------------------------------------------------------------------
# audio (§3.1)


# What the authors' audio went through before the features: moviepy reads every track as
# stereo (ffmpeg's own downmix/upmix, `-ac 2`), librosa averages the two channels. ffmpeg's
# `-ac 1` would weight them differently.
TO_MONO = "aformat=channel_layouts=stereo,pan=mono|c0=0.5*c0+0.5*c1"


def export_samples(seconds: float) -> int:
    """How many 44.1 kHz samples the authors' moviepy export writes: int(44100 * d), with d
    the duration as ffmpeg prints it (rounded to 1/100 s) and moviepy parses it back.
    Shorter audio is zero-padded to that length, longer audio cut."""
    micros = round(seconds * 1_000_000) + 5000
    whole, centis = divmod(micros // 10_000, 100)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parsed = 3600 * hours + 60 * minutes + float(f"{secs:02d}.{centis:02d}")
    return int(EXPORT_RATE * parsed)


def _fix_length(audio: np.ndarray, samples: int) -> np.ndarray:
    if len(audio) >= samples:
        return audio[:samples]
    return np.pad(audio, (0, samples - len(audio)))


def _decode_pcm(
    path: Path,
    probe: VideoProbe,
    *,
    mode: str,
    clip: tuple[float, float] | None,
    timeout_s: float | None,
) -> np.ndarray:
    """The audio track as 16 kHz mono float32, `export_samples()` long (resampled)."""
    if mode not in AUDIO_MODES:
        raise ValueError(f"unknown audio mode {mode!r}; choose one of {', '.join(AUDIO_MODES)}")
    input_options: dict[str, object] = {}
    if clip is not None:
        input_options["ss"] = f"{clip[0]:.6f}"
        input_options["t"] = f"{clip[1] - clip[0]:.6f}"
    export = export_samples((clip[1] - clip[0]) if clip is not None else probe.duration)
    # librosa.resample's output length (soxr_hq, fix=True)
    samples = math.ceil(export * SAMPLE_RATE / EXPORT_RATE)
    resample = f"aresample={SAMPLE_RATE}:resampler=soxr"
    if mode == "direct":
        stream = _safe_input(path, **input_options)["a:0"]
        args = _ffmpeg_args(
            stream.output("pipe:1", format="f32le", af=f"{TO_MONO},{resample}", ac=1)
        )
        raw = _run(args, timeout_s, "ffmpeg (audio)")
        return _fix_length(np.frombuffer(raw, dtype="<f4").astype(np.float32), samples)
    # The authors' moviepy export: 44.1 kHz stereo 16-bit PCM, exactly `export` samples,
    # into libmp3lame at its default 128 kb/s; read back gapless, as librosa reads the
    # file: without the encoder delay and the padding. Two ffmpeg processes joined by a
    # pipe, so the decoder works while the encoder does. A pipe carries no LAME header,
    # so the decoder's filter drops the delay itself (MP3_DELAY_SAMPLES): bit-identical
    # to writing an mp3 file and reading it back (tests/test_preprocess.py).
    encode = _safe_input(path, **input_options)["a:0"].output(
        "pipe:1",
        format="mp3",
        af=f"aresample={EXPORT_RATE},apad=whole_len={export},atrim=end_sample={export}",
        acodec="libmp3lame",
        ar=EXPORT_RATE,
        ac=2,
        sample_fmt="s16p",
        audio_bitrate="128k",
    )
    gapless = f"atrim=start_sample={MP3_DELAY_SAMPLES}:end_sample={MP3_DELAY_SAMPLES + export}"
    decode = ffmpeg.input("pipe:0", format="mp3", protocol_whitelist="pipe").output(
        "pipe:1", format="f32le", af=f"{gapless},{TO_MONO},{resample}", ac=1
    )
    encoder = _Process(_ffmpeg_args(encode), timeout_s, "ffmpeg (audio export)")
    try:
        decoder = _Process(
            _ffmpeg_args(decode), timeout_s, "ffmpeg (audio decode)", stdin=encoder.proc.stdout
        )
    except BaseException:
        encoder.kill()
        raise
    assert encoder.proc.stdout is not None and decoder.proc.stdout is not None
    encoder.proc.stdout.close()  # the decoder holds the read end now
    try:
        raw = decoder.proc.stdout.read()
        decoder_code, decoder_err = decoder.finish()
    except BaseException:
        decoder.kill()
        encoder.kill()
        raise
    encoder_code, encoder_err = encoder.finish()
    # A decoder that failed first leaves the encoder a broken pipe: report the decoder.
    if encoder_code != 0 and not (decoder_code != 0 and encoder_code == -signal.SIGPIPE):
        raise MediaError(f"ffmpeg (audio export) failed: {_last_lines(encoder_err)}")
    if decoder_code != 0:
        raise MediaError(f"ffmpeg (audio decode) failed: {_last_lines(decoder_err)}")
    return _fix_length(np.frombuffer(raw, dtype="<f4").astype(np.float32), samples)


def fit_audio(audio: np.ndarray) -> np.ndarray:
    """§3.1 steps 3-4: > 300 s -> 150 snippets of the first 2 s of equal segments;
    < 1 s -> zero-pad to 1 s."""
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) > MAX_AUDIO_SECONDS * SAMPLE_RATE:
        seg = len(audio) // MAX_FRAMES
        audio = np.concatenate(
            [audio[i * seg : i * seg + SNIPPET_SAMPLES] for i in range(MAX_FRAMES)]
        )
    if len(audio) < SAMPLE_RATE:
        audio = np.pad(audio, (0, SAMPLE_RATE - len(audio)))
    return np.ascontiguousarray(audio)


def load_audio(
    source: str | Path,
    probe: VideoProbe,
    *,
    mode: str = "mp3",
    clip: tuple[float, float] | None = None,
    timeout_s: float | None = DEFAULT_LIMITS.timeout_s,
) -> np.ndarray:
    """The waveform the model hears: float32, 16 kHz, mono, after §3.1 (silence when the
    file has no audio track, 150 x 2 s snippets above 300 s, padded to at least 1 s)."""
    path = Path(source)
    if not probe.has_audio:
        seconds = (clip[1] - clip[0]) if clip is not None else probe.duration
        samples = min(math.ceil(seconds), MAX_AUDIO_SECONDS) * SAMPLE_RATE
        return fit_audio(np.zeros(samples, dtype=np.float32))
    audio = _decode_pcm(path, probe, mode=mode, clip=clip, timeout_s=timeout_s)
    if probe.audio_codec == "aac" and (probe.audio_profile or "").startswith("HE-AAC"):
        lag = round(HE_AAC_LAG_S * SAMPLE_RATE)
        audio = np.concatenate([np.zeros(lag, dtype=np.float32), audio[: len(audio) - lag]])
    return fit_audio(audio)


# ---------------------------------------------------------------------------------------
# Whisper features (§3.2)


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    # Slaney scale: linear below 1 kHz, logarithmic above.
    freq = np.asarray(freq, dtype=np.float64)
    logstep = math.log(6.4) / 27.0
    linear = 3.0 * freq / 200.0
    log = 15.0 + np.log(np.maximum(freq, 1e-10) / 1000.0) / logstep
    return np.where(freq >= 1000.0, log, linear)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    logstep = math.log(6.4) / 27.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(logstep * (mels - 15.0)), 200.0 * mels / 3.0)


@functools.lru_cache(maxsize=1)
def mel_filters() -> torch.Tensor:
    """[201, 128] slaney-normalised triangular filters, 0-8 kHz (whisper-large-v3)."""
    fft_freqs = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(8000.0), N_MELS + 2))
    widths = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= 2.0 / (edges[2 : N_MELS + 2] - edges[:N_MELS])
    return torch.from_numpy(filters.astype(np.float32))


def whisper_features(audio: np.ndarray) -> np.ndarray:
    """Log-mel features [W, 128, 3000] float32, each 30 s piece on its own (its own
    max - 8 clamp), W = ceil(len / 480000)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    windows = max(1, math.ceil(len(audio) / WINDOW_SAMPLES))
    pieces = np.zeros((windows, WINDOW_SAMPLES), dtype=np.float32)
    pieces.reshape(-1)[: len(audio)] = audio
    with torch.no_grad():
        x = torch.from_numpy(pieces)
        spec = torch.stft(
            x,
            N_FFT,
            HOP,
            window=torch.hann_window(N_FFT),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = (spec[..., :-1].abs() ** 2).contiguous()
        mel = mel_filters().T @ power
        log_spec = torch.clamp(mel, min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return ((log_spec + 4.0) / 4.0).numpy()


# ---------------------------------------------------------------------------------------
# reconciliation (§3.6) and tensors


def reconcile(
    num_frames: int, audio_seconds: int, layout: str = "A", max_frames: int = MAX_FRAMES
) -> tuple[int, int]:
    """(frames kept, D). Path A; where Path A asserts (audio > 150 s but fewer than 150
    frames) we take Path B's rule, D := N. Layout "B" is Path B for 1-fps plans."""
    n, d = int(num_frames), int(audio_seconds)
    if layout.upper() == "B":
        d = min(n, d)  # video_duration = N at 1 fps
        return (d, d) if d <= max_frames else (n, d)
    if layout.upper() != "A":
        raise ValueError(f"unknown layout {layout!r}; use 'A' or 'B'")
    n = min(n, d)  # audio shorter than the frames: keep the first D frames
    if d <= max_frames or n != max_frames:
        d = n
    return n, d


def normalise(values: torch.Tensor) -> torch.Tensor:
    """float32 [..., 3] channel-last 0-255 -> bf16: /255, CLIP mean/std in float32, then
    bf16 round-to-nearest-even (bit-exact with the authors' tensors)."""
    x = values.to(torch.float32, copy=True)  # a copy: the arithmetic runs in place
    x.div_(255).sub_(torch.tensor(CLIP_MEAN)).div_(torch.tensor(CLIP_STD))
    return x.to(torch.bfloat16)


@functools.lru_cache(maxsize=1)
def _normalised_levels() -> np.ndarray:
    """[3, 256] int16: the bf16 bits `normalise` gives each 8-bit level of each channel."""
    levels = torch.arange(256, dtype=torch.float32).unsqueeze(1).expand(256, 3)
    return normalise(levels).T.contiguous().view(torch.int16).numpy()


def pixel_values(frames: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> bf16 [N, 3, H, W], `normalise`d. An 8-bit channel has 256
    levels, so each pixel is a lookup in a table `normalise` computed: the same bits,
    3-4x faster than the arithmetic on every pixel, no float32 copy of the frames."""
    frames = np.asarray(frames, dtype=np.uint8)
    table = _normalised_levels()
    n, height, width, _ = frames.shape
    out = np.empty((n, 3, height, width), dtype=np.int16)
    for k in range(n):
        planes = frames[k].transpose(2, 0, 1).copy()  # one frame channel-first: cache-friendly
        for c in range(3):
            np.take(table[c], planes[c], out=out[k, c])
    return torch.from_numpy(out).view(torch.bfloat16)


# ---------------------------------------------------------------------------------------
# the whole pipeline


def _check_limits(probe: VideoProbe, span: float, limits: Limits) -> None:
    if limits.max_pixels is not None and probe.width * probe.height > limits.max_pixels:
        raise MediaError(
            f"the video is {probe.width}x{probe.height}, over the limit of "
            f"{limits.max_pixels} pixels per frame (max_pixels)"
        )
    if limits.max_duration_s is not None and span > limits.max_duration_s:
        raise MediaError(
            f"the video is {span:.1f} s long, over the limit of {limits.max_duration_s:g} s "
            "(max_duration_s)"
        )


def _resolve_clip(
    probe: VideoProbe, start: float | None, end: float | None
) -> tuple[float, float] | None:
    if start is None and end is None:
        return None
    lo = float(start or 0.0)
    hi = float(end) if end is not None else probe.duration
    hi = min(hi, probe.duration)
    if lo < 0 or not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        raise MediaError(
            f"bad clip: start {start} s / end {end} s for a video of {probe.duration:.2f} s"
        )
    return lo, hi


def prepare_video(
    source: str | Path | bytes,
    *,
    font_path: str | None = None,
    max_frames: int = MAX_FRAMES,
    start: float | None = None,
    end: float | None = None,
    limits: Limits = DEFAULT_LIMITS,
    audio_mode: str = "mp3",
    features: bool = False,
    layout: str = "A",
    threads: int | None = None,
    decoder: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> PreparedVideo:
    """probe -> plan -> frames (decode, overlay, resize) || audio -> reconcile.

    `start`/`end` (seconds) prepare a clip as if it were the whole video: the plan runs
    over the clip's frames and the overlay counts seconds from the clip start.
    `features=True` also computes the Whisper features (timed with the audio).
    `decoder`: "pyav" (default) or "ffmpeg", see `decode_frames`.
    `progress` gets one line per step (the CLI prints them)."""
    say = progress or (lambda message: None)
    if isinstance(source, (bytes, bytearray, memoryview)):
        fd, name = tempfile.mkstemp(prefix="arc-upload-", suffix=".media")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(source)
            return prepare_video(
                name,
                font_path=font_path,
                max_frames=max_frames,
                start=start,
                end=end,
                limits=limits,
                audio_mode=audio_mode,
                features=features,
                layout=layout,
                threads=threads,
                decoder=decoder,
                progress=progress,
            )
        finally:
            os.unlink(name)

    path = Path(source)
    font = font_path or default_font_path()
    if not Path(font).is_file():
        raise FontError(f"font file for the timestamp overlay not found: {font}")
    probe = probe_video(path, timeout_s=limits.timeout_s)
    clip = _resolve_clip(probe, start, end)
    span = (clip[1] - clip[0]) if clip else probe.duration
    _check_limits(probe, span, limits)
    if clip is None:
        vlen = probe.num_frames
    else:
        vlen = _count_frames(
            path, limits.timeout_s, probe.start_time + clip[0], probe.start_time + clip[1]
        )
        if vlen <= 0:
            raise MediaError(f"the clip {clip[0]:g}-{clip[1]:g} s holds no video frame")
    indices, intervals = sample_plan(vlen, probe.fps, max_frames)
    say(
        f"probe: {probe.width}x{probe.height} {probe.video_codec}, {vlen} frames at "
        f"{probe.fps:g} fps ({vlen / probe.fps:.2f} s), audio: {probe.audio_codec or 'none'}; "
        f"sampling {len(indices)} frames"
    )

    def audio_job() -> tuple[np.ndarray, np.ndarray | None, float]:
        t0 = time.perf_counter()
        audio = load_audio(path, probe, mode=audio_mode, clip=clip, timeout_s=limits.timeout_s)
        say(f"audio: {len(audio) / SAMPLE_RATE:.2f} s at 16 kHz ({audio_mode})")
        feats = whisper_features(audio) if features else None
        if feats is not None:
            say(f"audio features: {list(feats.shape)}")
        return audio, feats, time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(audio_job)
        t0 = time.perf_counter()
        try:
            frames = decode_frames(
                path,
                probe,
                indices,
                intervals,
                font_path=font,
                clip=clip,
                timeout_s=limits.timeout_s,
                threads=threads,
                decoder=decoder,
            )
        except BaseException:
            pending.cancel()
            raise
        seconds_frames = time.perf_counter() - t0
        say(f"frames: {len(frames)} decoded, stamped and resized in {seconds_frames:.2f} s")
        audio, feats, seconds_audio = pending.result()

    audio_duration = math.ceil(len(audio) / SAMPLE_RATE)
    kept, duration = reconcile(len(indices), audio_duration, layout, max_frames)
    say(f"reconciled: {kept} frames, duration D = {duration} s (audio {audio_duration} s)")
    return PreparedVideo(
        frames=frames[:kept],
        audio=audio,
        duration=duration,
        frame_indices=list(indices[:kept]),
        intervals=[tuple(i) for i in intervals[:kept]],
        probe=probe,
        seconds_frames=seconds_frames,
        seconds_audio=seconds_audio,
        audio_duration=audio_duration,
        vlen=vlen,
        fps=probe.fps,
        audio_features=feats,
        clip=clip,
    )


__all__ = [
    "DEFAULT_LIMITS",
    "FontError",
    "Limits",
    "MediaError",
    "MediaTimeoutError",
    "PreparedVideo",
    "VideoProbe",
    "decode_frames",
    "default_font_path",
    "draw_timestamp",
    "export_samples",
    "fit_audio",
    "load_audio",
    "mel_filters",
    "pixel_values",
    "prepare_video",
    "probe_video",
    "reconcile",
    "sample_plan",
    "set_child_limits",
    "whisper_features",
]
