"""A compact container for a video that is already prepared (the gateway's forward format).

The gateway runs the one preprocessing pipeline (sampled frames with the timestamp
overlay at 640x640, the fitted 16 kHz audio, the reconciled duration) and sends the
result to vLLM instead of the user's file. The container is a ZIP archive (stored, since
its members are compressed already):

    arc-prepared.json   {"format": "arc-prepared", "version": 1, "duration": D, ...}
    frames/000.jpg ...  one JPEG per frame, quality 97, 4:4:4 chroma
    audio.flac          16 kHz mono, 16-bit

or, with `"encoding": "raw"` in the manifest (the gateway's shared-volume forward, where
size does not matter and both codecs' CPU does):

    arc-prepared.json
    frames.rgb          N*S*S*3 bytes, uint8 RGB, the frames as they are
    audio.f32           little-endian float32 samples, each finite and within [-1, 1]

Measured on all of ../shared/media: JPEG q97 4:4:4 frames differ from the originals'
decode by 0.27-0.81/255 (mean absolute difference, worst frame), inside the 1/255 frame
tolerance with a margin; q95 reached 1.04/255 on the noisiest clip, lossless PNG is 2-3x
bigger. 16-bit FLAC audio changes the Whisper features by about 1e-4 (tolerance 0.12).
The bytes are deterministic for one prepared video, so vLLM's multimodal cache and prefix
cache see the same item each time a stored file is asked about.

Sent as a `video_url` data URL with the media type `PREPARED_MIME` (or a file:// URL in
the engine's allowed folder), the `arc` video loader recognises it by its first member and
skips preprocessing. The raw form is read without decoding: the frames and the audio are
numpy views over the container's own bytes (read-only; the processor only reads them).
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from .model_inputs import MAX_AUDIO_SECONDS, SAMPLE_RATE

FORMAT = "arc-prepared"
VERSION = 1
MANIFEST = "arc-prepared.json"
PREPARED_MIME = "video/x-arc-prepared"
JPEG_QUALITY = 97
# The two encodings of the members (manifest key "encoding"; absent = JPEG_FLAC).
JPEG_FLAC = "jpeg-flac"
RAW = "raw"
ENCODINGS = (JPEG_FLAC, RAW)
RAW_FRAMES = "frames.rgb"
RAW_AUDIO = "audio.f32"
# A fixed timestamp for every member: equal inputs give equal bytes.
_ZIP_TIME = (2025, 1, 1, 0, 0, 0)
_MAGIC = b"PK\x03\x04"
MAX_MANIFEST_BYTES = 64 * 1024
# A 640x640 JPEG at quality 97 with 4:4:4 chroma: 100-450 kB on real video; noise
# reaches ~1 MB. Above 4 MB a member is not a frame this encoder wrote.
MAX_FRAME_BYTES = 4 * 1024 * 1024
# A ZIP local file header: signature, version, flags, method, time, date, CRC, sizes,
# name and extra-field lengths (30 bytes).
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
# An extra field of padding (the id zipalign uses) that puts a raw member's data on a
# 64-byte boundary, so the float32 audio is read in place, aligned.
_ALIGN_ID = 0xD935
_ALIGN = 64


class PreparedMediaError(ValueError):
    pass


@dataclass
class PreparedMedia:
    frames: np.ndarray  # uint8 [N, S, S, 3] (read-only views for the raw encoding)
    audio: np.ndarray  # float32, 16 kHz mono
    duration: int  # D, reconciled with the frame count
    info: dict[str, Any] = field(default_factory=dict)  # intervals, indices, source probe


def _entry(name: str) -> zipfile.ZipInfo:
    entry = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    entry.compress_type = zipfile.ZIP_STORED
    return entry


def _member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    archive.writestr(_entry(name), data)


def _aligned_member(archive: zipfile.ZipFile, out: IO[bytes], name: str, data: Any) -> None:
    """A stored member whose data starts on an `_ALIGN` boundary, written from a buffer
    (a numpy array's memory: no bytes copy of it is made)."""
    entry = _entry(name)
    view = memoryview(data).cast("B")
    start = out.tell() + _LOCAL_HEADER.size + len(name.encode()) + 4
    entry.extra = struct.pack("<HH", _ALIGN_ID, -start % _ALIGN) + b"\0" * (-start % _ALIGN)
    entry.file_size = len(view)
    with archive.open(entry, "w") as member:
        member.write(view)


def encode(
    frames: np.ndarray,
    audio: np.ndarray,
    duration: int,
    info: dict[str, Any] | None = None,
    *,
    quality: int = JPEG_QUALITY,
    encoding: str = JPEG_FLAC,
) -> bytes:
    """The container's bytes. `encoding` JPEG_FLAC (compact: JPEG frames, 16-bit FLAC) or
    RAW (the frames and float32 samples as they are: no codec on either side)."""
    out = io.BytesIO()
    write(out, frames, audio, duration, info, quality=quality, encoding=encoding)
    return out.getvalue()


def write(
    out: IO[bytes],
    frames: np.ndarray,
    audio: np.ndarray,
    duration: int,
    info: dict[str, Any] | None = None,
    *,
    quality: int = JPEG_QUALITY,
    encoding: str = JPEG_FLAC,
) -> None:
    """`encode` into a seekable binary file (the raw frames go there without a copy)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise PreparedMediaError(
            f"frames must be uint8 [N,H,W,3], got {frames.dtype} {frames.shape}"
        )
    if encoding not in ENCODINGS:
        raise PreparedMediaError(f"unknown encoding {encoding!r}; one of {ENCODINGS}")
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
    if encoding == RAW:
        manifest["encoding"] = RAW
    pcm = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    with zipfile.ZipFile(out, "w") as archive:
        _member(archive, MANIFEST, json.dumps(manifest, sort_keys=True).encode())
        if encoding == RAW:
            _aligned_member(archive, out, RAW_FRAMES, np.ascontiguousarray(frames))
            _aligned_member(archive, out, RAW_AUDIO, pcm.astype("<f4", copy=False))
            return
        from PIL import Image

        for i, frame in enumerate(frames):
            jpeg = io.BytesIO()
            Image.fromarray(frame).save(jpeg, "JPEG", quality=quality, subsampling=0)
            _member(archive, f"frames/{i:03d}.jpg", jpeg.getvalue())
        import soundfile

        flac = io.BytesIO()
        soundfile.write(flac, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        _member(archive, "audio.flac", flac.getvalue())


def is_prepared(data: bytes) -> bool:
    """A ZIP whose first member is the manifest (a cheap check on the first bytes)."""
    head = bytes(data[:64])
    return head.startswith(_MAGIC) and MANIFEST.encode() in head


def _manifest_int(manifest: dict[str, Any], key: str, low: int, high: int) -> int:
    value = manifest.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PreparedMediaError(f"manifest {key!r} must be an integer from {low} to {high}")
    return value


def _members(
    archive: zipfile.ZipFile, expected: dict[str, int], what: str, exact: tuple[str, ...] = ()
) -> None:
    """Exactly the members the format has, stored (not compressed: nothing inflates
    past the container's own bytes), each within the size its content can have; those
    named in `exact` of exactly that size."""
    entries = archive.infolist()
    names = [entry.filename for entry in entries]
    if len(names) != len(expected) or set(names) != set(expected):
        raise PreparedMediaError(f"a container of {what}; got {len(names)} members")
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED:
            raise PreparedMediaError(f"member {entry.filename} is compressed; members are stored")
        size = expected[entry.filename]
        if entry.filename in exact and entry.file_size != size:
            raise PreparedMediaError(
                f"member {entry.filename} is {entry.file_size} bytes; the manifest's counts "
                f"make it {size}"
            )
        if entry.file_size > size:
            raise PreparedMediaError(
                f"member {entry.filename} is {entry.file_size} bytes, over its bound of {size}"
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


def _read_frame(data: bytes, index: int, size: int, out: np.ndarray) -> None:
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
    image.load()
    if image.mode != "RGB":  # libjpeg gives RGB for what `encode` writes: no conversion
        image = image.convert("RGB")
    frame = np.asarray(image)
    if frame.shape != (size, size, 3):
        raise PreparedMediaError(f"frame {index} decoded to {frame.shape}")
    out[...] = frame


def _stored_data(data: Any, archive: zipfile.ZipFile, name: str) -> memoryview:
    """A stored member's bytes as a view of the container (no copy), found through its
    local header as zipfile finds it; anything that does not add up is refused."""
    entry = archive.getinfo(name)
    if entry.flag_bits & 0x1:
        raise PreparedMediaError(f"member {name} is encrypted")
    start = entry.header_offset
    header = bytes(data[start : start + _LOCAL_HEADER.size])
    if len(header) != _LOCAL_HEADER.size:
        raise PreparedMediaError(f"member {name}: truncated local header")
    fields = _LOCAL_HEADER.unpack(header)
    if fields[0] != _MAGIC:
        raise PreparedMediaError(f"member {name}: bad local header")
    name_length, extra_length = fields[9], fields[10]
    stored_name = bytes(data[start + _LOCAL_HEADER.size : start + _LOCAL_HEADER.size + name_length])
    if stored_name != name.encode():
        raise PreparedMediaError(f"member {name}: its local header names {stored_name!r}")
    begin = start + _LOCAL_HEADER.size + name_length + extra_length
    end = begin + entry.file_size
    # The next member's header, or the central directory, bounds this member's data.
    later = [e.header_offset for e in archive.infolist() if e.header_offset > start]
    limit = min([*later, archive.start_dir, len(data)])
    if entry.compress_size != entry.file_size or end > limit:
        raise PreparedMediaError(f"member {name} runs past its room in the container")
    return memoryview(data)[begin:end]


def decode(data: bytes, *, max_frames: int = 150, frame_size: int = 640) -> PreparedMedia:
    """The container's frames, audio and duration; any defect is a PreparedMediaError
    (a 400 from the server). Memory is bounded by the format: at most `max_frames`
    frames of `frame_size`^2 and 300 s of audio, whatever the manifest claims. A raw
    container's frames (and aligned audio) are read-only views over `data`."""
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
        encoding = manifest.get("encoding", JPEG_FLAC)
        if encoding not in ENCODINGS:
            raise PreparedMediaError(
                f"unsupported encoding {str(encoding)[:40]!r} (one of {', '.join(ENCODINGS)})"
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
        if encoding == RAW:
            frames, audio = _read_raw(data, archive, count, frame_size, samples)
            return PreparedMedia(frames, audio, duration, info)
        expected = {MANIFEST: MAX_MANIFEST_BYTES, "audio.flac": _flac_bound(samples)}
        expected.update({f"frames/{i:03d}.jpg": MAX_FRAME_BYTES for i in range(count)})
        what = f"{count} frames holds {MANIFEST}, frames/000.jpg ... and audio.flac"
        _members(archive, expected, what)
        frames = np.empty((count, frame_size, frame_size, 3), dtype=np.uint8)
        for i in range(count):
            _read_frame(archive.read(f"frames/{i:03d}.jpg"), i, frame_size, frames[i])
        audio = _read_audio(archive.read("audio.flac"), samples)
    return PreparedMedia(frames, audio, duration, info)


def _read_raw(
    data: bytes, archive: zipfile.ZipFile, count: int, size: int, samples: int
) -> tuple[np.ndarray, np.ndarray]:
    """The raw members as numpy views of the container's bytes, after every size check."""
    frame_bytes = count * size * size * 3
    expected = {MANIFEST: MAX_MANIFEST_BYTES, RAW_FRAMES: frame_bytes, RAW_AUDIO: 4 * samples}
    what = f"{count} frames ({RAW} encoding) holds {MANIFEST}, {RAW_FRAMES} and {RAW_AUDIO}"
    _members(archive, expected, what, exact=(RAW_FRAMES, RAW_AUDIO))
    pixels = _stored_data(data, archive, RAW_FRAMES)
    frames = np.frombuffer(pixels, dtype=np.uint8).reshape(count, size, size, 3)
    audio = np.frombuffer(_stored_data(data, archive, RAW_AUDIO), dtype="<f4")
    if audio.dtype != np.float32 or audio.ctypes.data % 4:
        audio = audio.astype(np.float32)  # a big-endian host, or unaligned: one copy
    # Float samples could carry anything: finite and within [-1, 1] only (NaN fails both
    # comparisons, so one pass checks both).
    if not (np.all(audio <= 1.0) and np.all(audio >= -1.0)):
        raise PreparedMediaError(
            f"{RAW_AUDIO} holds samples that are not finite or outside [-1, 1]"
        )
    return frames, audio


__all__ = [
    "ENCODINGS",
    "JPEG_FLAC",
    "PREPARED_MIME",
    "RAW",
    "PreparedMedia",
    "PreparedMediaError",
    "decode",
    "encode",
    "is_prepared",
    "write",
]
