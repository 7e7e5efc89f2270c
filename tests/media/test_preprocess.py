"""Preprocessing (arc_media, vllm_plugin/features.py, arc-prepare) against the authors'
golden outputs, plus edge cases made on the fly with ffmpeg."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from media_factory import make_clip, rotate
from PIL import Image

from arc_media.audio import TO_MONO, _decode_pcm, export_samples, fit_audio
from arc_media.frames import decode_frames
from arc_media.limits import Limits, MediaError
from arc_media.overlay import default_font_path, draw_timestamp
from arc_media.pipeline import prepare_video
from arc_media.plan import reconcile, sample_plan
from arc_media.probe import probe_video
from vllm_plugin.cli import prepare
from vllm_plugin.features import normalise, pixel_values, whisper_features

REPO_ROOT = Path(__file__).resolve().parents[2]
GOLDEN_VIDEOS = [
    "w33698kgs05",
    "c3522vbgwaw",
    "q35134y59x8",
    "syn_200s",
    "syn_400s",
    "syn_noaudio_8s",
    "syn_short",
]
REAL_VIDEOS = {"w33698kgs05", "c3522vbgwaw", "q35134y59x8"}
FRAME_TOLERANCE = 1.0  # mean |Δ| per frame in 0..255 units (Liberation Sans vs Arial)
FEATURE_TOLERANCE = 0.12  # mean |Δ| of the log-mel features


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# ---------------------------------------------------------------------------------------
# golden parity: arc-prepare's main() on every golden clip


@pytest.fixture(scope="session")
def prepared_dirs(tmp_path_factory: pytest.TempPathFactory, media_dir: Path):
    """video name -> arc-prepare output folder, made on first use."""
    root = tmp_path_factory.mktemp("prepared")
    made: dict[str, Path] = {}

    def get(video: str) -> Path:
        if video not in made:
            out = root / video
            code = prepare.main([str(media_dir / f"{video}.mp4"), "--out", str(out)])
            assert code == 0
            made[video] = out
        return made[video]

    return get


@pytest.mark.parametrize("video", GOLDEN_VIDEOS)
def test_golden_parity(video: str, prepared_dirs, golden_dir: Path) -> None:
    gold_dir = golden_dir / "preprocess" / video
    gold = json.loads((gold_dir / "meta.json").read_text())
    out = prepared_dirs(video)
    meta = json.loads((out / "meta.json").read_text())

    assert set(meta) == set(gold)
    for key in (
        "video",
        "vlen",
        "avg_fps",
        "frame_indices",
        "intervals_sec",
        "num_frames_used",
        "audio_duration_sec",
        "audio_feature_shape",
        "prompt_summary",
    ):
        assert meta[key] == gold[key], key
    assert meta["duration"] == pytest.approx(gold["duration"])

    # every frame: the overlay font only moves the channel statistics a little
    mean = np.array(meta["frame_channel_mean"])
    assert mean.shape == np.array(gold["frame_channel_mean"]).shape
    assert np.abs(mean - np.array(gold["frame_channel_mean"])).max() < 0.03
    assert (
        np.abs(np.array(meta["frame_channel_std"]) - np.array(gold["frame_channel_std"])).max()
        < 0.03
    )

    # the frames the golden kept as PNG
    written = sorted(out.glob("frame_*.png"))
    assert len(written) == gold["num_frames_used"]
    for i in gold["frames_saved"]:
        ours = load_rgb(out / f"frame_{i:03d}.png")
        assert ours.shape == (640, 640, 3)
        diff = mean_abs(ours, load_rgb(gold_dir / f"frame_{i:03d}.png"))
        assert diff <= FRAME_TOLERANCE, f"frame {i}: mean |Δ| {diff:.3f}"

    features = np.load(out / "audio_features.npy")
    golden_features = np.load(gold_dir / "audio_features.npy")
    assert features.dtype == np.float16
    assert features.shape == golden_features.shape
    diff = mean_abs(features, golden_features)
    assert diff <= FEATURE_TOLERANCE, f"features mean |Δ| {diff:.4f}"
    if video in REAL_VIDEOS or video.startswith("syn"):
        # what the mp3 path actually reaches (0.007-0.027); a regression shows here first
        assert diff < 0.05


def test_plan_matches_every_golden_meta(golden_dir: Path) -> None:
    for video in GOLDEN_VIDEOS:
        gold = json.loads((golden_dir / "preprocess" / video / "meta.json").read_text())
        indices, intervals = sample_plan(gold["vlen"], gold["avg_fps"])
        assert indices == gold["frame_indices"], video
        assert [list(i) for i in intervals] == gold["intervals_sec"], video


def test_probe_matches_decord_on_golden(media_dir: Path, golden_dir: Path) -> None:
    for video in GOLDEN_VIDEOS:
        gold = json.loads((golden_dir / "preprocess" / video / "meta.json").read_text())
        probe = probe_video(media_dir / f"{video}.mp4")
        assert probe.num_frames == gold["vlen"], video
        assert probe.fps == gold["avg_fps"], video
        assert probe.video_duration == pytest.approx(gold["duration"]), video
        assert probe.has_audio == (video != "syn_noaudio_8s")


def test_clip_is_treated_as_a_video(prepared_dirs, media_dir: Path) -> None:
    video = media_dir / "c3522vbgwaw.mp4"
    clip = prepare_video(video, start=5.0, end=12.5, audio_mode="direct")
    # 7.5 s at 25 fps: frames 125..312 of the file, sampled at 1 fps from the clip start
    assert clip.vlen == 188
    assert clip.frame_indices == [12, 37, 62, 87, 112, 137, 162, 181]
    assert clip.intervals[0] == (0, 1) and clip.intervals[-1] == (7, 8)
    assert clip.num_frames == clip.duration == 8
    assert len(clip.audio) == math.ceil(7.5 * 16000)
    # clip frame 0 is file frame 137, i.e. the full run's frame 5; below the overlay box
    # (which shows other seconds) the pixels are the same
    full = load_rgb(prepared_dirs("c3522vbgwaw") / "frame_005.png")
    assert mean_abs(clip.frames[0][120:], full[120:]) == 0.0


# ---------------------------------------------------------------------------------------
# the CLI as a command


def test_cli_subprocess(tmp_path: Path, media_dir: Path) -> None:
    out = tmp_path / "short"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "vllm_plugin.cli.prepare",
            str(media_dir / "syn_short.mp4"),
            "--out",
            str(out),
        ],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "[arc-prepare] frames:" in run.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "audio_features.npy",
        "frame_000.png",
        "meta.json",
    ]

    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n")
    run = subprocess.run(
        [sys.executable, "-m", "vllm_plugin.cli.prepare", str(bad), "--out", str(tmp_path / "x")],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "could not read the file as a video" in run.stderr
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------
# tensors


@pytest.mark.parametrize("video", ["w33698kgs05", "syn_noaudio_8s", "syn_short"])
def test_pixel_values_bit_exact(video: str, golden_dir: Path) -> None:
    folder = golden_dir / "model" / "inputs" / video
    info = json.loads((folder / "inputs.json").read_text())
    expected = info["pixel_values_sha256_bf16_per_frame"]
    frames = np.stack([load_rgb(folder / f"frame_{i:03d}.png") for i in range(len(expected))])
    pixels = pixel_values(frames)
    assert pixels.dtype == torch.bfloat16
    assert tuple(pixels.shape) == (len(expected), 3, 640, 640)
    for i, digest in enumerate(expected):
        raw = pixels[i].contiguous().view(torch.uint16).numpy().astype("<u2").tobytes()
        assert hashlib.sha256(raw).hexdigest() == digest, f"frame {i}"


def test_pixel_values_table_equals_the_arithmetic() -> None:
    # every level of every channel, in a frame shape that is not square
    frames = np.stack(
        [np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None, None], (256, 5, 3))] * 2
    )
    frames = np.ascontiguousarray(frames)
    frames[1] = frames[1][::-1]
    table = pixel_values(frames)
    arithmetic = normalise(torch.from_numpy(frames)).permute(0, 3, 1, 2)
    assert table.shape == (2, 3, 256, 5) and table.dtype == torch.bfloat16
    assert torch.equal(table.view(torch.int16), arithmetic.contiguous().view(torch.int16))


def test_whisper_features_match_transformers() -> None:
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(
        feature_size=128,
        sampling_rate=16000,
        hop_length=160,
        chunk_length=30,
        n_fft=400,
        padding_value=0.0,
    )
    rng = np.random.default_rng(0)
    t = np.arange(41 * 16000) / 16000
    audio = 0.3 * np.sin(2 * np.pi * 440 * t) * (t < 20) + 0.05 * rng.standard_normal(t.size)
    audio = audio.astype(np.float32)
    ours = whisper_features(audio)
    assert ours.shape == (2, 128, 3000) and ours.dtype == np.float32
    for w in range(2):
        piece = audio[w * 480000 : (w + 1) * 480000]
        ref = extractor(piece, sampling_rate=16000, return_tensors="np").input_features[0]
        assert np.abs(ours[w] - ref).max() < 1e-4


def test_whisper_features_of_silence() -> None:
    features = whisper_features(np.zeros(8 * 16000, dtype=np.float32))
    assert features.shape == (1, 128, 3000)
    assert np.all(features == -1.5)


# ---------------------------------------------------------------------------------------
# pure rules


def test_sample_plan_long_videos() -> None:
    _, intervals = sample_plan(5000, 25.0)  # 200 s
    assert intervals[:5] == [(0, 1), (1, 3), (3, 4), (4, 5), (5, 7)]
    assert len(intervals) == 150
    indices, intervals = sample_plan(6000, 15.0)  # 400 s
    assert intervals[:3] == [(0, 3), (3, 5), (5, 8)]
    assert indices[-1] < 6000
    indices, intervals = sample_plan(18, 30.0)  # 0.6 s
    assert (indices, intervals) == ([9], [(0, 1)])


def test_reconcile() -> None:
    assert reconcile(8, 8) == (8, 8)
    assert reconcile(30, 27) == (27, 27)  # audio shorter: keep the first D frames
    assert reconcile(8, 20) == (8, 8)  # D <= 150: D := N
    assert reconcile(150, 200) == (150, 200)
    assert reconcile(150, 300) == (150, 300)
    assert reconcile(120, 200) == (120, 120)  # the upstream assert; Path B's rule instead
    assert reconcile(30, 27, layout="B") == (27, 27)
    assert reconcile(150, 300, layout="B") == (150, 150)


def test_fit_audio_rules() -> None:
    long = np.arange(400 * 16000, dtype=np.float32)
    fitted = fit_audio(long)
    assert len(fitted) == 300 * 16000
    seg = len(long) // 150
    assert fitted[32000] == seg and fitted[2 * 32000] == 2 * seg
    assert len(fit_audio(np.ones(9600, dtype=np.float32))) == 16000
    kept = np.ones(200 * 16000, dtype=np.float32)
    assert len(fit_audio(kept)) == len(kept)


def test_export_samples_imitates_moviepy() -> None:
    assert export_samples(7.531667) == int(44100 * 7.53)
    assert export_samples(29.548333) == int(44100 * 29.55)
    assert export_samples(400.0) == 400 * 44100
    assert export_samples(3725.996) == int(44100 * (3600 + 120 + 6.0))


def mp3_file_round_trip(path: Path, export: int, tmp: Path) -> np.ndarray:
    """The mp3 round trip through a file, whose LAME header tells the reader the encoder
    delay and padding: what the pipeline's pipe (with MP3_DELAY_SAMPLES) must equal."""
    mp3 = tmp / "audio.mp3"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(path), "-map", "0:a:0"]
        + ["-af", f"aresample=44100,apad=whole_len={export},atrim=end_sample={export}"]
        + ["-c:a", "libmp3lame", "-ar", "44100", "-ac", "2", "-sample_fmt", "s16p"]
        + ["-b:a", "128k", str(mp3)],
        check=True,
    )
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(mp3)]
        + ["-af", f"{TO_MONO},aresample=16000:resampler=soxr", "-ac", "1"]
        + ["-f", "f32le", "pipe:1"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, "<f4")


