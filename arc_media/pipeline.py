"""The project's one video preprocessing pipeline: a file in, what the model sees out.

video file -> probe (PyAV) -> frame plan -> decode of only the planned frames (PyAV; an
ffmpeg process as an option) -> timestamp overlay (PIL) -> 640x640 bicubic (PIL); beside it
on a second thread: audio track -> 16 kHz mono float32 (an ffmpeg mp3 encoder, decoded in
process), and the caller's audio features if it asks for them; then the frame count N and the
audio length D are reconciled. Used by the gateway's decode workers, the vLLM plugin's `arc`
video loader and `arc-prepare`. The library computes no model tensors (torch lives in the
engine plugin): `features=` takes the function that makes them, e.g.
vllm_plugin.features.whisper_features.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import load_audio
from .clock import NO_CLOCK, StageClock
from .frames import decode_frames
from .limits import DEFAULT_LIMITS, ClipError, FontError, Limits, check_limits
from .model_inputs import MAX_FRAMES, SAMPLE_RATE
from .overlay import default_font_path
from .plan import reconcile, resolve_clip, sample_plan
from .probe import VideoProbe, count_frames, probe_video

AudioFeatures = Callable[[np.ndarray], np.ndarray]


@dataclass
class PreparedVideo:
    frames: np.ndarray  # uint8 [N, 640, 640, 3], stamped and resized
    audio: np.ndarray  # float32 16 kHz mono, fitted (audio.fit_audio)
    duration: int  # D, reconciled with N (plan.reconcile)
    frame_indices: list[int]
    intervals: list[tuple[int, int]]
    probe: VideoProbe
    seconds_frames: float = 0.0
    seconds_audio: float = 0.0  # the audio and its features
    audio_duration: int = 0  # ceil(len(audio) / 16000), before reconciliation
    vlen: int = 0  # frames of the (clipped) video the plan was made over
    fps: float = 0.0
    audio_features: np.ndarray | None = None  # what `features` made of the audio, if given
    clip: tuple[float, float] | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def video_duration(self) -> float:
        return self.vlen / self.fps if self.fps else 0.0


def prepare_video(
    source: str | Path | bytes,
    *,
    font_path: str | None = None,
    max_frames: int = MAX_FRAMES,
    start: float | None = None,
    end: float | None = None,
    limits: Limits = DEFAULT_LIMITS,
    audio_mode: str = "mp3",
    features: AudioFeatures | None = None,
    layout: str = "A",
    threads: int | None = None,
    decoder: str | None = None,
    progress: Callable[[str], None] | None = None,
    timings: dict[str, float] | None = None,
) -> PreparedVideo:
    """probe -> plan -> frames (decode, overlay, resize) || audio -> reconcile.

    `start`/`end` (seconds) prepare a clip as if it were the whole video: the plan runs
    over the clip's frames and the overlay counts seconds from the clip start.
    `features`: a function of the fitted audio (e.g. Whisper log-mel features), run on the
    audio thread and timed with the audio; its result is `audio_features`.
    `decoder`: "pyav" (default) or "ffmpeg", see `frames.decode_frames`.
    `progress` gets one line per step (the CLI prints them); `timings` gets the seconds of
    each stage added to it (see `clock`)."""
    if isinstance(features, bool):
        # the torch-free library cannot compute them itself: the caller brings the function
        raise TypeError("features takes a function, e.g. vllm_plugin.features.whisper_features")
    if isinstance(source, (bytes, bytearray, memoryview)):
        fd, name = tempfile.mkstemp(prefix="arc-upload-", suffix=".media")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(source)
            return prepare_video(
                name,
                font_path=font_path,
                max_frames=max_frames,
                start=start,
                end=end,
                limits=limits,
                audio_mode=audio_mode,
                features=features,
                layout=layout,
                threads=threads,
                decoder=decoder,
                progress=progress,
                timings=timings,
            )
        finally:
            os.unlink(name)

    say = progress or (lambda message: None)
    clock = NO_CLOCK if timings is None else StageClock(timings)
    path = Path(source)
    font = font_path or default_font_path()
    if not Path(font).is_file():
        raise FontError(f"font file for the timestamp overlay not found: {font}")
    with clock("probe"):
        # A clip counts its own frames below: the whole file's count is not needed.
        clipped = start is not None or end is not None
        probe = probe_video(path, timeout_s=limits.timeout_s, count=not clipped)
        clip = resolve_clip(probe.duration, start, end)
        check_limits(probe, (clip[1] - clip[0]) if clip else probe.duration, limits)
        if clip is None:
            vlen = probe.num_frames
        else:
            vlen = count_frames(path, limits.timeout_s, probe.window(clip))
            if vlen <= 0:
                raise ClipError(
                    f"the clip {clip[0]:g}-{clip[1]:g} s holds no video frame",
                    "start",
                )
        indices, intervals = sample_plan(vlen, probe.fps, max_frames)
    say(
        f"probe: {probe.width}x{probe.height} {probe.video_codec}, {vlen} frames at "
        f"{probe.fps:g} fps ({vlen / probe.fps:.2f} s), audio: {probe.audio_codec or 'none'}; "
        f"sampling {len(indices)} frames"
    )

    def audio_job() -> tuple[np.ndarray, np.ndarray | None, float]:
        t0 = time.perf_counter()
        with clock("audio"):
            audio = load_audio(path, probe, mode=audio_mode, clip=clip, timeout_s=limits.timeout_s)
        say(f"audio: {len(audio) / SAMPLE_RATE:.2f} s at 16 kHz ({audio_mode})")
        feats = None
        if features is not None:
            with clock("features"):
                feats = features(audio)
            say(f"audio features: {list(feats.shape)}")
        return audio, feats, time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(audio_job)
        t0 = time.perf_counter()
        try:
            with clock("frames"):
                frames = decode_frames(
                    path,
                    probe,
                    indices,
                    intervals,
                    font_path=font,
                    clip=clip,
                    timeout_s=limits.timeout_s,
                    threads=threads,
                    decoder=decoder,
                    clock=clock,
                )
        except BaseException:
            pending.cancel()
            raise
        seconds_frames = time.perf_counter() - t0
        say(f"frames: {len(frames)} decoded, stamped and resized in {seconds_frames:.2f} s")
        audio, feats, seconds_audio = pending.result()

    audio_duration = math.ceil(len(audio) / SAMPLE_RATE)
    kept, duration = reconcile(len(indices), audio_duration, layout, max_frames)
    say(f"reconciled: {kept} frames, duration D = {duration} s (audio {audio_duration} s)")
    return PreparedVideo(
        frames=frames[:kept],
        audio=audio,
        duration=duration,
        frame_indices=list(indices[:kept]),
        intervals=[tuple(i) for i in intervals[:kept]],
        probe=probe,
        seconds_frames=seconds_frames,
        seconds_audio=seconds_audio,
        audio_duration=audio_duration,
        vlen=vlen,
        fps=probe.fps,
        audio_features=feats,
        clip=clip,
    )


__all__ = ["AudioFeatures", "PreparedVideo", "prepare_video"]
