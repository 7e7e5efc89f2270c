"""The model authors' preprocessing, rebuilt from the rules of docs/preprocessing.md
(#waveform, #whisper-features, #reconciling-d-and-n, #frames) with the libraries their
deployment path uses. It is the baseline of `benchmarks/preprocess_bench.py`, not a product
path.

    frames: decord VideoReader(ctx=cpu(0), num_threads=4) -> sampled frames (get_batch, or one
            by one) -> PIL timestamp overlay on the full-size frame (font loaded per frame) ->
            torchvision-style Resize((640, 640), BICUBIC) + ToTensor + Normalize(CLIP) -> stack
            -> bf16. torchvision is not installable next to the CPU torch of this project, so
            the transforms are written out with PIL and torch (the same operations: for a PIL
            image torchvision's Resize is PIL's resize).
    audio:  moviepy 1.0.3 VideoFileClip(...).audio.write_audiofile(mp3) (no track: silence
            written to mp3 by ffmpeg, as pydub's AudioSegment.silent().export() does) ->
            librosa.load(sr=16000) -> > 300 s: 150 snippets of 2 s -> < 1 s: pad ->
            transformers WhisperFeatureExtractor (whisper-large-v3 values) on each 30 s piece
            -> cat -> bf16.
    then:   Path A reconciliation of the frame count N and the audio seconds D.

Every stage is timed (`ReferenceResult.stages`, seconds).
"""

from __future__ import annotations

import math
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

IMAGE_SIZE = 640
MAX_FRAMES = 150
SAMPLE_RATE = 16000
MAX_AUDIO_SECONDS = 300
SNIPPET_SECONDS = 2
WINDOW_SAMPLES = 30 * SAMPLE_RATE
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DECORD_THREADS = 4  # the authors' VideoReader setting

STAGES = (
    "open",
    "decode",
    "overlay",
    "resize",
    "normalise",
    "audio_export",
    "audio_load",
    "features",
)