def assert_mp3_pipe_equals_file(path: Path, tmp_path: Path) -> None:
    probe = probe_video(path)
    ours = _decode_pcm(path, probe, mode="mp3", clip=None, timeout_s=60)
    reference = mp3_file_round_trip(path, export_samples(probe.duration), tmp_path)
    n = min(len(ours), len(reference))
    assert abs(len(ours) - len(reference)) <= 1, path.name
    assert np.array_equal(ours[:n], reference[:n]), path.name


@pytest.mark.parametrize("name", ["plain", "webm"])
def test_mp3_pipe_equals_the_file_round_trip(
    clips: dict[str, Path], name: str, tmp_path: Path
) -> None:
    assert_mp3_pipe_equals_file(clips[name], tmp_path)


@pytest.mark.parametrize("video", ["w33698kgs05", "c3522vbgwaw"])
def test_mp3_pipe_equals_the_file_round_trip_on_real_audio(
    media_dir: Path, video: str, tmp_path: Path
) -> None:
    assert_mp3_pipe_equals_file(media_dir / f"{video}.mp4", tmp_path)


# ---------------------------------------------------------------------------------------
# edge cases made with ffmpeg


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    made = {
        "webm": make_clip(
            root / "vp9.webm", seconds=3, vcodec="libvpx-vp9", acodec="libopus", audio_rate=48000
        ),
        "hevc": make_clip(root / "hevc.mp4", seconds=2, vcodec="libx265"),
        "plain": make_clip(root / "plain.mp4", seconds=4),
        "noaudio": make_clip(root / "noaudio.mp4", seconds=5, audio=False),
        "short": make_clip(root / "short.mp4", seconds=0.6),
        "long160": make_clip(
            root / "long160.mp4", seconds=160, size="128x72", fps=2, audio_rate=8000
        ),
        "long310": make_clip(
            root / "long310.mp4", seconds=310, size="128x72", fps=2, audio_rate=8000
        ),
    }
    made["rotated"] = rotate(made["plain"], root / "rotated.mp4", 90)
    made["slow"] = make_clip(root / "slow.mp4", seconds=6, fps="1/2", audio=False)
    return made


