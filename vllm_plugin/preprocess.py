"""Moved to arc_media (the media library) and vllm_plugin.features (the torch part);
kept until the importers move. The torch names load on first use, so importing this
module stays torch-free, and `prepare_video(features=True)` still means Whisper features."""

from __future__ import annotations

# ruff: noqa: F401  (re-exports)
from arc_media.audio import export_samples, fit_audio, load_audio
from arc_media.ffmpeg import set_child_limits
from arc_media.frames import decode_frames
from arc_media.limits import DEFAULT_LIMITS, FontError, Limits, MediaError, MediaTimeoutError
from arc_media.overlay import default_font_path, draw_timestamp
from arc_media.pipeline import PreparedVideo
from arc_media.pipeline import prepare_video as _prepare_video
from arc_media.plan import reconcile, sample_plan
from arc_media.probe import VideoProbe, probe_video

_TORCH_NAMES = ("mel_filters", "normalise", "pixel_values", "whisper_features")


def prepare_video(source, *, features=None, **options) -> PreparedVideo:
    if features is True:
        from .features import whisper_features as features
    return _prepare_video(source, features=features or None, **options)


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        from . import features

        return getattr(features, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
