"""The multimodal processor: one `video` item (frames + its own audio) -> model inputs.

A video item comes in one of three forms:

* **prepared tensors** (the parity harness, advanced callers): a dict built by
  `prepared_video_item()` with `pixel_values` [N,3,S,S], `input_features` [W,128,3000],
  and the sizes/duration. Used as given: no preprocessing at all.
* **prepared frames** (`(frames, metadata)`, what the `arc` video loader returns):
  frames already sampled, stamped and sized (uint8 [N,S,S,3]), with the 16 kHz audio
  (`arc_audio`) or its features (`arc_audio_features`) and `arc_duration` in metadata.
* **bare frames** (uint8 [N,S,S,3], no metadata): 1 frame per second, no audio track,
  so the model hears silence, as the authors' pipeline does (docs/preprocessing.md#waveform).

This is the last code that sees an item before the model, and `arc-serve` may face
clients directly, so every item is checked here (`check_video`, `check_prepared`):
anything the model cannot take is a ValueError (a 400 from the server) that says what
is wrong, never an error inside the engine. Frames read by another loader (vLLM's own
JPEG frame lists, opencv) are refused: they carry neither the overlay nor the audio.

The prompt placeholder (one per video) expands to the frame blocks of Path A
(default) or Path B (`mm_processor_kwargs={"arc_layout": "B"}`), docs/model.md#token-layouts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.inputs import MultiModalInput
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import (
    DictEmbeddingItems,
    ModalityDataItems,
    MultiModalDataItems,
    MultiModalDataParser,
    VideoProcessorItems,
)
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    ProcessorInputs,
    PromptReplacement,
    PromptUpdate,
    PromptUpdateDetails,
    TimingContext,
)

from arc_media.model_inputs import MAX_AUDIO_SECONDS, SAMPLE_RATE

from .config import ARCHunyuanVideoConfig

LAYOUTS = ("A", "B")
PREPARED_FIELDS = frozenset(
    {"pixel_values", "input_features", "video_num_frames", "video_num_windows", "video_duration"}
)
WINDOW_SECONDS = 30  # one Whisper window (docs/preprocessing.md#whisper-features)
MAX_WINDOWS = MAX_AUDIO_SECONDS // WINDOW_SECONDS
MEL_BINS, WINDOW_FRAMES = 128, 3000
ARC_BACKEND = "arc"  # the name of our video loader (video_loader.BACKEND_NAME)


class BadVideoItem(ValueError):
    """A video item the model cannot take (vLLM answers a ValueError with a 400)."""


SEND_THE_FILE = (
    "send the video file itself (a data:video/mp4;base64,... URL, an http(s) URL or a "
    "file path): the `arc` loader samples its frames with the timestamp overlay and "
    "takes its own audio track"
)


def prepared_video_item(
    pixel_values: torch.Tensor, input_features: torch.Tensor, duration: int
) -> dict[str, torch.Tensor]:
    """A `video` item from tensors that are already model inputs
    (docs/architecture.md#the-video-item)."""
    if pixel_values.ndim != 4 or input_features.ndim != 3:
        raise BadVideoItem(
            "prepared video needs pixel_values [N,3,S,S] and input_features [W,128,3000], "
            f"got {tuple(pixel_values.shape)} and {tuple(input_features.shape)}"
        )
    return {
        "pixel_values": pixel_values,
        "input_features": input_features,
        "video_num_frames": torch.tensor([pixel_values.shape[0]]),
        "video_num_windows": torch.tensor([input_features.shape[0]]),
        "video_duration": torch.tensor([int(duration)]),
    }


# ---------------------------------------------------------------------------------------
# checks: what the model can take (docs/model.md#audio-visual-fusion;
# docs/preprocessing.md#reconciling-d-and-n)


def duration_range(num_frames: int, max_frames: int) -> tuple[int, int]:
    """The durations D (seconds of audio heard) that fit N frames: D == N up to the
    frame limit; with N == max_frames (a video over 150 s), max_frames <= D <= 300."""
    if num_frames < max_frames:
        return num_frames, num_frames
    return max_frames, MAX_AUDIO_SECONDS


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, torch.Tensor | np.ndarray):
        if math.prod(value.shape) != 1:
            raise BadVideoItem(f"{what} must be one integer, got shape {tuple(value.shape)}")
        value = value.reshape(-1)[0].item()
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise BadVideoItem(f"{what} must be an integer, got {type(value).__name__}")
    if not float(value).is_integer():
        raise BadVideoItem(f"{what} must be a whole number of seconds, got {value}")
    return int(value)