@pytest.mark.parametrize(
    ("name", "frames", "duration", "windows", "mode"),
    [
        ("webm", 3, 3, 1, "mp3"),
        ("hevc", 2, 2, 1, "mp3"),
        ("rotated", 4, 4, 1, "mp3"),
        ("noaudio", 5, 5, 1, "mp3"),
        ("short", 1, 1, 1, "mp3"),
        ("long160", 150, 160, 6, "direct"),
        ("long310", 150, 300, 10, "direct"),
    ],
)
def test_edge_case_shapes(
    clips: dict[str, Path], name: str, frames: int, duration: int, windows: int, mode: str
) -> None:
    prepared = prepare_video(clips[name], audio_mode=mode, features=whisper_features)
    assert prepared.frames.shape == (frames, 640, 640, 3)
    assert prepared.frames.dtype == np.uint8
    assert prepared.duration == duration
    assert prepared.audio_features is not None
    assert prepared.audio_features.shape == (windows, 128, 3000)
    assert prepared.audio.dtype == np.float32
    if name == "noaudio":
        assert not prepared.probe.has_audio
        assert len(prepared.audio) == 5 * 16000 and not prepared.audio.any()
        assert np.all(prepared.audio_features == -1.5)
    else:
        assert np.abs(prepared.audio).max() > 0.01  # the sine came through
    if name == "long310":
        assert len(prepared.audio) == 300 * 16000
    if name == "webm":
        assert prepared.probe.video_codec == "vp9" and prepared.probe.audio_codec == "opus"
        assert prepared.probe.num_frames == 30
    if name == "hevc":
        assert prepared.probe.video_codec == "hevc"


