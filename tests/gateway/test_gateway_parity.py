"""What the gateway forwards, once the plugin's loader has read it, matches what the plugin
makes from the original file (within the preprocessing tolerances)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from servers import prepare_container

from vllm_plugin import video_loader
from vllm_plugin.features import whisper_features


@pytest.mark.parametrize(
    "name", ["w33698kgs05.mp4", "c3522vbgwaw.mp4", "q35134y59x8.mp4", "syn_noaudio_8s.mp4"]
)
def test_forwarded_container_matches_direct(name: str, media_dir: Path, tmp_path: Path) -> None:
    path = media_dir / name
    container, summary = prepare_container(path, tmp_path / "out.arcz")
    forwarded, forwarded_meta = video_loader.load_video_bytes(container)
    direct, direct_meta = video_loader.load_video_bytes(path.read_bytes())

    assert forwarded.shape == direct.shape and forwarded.dtype == np.uint8
    assert forwarded_meta["arc_duration"] == direct_meta["arc_duration"]
    assert forwarded_meta["arc_intervals"] == direct_meta["arc_intervals"]
    frame_mad = np.abs(forwarded.astype(np.int16) - direct.astype(np.int16)).mean(axis=(1, 2, 3))
    assert frame_mad.max() < 1.0, frame_mad  # in 0..255 units: under 1/255
    features = whisper_features(forwarded_meta["arc_audio"])
    reference = whisper_features(direct_meta["arc_audio"])
    assert features.shape == reference.shape
    assert np.abs(features - reference).mean() < 0.12
    # The compact form, stated: its size against the original.
    assert summary.prepared_bytes == len(container)
    print(
        f"{name}: forwarded {len(container) / 1e6:.2f} MB for {path.stat().st_size / 1e6:.2f} MB"
        f" ({summary.frames} frames), worst frame {frame_mad.max():.2f}/255"
    )
