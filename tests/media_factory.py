"""Small synthetic media files for the preprocessing tests, made with ffmpeg's lavfi sources.

Everything is low resolution and low frame rate so that even the 5-minute clip encodes in
a second or two.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=300,
    )


def make_clip(
    path: Path,
    *,
    seconds: float,
    size: str = "160x90",
    fps: float | str = 10,
    audio: bool = True,
    audio_rate: int = 16000,
    vcodec: str = "libx264",
    acodec: str = "aac",
) -> Path:
    """testsrc2 video (+ a 440 Hz sine) of the given length; `fps` may be a ratio ("1/2")."""
    inputs = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}"]
    if audio:
        inputs += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate={audio_rate}:duration={seconds}",
        ]
    video = ["-c:v", vcodec, "-pix_fmt", "yuv420p"]
    if vcodec == "libx264":
        video += ["-preset", "ultrafast", "-g", "20"]
    elif vcodec == "libx265":
        video += ["-preset", "ultrafast", "-x265-params", "log-level=error"]
    elif vcodec == "libvpx-vp9":
        video += ["-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"]
    sound = ["-c:a", acodec, "-ac", "1"] if audio else ["-an"]
    ffmpeg(*inputs, *video, *sound, "-shortest", str(path))
    return path


def rotate(source: Path, path: Path, degrees: int = 90) -> Path:
    """Same streams, plus a display rotation: players turn the picture `degrees` clockwise."""
    ffmpeg("-i", str(source), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", str(path))
    return path


def sized_clip(path: Path, size: str) -> Path:
    """2 s of testsrc2 scaled to `size` ("WxH", down to 1x1 or extreme aspect ratios), 4:4:4
    so that odd sizes encode."""
    width, height = size.split("x")
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=5:duration=2",
        "-vf", f"scale={width}:{height}", "-c:v", "libx264", "-pix_fmt", "yuv444p", str(path),
    )  # fmt: skip
    return path


# A colour card and a tone per `card_s` seconds: card k has luma 40 + 15 * (k mod 12) and a
# tone of 300 + 50 * (k mod 16) Hz, so what a segment or clip holds is known by its seconds.
CARD_VIDEO = (
    "color=c=black:s={size}:r={fps}:d={seconds},format=yuv420p,"
    "geq=lum='40+15*mod(floor(T/{card_s}),12)':cb='128+60*sin(floor(T/{card_s})*1.7)'"
    ":cr='128+60*cos(floor(T/{card_s})*2.3)'"
)
CARD_TONE = (
    "aevalsrc=exprs='0.4*sin(2*PI*(300+50*mod(floor(t/{card_s}),16))*t)':s=16000:d={seconds}"
)


def card_luma(second: float, card_s: float = 60) -> int:
    """The luma of the colour card shown at `second` (see `make_long_video`)."""
    return 40 + 15 * (int(second // card_s) % 12)


def make_long_video(
    path: Path,
    *,
    seconds: float,
    card_s: float = 60,
    size: str = "160x90",
    fps: float = 2,
    gop_s: float = 10,
    audio: bool = True,
) -> Path:
    """A long synthetic video made in seconds (40 minutes: ~9 s on 2 cores): a colour card
    and a tone per `card_s` seconds, low resolution, `fps` frames a second, a keyframe every
    `gop_s` seconds (what a seek can land on)."""
    inputs = [
        "-f",
        "lavfi",
        "-i",
        CARD_VIDEO.format(size=size, fps=fps, seconds=seconds, card_s=card_s),
    ]
    if audio:
        inputs += ["-f", "lavfi", "-i", CARD_TONE.format(seconds=seconds, card_s=card_s)]
    video = ["-c:v", "libx264", "-preset", "ultrafast", "-g", str(max(1, round(gop_s * fps)))]
    sound = ["-c:a", "aac", "-ac", "1", "-b:a", "32k"] if audio else ["-an"]
    ffmpeg(*inputs, *video, "-pix_fmt", "yuv420p", *sound, "-shortest", str(path))
    return path


def card_colours(path: Path, count: int, card_s: float = 60) -> list:
    """The mean RGB of each of the first `count` cards of a `make_long_video` video, read
    by PyAV from the first frame of its middle second."""
    import av

    found = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = container.decode(stream)
        for k in range(count):
            second = k * card_s + card_s / 2
            frame = next(f for f in frames if f.time >= second)
            rgb = frame.to_ndarray(format="rgb24")
            h, w = rgb.shape[:2]
            found.append(rgb[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].reshape(-1, 3).mean(axis=0))
    return found
