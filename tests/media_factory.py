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
        timeout=120,
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
