"""The media library's boundary: arc_media never imports torch, vLLM or the gateway, so the
gateway can run it without them; the old vllm_plugin names still work until their importers
move (the torch ones only when asked for)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import arc_media

FORBIDDEN = ("torch", "vllm", "server", "transformers")


def imported_after(code: str) -> list[str]:
    """The top-level modules a fresh interpreter has loaded after running `code`."""
    script = (
        code
        + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    return json.loads(out.splitlines()[-1])


def test_arc_media_imports_no_torch_vllm_or_gateway() -> None:
    modules = [m.name for m in pkgutil.iter_modules(arc_media.__path__, "arc_media.")]
    assert "arc_media.pipeline" in modules and len(modules) >= 10
    loaded = imported_after("\n".join(f"import {name}" for name in modules))
    assert not set(FORBIDDEN) & set(loaded), sorted(set(FORBIDDEN) & set(loaded))


def test_old_media_modules_stay_torch_free() -> None:
    # what the gateway imports today: the shims must not pull torch in
    loaded = imported_after(
        "import vllm_plugin.preprocess, vllm_plugin.prepared_media, vllm_plugin.frame_decode\n"
        "from vllm_plugin.preprocess import MediaError, prepare_video, set_child_limits"
    )
    assert not set(FORBIDDEN) & set(loaded), sorted(set(FORBIDDEN) & set(loaded))


def test_old_names_still_resolve() -> None:
    from arc_media import frame_decode, pipeline, prepared
    from vllm_plugin import features, prepared_media, preprocess
    from vllm_plugin import frame_decode as old_decode

    assert preprocess.whisper_features is features.whisper_features
    assert preprocess.pixel_values is features.pixel_values
    assert preprocess.PreparedVideo is pipeline.PreparedVideo
    assert prepared_media.encode is prepared.encode
    assert old_decode.decode_selected is frame_decode.decode_selected
    with pytest.raises(AttributeError):
        preprocess.no_such_name  # noqa: B018


def test_features_flag_needs_a_function(tmp_path: Path) -> None:
    from media_factory import make_clip

    from arc_media.pipeline import prepare_video
    from vllm_plugin import preprocess
    from vllm_plugin.features import whisper_features

    clip = make_clip(tmp_path / "short.mp4", seconds=1.5)
    with pytest.raises(TypeError, match="whisper_features"):
        prepare_video(clip, features=True)
    ours = prepare_video(clip, features=whisper_features, audio_mode="direct")
    old = preprocess.prepare_video(clip, features=True, audio_mode="direct")
    assert ours.audio_features is not None and old.audio_features is not None
    assert np.array_equal(ours.audio_features, old.audio_features)
    assert np.array_equal(ours.audio_features, whisper_features(ours.audio))


def test_timings_hook_names_the_stages(tmp_path: Path) -> None:
    from media_factory import make_clip

    from arc_media.pipeline import prepare_video

    clip = make_clip(tmp_path / "short.mp4", seconds=2.5)
    timings: dict[str, float] = {}
    plain = prepare_video(clip, audio_mode="direct")
    timed = prepare_video(clip, audio_mode="direct", timings=timings)
    assert np.array_equal(plain.frames, timed.frames)
    assert {"probe", "decode", "overlay", "resize", "frames", "audio"} <= set(timings)
    assert "features" not in timings
    assert all(seconds >= 0 for seconds in timings.values())
    assert timings["decode"] <= timings["frames"]
