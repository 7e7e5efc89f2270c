"""Cutting a long video (or clip) into segments: pure arithmetic, no file is opened.

The model is at its best on up to five minutes (150 frames at one per second up to 150 s,
300 s of audio whole), so a longer video is asked about in segments of `AUTO_SEGMENT_S`
(`video.segments: "auto"`, the default) or of a length the client picks (60-300 s).
Segments are contiguous clips of equal length covering the span asked about; the last may
be shorter, and a tail under `MIN_TAIL_S` joins the segment before it. Each segment is
prepared exactly as a clip request with its `video.start`/`video.end` would be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

AUTO_SEGMENT_S = 300.0
MIN_SEGMENT_S = 60.0
MAX_SEGMENT_S = 300.0
MIN_TAIL_S = 10.0


@dataclass(frozen=True)
class Segment:
    index: int  # 0-based, in time order
    start: float  # seconds of the video's own timeline (absolute)
    end: float

    @property
    def length(self) -> float:
        return self.end - self.start

    def label(self, count: int) -> str:
        """How errors and logs name it: `segment 3 of 12 (00:10:00-00:15:00, 600-900 s)`."""
        return (
            f"segment {self.index + 1} of {count} ({clock(self.start)}-{clock(self.end)}, "
            f"{self.start:g}-{self.end:g} s)"
        )


def segment_length(setting: str | float) -> float | None:
    """Seconds per segment for a `video.segments` value: None for "off"."""
    if setting == "off":
        return None
    if setting == "auto":
        return AUTO_SEGMENT_S
    return float(setting)


def plan_segments(start: float, end: float, length: float) -> list[Segment]:
    """[start, end) cut into segments of `length` seconds (the last shorter; a tail under
    MIN_TAIL_S joins the one before). One segment when the span is no longer than
    `length` (the caller then asks in one pass, as for a short video)."""
    span = end - start
    if span <= 0 or length <= 0:
        raise ValueError(f"nothing to cut: {start}-{end} s in segments of {length} s")
    count = max(1, math.ceil(span / length - 1e-9))
    if count > 1 and span - (count - 1) * length < MIN_TAIL_S:
        count -= 1
    bounds = [start + k * length for k in range(count)] + [end]
    return [Segment(k, bounds[k], bounds[k + 1]) for k in range(count)]


def clock(seconds: float) -> str:
    """HH:MM:SS (the overlay's form), with a fraction when there is one: 01:02:03.5."""
    whole = math.floor(seconds + 1e-9)
    fraction = seconds - whole
    hours, rest = divmod(int(whole), 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    if fraction > 1e-6:
        text += f"{fraction:.3f}".rstrip("0").lstrip("0")
    return text


__all__ = [
    "AUTO_SEGMENT_S",
    "MAX_SEGMENT_S",
    "MIN_SEGMENT_S",
    "MIN_TAIL_S",
    "Segment",
    "clock",
    "plan_segments",
    "segment_length",
]
