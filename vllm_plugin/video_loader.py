"""vLLM video loader backend `arc`: a video file -> what the model sees, audio included.

vLLM's media connector hands the loader the bytes of a `video_url` (file, data URL or
http(s) URL). We run the project's one preprocessing pipeline on them (the sampled frames
with the timestamp overlay at 640x640, the video's own 16 kHz audio) and return the
frames with the audio and duration in the metadata, which the processor turns into model
inputs. A prepared container from the gateway (`arc_media.prepared`, media type
video/x-arc-prepared, as a data: URL or, in the gateway's shared forward mode, a file://
URL in the allowed folder) is recognised by its first bytes and used as it is: its JPEG/FLAC
members decoded, or its raw members taken as views of the bytes vLLM read. Select it with
`--media-io-kwargs '{"video": {"video_backend": "arc"}}'` (`arc-serve` does this).

The bytes come from clients, so the pipeline runs under limits (frame pixels, duration,
wall clock; `ARC_LOADER_MAX_PIXELS`, `ARC_LOADER_MAX_DURATION_S`, `ARC_LOADER_TIMEOUT_S`)
and every failure to read them is a ValueError, which vLLM answers with a 400. The limits
come from the environment, not from `media_io_kwargs`, which a request may override.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

BACKEND_NAME = "arc"
# Listed in a checkpoint's preprocessor_config.json as `video_processor_type`, it
# makes vLLM pick this loader by itself.
VIDEO_PROCESSOR_NAME = "ARCHunyuanVideoProcessor"


class VideoLoadError(ValueError):
    """The bytes of a `video_url` are not a video the pipeline can prepare."""


def loader_limits() -> Any:
    from arc_media.limits import Limits

    return Limits(
        # 3840x2160, 30 minutes, 5 minutes: the gateway's defaults.
        max_pixels=int(os.environ.get("ARC_LOADER_MAX_PIXELS", "8294400")),
        max_duration_s=float(os.environ.get("ARC_LOADER_MAX_DURATION_S", "1800")),
        timeout_s=float(os.environ.get("ARC_LOADER_TIMEOUT_S", "300")),
    )


def _metadata(
    audio: np.ndarray,
    duration: int,
    *,
    total_frames: int,
    fps: float,
    seconds: float,
    indices: list[int],
    intervals: Any,
) -> dict[str, Any]:
    """vLLM's video metadata keys, plus the audio and duration D the processor needs."""
    return {
        "total_num_frames": total_frames,
        "fps": fps,
        "duration": seconds,
        "video_backend": BACKEND_NAME,
        "frames_indices": indices,
        "do_sample_frames": False,
        "arc_audio": audio,
        "arc_duration": int(duration),
        "arc_intervals": intervals,
    }


def load_prepared_bytes(data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """The gateway's container (`arc_media.prepared`): frames and audio used as they are."""
    from arc_media import prepared

    media = prepared.decode(data)
    count = media.frames.shape[0]
    return media.frames, _metadata(
        media.audio,
        media.duration,
        total_frames=count,
        fps=1.0,
        seconds=float(media.duration),
        indices=list(range(count)),
        intervals=media.info.get("intervals"),
    )


def load_video_bytes(data: bytes, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
    from arc_media.pipeline import prepare_video
    from arc_media.prepared import is_prepared

    if is_prepared(data):
        return load_prepared_bytes(data)
    try:
        prepared = prepare_video(data, limits=loader_limits())
    except ValueError as e:
        raise VideoLoadError(f"cannot use this video: {e}") from None
    except MemoryError:
        raise VideoLoadError("cannot use this video: it does not fit in memory") from None
    except (OSError, RuntimeError) as e:
        # PyAV and the overlay raise these on damaged or degenerate input.
        raise VideoLoadError(f"cannot use this video: {type(e).__name__}: {e}") from None
    return prepared.frames, _metadata(
        prepared.audio,
        prepared.duration,
        total_frames=prepared.probe.num_frames,
        fps=prepared.probe.fps,
        seconds=prepared.probe.duration,
        indices=list(prepared.frame_indices),
        intervals=[list(i) for i in prepared.intervals],
    )


def register_video_loader() -> None:
    from vllm.multimodal.video import VIDEO_LOADER_REGISTRY, VideoLoader

    if BACKEND_NAME in VIDEO_LOADER_REGISTRY.name2class:
        return

    @VIDEO_LOADER_REGISTRY.register(BACKEND_NAME, video_processor=VIDEO_PROCESSOR_NAME)
    class ARCVideoLoader(VideoLoader):
        @classmethod
        def load_bytes(cls, data: bytes, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
            return load_video_bytes(data, **kwargs)