def _check_duration(duration: int, num_frames: int, max_frames: int) -> None:
    low, high = duration_range(num_frames, max_frames)
    if not low <= duration <= high:
        allowed = f"{low}" if low == high else f"{low} to {high}"
        raise BadVideoItem(
            f"a video of {num_frames} frames (1 per second) hears {allowed} s of audio, "
            f"not a duration of {duration} s"
        )


# Bounds on values, NaN and infinities included (a comparison with NaN is false): beyond
# them the encoders overflow, and the NaNs they make can reach cached state shared with
# other requests. 16 kHz float audio is nominally within +-1; log-mel features of such
# audio lie within about -1.5..3; CLIP-normalised pixels within -1.8..2.2.
MAX_ABS_SAMPLE = 4.0
MAX_ABS_FEATURE = 8.0
MAX_ABS_PIXEL = 4.0


def _within(values: np.ndarray | torch.Tensor, bound: float) -> bool:
    if isinstance(values, torch.Tensor):
        # In the tensor's own dtype: a float32 copy of 150 bf16 frames would be 740 MB.
        low, high = torch.aminmax(values.detach())
        return bool(low >= -bound) and bool(high <= bound)
    return bool(values.min() >= -bound) and bool(values.max() <= bound)


def _check_windows(windows: int, duration: int) -> None:
    if not 1 <= windows <= MAX_WINDOWS:
        raise BadVideoItem(f"audio features hold 1 to {MAX_WINDOWS} windows of 30 s, not {windows}")
    if windows * WINDOW_SECONDS < duration:
        raise BadVideoItem(
            f"{windows} audio window(s) of 30 s cannot cover a duration of {duration} s"
        )


def _check_features(features: Any, duration: int) -> np.ndarray:
    features = features.float().numpy() if isinstance(features, torch.Tensor) else features
    if not isinstance(features, np.ndarray) or features.dtype.kind != "f":
        raise BadVideoItem("arc_audio_features must be a float array [W, 128, 3000]")
    if features.ndim != 3 or features.shape[1:] != (MEL_BINS, WINDOW_FRAMES):
        raise BadVideoItem(
            f"arc_audio_features must be [W, {MEL_BINS}, {WINDOW_FRAMES}], "
            f"got {tuple(features.shape)}"
        )
    _check_windows(features.shape[0], duration)
    if not _within(features, MAX_ABS_FEATURE):
        raise BadVideoItem(
            f"arc_audio_features must be finite log-mel values within +-{MAX_ABS_FEATURE:g}"
        )
    return features


def _check_audio(audio: Any, duration: int) -> np.ndarray:
    audio = audio.float().numpy() if isinstance(audio, torch.Tensor) else audio
    if not isinstance(audio, np.ndarray) or audio.dtype.kind != "f" or audio.ndim != 1:
        raise BadVideoItem("arc_audio must be a 1-D float array: 16 kHz mono samples")
    seconds = math.ceil(len(audio) / SAMPLE_RATE)
    if not 1 <= len(audio) <= MAX_AUDIO_SECONDS * SAMPLE_RATE:
        raise BadVideoItem(
            f"arc_audio holds {len(audio)} samples; 16 kHz audio of 1 sample to "
            f"{MAX_AUDIO_SECONDS} s is accepted (the pipeline cuts longer audio)"
        )
    if seconds < duration:
        raise BadVideoItem(
            f"arc_audio lasts {seconds} s (16 kHz), shorter than the duration of {duration} s"
        )
    if not _within(audio, MAX_ABS_SAMPLE):
        raise BadVideoItem(
            f"arc_audio samples must be finite and within +-{MAX_ABS_SAMPLE:g} (float audio "
            "is nominally within +-1)"
        )
    return audio


