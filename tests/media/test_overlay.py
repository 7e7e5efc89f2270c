"""The timestamp overlay (arc_media/overlay.py): where the stamp is drawn, the font it
takes, frames too small for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from arc_media.limits import FontError
from arc_media.overlay import default_font_path, draw_timestamp


def test_draw_timestamp_geometry() -> None:
    font = default_font_path()
    image = Image.new("RGB", (800, 400), (255, 255, 255))
    draw_timestamp(image, 3725, 3728.4, font)
    pixels = np.asarray(image)
    black = np.argwhere((pixels == 0).all(axis=2))
    (top, left), (bottom, right) = black.min(axis=0), black.max(axis=0)
    assert top == 10 and right == 800 - 20 + 10
    # text bbox height at font size int(0.05 * 400) = 20
    probe = Image.new("RGB", (10, 10))
    from PIL import ImageDraw, ImageFont

    box = ImageDraw.Draw(probe).textbbox(
        (0, 0), "01:02:05-01:02:08", font=ImageFont.truetype(font, 20)
    )
    w, h = box[2] - box[0], box[3] - box[1]
    assert left == 800 - w - 20 - 10 and bottom == 20 + h + 10
    assert (pixels[top:bottom, left:right] == 255).all(axis=2).any()  # white text inside


def test_font_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ARC_FONT", str(tmp_path / "missing.ttf"))
    with pytest.raises(FontError, match="ARC_FONT"):
        default_font_path()
    monkeypatch.delenv("ARC_FONT")
    assert default_font_path().endswith(".ttf")


def test_overlay_on_frames_too_small_for_the_font() -> None:
    for size in ((1, 1), (2, 2), (16384, 16), (64, 19)):
        frame = Image.new("RGB", size)
        assert draw_timestamp(frame, 0, 1) is frame  # no stamp, no error
    stamped = draw_timestamp(Image.new("RGB", (400, 200)), 0, 1)
    assert np.asarray(stamped).any()
