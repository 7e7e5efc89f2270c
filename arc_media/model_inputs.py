"""What ARC-Hunyuan-Video-7B takes as input: at most `MAX_FRAMES` frames of `IMAGE_SIZE` x
`IMAGE_SIZE` and at most `MAX_AUDIO_SECONDS` of `SAMPLE_RATE` Hz mono audio. Every other
module sizes its work from these. Imports nothing."""

from __future__ import annotations

SAMPLE_RATE = 16000
IMAGE_SIZE = 640
MAX_FRAMES = 150
MAX_AUDIO_SECONDS = 300

__all__ = ["IMAGE_SIZE", "MAX_AUDIO_SECONDS", "MAX_FRAMES", "SAMPLE_RATE"]