def check_video(
    frames: Any, metadata: Mapping[str, Any] | None, config: ARCHunyuanVideoConfig
) -> tuple[np.ndarray, dict[str, Any]]:
    """One raw video item -> (frames, {"duration", and "features" or "audio"}) that the
    model can take, or a ValueError saying what is wrong."""
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, Mapping):
        raise BadVideoItem(f"video metadata must be a dict, got {type(metadata).__name__}")
    backend = metadata.get("video_backend")
    if backend == "jpeg_sequence":
        raise BadVideoItem(
            f"a list of JPEG frames (data:video/jpeg) is not accepted; {SEND_THE_FILE}"
        )
    if backend is not None and backend != ARC_BACKEND:
        raise BadVideoItem(f"this video was read by vLLM's {backend!r} loader; {SEND_THE_FILE}")
    if isinstance(frames, torch.Tensor):
        frames = frames.cpu().numpy()
    if not isinstance(frames, np.ndarray):
        raise BadVideoItem(f"a video must be an array of frames, got {type(frames).__name__}")
    size = config.vision_config.force_image_size
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (size, size, 3):
        raise BadVideoItem(
            f"video frames must be uint8 [N, {size}, {size}, 3] as the `arc` pipeline makes "
            f"them, got {frames.dtype} {tuple(frames.shape)}; {SEND_THE_FILE}"
        )
    num_frames = frames.shape[0]
    if not 1 <= num_frames <= config.max_num_frame:
        raise BadVideoItem(f"a video holds 1 to {config.max_num_frame} frames, not {num_frames}")
    raw = metadata.get("arc_duration")
    duration = num_frames if raw is None else _as_int(raw, "arc_duration")
    _check_duration(duration, num_frames, config.max_num_frame)
    out: dict[str, Any] = {"duration": duration}
    if metadata.get("arc_audio_features") is not None:
        out["features"] = _check_features(metadata["arc_audio_features"], duration)
    elif metadata.get("arc_audio") is not None:
        out["audio"] = _check_audio(metadata["arc_audio"], duration)
    else:
        # No audio track: silence as long as the video (docs/preprocessing.md#waveform).
        out["audio"] = np.zeros(SAMPLE_RATE * duration, dtype=np.float32)
    return frames, out


def check_prepared(data: Mapping[str, Any], config: ARCHunyuanVideoConfig) -> None:
    """A prepared-tensor item (`prepared_video_item`): shapes, counts and duration."""
    missing = PREPARED_FIELDS - set(data)
    if missing:
        raise BadVideoItem(
            f"a prepared video item needs {sorted(PREPARED_FIELDS)}; missing {sorted(missing)}"
        )
    pixels, features = data["pixel_values"], data["input_features"]
    if not isinstance(pixels, torch.Tensor) or not isinstance(features, torch.Tensor):
        raise BadVideoItem("pixel_values and input_features must be tensors")
    size = config.vision_config.force_image_size
    if (
        not pixels.is_floating_point()
        or pixels.ndim != 4
        or tuple(pixels.shape[1:]) != (3, size, size)
    ):
        raise BadVideoItem(
            f"pixel_values must be float [N, 3, {size}, {size}], got {pixels.dtype} "
            f"{tuple(pixels.shape)}"
        )
    if (
        not features.is_floating_point()
        or features.ndim != 3
        or tuple(features.shape[1:]) != (MEL_BINS, WINDOW_FRAMES)
    ):
        raise BadVideoItem(
            f"input_features must be float [W, {MEL_BINS}, {WINDOW_FRAMES}], got "
            f"{features.dtype} {tuple(features.shape)}"
        )
    num_frames, windows = pixels.shape[0], features.shape[0]
    if _as_int(data["video_num_frames"], "video_num_frames") != num_frames:
        raise BadVideoItem(
            f"video_num_frames does not match the {num_frames} frames of pixel_values"
        )
    if _as_int(data["video_num_windows"], "video_num_windows") != windows:
        raise BadVideoItem(
            f"video_num_windows does not match the {windows} windows of input_features"
        )
    if not 1 <= num_frames <= config.max_num_frame:
        raise BadVideoItem(f"a video holds 1 to {config.max_num_frame} frames, not {num_frames}")
    duration = _as_int(data["video_duration"], "video_duration")
    _check_duration(duration, num_frames, config.max_num_frame)
    _check_windows(windows, duration)
    if not _within(pixels, MAX_ABS_PIXEL):
        raise BadVideoItem(f"pixel_values must be finite and within +-{MAX_ABS_PIXEL:g}")
    if not _within(features, MAX_ABS_FEATURE):
        raise BadVideoItem(f"input_features must be finite and within +-{MAX_ABS_FEATURE:g}")


