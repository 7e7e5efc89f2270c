"""The long-video benchmark's videos: synthetic, with known content per minute (a colour
card and a tone per minute), made with ffmpeg's lavfi sources and kept in a cache folder
(a 60-minute one takes about 15 s on 2 cores). Variants of one length differ in every card
and tone (the sequence starts `variant` minutes later), so that the paths the benchmark
compares each ask about a video of their own: the same work, and no cache of the engine
(prefix, multimodal) that one path fills can serve another."""

from __future__ import annotations

import subprocess
from pathlib import Path

# Card k (minute k + variant): luma 40 + 15 (k mod 12), a chroma of its own; a tone of
# 300 + 50 (k mod 16) Hz.
CARD = "(floor(T/60)+{variant})"
CARDS = (
    "color=c=black:s={size}:r={fps}:d={seconds},format=yuv420p,"
    "geq=lum='40+15*mod({card},12)':cb='128+60*sin({card}*1.7)':cr='128+60*cos({card}*2.3)'"
)
TONES = (
    "aevalsrc=exprs='0.4*sin(2*PI*(300+50*mod(floor(t/60)+{variant},16))*t)':s=16000:d={seconds}"
)


def long_video(folder: Path, minutes: float, size: str, fps: float, variant: int = 0) -> Path:
    """A `minutes`-long H.264/AAC MP4 of colour cards and tones (a keyframe every 10 s),
    made once per (length, size, frame rate, variant)."""
    seconds = round(minutes * 60)
    path = folder / f"cards-{seconds}s-{size}-{fps:g}fps-v{variant}.mp4"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    command = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i",
        CARDS.format(size=size, fps=fps, seconds=seconds, card=CARD.format(variant=variant)),
        "-f", "lavfi", "-i", TONES.format(seconds=seconds, variant=variant),
        "-c:v", "libx264", "-preset", "ultrafast", "-g", str(max(1, round(10 * fps))),
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "1", "-b:a", "48k", "-shortest",
        str(tmp),
    ]  # fmt: skip
    subprocess.run(command, check=True, timeout=1800)
    tmp.replace(path)
    return path