def test_below_one_fps_repeats_frames_with_their_own_stamps(clips: dict[str, Path]) -> None:
    prepared = prepare_video(clips["slow"])
    # 3 frames over 6 s: 6 one-second intervals, two per decoded frame
    assert prepared.vlen == 3
    assert prepared.frame_indices == [0, 0, 1, 1, 2, 2]
    assert prepared.frames.shape == (6, 640, 640, 3)
    first, second = prepared.frames[0], prepared.frames[1]
    assert mean_abs(first[200:], second[200:]) == 0.0  # same picture
    assert mean_abs(first[:200], second[:200]) > 0.0  # other timestamp


def test_rotated_video_is_turned(clips: dict[str, Path]) -> None:
    plain = probe_video(clips["plain"])
    turned = probe_video(clips["rotated"])
    assert (plain.width, plain.height) == (160, 90)
    assert turned.rotation in (90, 270)
    assert (turned.width, turned.height) == (90, 160)

    font = default_font_path()
    indices, intervals = sample_plan(turned.num_frames, turned.fps)
    ours = decode_frames(clips["rotated"], turned, indices[:1], intervals[:1], font_path=font)
    source = decode_frames(clips["plain"], plain, indices[:1], intervals[:1], font_path=font)
    # redo the source frame by hand: rotate the unstamped picture, stamp, resize
    raw = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-noautorotate",
            "-i",
            str(clips["rotated"]),
            "-vf",
            f"select=eq(n\\,{indices[0]})",
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "pipe:1",
        ],
        capture_output=True,
        check=True,
    ).stdout
    picture = np.frombuffer(raw, np.uint8).reshape(90, 160, 3)
    picture = np.rot90(picture, k=-turned.rotation // 90)  # clockwise turns
    expected = draw_timestamp(Image.fromarray(np.ascontiguousarray(picture)), 0, 1, font)
    expected = np.asarray(expected.resize((640, 640), Image.BICUBIC))
    assert mean_abs(ours[0], expected) == 0.0
    assert mean_abs(ours[0], source[0]) > 10  # and it is not the unturned picture


# ---------------------------------------------------------------------------------------
# bad input and limits


def test_bad_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="file is empty"):
        prepare_video(empty)
    with pytest.raises(MediaError, match="file is empty"):
        prepare_video(b"")

    text = tmp_path / "text.mp4"
    text.write_text("hello, I am not a video\n" * 20)
    with pytest.raises(MediaError, match="could not read the file as a video") as info:
        prepare_video(text)
    assert str(tmp_path) not in str(info.value)  # no server paths in user-facing messages

    audio_only = tmp_path / "voice.m4a"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=1",
            "-c:a",
            "aac",
            str(audio_only),
        ],
        check=True,
    )
    with pytest.raises(MediaError, match="no video stream"):
        prepare_video(audio_only)

    with pytest.raises(MediaError, match="no such file"):
        prepare_video(tmp_path / "missing.mp4")

    playlist = tmp_path / "list.mp4"
    playlist.write_text("#EXTM3U\n#EXTINF:10,\nfile:///etc/hostname\n")
    with pytest.raises(MediaError, match="could not read the file as a video"):
        prepare_video(playlist)


def test_bytes_source_and_limits(clips: dict[str, Path]) -> None:
    data = clips["plain"].read_bytes()
    prepared = prepare_video(data, audio_mode="direct")
    assert prepared.frames.shape == (4, 640, 640, 3)

    with pytest.raises(MediaError, match="max_pixels"):
        prepare_video(clips["plain"], limits=Limits(max_pixels=100 * 100))
    with pytest.raises(MediaError, match="max_duration_s"):
        prepare_video(clips["long160"], limits=Limits(max_duration_s=60))
    with pytest.raises(MediaError, match="time limit"):
        prepare_video(clips["long310"], limits=Limits(timeout_s=0.05))
    with pytest.raises(MediaError, match="bad clip"):
        prepare_video(clips["plain"], start=3, end=2)
