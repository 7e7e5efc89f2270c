"""The audio path's shortcuts (arc_media/audio.py) against the plain round trip they stand for.

Above 300 s only the stretches around `fit_audio`'s 150 snippets go through the mp3 round
trip. These tests run real ffmpeg on real files and compare with `load_audio(..., whole=True)`,
the round trip of the whole track."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
from pathlib import Path

import numpy as np
import pytest
from media_factory import ffmpeg, make_clip

from arc_media import audio
from arc_media import ffmpeg as media_ffmpeg
from arc_media.limits import MediaError, MediaTimeoutError
from arc_media.model_inputs import MAX_AUDIO_SECONDS, MAX_FRAMES, SAMPLE_RATE
from arc_media.probe import probe_video
from vllm_plugin.features import whisper_features

# mean |Δ| of the log-mel features, shortcut against the whole round trip (measured:
# 0.00014 on 600 s of speech + noise, 0.00006 on 1800 s, 0.00000 on a 600 s tone)
FEATURES_BOUND = 0.002


def stretch_seconds(stretches: list[tuple[int, int]], export: int) -> float:
    return (
        sum(
            min(export, last * audio.BLOCK_EXPORT) - first * audio.BLOCK_EXPORT
            for first, last in stretches
        )
        / audio.EXPORT_RATE
    )


def check_stretches(starts: list[int], export: int, stretches: list[tuple[int, int]]) -> None:
    """Every snippet inside one stretch with its margins; gaps of whole SKIP_BLOCKS."""
    blocks = -(-export // audio.BLOCK_EXPORT)
    assert stretches[0][0] == 0 and stretches[-1][1] <= blocks
    for (_, end), (first, _) in itertools.pairwise(stretches):
        assert first > end and (first - end) % audio.SKIP_BLOCKS == 0
    for start in starts:
        first, last = next(
            s for s in reversed(stretches) if s[0] * audio.BLOCK_16K <= max(start, 0)
        )
        assert first == 0 or start - first * audio.BLOCK_16K >= (
            audio.PRE_MARGIN_BLOCKS * audio.BLOCK_16K
        )
        end = start + audio.SNIPPET_SAMPLES
        assert last == blocks or last * audio.BLOCK_16K - end >= (
            audio.POST_MARGIN_BLOCKS * audio.BLOCK_16K
        )


@pytest.mark.parametrize("seconds", [300.5, 400, 599, 600, 900, 1800, 3725.99])
@pytest.mark.parametrize("lag", [0, 317])
def test_stretches_cover_every_snippet(seconds: float, lag: int) -> None:
    export = audio.export_samples(seconds)
    samples = -(-export * SAMPLE_RATE // audio.EXPORT_RATE)
    starts = audio._snippet_starts(samples, lag)
    assert starts is not None and len(starts) == MAX_FRAMES
    stretches = audio._stretches(starts, export)
    check_stretches(starts, export, stretches)
    if seconds <= 400:  # segments of 2.67 s leave no whole 1.28 s to skip
        assert len(stretches) == 1
    elif seconds >= 600:
        assert len(stretches) == MAX_FRAMES
        assert stretch_seconds(stretches, export) < 0.7 * seconds


def test_short_audio_has_no_snippets() -> None:
    assert audio._snippet_starts(MAX_AUDIO_SECONDS * SAMPLE_RATE, 317) is None


def noisy_clip(path: Path, seconds: int) -> Path:
    """A tone, pink noise and a chirp every few seconds: audio whose mp3 has a noise floor
    everywhere (LC-AAC stereo at 48 kHz)."""
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=64x36:rate=1:duration={seconds}",
        "-f", "lavfi", "-i",
        f"aevalsrc='0.3*sin(2*PI*(300+200*mod(t,3))*t)|0.2*sin(2*PI*523*t)':s=48000:d={seconds}",
        "-f", "lavfi", "-i", f"anoisesrc=color=pink:amplitude=0.05:r=48000:d={seconds}:seed=7",
        "-filter_complex", "[1:a][2:a]amix=inputs=2:normalize=0[a]",
        "-map", "0:v", "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast",
        "-c:a", "aac", "-b:a", "128k", "-ac", "2", str(path),
    )  # fmt: skip
    return path


def compare(path: Path, probe) -> tuple[np.ndarray, np.ndarray]:
    whole = audio.load_audio(path, probe, whole=True)
    snippets = audio.load_audio(path, probe)
    assert whole.shape == snippets.shape and snippets.dtype == np.float32
    # the first stretch starts with the track: its snippet is the whole track's, bit for bit
    assert np.array_equal(snippets[: audio.SNIPPET_SAMPLES], whole[: audio.SNIPPET_SAMPLES])
    features = np.abs(whisper_features(snippets) - whisper_features(whole)).mean()
    assert features < FEATURES_BOUND, f"features mean |Δ| {features:.5f}"
    return whole, snippets


@pytest.fixture(scope="module")
def noisy_60s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return noisy_clip(tmp_path_factory.mktemp("audio") / "noisy60.mp4", 60)


@pytest.mark.parametrize("profile", ["LC", "HE-AAC"])
def test_stretches_give_the_whole_tracks_snippets(
    noisy_60s: Path, profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a tenth of the scale (15 snippets above 30 s), with and without the HE-AAC lag."""
    monkeypatch.setattr(audio, "MAX_FRAMES", 15)
    monkeypatch.setattr(audio, "MAX_AUDIO_SECONDS", 30)
    probe = dataclasses.replace(probe_video(noisy_60s), audio_profile=profile)
    export, samples = audio._lengths(probe, None)
    lag = audio._he_aac_lag(probe)
    assert lag == (317 if profile == "HE-AAC" else 0)
    stretches = audio._stretches(audio._snippet_starts(samples, lag), export)
    assert len(stretches) == 15 and stretch_seconds(stretches, export) < 45
    whole, snippets = compare(noisy_60s, probe)
    assert len(snippets) == 30 * SAMPLE_RATE
    assert not snippets[:lag].any() and snippets[lag : lag + 1600].any()
    # the encoder settles to the whole track's output within about a second (measured: 1.1 s
    # here, margin included): the snippets' last half seconds agree
    ends = [slice(i * 32000 + 24000, (i + 1) * 32000) for i in range(1, 15)]
    assert max(np.abs(snippets[s] - whole[s]).max() for s in ends) < 1e-5