@dataclass
class ReferenceResult:
    frames: np.ndarray  # uint8 [N, 640, 640, 3]: overlay + resize, before normalisation
    pixel_values: torch.Tensor  # bf16 [N, 3, 640, 640]
    audio: np.ndarray  # float32, 16 kHz, after the > 300 s cut and the 1 s pad
    features: np.ndarray  # float32 [W, 128, 3000] (the bf16 cast is timed, not kept)
    frame_indices: list[int]
    intervals: list[tuple[int, int]]
    duration: int  # D after reconciliation
    audio_duration: int  # ceil(len(audio) / 16000)
    vlen: int
    fps: float
    has_audio: bool
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def frame_plan(
    vlen: int, fps: float, max_frames: int = MAX_FRAMES
) -> tuple[list[int], list[tuple[int, int]]]:
    """docs/preprocessing.md#frame-sampling: one interval per second up to `max_frames` s, else
    `max_frames` equal segments; the middle frame of each interval (its end clipped to vlen)."""
    duration = vlen / fps
    if duration <= max_frames:
        count = math.ceil(duration)
        bounds = [(int(i * fps), int((i + 1) * fps)) for i in range(count)]
        seconds = [(i, i + 1) for i in range(count)]
    else:
        seg = duration / max_frames
        bounds = [(int(i * seg * fps), int((i + 1) * seg * fps)) for i in range(max_frames)]
        seconds = [(round(i * seg), round((i + 1) * seg)) for i in range(max_frames)]
    indices = [(start + min(end, vlen)) // 2 for start, end in bounds]
    return indices, seconds


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def stamp(frame: Image.Image, start: float, end: float, font_path: str) -> Image.Image:
    """docs/preprocessing.md#timestamp-overlay, with the font opened for every frame as the authors
    do."""
    draw = ImageDraw.Draw(frame)
    font = ImageFont.truetype(font_path, int(frame.height * 0.05))
    text = f"{_hms(start)}-{_hms(end)}"
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    w, h = x1 - x0, y1 - y0
    x, y = frame.width - w - 20, 20
    draw.rectangle([x - 10, y - 10, x + w + 10, y + h + 10], fill=(0, 0, 0, 180))
    draw.text((x, y), text, fill=(255, 255, 255), font=font)
    return frame


def to_tensor_normalised(image: Image.Image) -> torch.Tensor:
    """torchvision ToTensor() + Normalize(CLIP mean, std) on a PIL RGB image: float32 [3, H, W]."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
    x = x.view(image.size[1], image.size[0], 3).permute(2, 0, 1).contiguous()
    x = x.to(dtype=torch.float32).div(255)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=torch.float32)[:, None, None]
    return x.sub(mean).div(std)


def make_feature_extractor():
    """WhisperFeatureExtractor with the whisper-large-v3 values
    (docs/preprocessing.md#whisper-features)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(
        feature_size=128,
        sampling_rate=SAMPLE_RATE,
        hop_length=160,
        chunk_length=30,
        n_fft=400,
        padding_value=0.0,
    )


class ReferencePipeline:
    """The authors' pipeline. Construct once (imports, feature extractor), then call
    `prepare(path)` per file. `frame_access`: "batch" reads the sampled frames with one
    `get_batch` call (holds every full-size frame at once); "single" reads them one at a time
    with `vr[index]` as the authors' inference script does."""

    def __init__(
        self,
        font_path: str,
        *,
        frame_access: str = "batch",
        decord_threads: int = DECORD_THREADS,
        max_frames: int = MAX_FRAMES,
    ):
        if frame_access not in ("batch", "single"):
            raise ValueError(f"frame_access must be 'batch' or 'single', not {frame_access!r}")
        import decord
        import librosa
        from moviepy.editor import VideoFileClip

        self._decord = decord
        self._librosa = librosa
        self._video_file_clip = VideoFileClip
        self.font_path = font_path
        self.frame_access = frame_access
        self.decord_threads = decord_threads
        self.max_frames = max_frames
        self.feature_extractor = make_feature_extractor()

    # -- timing ------------------------------------------------------------------------

    @contextmanager
    def _timed(self, stages: dict[str, float], name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0

    # -- frames ------------------------------------------------------------------------

    def _frames(
        self, path: Path, stages: dict[str, float]
    ) -> tuple[np.ndarray, torch.Tensor, list[int], list[tuple[int, int]], int, float]:
        decord = self._decord
        with self._timed(stages, "open"):
            reader = decord.VideoReader(
                str(path), ctx=decord.cpu(0), num_threads=self.decord_threads
            )
            vlen = len(reader)
            fps = float(reader.get_avg_fps())
            indices, seconds = frame_plan(vlen, fps, self.max_frames)

        if self.frame_access == "batch":
            with self._timed(stages, "decode"):
                full = reader.get_batch(indices).asnumpy()

            def frame_at(k: int) -> np.ndarray:
                return full[k]
        else:

            def frame_at(k: int) -> np.ndarray:
                with self._timed(stages, "decode"):
                    return reader[indices[k]].asnumpy()

        resized: list[np.ndarray] = []
        tensors: list[torch.Tensor] = []
        for k in range(len(indices)):
            picture = frame_at(k)
            with self._timed(stages, "overlay"):
                image = Image.fromarray(picture)
                stamp(image, *seconds[k], self.font_path)
            with self._timed(stages, "resize"):
                if image.mode != "RGB":
                    image = image.convert("RGB")
                image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
                resized.append(np.asarray(image))
            with self._timed(stages, "normalise"):
                tensors.append(to_tensor_normalised(image))
        with self._timed(stages, "normalise"):
            pixel_values = torch.stack(tensors).to(torch.bfloat16)
        return np.stack(resized), pixel_values, indices, seconds, vlen, fps

    # -- audio -------------------------------------------------------------------------

    def _silence_mp3(self, mp3: Path, seconds: int) -> None:
        # pydub's AudioSegment.silent() is 11025 Hz mono; export() runs ffmpeg to mp3.
        import imageio_ffmpeg

        subprocess.run(
            [
                imageio_ffmpeg.get_ffmpeg_exe(),
                "-nostdin",
                "-y",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "anullsrc=r=11025:cl=mono",
                "-t",
                str(seconds),
                "-f",
                "mp3",
                str(mp3),
            ],
            check=True,
            capture_output=True,
        )

    def _audio(self, path: Path, stages: dict[str, float]) -> tuple[np.ndarray, bool]:
        with tempfile.TemporaryDirectory(prefix="arc-ref-audio-") as tmp:
            mp3 = Path(tmp) / "temp.mp3"
            with self._timed(stages, "audio_export"):
                clip = self._video_file_clip(str(path))
                try:
                    has_audio = clip.audio is not None
                    if has_audio:
                        clip.audio.write_audiofile(str(mp3), logger=None)
                    else:
                        self._silence_mp3(mp3, min(math.ceil(clip.duration), MAX_AUDIO_SECONDS))
                finally:
                    clip.close()
            with self._timed(stages, "audio_load"):
                audio, _ = self._librosa.load(str(mp3), sr=SAMPLE_RATE)
                if has_audio and len(audio) > MAX_AUDIO_SECONDS * SAMPLE_RATE:
                    seg = len(audio) // MAX_FRAMES
                    snippet = SNIPPET_SECONDS * SAMPLE_RATE
                    audio = np.concatenate(
                        [audio[i * seg : min(i * seg + snippet, len(audio))] for i in range(150)]
                    )
                if audio.ndim == 2:
                    audio = audio[:, 0]
                if len(audio) < SAMPLE_RATE:
                    audio = np.concatenate([audio, np.zeros(SAMPLE_RATE - len(audio))])
        return np.asarray(audio, dtype=np.float32), has_audio

    def _features(self, audio: np.ndarray, stages: dict[str, float]) -> np.ndarray:
        with self._timed(stages, "features"):
            pieces = [
                self.feature_extractor(
                    audio[i : i + WINDOW_SAMPLES], sampling_rate=SAMPLE_RATE, return_tensors="pt"
                )["input_features"]
                for i in range(0, len(audio), WINDOW_SAMPLES)
            ]
            features = torch.cat(pieces)
            features.to(torch.bfloat16)
        return features.numpy()

    # -- the whole pipeline --------------------------------------------------------------

    def prepare(self, source: str | Path) -> ReferenceResult:
        path = Path(source)
        stages = {name: 0.0 for name in STAGES}
        frames, pixel_values, indices, seconds, vlen, fps = self._frames(path, stages)
        audio, has_audio = self._audio(path, stages)
        features = self._features(audio, stages)
        audio_duration = math.ceil(len(audio) / SAMPLE_RATE)
        kept = min(len(indices), audio_duration)
        duration = audio_duration
        if duration <= self.max_frames or kept != self.max_frames:
            # the authors assert kept == 150 in the second case; we take Path B's D := N
            duration = kept
        return ReferenceResult(
            frames=frames[:kept],
            pixel_values=pixel_values[:kept],
            audio=audio,
            features=features,
            frame_indices=list(indices[:kept]),
            intervals=[tuple(s) for s in seconds[:kept]],
            duration=duration,
            audio_duration=audio_duration,
            vlen=vlen,
            fps=fps,
            has_audio=has_audio,
            stages=stages,
        )


__all__ = [
    "STAGES",
    "ReferencePipeline",
    "ReferenceResult",
    "frame_plan",
    "make_feature_extractor",
    "stamp",
    "to_tensor_normalised",
]
