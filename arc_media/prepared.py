"""A compact container for a video that is already prepared (the gateway's forward format).

The gateway runs the one preprocessing pipeline (sampled frames with the timestamp
overlay at 640x640, the fitted 16 kHz audio, the reconciled duration) and sends the
result to vLLM instead of the user's file. The container is a ZIP archive (stored, since
its members are compressed already):

    arc-prepared.json   {"format": "arc-prepared", "version": 1, "duration": D, ...}
    frames/000.jpg ...  one JPEG per frame, quality 97, 4:4:4 chroma
    audio.flac          16 kHz mono, 16-bit

Measured on all of ../shared/media: JPEG q97 4:4:4 frames differ from the originals'
decode by 0.27-0.81/255 (mean absolute difference, worst frame), inside the 1/255 frame
tolerance with a margin; q95 reached 1.04/255 on the noisiest clip, lossless PNG is 2-3x
bigger. 16-bit FLAC audio changes the Whisper features by about 1e-4 (tolerance 0.12).
The bytes are deterministic for one prepared video, so vLLM's multimodal cache and prefix
cache see the same item each time a stored file is asked about.

Sent as a `video_url` data URL with the media type `PREPARED_MIME`, the `arc` video
loader recognises it by its first member and skips preprocessing.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .limits import MAX_AUDIO_SECONDS, SAMPLE_RATE

FORMAT = "arc-prepared"
VERSION = 1
MANIFEST = "arc-prepared.json"
PREPARED_MIME = "video/x-arc-prepared"
JPEG_QUALITY = 97
# A fixed timestamp for every member: equal inputs give equal bytes.
_ZIP_TIME = (2025, 1, 1, 0, 0, 0)
_MAGIC = b"PK\x03\x04"
MAX_MANIFEST_BYTES = 64 * 1024
# A 640x640 JPEG at quality 97 with 4:4:4 chroma: 100-450 kB on real video; noise
# reaches ~1 MB. Above 4 MB a member is not a frame this encoder wrote.
MAX_FRAME_BYTES = 4 * 1024 * 1024


class PreparedMediaError(ValueError):
    pass


@dataclass
class PreparedMedia:
    frames: np.ndarray  # uint8 [N, S, S, 3]
    audio: np.ndarray  # float32, 16 kHz mono
    duration: int  # D, reconciled with the frame count
    info: dict[str, Any] = field(default_factory=dict)  # intervals, indices, source probe


def _member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    entry = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    entry.compress_type = zipfile.ZIP_STORED
    archive.writestr(entry, data)


def encode(
    frames: np.ndarray,
    audio: np.ndarray,
    duration: int,
    info: dict[str, Any] | None = None,
    *,
    quality: int = JPEG_QUALITY,
) -> bytes:
    import soundfile
    from PIL import Image

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise PreparedMediaError(
            f"frames must be uint8 [N,H,W,3], got {frames.dtype} {frames.shape}"
        )
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "duration": int(duration),
        "num_frames": int(frames.shape[0]),
        "frame_size": [int(frames.shape[1]), int(frames.shape[2])],
        "sample_rate": SAMPLE_RATE,
        "audio_samples": len(audio),
        "info": info or {},
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        _member(archive, MANIFEST, json.dumps(manifest, sort_keys=True).encode())
        for i, frame in enumerate(frames):
            jpeg = io.BytesIO()
            Image.fromarray(frame).save(jpeg, "JPEG", quality=quality, subsampling=0)
            _member(archive, f"frames/{i:03d}.jpg", jpeg.getvalue())
        flac = io.BytesIO()
        pcm = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
        soundfile.write(flac, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        _member(archive, "audio.flac", flac.getvalue())
    return out.getvalue()


def is_prepared(data: bytes) -> bool:
    """A ZIP whose first member is the manifest (a cheap check on the first bytes)."""
    head = bytes(data[:64])
    return head.startswith(_MAGIC) and MANIFEST.encode() in head


def _manifest_int(manifest: dict[str, Any], key: str, low: int, high: int) -> int:
    value = manifest.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PreparedMediaError(f"manifest {key!r} must be an integer from {low} to {high}")
    return value


def _members(archive: zipfile.ZipFile, count: int, audio_samples: int) -> None:
    """Exactly the members the format has, stored (not compressed: nothing inflates
    past the container's own bytes), each within the size its content can have."""
    expected = {MANIFEST: MAX_MANIFEST_BYTES, "audio.flac": _flac_bound(audio_samples)}
    expected.update({f"frames/{i:03d}.jpg": MAX_FRAME_BYTES for i in range(count)})
    entries = archive.infolist()
    names = [entry.filename for entry in entries]
    if len(names) != len(expected) or set(names) != set(expected):
        raise PreparedMediaError(
            f"a container of {count} frames holds {MANIFEST}, frames/000.jpg ... and "
            f"audio.flac; got {len(names)} members"
        )
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED:
            raise PreparedMediaError(f"member {entry.filename} is compressed; members are stored")
        if entry.file_size > expected[entry.filename]:
            raise PreparedMediaError(
                f"member {entry.filename} is {entry.file_size} bytes, over its bound of "
                f"{expected[entry.filename]}"
            )


def _flac_bound(samples: int) -> int:
    # 16-bit PCM without compression plus headers and frame overhead: FLAC never needs more.
    return 2 * samples + 64 * 1024 + samples // 64


def _read_audio(data: bytes, samples: int) -> np.ndarray:
    import soundfile

    with soundfile.SoundFile(io.BytesIO(data)) as flac:
        # 16-bit FLAC only: its samples are within [-1, 1) by construction (a float
        # WAV could carry values that overflow the features).
        if (flac.format, flac.subtype) != ("FLAC", "PCM_16"):
            raise PreparedMediaError(
                f"prepared audio must be 16-bit FLAC, got {flac.format} {flac.subtype}"
            )
        if flac.samplerate != SAMPLE_RATE or flac.channels != 1:
            raise PreparedMediaError(
                f"prepared audio must be 16 kHz mono, got {flac.samplerate} Hz, "
                f"{flac.channels} channels"
            )
        # Read one sample more than the manifest says: a longer stream is refused
        # without decoding the rest.
        audio = flac.read(frames=samples + 1, dtype="float32", always_2d=False)
    if len(audio) != samples:
        raise PreparedMediaError(
            f"prepared audio holds {'more than ' if len(audio) > samples else ''}"
            f"{min(len(audio), samples)} samples, the manifest says {samples}"
        )
    return audio


def _read_frame(data: bytes, index: int, size: int) -> np.ndarray:
    from PIL import Image

    # The header's size is checked before any pixel is decoded.
    image = Image.open(io.BytesIO(data), formats=["JPEG"])
    if image.size != (size, size) or image.mode not in ("RGB", "YCbCr"):
        raise PreparedMediaError(
            f"frame {index} is a {image.size[0]}x{image.size[1]} {image.mode} image; "
            f"frames are {size}x{size} RGB"
        )
    # Baseline JPEG only (what `encode` writes): a progressive one may repeat scans
    # without end and cost minutes of CPU for one 640x640 frame.
    if image.info.get("progressive") or image.info.get("progression"):
        raise PreparedMediaError(f"frame {index} is a progressive JPEG; frames are baseline")
    frame = np.asarray(image.convert("RGB"))
    if frame.shape != (size, size, 3):
        raise PreparedMediaError(f"frame {index} decoded to {frame.shape}")
    return frame


def decode(data: bytes, *, max_frames: int = 150, frame_size: int = 640) -> PreparedMedia:
    """The container's frames, audio and duration; any defect is a PreparedMediaError
    (a 400 from the server). Memory is bounded by the format: at most `max_frames`
    frames of `frame_size`^2 and 300 s of audio, whatever the manifest claims."""
    try:
        return _decode(data, max_frames, frame_size)
    except PreparedMediaError:
        raise
    except MemoryError:
        raise PreparedMediaError("the prepared container does not fit in memory") from None
    except Exception as e:  # noqa: BLE001 (zipfile, JSON, PIL and libsndfile raise their own types)
        raise PreparedMediaError(
            f"not a valid {FORMAT} container: {type(e).__name__}: {e}"
        ) from None


def _decode(data: bytes, max_frames: int, frame_size: int) -> PreparedMedia:
    archive = zipfile.ZipFile(io.BytesIO(data))
    with archive:
        entry = archive.getinfo(MANIFEST)
        if entry.file_size > MAX_MANIFEST_BYTES or entry.compress_type != zipfile.ZIP_STORED:
            raise PreparedMediaError(
                f"{MANIFEST} must be stored and at most {MAX_MANIFEST_BYTES} bytes"
            )
        manifest = json.loads(archive.read(MANIFEST))
        if not isinstance(manifest, dict):
            raise PreparedMediaError(f"{MANIFEST} must be a JSON object")
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise PreparedMediaError(
                f"unsupported prepared container {manifest.get('format')!r} "
                f"version {manifest.get('version')!r} (expected {FORMAT} {VERSION})"
            )
        count = _manifest_int(manifest, "num_frames", 1, max_frames)
        duration = _manifest_int(manifest, "duration", 1, MAX_AUDIO_SECONDS)
        samples = _manifest_int(manifest, "audio_samples", 1, MAX_AUDIO_SECONDS * SAMPLE_RATE)
        if manifest.get("frame_size") != [frame_size, frame_size]:
            raise PreparedMediaError(
                f"frames must be {frame_size}x{frame_size}, the manifest says "
                f"{manifest.get('frame_size')!r}"
            )
        if manifest.get("sample_rate") != SAMPLE_RATE:
            raise PreparedMediaError(f"prepared audio must be {SAMPLE_RATE} Hz")
        info = manifest.get("info", {})
        if not isinstance(info, dict):
            raise PreparedMediaError("manifest 'info' must be an object")
        _members(archive, count, samples)
        frames = np.empty((count, frame_size, frame_size, 3), dtype=np.uint8)
        for i in range(count):
            frames[i] = _read_frame(archive.read(f"frames/{i:03d}.jpg"), i, frame_size)
        audio = _read_audio(archive.read("audio.flac"), samples)
    return PreparedMedia(frames, audio, duration, info)


__all__ = [
    "PREPARED_MIME",
    "PreparedMedia",
    "PreparedMediaError",
    "decode",
    "encode",
    "is_prepared",
]
