"""Which frames the model sees and how long the video counts: the plan, clips, reconciling.

`sample_plan` takes one frame from the middle of each second (150 equal segments above
150 s) and the seconds each frame's timestamp overlay shows, numbered as decord numbers the
decoded frames. `resolve_clip` turns a caller's start/end into a clip within the video.
`reconcile` matches the frame count N with the audio length D in seconds, the two numbers
the model's token layout is built from (Path A by default, Path B for 1-fps plans). Pure
arithmetic: nothing here opens a file.
"""

from __future__ import annotations

import math

from .limits import ClipError
from .model_inputs import MAX_FRAMES


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


def resolve_clip(
    duration: float, start: float | None, end: float | None
) -> tuple[float, float] | None:
    """(start, end) seconds within a video of `duration` s, end capped at the duration (an
    end past the video's end is its end); None for the whole video; ClipError for a clip
    that holds nothing of the video (naming the bound to change)."""
    if start is None and end is None:
        return None
    lo = float(start or 0.0)
    hi = float(end) if end is not None else duration
    hi = min(hi, duration)
    if lo < 0 or not math.isfinite(lo) or not math.isfinite(hi):
        raise ClipError(f"bad clip: start {start} s / end {end} s", "start")
    if lo >= duration:
        raise ClipError(
            f"bad clip: the clip starts at {lo:g} s, at or past the end of the video "
            f"({round(duration, 3):g} s long)",
            "start",
        )
    if hi <= lo:
        raise ClipError(
            f"bad clip: the clip ends at {hi:g} s, not after its start ({lo:g} s)", "end"
        )
    return lo, hi


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


__all__ = ["reconcile", "resolve_clip", "sample_plan"]