def test_600s_takes_the_short_way(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "long600.mp4", seconds=600, size="64x36", fps=1, audio_rate=8000)
    probe = probe_video(clip)
    export, samples = audio._lengths(probe, None)
    stretches = audio._stretches(audio._snippet_starts(samples, 0), export)
    assert len(stretches) == MAX_FRAMES
    assert stretch_seconds(stretches, export) == pytest.approx(600 - 150 * 1.28, abs=1)
    _, snippets = compare(clip, probe)
    assert len(snippets) == MAX_AUDIO_SECONDS * SAMPLE_RATE


def test_400s_golden_clip_keeps_the_whole_track(media_dir: Path) -> None:
    probe = probe_video(media_dir / "syn_400s.mp4")
    export, samples = audio._lengths(probe, None)
    assert audio._stretches(audio._snippet_starts(samples, 0), export) == [(0, 4993)]


# ---------------------------------------------------------------------------------------
# the mp3 decoded in process (PyAV + python-soxr) against the second ffmpeg process it replaces


def test_resampler_equals_ffmpegs_soxr() -> None:
    """Any chunking, flushed at the end: the samples of `aresample=16000:resampler=soxr`."""
    rng = np.random.default_rng(3)
    t = np.arange(5 * audio.EXPORT_RATE + 77) / audio.EXPORT_RATE
    signal = 0.4 * np.sin(2 * np.pi * 440 * t * (1 + t)) + 0.1 * rng.standard_normal(t.size)
    signal = signal.astype(np.float32)
    expected = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "f32le", "-ar", "44100", "-ac", "1"]
        + ["-i", "pipe:0", "-af", audio.RESAMPLE, "-f", "f32le", "pipe:1"],
        input=signal.tobytes(),
        capture_output=True,
        check=True,
    ).stdout
    resampler = audio._resampler()
    cuts = [0, 1, 1153, 40000, 40001, 150000, len(signal)]
    ours = [resampler.resample_chunk(signal[a:b]) for a, b in itertools.pairwise(cuts)]
    ours.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    assert np.array_equal(np.concatenate(ours), np.frombuffer(expected, "<f4"))