def _video_fields(hf_inputs: Mapping[str, torch.Tensor]) -> Mapping[str, MultiModalFieldConfig]:
    num_frames = torch.as_tensor(hf_inputs.get("video_num_frames", torch.empty(0)))
    num_windows = torch.as_tensor(hf_inputs.get("video_num_windows", torch.empty(0)))
    return {
        "pixel_values": MultiModalFieldConfig.flat_from_sizes("video", num_frames),
        "input_features": MultiModalFieldConfig.flat_from_sizes("video", num_windows),
        "video_num_frames": MultiModalFieldConfig.batched("video", keep_on_cpu=True),
        "video_num_windows": MultiModalFieldConfig.batched("video", keep_on_cpu=True),
        "video_duration": MultiModalFieldConfig.batched("video", keep_on_cpu=True),
    }


class ARCDataParser(MultiModalDataParser):
    """vLLM's parser, keeping each video's metadata (its audio and duration) and
    checking every item before it is hashed, cached or processed."""

    def __init__(self, config: ARCHunyuanVideoConfig, **kwargs: Any) -> None:
        super().__init__(video_needs_metadata=True, **kwargs)
        self.config = config

    def _get_video_with_metadata(self, video: Any) -> tuple[Any, dict[str, Any] | None]:
        frames, metadata = super()._get_video_with_metadata(video)
        return frames, ({} if metadata is None else metadata)  # bare frames: no audio

    def _parse_video_data(self, data: Any) -> ModalityDataItems[Any, Any] | None:
        if isinstance(data, dict) and "pixel_values" in data:
            check_prepared(data, self.config)
            return DictEmbeddingItems(
                data,
                modality="video",
                required_fields=set(PREPARED_FIELDS),
                fields_factory=_video_fields,
            )
        if isinstance(data, dict):
            raise BadVideoItem(
                f"a video given as a dict must be a prepared item ({sorted(PREPARED_FIELDS)})"
            )
        items = super()._parse_video_data(data)
        if isinstance(items, VideoProcessorItems):
            for index in range(items.get_count()):
                item = items.get(index)
                if item is not None:
                    check_video(*item, self.config)
        return items


class ARCProcessingInfo(BaseProcessingInfo):
    # One token stands for a whole video in the prompt; the processor expands it.
    VIDEO_PLACEHOLDER = "<vid>"

    def get_hf_config(self) -> ARCHunyuanVideoConfig:
        return self.ctx.get_hf_config(ARCHunyuanVideoConfig)

    def get_data_parser(self) -> MultiModalDataParser:
        return ARCDataParser(
            self.get_hf_config(),
            expected_hidden_size=self._get_expected_hidden_size(),
            allow_missing_mm_embeddings=self.allow_missing_mm_embeddings,
        )

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"video": 1}

    def max_video_frames(self) -> int:
        """The most frames a video can have on this engine: 150, or fewer where
        max_model_len cannot hold 150 frames (a longer prompt is refused anyway)."""
        config = self.get_hf_config()
        per_frame = config.vision_config.tokens_per_frame + 2
        fit = (self.ctx.model_config.max_model_len - 8) // per_frame
        return max(1, min(config.max_num_frame, fit))

    def get_mm_max_tokens_per_item(
        self, seq_len: int, mm_counts: Mapping[str, int] | None = None
    ) -> Mapping[str, int]:
        return {"video": self.video_tokens(self.max_video_frames(), "B")}

    def token_id(self, token: str) -> int:
        tokenizer = self.get_tokenizer()
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {token!r} token")
        return int(token_id)

    def video_tokens(self, num_frames: int, layout: str) -> int:
        per_frame = self.get_hf_config().vision_config.tokens_per_frame + 2
        return num_frames * per_frame + (2 if layout == "B" else 0)

    def frame_block_ids(self, num_frames: int, layout: str) -> tuple[list[int], list[int]]:
        """The token ids a video expands to, and the ids that take embeddings."""
        config = self.get_hf_config()
        text, vision = config.text_config, config.vision_config
        ctx, start, end = text.image_token_id, text.im_start_id, text.im_end_id
        if layout == "A":
            frame = [start] + [ctx] * vision.tokens_per_frame + [end]
            return frame * num_frames, [ctx]
        cells = vision.cells_per_row
        grid = ([ctx] * cells + [text.im_newline_id]) * cells
        frame = [start, ctx] + grid + [ctx, end]
        ids = [self.token_id("<vid>")] + frame * num_frames + [self.token_id("</vid>")]
        return ids, [ctx, text.im_newline_id]


