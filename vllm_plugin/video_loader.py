"""vLLM video loader backend `arc`: a video file -> what the model sees, audio included.

vLLM's media connector hands the loader the bytes of a `video_url` (file, data URL or
http(s) URL). We run the project's one preprocessing pipeline on them (ffmpeg decode of
only the sampled frames, timestamp overlay, 640x640, the video's own 16 kHz audio) and
return the frames with the audio and duration in the metadata, which the processor
turns into model inputs. A prepared container from the gateway (`prepared_media`,
media type video/x-arc-prepared) is recognised by its first bytes and used as it is. Select it with `--media-io-kwargs '{"video":
{"video_backend": "arc"}}'` (the `arc-serve` command does this).
"""

from __future__ import annotations

from typing import Any

import numpy as np

BACKEND_NAME = "arc"
# Listed in a checkpoint's preprocessor_config.json as `video_processor_type`, it
# makes vLLM pick this loader by itself.
VIDEO_PROCESSOR_NAME = "ARCHunyuanVideoProcessor"


def load_prepared_bytes(data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """The gateway's container (`prepared_media`): frames and audio used as they are."""
    from . import prepared_media

    media = prepared_media.decode(data)
    count = media.frames.shape[0]
    metadata = {
        "total_num_frames": count,
        "fps": 1.0,
        "duration": float(media.duration),
        "video_backend": BACKEND_NAME,
        "frames_indices": list(range(count)),
        "do_sample_frames": False,
        "arc_audio": media.audio,
        "arc_duration": media.duration,
        "arc_intervals": media.info.get("intervals"),
    }
    return media.frames, metadata


def load_video_bytes(data: bytes, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
    from . import prepared_media, preprocess

    if prepared_media.is_prepared(data):
        return load_prepared_bytes(data)
    prepared = preprocess.prepare_video(data)
    metadata = {
        "total_num_frames": prepared.probe.num_frames,
        "fps": prepared.probe.fps,
        "duration": prepared.probe.duration,
        "video_backend": BACKEND_NAME,
        "frames_indices": list(prepared.frame_indices),
        "do_sample_frames": False,
        "arc_audio": prepared.audio,
        "arc_duration": prepared.duration,
        "arc_intervals": [list(i) for i in prepared.intervals],
    }
    return prepared.frames, metadata


def register_video_loader() -> None:
    from vllm.multimodal.video import VIDEO_LOADER_REGISTRY, VideoLoader

    if BACKEND_NAME in VIDEO_LOADER_REGISTRY.name2class:
        return

    @VIDEO_LOADER_REGISTRY.register(BACKEND_NAME, video_processor=VIDEO_PROCESSOR_NAME)
    class ARCVideoLoader(VideoLoader):
        @classmethod
        def load_bytes(cls, data: bytes, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
            return load_video_bytes(data, **kwargs)
