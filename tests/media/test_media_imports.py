"""The media library's boundary: arc_media never imports torch, vLLM or the gateway, so the
gateway can run it without them; the Whisper features come in as a function."""

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
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    return json.loads(out.splitlines()[-1])


def test_arc_media_imports_no_torch_vllm_or_gateway() -> None:
    modules = [m.name for m in pkgutil.iter_modules(arc_media.__path__, "arc_media.")]
    assert "arc_media.pipeline" in modules and len(modules) >= 10
    loaded = imported_after("\n".join(f"import {name}" for name in modules))
    assert not set(FORBIDDEN) & set(loaded), sorted(set(FORBIDDEN) & set(loaded))


def test_features_flag_needs_a_function(tmp_path: Path) -> None:
    from media_factory import make_clip

    from arc_media.pipeline import prepare_video
    from vllm_plugin.features import whisper_features

    clip = make_clip(tmp_path / "short.mp4", seconds=1.5)
    with pytest.raises(TypeError, match="whisper_features"):
        prepare_video(clip, features=True)
    ours = prepare_video(clip, features=whisper_features, audio_mode="direct")
    assert ours.audio_features is not None
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
