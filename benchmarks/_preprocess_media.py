"""Media of `benchmarks.preprocess_bench`: the shared clips (with their golden output when
there is one) and synthetic H.264 + AAC clips of a resolution and length, made once with
ffmpeg and kept in a cache (long clips repeat an encoded 30 s piece by stream copy), each
described by ffprobe."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SYNTHETIC_SIZES = {
    "tiny": (320, 180),
    "360p": (640, 360),
    "480p": (854, 480),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
}
SYNTHETIC_FPS = 30
SYNTHETIC_PIECE_S = 30  # longer clips repeat an encoded 30 s piece (stream copy)
DEFAULT_SYNTHETIC = ("720p:30", "1080p:30", "1080p:120", "720p:600")
QUICK_SHARED = ("w33698kgs05",)
QUICK_SYNTHETIC = ("tiny:3",)
PROBE_ENTRIES = (
    "stream=codec_type,codec_name,width,height,avg_frame_rate,nb_frames,profile:format=duration"
)


def _ffmpeg(*args: str, timeout: float = 900) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def probe_info(path: Path) -> dict:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            PROBE_ENTRIES,
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    info = json.loads(out)
    video = next(s for s in info["streams"] if s.get("codec_type") == "video")
    audio = next((s for s in info["streams"] if s.get("codec_type") == "audio"), None)
    num, _, den = str(video.get("avg_frame_rate", "0/1")).partition("/")
    fps = float(num) / float(den or 1) if float(den or 1) else 0.0
    return {
        "width": int(video["width"]),
        "height": int(video["height"]),
        "fps": round(fps, 3),
        "duration_s": round(float(info["format"].get("duration", 0.0)), 3),
        "video_codec": video.get("codec_name"),
        "audio_codec": (
            f"{audio.get('codec_name')} {audio.get('profile') or ''}".strip() if audio else "none"
        ),
        "size_mb": round(path.stat().st_size / 2**20, 2),
    }


@dataclass
class MediaItem:
    name: str
    path: Path
    group: str  # "shared" | "synthetic"
    label: str  # resolution label (synthetic) or WxH
    golden: Path | None = None
    info: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return float(self.info.get("duration_s", 0.0))

    @property
    def megapixel_seconds(self) -> float:
        return self.duration * self.info.get("width", 0) * self.info.get("height", 0) / 1e6

    @property
    def is_1080p(self) -> bool:
        return min(self.info.get("width", 0), self.info.get("height", 0)) >= 1080


def parse_synthetic(spec: str) -> tuple[str, float]:
    label, _, seconds = spec.partition(":")
    if label not in SYNTHETIC_SIZES or not seconds:
        raise argparse.ArgumentTypeError(
            f"bad synthetic clip {spec!r}: use LABEL:SECONDS with LABEL in "
            f"{', '.join(SYNTHETIC_SIZES)} (e.g. 1080p:120)"
        )
    return label, float(seconds)


def _encode_piece(path: Path, size: tuple[int, int], seconds: float, fps: int) -> None:
    width, height = size
    # testsrc2 picture, a 440 Hz tone upmixed to stereo; H.264 High (CABAC, B-frames,
    # x264's default GOP of 250) + AAC-LC 48 kHz, like a camera or phone file.
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "23",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-ac",
        "2",
        "-shortest",
        "-movflags",
        "+faststart",
        str(path),
    )


def make_synthetic(cache: Path, label: str, seconds: float, fps: int = SYNTHETIC_FPS) -> Path:
    """The clip `label` (e.g. 1080p) of `seconds`, made once and kept in `cache`. Clips longer
    than 30 s repeat an encoded 30 s piece by stream copy (decoding cost is the same as for
    one long encode, making it takes seconds instead of minutes)."""
    cache.mkdir(parents=True, exist_ok=True)
    size = SYNTHETIC_SIZES[label]
    name = f"syn_{label}_{seconds:g}s_{fps}fps_v1.mp4"
    path = cache / name
    if path.is_file():
        return path
    with tempfile.TemporaryDirectory(dir=cache, prefix=".make-") as tmp:
        piece_s = min(seconds, SYNTHETIC_PIECE_S)
        piece = cache / f"piece_{label}_{piece_s:g}s_{fps}fps_v1.mp4"
        if not piece.is_file():
            part = Path(tmp) / "piece.mp4"
            _encode_piece(part, size, piece_s, fps)
            os.replace(part, piece)
        if seconds <= piece_s:
            return piece if piece == path else _link(piece, path)
        listing = Path(tmp) / "list.txt"
        copies = math.ceil(seconds / piece_s)
        listing.write_text(f"file '{piece.resolve()}'\n" * copies)
        part = Path(tmp) / "clip.mp4"
        _ffmpeg(
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(listing),
            "-c",
            "copy",
            "-t",
            f"{seconds:g}",
            "-movflags",
            "+faststart",
            str(part),
        )
        os.replace(part, path)
    return path


def _link(source: Path, target: Path) -> Path:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target


def collect_media(args: argparse.Namespace, say) -> list[MediaItem]:
    items: list[MediaItem] = []
    shared = Path(args.shared)
    media_dir, golden_dir = shared / "media", shared / "golden" / "preprocess"
    if not args.no_shared:
        if media_dir.is_dir():
            names = args.shared_files or (
                QUICK_SHARED if args.quick else sorted(p.stem for p in media_dir.glob("*.mp4"))
            )
            for stem in names:
                path = media_dir / f"{stem}.mp4"
                if not path.is_file():
                    raise SystemExit(f"no shared clip {path}")
                golden = golden_dir / stem
                items.append(
                    MediaItem(
                        stem,
                        path,
                        "shared",
                        "",
                        golden if (golden / "meta.json").is_file() else None,
                    )
                )
        else:
            say(f"no shared media at {media_dir}: synthetic clips only")
    specs = args.synthetic
    if specs is None:
        specs = list(QUICK_SYNTHETIC if args.quick else DEFAULT_SYNTHETIC)
    for spec in specs:
        label, seconds = parse_synthetic(spec)
        t0 = time.perf_counter()
        path = make_synthetic(Path(args.cache), label, seconds)
        made = time.perf_counter() - t0
        if made > 1.0:
            say(f"made {path.name} in {made:.1f} s")
        items.append(MediaItem(f"syn_{label}_{seconds:g}s", path, "synthetic", label))
    for item in items:
        item.info = probe_info(item.path)
        if not item.label:
            item.label = f"{item.info['width']}x{item.info['height']}"
    return items


def warmup_clip(cache: Path) -> Path:
    path = cache / "warmup_2s_v1.mp4"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        part = cache / f".warmup-{os.getpid()}.mp4"
        _encode_piece(part, (160, 90), 2, 10)
        os.replace(part, path)
    return path
