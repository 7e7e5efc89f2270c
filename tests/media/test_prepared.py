"""The prepared container (arc_media/prepared.py): what it encodes decodes back, and what
it refuses."""

from __future__ import annotations

import numpy as np
import pytest

from arc_media import prepared as prepared_media


def test_prepared_container_round_trip_and_refusals() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    audio = (rng.standard_normal(16000) * 0.1).astype(np.float32)
    data = prepared_media.encode(frames, audio, 3, {"intervals": [[0, 1]]})
    assert data == prepared_media.encode(frames, audio, 3, {"intervals": [[0, 1]]})
    assert prepared_media.is_prepared(data)
    media = prepared_media.decode(data, frame_size=64)
    assert media.frames.shape == frames.shape and media.duration == 3
    assert np.abs(media.audio - audio).max() < 1e-4
    with pytest.raises(prepared_media.PreparedMediaError):
        prepared_media.decode(data[: len(data) // 2], frame_size=64)
    with pytest.raises(prepared_media.PreparedMediaError, match="from 1 to 2"):
        prepared_media.decode(data, max_frames=2, frame_size=64)
    assert not prepared_media.is_prepared(b"\x00\x00\x00\x18ftypmp42")
