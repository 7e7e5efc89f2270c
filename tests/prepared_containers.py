"""Prepared containers built by hand for the engine's input tests: a zip of given members,
manifests, and the members of good and bad containers in both encodings (JPEG frames + FLAC
audio; raw frames + float32 samples). The gateway's own containers come from
`servers.prepare_container`."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

# Two 640 x 640 frames and 2 s of 16 kHz audio.
COUNT, SIZE, SAMPLES = 2, 640, 32000


def zip_of(members: dict[str, bytes], *, deflated: tuple[str, ...] = ()) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            method = zipfile.ZIP_DEFLATED if name in deflated else zipfile.ZIP_STORED
            archive.writestr(zipfile.ZipInfo(name, (2025, 1, 1, 0, 0, 0)), data, method)
    return out.getvalue()


def manifest(**changes: Any) -> bytes:
    """The manifest of a JPEG/FLAC container of two frames and 2 s of audio, with `changes`
    (a None drops a key)."""
    base = {
        "format": "arc-prepared",
        "version": 1,
        "encoding": None,
        "duration": 2,
        "num_frames": COUNT,
        "frame_size": [SIZE, SIZE],
        "sample_rate": 16000,
        "audio_samples": SAMPLES,
        "info": {},
    }
    return json.dumps({k: v for k, v in {**base, **changes}.items() if v is not None}).encode()


def raw_manifest(**changes: Any) -> bytes:
    """The manifest of the same video in the raw encoding."""
    return manifest(**{"encoding": "raw", **changes})


def jpeg(size: int = 640, *, progressive: bool = False) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    image = Image.new("RGB", (size, size), (10, 120, 30))
    image.save(out, "JPEG", quality=90, progressive=progressive)
    return out.getvalue()


def float_wav(samples: np.ndarray) -> bytes:
    import soundfile

    out = io.BytesIO()
    soundfile.write(out, samples, 16000, format="WAV", subtype="FLOAT")
    return out.getvalue()


def flac(samples: int, *, chunk: int = 1 << 20) -> bytes:
    import soundfile

    out = io.BytesIO()
    with soundfile.SoundFile(out, "w", 16000, 1, format="FLAC", subtype="PCM_16") as f:
        for start in range(0, samples, chunk):
            f.write(np.zeros(min(chunk, samples - start), np.float32))
    return out.getvalue()


def good_members() -> dict[str, bytes]:
    """A JPEG/FLAC container's members that the engine reads."""
    return {
        "arc-prepared.json": manifest(),
        "frames/000.jpg": jpeg(),
        "frames/001.jpg": jpeg(),
        "audio.flac": flac(32000),
    }


def bad_containers() -> dict[str, tuple[bytes, str]]:
    """JPEG/FLAC containers the engine must refuse: name -> (bytes, what the error says)."""
    good = good_members()
    hour = flac(16000 * 3600)  # ~100 kB of FLAC, 230 MB of float32 samples
    return {
        "zip bomb (a deflated member)": (
            zip_of({**good, "frames/001.jpg": b"\0" * (200 << 20)}, deflated=("frames/001.jpg",)),
            "compressed",
        ),
        "FLAC bomb, member over its bound": (
            zip_of({**good, "audio.flac": hour}),
            "over its bound",
        ),
        "FLAC bomb, manifest says 300 s": (
            zip_of(
                {**good, "arc-prepared.json": manifest(audio_samples=4_800_000), "audio.flac": hour}
            ),
            "more than 4800000",
        ),
        "FLAC shorter than the manifest": (
            zip_of({**good, "audio.flac": flac(16000)}),
            "16000 samples",
        ),
        "truncated": (zip_of(good)[:3000], "not a valid"),
        "lying manifest: 64x64 frames": (
            zip_of(
                {
                    **good,
                    "arc-prepared.json": manifest(frame_size=[64, 64]),
                    "frames/000.jpg": jpeg(64),
                    "frames/001.jpg": jpeg(64),
                }
            ),
            "640x640",
        ),
        "lying manifest: 640x640 but 64x64 JPEGs": (
            zip_of({**good, "frames/000.jpg": jpeg(64)}),
            "frame 0 is a 64x64",
        ),
        "zero frames": (
            zip_of({**good, "arc-prepared.json": manifest(num_frames=0)}),
            "num_frames",
        ),
        "151 frames": (
            zip_of({**good, "arc-prepared.json": manifest(num_frames=151)}),
            "num_frames",
        ),
        "a missing frame": (
            zip_of({k: v for k, v in good.items() if k != "frames/001.jpg"}),
            "members",
        ),
        "an extra member": (zip_of({**good, "extra.bin": b"x"}), "members"),
        "not a zip": (
            b"PK\x03\x04" + b"\0" * 26 + b"arc-prepared.json" + b"garbage" * 100,
            "not a valid",
        ),
        "manifest not an object": (zip_of({**good, "arc-prepared.json": b"[1, 2]"}), "JSON object"),
        "frame not a JPEG": (zip_of({**good, "frames/000.jpg": b"not a jpeg"}), "not a valid"),
        "float WAV as audio (values past 1)": (
            zip_of({**good, "audio.flac": float_wav(np.full(32000, 1e30, np.float32))}),
            "16-bit FLAC",
        ),
        "progressive JPEG frame (scans without end)": (
            zip_of({**good, "frames/000.jpg": jpeg(progressive=True)}),
            "progressive",
        ),
    }


def raw_frames(count: int = COUNT) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def raw_audio(samples: int = SAMPLES) -> np.ndarray:
    return np.sin(np.arange(samples, dtype=np.float32) / 10).astype(np.float32) * 0.5


def good_raw_members() -> dict[str, bytes]:
    """A raw container's members that the engine reads."""
    return {
        "arc-prepared.json": raw_manifest(),
        "frames.rgb": raw_frames().tobytes(),
        "audio.f32": raw_audio().astype("<f4").tobytes(),
    }