class ARCDummyInputsBuilder(BaseDummyInputsBuilder[ARCProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return ARCProcessingInfo.VIDEO_PLACEHOLDER * mm_counts.get("video", 0)

    def get_dummy_mm_data(
        self,
        seq_len: int,
        mm_counts: Mapping[str, int],
        mm_options: Mapping[str, Any] | MultiModalDummyOptions | None = None,
    ) -> dict[str, Any]:
        if mm_counts.get("video", 0) == 0:
            return {}
        # The largest video this engine accepts, whatever `seq_len` the caller profiles
        # with (chunked prefill passes a smaller one): as many frames as max_model_len
        # holds (150 for the default 20480) and 300 s of audio, the most the pipeline
        # keeps (10 Whisper windows), so the encoders' memory is measured at its peak.
        config = self.info.get_hf_config()
        size = config.vision_config.force_image_size
        frames = self.info.max_video_frames()
        duration = MAX_AUDIO_SECONDS if frames == config.max_num_frame else frames
        windows = MAX_WINDOWS
        return {
            "video": prepared_video_item(
                torch.zeros(frames, 3, size, size, dtype=torch.bfloat16),
                torch.full((windows, 128, 3000), -1.5, dtype=torch.bfloat16),
                duration,
            )
        }


class ARCMultiModalProcessor(BaseMultiModalProcessor[ARCProcessingInfo]):
    def apply(self, inputs: ProcessorInputs, timing_ctx: TimingContext) -> MultiModalInput:
        # vLLM lets a client's `uuid` stand in for an item's content as its cache key, so a
        # video sent under a known uuid, or a uuid sent with no video, would be answered
        # with the cached inputs of another (the same pictures with other audio, or
        # another client's video). Here the key is always the content's own hash, and
        # every video comes with its data.
        for modality, items in inputs.mm_data_items.items():
            if any(items.get(i) is None for i in range(items.get_count())):
                raise BadVideoItem(
                    f"a {modality} item must carry its data: a `uuid` alone does not refer "
                    "to an earlier item on this server"
                )
        return super().apply(replace(inputs, mm_uuid_items=None), timing_ctx)

    def _call_hf_processor(
        self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]
    ) -> BatchFeature:
        # There is no HF processor: raw frames + audio become tensors here.
        from .features import pixel_values, whisper_features

        videos = hf_data.get("videos") or []
        config = self.info.get_hf_config()
        pixel_list, feature_list, frames, windows, durations = [], [], [], [], []
        for video in videos:
            array, metadata = video if isinstance(video, tuple) else (video, {})
            array, checked = check_video(array, metadata, config)
            features = checked.get("features")
            if features is None:
                features = whisper_features(checked["audio"])
            features = torch.as_tensor(np.asarray(features, dtype=np.float32)).to(torch.bfloat16)
            pixel_list.append(pixel_values(array))
            feature_list.append(features)
            frames.append(array.shape[0])
            windows.append(features.shape[0])
            durations.append(checked["duration"])
        return BatchFeature(
            {
                "pixel_values": torch.cat(pixel_list),
                "input_features": torch.cat(feature_list),
                "video_num_frames": torch.tensor(frames),
                "video_num_windows": torch.tensor(windows),
                "video_duration": torch.tensor(durations),
            }
        )

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        return _video_fields(hf_inputs)

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        layout = str(hf_processor_mm_kwargs.get("arc_layout", "A")).upper()
        if layout not in LAYOUTS:
            raise BadVideoItem(f"arc_layout must be 'A' or 'B', got {layout!r}")
        info = self.info
        placeholder = info.token_id(ARCProcessingInfo.VIDEO_PLACEHOLDER)

        def replacement(item_idx: int) -> PromptUpdateDetails:
            item = out_mm_kwargs["video"][item_idx]
            num_frames = int(item["video_num_frames"].data)
            ids, embed_ids = info.frame_block_ids(num_frames, layout)
            return PromptUpdateDetails.select_token_ids(ids, embed_ids)

        return [PromptReplacement(modality="video", target=[placeholder], replacement=replacement)]
