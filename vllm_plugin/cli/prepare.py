"""`arc-prepare`: run the project's preprocessing on one video and write what the model sees.

The output folder has the layout of the golden references (shared/golden/preprocess/<video>/):
`meta.json`, `frame_NNN.png` (every sampled frame after the overlay and the 640x640 resize,
lossless) and `audio_features.npy` (float16 [W, 128, 3000]).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

EXIT_BAD_INPUT = 2


def log(message: str) -> None:
    print(f"[arc-prepare] {message}", file=sys.stderr, flush=True)


def summary_prompt(num_frames: int) -> str:
    """The golden `prompt_summary`: Path A text before the BOS id
    (docs/model.md#prompts-and-generation)."""
    from ..prompts import user_text

    return "<image>" * num_frames + user_text(None, "summary") + "<sep>"


def channel_stats(frames: np.ndarray, chunk: int = 8) -> tuple[list, list]:
    """Per frame, per channel mean and (unbiased) std of the normalised bf16 tensor, in
    float32 as the golden has them; a few frames at a time to bound memory."""
    from ..features import pixel_values

    means, stds = [], []
    for start in range(0, len(frames), chunk):
        pixels = pixel_values(frames[start : start + chunk]).float()
        means += pixels.mean(dim=(2, 3)).tolist()
        stds += pixels.std(dim=(2, 3)).tolist()
    return means, stds


def build_meta(video_name: str, prepared, features: np.ndarray) -> dict:
    means, stds = channel_stats(prepared.frames)
    meta = {
        "video": video_name,
        "vlen": prepared.vlen,
        "avg_fps": prepared.fps,
        "duration": prepared.video_duration,
        "frame_indices": list(prepared.frame_indices),
        "intervals_sec": [list(interval) for interval in prepared.intervals],
        "num_frames_used": prepared.num_frames,
        "audio_duration_sec": prepared.audio_duration,
        "audio_feature_shape": list(features.shape),
        "frame_channel_mean": means,
        "frame_channel_std": stds,
        "prompt_summary": summary_prompt(prepared.num_frames),
        "seconds_frames": prepared.seconds_frames,
        "seconds_audio": prepared.seconds_audio,
        "frames_saved": list(range(prepared.num_frames)),
    }
    if prepared.clip is not None:
        meta["clip_sec"] = list(prepared.clip)
    return meta


def write_outputs(out: Path, video_name: str, prepared) -> dict:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    features = prepared.audio_features
    assert features is not None

    def save(i: int) -> None:
        # PNG is lossless at any level; 1 keeps 150 frames quick to write
        Image.fromarray(prepared.frames[i]).save(out / f"frame_{i:03d}.png", compress_level=1)

    # zlib runs outside the GIL: two writers keep both cores busy
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(save, range(prepared.num_frames)))
    np.save(out / "audio_features.npy", features.astype(np.float16))
    meta = build_meta(video_name, prepared, features)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="arc-prepare",
        description=(
            "Prepare one video the way ARC-Hunyuan-Video sees it: frames sampled at 1 fps "
            "(150 segments above 150 s) with the timestamp overlay, resized to 640x640, and the "
            "audio's Whisper log-mel features. Writes meta.json, frame_NNN.png and "
            "audio_features.npy to --out, in the layout of the golden references."
        ),
        epilog="Exit status: 0 done, 2 bad input (unreadable file, no video stream, bad option).",
    )
    parser.add_argument("video", type=Path, help="video file (mp4, mov, mkv, webm, ...)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument(
        "--font",
        help="TTF font for the timestamp overlay (default: $ARC_FONT, else Liberation Sans)",
    )
    parser.add_argument("--start", type=float, help="clip start in seconds (default: 0)")
    parser.add_argument("--end", type=float, help="clip end in seconds (default: the end)")
    parser.add_argument(
        "--audio-mode",
        choices=("mp3", "direct"),
        default="mp3",
        help="mp3: imitate the authors' mp3 round trip (default, matches training); "
        "direct: decode straight to 16 kHz (faster, a little further from the reference)",
    )
    parser.add_argument(
        "--decoder",
        choices=("pyav", "ffmpeg"),
        default=None,
        help="frame decoder: pyav (default, in process, decodes only what the sampled frames "
        "need) or ffmpeg (an ffmpeg process; same frames, slower); $ARC_DECODER sets the default",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="wall-clock limit per decoding step, seconds"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from arc_media.limits import FontError, Limits, MediaError
    from arc_media.pipeline import prepare_video

    from ..features import whisper_features

    t0 = time.perf_counter()
    try:
        prepared = prepare_video(
            args.video,
            font_path=args.font,
            start=args.start,
            end=args.end,
            audio_mode=args.audio_mode,
            decoder=args.decoder,
            features=whisper_features,
            limits=Limits(timeout_s=args.timeout),
            progress=log,
        )
    except MediaError as exc:
        print(f"arc-prepare: error: {args.video}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FontError as exc:
        print(f"arc-prepare: error: {exc}", file=sys.stderr)
        return 1
    log(f"writing {prepared.num_frames} frames and the features to {args.out}")
    write_outputs(args.out, args.video.name, prepared)
    log(f"done in {time.perf_counter() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
