"""The multimodal processor: one `video` item (frames + its own audio) -> model inputs.

A video item comes in one of three forms:

* **prepared tensors** (the parity harness, advanced callers): a dict built by
  `prepared_video_item()` with `pixel_values` [N,3,S,S], `input_features` [W,128,3000],
  and the sizes/duration. Used as given: no preprocessing at all.
* **prepared frames** (`(frames, metadata)`, what the `arc` video loader returns):
  frames already sampled, stamped and sized (uint8 [N,S,S,3]), with the 16 kHz audio
  (`arc_audio`) or its features (`arc_audio_features`) and `arc_duration` in metadata.
* **bare frames** (uint8 [N,S,S,3], no metadata): 1 frame per second, no audio track,
  so the model hears silence, as the authors' pipeline does (§3.1).

The prompt placeholder (one per video) expands to the frame blocks of Path A
(default) or Path B (`mm_processor_kwargs={"arc_layout": "B"}`), §6.2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import (
    DictEmbeddingItems,
    ModalityDataItems,
    MultiModalDataItems,
    MultiModalDataParser,
)
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
    PromptUpdateDetails,
)

from .config import ARCHunyuanVideoConfig

LAYOUTS = ("A", "B")
PREPARED_FIELDS = frozenset(
    {"pixel_values", "input_features", "video_num_frames", "video_num_windows", "video_duration"}
)


def prepared_video_item(
    pixel_values: torch.Tensor, input_features: torch.Tensor, duration: int
) -> dict[str, torch.Tensor]:
    """A `video` item from tensors that are already model inputs (§8.3.2)."""
    if pixel_values.ndim != 4 or input_features.ndim != 3:
        raise ValueError(
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
    def _parse_video_data(self, data: Any) -> ModalityDataItems[Any, Any] | None:
        if isinstance(data, dict) and "pixel_values" in data:
            return DictEmbeddingItems(
                data,
                modality="video",
                required_fields=set(PREPARED_FIELDS),
                fields_factory=_video_fields,
            )
        return super()._parse_video_data(data)


class ARCProcessingInfo(BaseProcessingInfo):
    # One token stands for a whole video in the prompt; the processor expands it.
    VIDEO_PLACEHOLDER = "<vid>"

    def get_hf_config(self) -> ARCHunyuanVideoConfig:
        return self.ctx.get_hf_config(ARCHunyuanVideoConfig)

    def get_data_parser(self) -> MultiModalDataParser:
        return ARCDataParser(
            expected_hidden_size=self._get_expected_hidden_size(),
            allow_missing_mm_embeddings=self.allow_missing_mm_embeddings,
        )

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"video": 1}

    def get_mm_max_tokens_per_item(
        self, seq_len: int, mm_counts: Mapping[str, int] | None = None
    ) -> Mapping[str, int]:
        return {"video": self.video_tokens(self.get_hf_config().max_num_frame, "B")}

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
        config = self.info.get_hf_config()
        size = config.vision_config.force_image_size
        per_frame = config.vision_config.tokens_per_frame + 2
        # The worst case: as many frames as fit (at most max_num_frame), 10 windows.
        frames = max(1, min(config.max_num_frame, (seq_len - 8) // per_frame))
        duration = 300 if frames == config.max_num_frame else frames
        windows = math.ceil(duration / 30)
        return {
            "video": prepared_video_item(
                torch.zeros(frames, 3, size, size, dtype=torch.bfloat16),
                torch.full((windows, 128, 3000), -1.5, dtype=torch.bfloat16),
                duration,
            )
        }


class ARCMultiModalProcessor(BaseMultiModalProcessor[ARCProcessingInfo]):
    def _call_hf_processor(
        self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]
    ) -> BatchFeature:
        # There is no HF processor: raw frames + audio become tensors here.
        from . import preprocess

        videos = hf_data.get("videos") or []
        pixel_list, feature_list, frames, windows, durations = [], [], [], [], []
        for video in videos:
            array, metadata = video if isinstance(video, tuple) else (video, {})
            array = np.asarray(array)
            if array.ndim != 4 or array.shape[-1] != 3:
                raise ValueError(
                    f"a video must be frames [N, H, W, 3]; got shape {tuple(array.shape)}"
                )
            pixels = preprocess.pixel_values(array)
            features = metadata.get("arc_audio_features")
            duration = metadata.get("arc_duration")
            if features is None:
                audio = metadata.get("arc_audio")
                if audio is None:
                    # No audio track: silence as long as the frames (§3.1).
                    audio = np.zeros(16000 * array.shape[0], dtype=np.float32)
                features = preprocess.whisper_features(np.asarray(audio, dtype=np.float32))
            features = torch.as_tensor(np.asarray(features, dtype=np.float32)).to(torch.bfloat16)
            if duration is None:
                duration = array.shape[0]
            pixel_list.append(pixels)
            feature_list.append(features)
            frames.append(pixels.shape[0])
            windows.append(features.shape[0])
            durations.append(int(duration))
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
            raise ValueError(f"arc_layout must be 'A' or 'B', got {layout!r}")
        info = self.info
        placeholder = info.token_id(ARCProcessingInfo.VIDEO_PLACEHOLDER)

        def replacement(item_idx: int) -> PromptUpdateDetails:
            item = out_mm_kwargs["video"][item_idx]
            num_frames = int(item["video_num_frames"].data)
            ids, embed_ids = info.frame_block_ids(num_frames, layout)
            return PromptUpdateDetails.select_token_ids(ids, embed_ids)

        return [PromptReplacement(modality="video", target=[placeholder], replacement=replacement)]
