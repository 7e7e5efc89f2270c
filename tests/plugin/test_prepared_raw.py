"""The raw encoding of the prepared container (`arc_media.prepared`, `"encoding": "raw"`):
the frames and float32 samples as they are, read as views of the container's bytes; every
defect of a hostile one is a PreparedMediaError before memory grows, and arc-serve answers
each with a 4xx and keeps answering."""

from __future__ import annotations

import base64
import io
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prepared_containers import SIZE, good_raw_members, raw_audio, raw_frames, raw_manifest, zip_of

from arc_media import prepared
from arc_media.prepared import PreparedMediaError


def samples_with(value: float) -> bytes:
    values = raw_audio()
    values[1234] = value
    return values.astype("<f4").tobytes()


def bad_raw_containers() -> dict[str, tuple[bytes, str]]:
    good = good_raw_members()
    pixels = good["frames.rgb"]
    return {
        "frames one byte short": (zip_of({**good, "frames.rgb": pixels[:-1]}), "frames.rgb is"),
        "frames one byte long": (zip_of({**good, "frames.rgb": pixels + b"\0"}), "frames.rgb is"),
        "frames of a third frame": (
            zip_of({**good, "frames.rgb": pixels + pixels[: SIZE * SIZE * 3]}),
            "frames.rgb is",
        ),
        "audio one sample short": (
            zip_of({**good, "audio.f32": good["audio.f32"][:-4]}),
            "audio.f32 is",
        ),
        "audio not whole samples": (
            zip_of({**good, "audio.f32": good["audio.f32"] + b"\0\0"}),
            "audio.f32 is",
        ),
        "NaN sample": (zip_of({**good, "audio.f32": samples_with(np.nan)}), "not finite"),
        "infinite sample": (zip_of({**good, "audio.f32": samples_with(np.inf)}), "not finite"),
        "sample of -inf": (zip_of({**good, "audio.f32": samples_with(-np.inf)}), "not finite"),
        "sample of 1e30": (zip_of({**good, "audio.f32": samples_with(1e30)}), "outside"),
        "sample of 1.0001": (zip_of({**good, "audio.f32": samples_with(1.0001)}), "outside"),
        "a missing audio member": (
            zip_of({k: v for k, v in good.items() if k != "audio.f32"}),
            "members",
        ),
        "a missing frames member": (
            zip_of({k: v for k, v in good.items() if k != "frames.rgb"}),
            "members",
        ),
        "an extra member": (zip_of({**good, "extra.bin": b"x"}), "members"),
        "JPEG members in a raw container": (
            zip_of({**good, "frames/000.jpg": b"\xff\xd8"}),
            "members",
        ),
        "raw members without the raw encoding": (
            zip_of({**good, "arc-prepared.json": raw_manifest(encoding=None)}),
            "members",
        ),
        "an unknown encoding": (
            zip_of({**good, "arc-prepared.json": raw_manifest(encoding="h264")}),
            "unsupported encoding",
        ),
        "a deflated frames member (zip bomb)": (
            zip_of({**good, "frames.rgb": b"\0" * (200 << 20)}, deflated=("frames.rgb",)),
            "compressed",
        ),
        "a deflated frames member of the right size": (
            zip_of(good, deflated=("frames.rgb",)),
            "compressed",
        ),
        "151 frames": (
            zip_of({**good, "arc-prepared.json": raw_manifest(num_frames=151)}),
            "num_frames",
        ),
        "zero frames": (
            zip_of({**good, "arc-prepared.json": raw_manifest(num_frames=0)}),
            "num_frames",
        ),
        "301 s of audio": (
            zip_of({**good, "arc-prepared.json": raw_manifest(audio_samples=301 * 16000)}),
            "audio_samples",
        ),
        "duration 301": (
            zip_of({**good, "arc-prepared.json": raw_manifest(duration=301)}),
            "duration",
        ),
        "a boolean frame count": (
            zip_of({**good, "arc-prepared.json": raw_manifest(num_frames=True)}),
            "num_frames",
        ),
        "64x64 frames": (
            zip_of({**good, "arc-prepared.json": raw_manifest(frame_size=[64, 64])}),
            "640x640",
        ),
        "48 kHz": (
            zip_of({**good, "arc-prepared.json": raw_manifest(sample_rate=48000)}),
            "16000 Hz",
        ),
        "truncated": (zip_of(good)[: 3 * SIZE * SIZE], "not a valid"),
        "a local header that overlaps the next member": (lying_offsets(), "past its room"),
    }


