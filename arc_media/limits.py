"""The bounds on untrusted input, and the errors the library raises (what the model itself
takes, frames, picture size and audio, is in `model_inputs`).

`Limits` is what a caller allows an input to cost (duration, picture size, wall time), and
`check_limits` refuses a probed video over them before anything is decoded. `MediaError`
(a bad input, answered 4xx by a server; `ClipError` and `OverLimitError` say which part of
the request to change) is kept apart from `FontError` (a setup problem).
This module imports nothing heavy: the gateway's HTTP side can catch these errors cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class MediaError(ValueError):
    """The input cannot be used as a video (unreadable, no video stream, over a limit)."""


class MediaTimeoutError(MediaError):
    """ffmpeg or a decoding step ran past the wall-clock limit."""


class ClipError(MediaError):
    """A clip (start/end) that holds nothing of the video: `bound` is the end of it to
    change ("start" or "end")."""

    # Defaults: an exception is rebuilt from its message alone when it is unpickled (a
    # decode worker's error), then given its attributes back.
    def __init__(self, message: str, bound: str = "start"):
        super().__init__(message)
        self.bound = bound


class OverLimitError(MediaError):
    """A video over one of the caller's `Limits`: `limit` names the field
    ("max_duration_s", "max_pixels"), `value` is what the video has, `allowed` the bound."""

    def __init__(self, message: str, limit: str = "", value: float = 0.0, allowed: float = 0.0):
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.allowed = allowed


class FontError(RuntimeError):
    """No font for the timestamp overlay: a setup problem, not a bad input."""


@dataclass(frozen=True)
class Limits:
    """Bounds for untrusted input. None means no bound."""

    max_duration_s: float | None = None
    max_pixels: int | None = None
    timeout_s: float | None = 600.0


DEFAULT_LIMITS = Limits()


class _Picture(Protocol):
    width: int
    height: int


def check_limits(picture: _Picture, span: float, limits: Limits) -> None:
    """OverLimitError when a probed video (its display size, `span` seconds) is over `limits`."""
    pixels = picture.width * picture.height
    if limits.max_pixels is not None and pixels > limits.max_pixels:
        raise OverLimitError(
            f"the video is {picture.width}x{picture.height}, over the limit of "
            f"{limits.max_pixels} pixels per frame (max_pixels)",
            "max_pixels",
            pixels,
            limits.max_pixels,
        )
    if limits.max_duration_s is not None and span > limits.max_duration_s:
        raise OverLimitError(
            f"the video is {span:.1f} s long, over the limit of {limits.max_duration_s:g} s "
            "(max_duration_s)",
            "max_duration_s",
            span,
            limits.max_duration_s,
        )


__all__ = [
    "DEFAULT_LIMITS",
    "ClipError",
    "FontError",
    "Limits",
    "MediaError",
    "MediaTimeoutError",
    "OverLimitError",
    "check_limits",
]
