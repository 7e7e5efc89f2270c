"""How the video path's errors read: what a decode job's failure (`arc_media`'s errors, a
worker that died, no room left) is as an answer, with `param` naming where the request
gave the video (`messages[0].content[0].video_url.url`; `file` for an upload) or the clip
bound to change (`video.start`, `video.end`), and each limit named with the option that
sets it.

    a clip outside the video          400 invalid_clip      video.start / video.end
    longer than the gateway or key    422 video_too_long    the video (--max-duration-s, the key's)
    frames over the pixel limit       422 video_too_large   the video (--max-pixels)
    more memory than allowed          422 video_too_large   the video (--ffmpeg-memory-mb)
    past the wall-clock limit         422 video_timeout     the video (--decode-timeout-s)
    crashed its worker twice          422 decoder_crashed   the video
    anything else about the video     400 invalid_video / 422 video_unprocessable
"""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

from ..config import Settings
from ..errors import APIError

log = logging.getLogger("arc.gateway")

# Where an upload's video is (the multipart field); a chat request's is its content part.
UPLOAD_PARAM = "file"


class WorkerDied(Exception):
    """The worker process running a job went away."""


def clip_error(error: Exception) -> APIError:
    """A clip (video.start/end) that holds nothing of the video (`arc_media`'s ClipError,
    whose text gives the video's length): a 400 naming the bound to change."""
    param = f"video.{getattr(error, 'bound', 'start')}"
    text = str(error).removeprefix("bad clip: ")
    return APIError(400, f"{param}: {text}", "invalid_clip", param=param)


def too_long(
    seconds: float, allowed: float, *, by_key: bool, clipped: bool, param: str | None
) -> APIError:
    """A video (or clip) longer than the gateway's --max-duration-s or the caller's key
    allows: 422, its length and the limit in the message."""
    what = "the clip asked about" if clipped else "the video"
    whose = (
        f"this API key takes at most {allowed:g} s (the key's --max-duration-s limit)"
        if by_key
        else f"this gateway takes at most {allowed:g} s (--max-duration-s)"
    )
    return APIError(
        422,
        f"{what} is {seconds:g} s long; {whose}: ask about a clip of it (video.start/end)",
        "video_too_long",
        param=param,
    )


def job_error(
    error: Exception, settings: Settings, path: Path, clipped: bool, param: str | None
) -> APIError:
    """A decode job's failure as the client's answer (never a 500 for what a video does).
    `path`: the video on disk, kept out of messages; `clipped`: the request asked about a
    clip (video.start/end); `param`: where the request gave the video."""
    from arc_media.limits import (
        ClipError,
        FontError,
        MediaError,
        MediaTimeoutError,
        OverLimitError,
    )

    s = settings
    if isinstance(error, ClipError):
        return clip_error(error)
    if isinstance(error, OverLimitError) and error.limit == "max_duration_s":
        by_key = error.allowed < s.max_duration_s  # a key may allow less than the gateway
        return too_long(
            round(error.value, 1), error.allowed, by_key=by_key, clipped=clipped, param=param
        )
    if isinstance(error, OverLimitError) and error.limit == "max_pixels":
        return APIError(
            422,
            f"the video's frames are {error.value:,.0f} pixels each; this gateway takes at most "
            f"{error.allowed:,.0f} pixels per frame (--max-pixels)",
            "video_too_large",
            param=param,
        )
    if isinstance(error, MediaTimeoutError):
        return APIError(
            422,
            f"the video could not be prepared in time: {_no_path(error, path)} (this gateway "
            f"gives a video at most {s.decode_timeout_s:g} s: --decode-timeout-s)",
            "video_timeout",
            param=param,
        )
    if isinstance(error, MediaError):
        return APIError(
            400, f"the video cannot be used: {_no_path(error, path)}", "invalid_video", param=param
        )
    if isinstance(error, MemoryError):
        return APIError(
            422,
            "the video needs more memory to decode than this gateway allows "
            f"({s.ffmpeg_memory_mb} MB: --ffmpeg-memory-mb); send a smaller or shorter video",
            "video_too_large",
            param=param,
        )
    if isinstance(error, FontError):
        log.error("font problem: %s", error)
        return APIError(500, "the gateway's overlay font is missing", "font_missing")
    if isinstance(error, TimeoutError):
        return APIError(
            422,
            f"the video could not be prepared in time (this gateway gives a video at most "
            f"{s.decode_timeout_s:g} s: --decode-timeout-s)",
            "video_timeout",
            param=param,
        )
    if isinstance(error, WorkerDied):
        return APIError(
            422,
            "the video crashed the decoder twice (over its memory or CPU limits: "
            "--ffmpeg-memory-mb, --ffmpeg-cpu-s)",
            "decoder_crashed",
            param=param,
        )
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        # The container's folder (shared mode: the forward tmpfs) is full.
        return forward_full()
    # Whatever else a hostile file makes the pipeline raise is about the video.
    return unprocessable(error, param)


def unprocessable(error: Exception, param: str | None = None) -> APIError:
    event = {"event": "decode_failed", "error": type(error).__name__, "detail": str(error)}
    log.error(json.dumps(event))
    return APIError(
        422,
        f"the video could not be prepared ({type(error).__name__})",
        "video_unprocessable",
        param=param,
    )


def forward_full() -> APIError:
    log.error(json.dumps({"event": "forward_dir_full"}))
    return APIError(
        507,
        "the gateway has no room left for the videos it is forwarding; retry shortly",
        "storage_full",
        headers={"Retry-After": "10"},
    )


def _no_path(error: Exception, path: Path) -> str:
    """The error's text without the server's file names."""
    text = str(error)
    for name in (str(path.resolve()), str(path)):
        text = text.replace(name, "the video")
    return text


__all__ = [
    "UPLOAD_PARAM",
    "WorkerDied",
    "clip_error",
    "forward_full",
    "job_error",
    "too_long",
    "unprocessable",
]