def lying_offsets() -> bytes:
    """The frames' local header claims a longer extra field: its data would run into the
    audio member (zipfile's own reader would find a CRC error; the views check the room)."""
    data = bytearray(zip_of(good_raw_members()))
    at = data.find(b"PK\x03\x04", 10)  # the frames member's local header
    data[at + 28 : at + 30] = (60000).to_bytes(2, "little")
    return bytes(data)


def test_raw_round_trip_is_exact_and_copies_nothing() -> None:
    pictures, samples = raw_frames(3), raw_audio(48000)
    info = {"intervals": [[0, 1], [1, 2], [2, 3]], "frame_indices": [0, 30, 60]}
    data = prepared.encode(pictures, samples, 3, info, encoding="raw")
    assert prepared.is_prepared(data)
    assert data == prepared.encode(pictures, samples, 3, info, encoding="raw")  # deterministic
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["arc-prepared.json", "frames.rgb", "audio.f32"]
        assert archive.testzip() is None  # CRCs as zipfile checks them
    media = prepared.decode(data)
    assert np.array_equal(media.frames, pictures) and media.frames.dtype == np.uint8
    assert np.array_equal(media.audio, samples) and media.audio.dtype == np.float32
    assert media.duration == 3 and media.info == info
    # Views of the container's bytes (read-only), the audio aligned in place.
    assert np.shares_memory(media.frames, np.frombuffer(data, np.uint8))
    assert np.shares_memory(media.audio, np.frombuffer(data, np.uint8))
    assert not media.frames.flags.writeable
    # Out-of-range samples are clipped on the way in, as for FLAC.
    loud = prepared.decode(prepared.encode(pictures, samples * 3, 3, encoding="raw"))
    assert loud.audio.max() == 1.0 and loud.audio.min() == -1.0


def test_both_encodings_are_read_and_the_jpeg_form_is_unchanged() -> None:
    pictures, samples = raw_frames(), raw_audio()
    jpeg = prepared.decode(prepared.encode(pictures, samples, 2))
    plain = prepared.decode(prepared.encode(pictures, samples, 2, encoding="jpeg-flac"))
    assert np.array_equal(jpeg.frames, plain.frames) and jpeg.frames.flags.writeable
    with pytest.raises(PreparedMediaError, match="unknown encoding"):
        prepared.encode(pictures, samples, 2, encoding="png")


def test_good_raw_container_by_hand_is_read() -> None:
    media = prepared.decode(zip_of(good_raw_members()))
    assert np.array_equal(media.frames, raw_frames()) and np.array_equal(media.audio, raw_audio())


@pytest.mark.parametrize("name", list(bad_raw_containers()))
def test_bad_raw_containers_are_refused_before_memory_grows(name: str) -> None:
    data, reason = bad_raw_containers()[name]
    tracemalloc.start()
    try:
        with pytest.raises(PreparedMediaError, match=reason):
            prepared.decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, f"{name}: {peak / 2**20:.0f} MB"


@pytest.mark.engine
def test_hostile_raw_containers_sent_to_arc_serve_are_4xx(engine: tuple[str, Path]) -> None:
    base, _ = engine

    def body(data: bytes) -> dict[str, Any]:
        url = "data:video/x-arc-prepared;base64," + base64.b64encode(data).decode()
        content = [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "Hi"}]
        return {
            "model": "arc-tiny",
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 1,
        }

    with httpx.Client(base_url=base, timeout=300) as client:
        for name, (data, _) in bad_raw_containers().items():
            reply = client.post("/v1/chat/completions", json=body(data))
            assert 400 <= reply.status_code < 500, (name, reply.status_code, reply.text[:300])
            assert client.get("/health").status_code == 200, f"{name} killed the engine"
        reply = client.post("/v1/chat/completions", json=body(zip_of(good_raw_members())))
        assert reply.status_code == 200 and reply.json()["choices"], reply.text
