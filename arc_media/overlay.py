"""The timestamp every frame carries: `HH:MM:SS-HH:MM:SS` burnt in at the top right.

The model was trained on frames stamped by the authors' code, so the geometry is theirs to
the pixel: a font 5 % of the frame's height, 20 px from the top and right edges, white text
on an opaque black box (they pass an alpha that an RGB image ignores), drawn at full
resolution before the resize. The font is Liberation Sans, metric-compatible with their
Arial; `ARC_FONT` points to another file. FreeType faces are cached per thread because one
face must not render in two threads at once (frames are stamped on several).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .limits import FontError

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
)


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
    """Burn `HH:MM:SS-HH:MM:SS` top right, with the authors' exact geometry.
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


__all__ = ["FONT_CANDIDATES", "default_font_path", "draw_timestamp"]