def decode_mp3_by_ffmpeg(encoder: media_ffmpeg.Process, encoded: int) -> np.ndarray:
    """The reference the in-process decoder replaces: a second ffmpeg process reading the
    encoder's pipe (gapless trim, TO_MONO, soxr)."""
    first, end = audio.MP3_DELAY_SAMPLES, audio.MP3_DELAY_SAMPLES + encoded
    decode = media_ffmpeg.pipe_input("mp3").output(
        "pipe:1",
        format="f32le",
        af=f"atrim=start_sample={first}:end_sample={end},{audio.TO_MONO},{audio.RESAMPLE}",
        ac=1,
    )
    decoder = media_ffmpeg.Process(
        media_ffmpeg.command(decode), 120, "ffmpeg (audio decode)", stdin=encoder.proc.stdout
    )
    encoder.proc.stdout.close()  # the decoder holds the read end now
    raw = decoder.proc.stdout.read()
    assert decoder.finish()[0] == 0 and encoder.finish()[0] == 0
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


@pytest.fixture(scope="module")
def short_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("short")
    return {
        "aac": make_clip(root / "plain.mp4", seconds=4),
        "opus": make_clip(
            root / "vp9.webm", seconds=3, vcodec="libvpx-vp9", acodec="libopus", audio_rate=48000
        ),
    }


def both_decoders(monkeypatch: pytest.MonkeyPatch, run) -> tuple[np.ndarray, np.ndarray]:
    here = run()
    with monkeypatch.context() as patch:
        patch.setattr(audio, "_decode_mp3_here", decode_mp3_by_ffmpeg)
        child = run()
    return here, child


@pytest.mark.parametrize("name", ["aac", "opus"])
def test_in_process_decoder_equals_the_ffmpeg_decoder(
    short_clips: dict[str, Path], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = probe_video(short_clips[name])
    here, child = both_decoders(
        monkeypatch,
        lambda: audio._decode_pcm(short_clips[name], probe, mode="mp3", clip=None, timeout_s=60),
    )
    assert here.dtype == np.float32 and np.abs(here).max() > 0.01
    assert np.array_equal(here, child)


@pytest.mark.parametrize("video", ["w33698kgs05", "syn_200s"])
def test_in_process_decoder_equals_the_ffmpeg_decoder_on_shared_clips(
    media_dir: Path, video: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = media_dir / f"{video}.mp4"
    probe = probe_video(path)
    here, child = both_decoders(monkeypatch, lambda: audio.load_audio(path, probe))
    assert np.array_equal(here, child)


def test_in_process_decoder_on_stretches(noisy_60s: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio, "MAX_FRAMES", 15)
    monkeypatch.setattr(audio, "MAX_AUDIO_SECONDS", 30)
    probe = probe_video(noisy_60s)
    here, child = both_decoders(monkeypatch, lambda: audio.load_audio(noisy_60s, probe))
    assert len(here) == 30 * SAMPLE_RATE and np.array_equal(here, child)


def test_in_process_decoder_failures(tmp_path: Path, short_clips: dict[str, Path]) -> None:
    long = make_clip(tmp_path / "long.mp4", seconds=120, size="64x36", fps=1, audio_rate=8000)
    with pytest.raises(MediaTimeoutError, match="audio export"):
        audio.load_audio(long, probe_video(long), timeout_s=0.05)
    silent = make_clip(tmp_path / "silent.mp4", seconds=2, audio=False)
    claimed = dataclasses.replace(probe_video(silent), has_audio=True)
    with pytest.raises(MediaError, match="audio export"):
        audio.load_audio(silent, claimed)
