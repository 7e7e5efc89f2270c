"""Config classes for ARC-Hunyuan-Video (`model_type: arc_hunyuan_video`).

They read the published checkpoint's `config.json` unchanged (docs/model.md#configuration)
and derive what vLLM needs: the 4-axis M-RoPE parameters with the NTK-alpha base folded
into `rope_theta` (docs/model.md#xd-rope), and the head-tying rule (docs/model.md#lm-head).
Values that would make the model impossible to build are refused here, with the offending
field named.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from transformers import PretrainedConfig

SERVING_CONTEXT = 20480


class ConfigError(ValueError):
    """A config.json value the model cannot work with."""


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"arc_hunyuan_video config: `{field}` {message}")


class ARCHunyuanVideoTextConfig(PretrainedConfig):
    model_type = "arc_hunyuan_video_text"

    def __init__(
        self,
        vocab_size: int = 128256,
        hidden_size: int = 4096,
        intermediate_size: int = 14336,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int = 8,
        attention_head_dim: int | None = None,
        hidden_act: str = "silu",
        rms_norm_eps: float = 1e-5,
        rope_theta: float = 10000.0,
        rope_scaling: dict[str, Any] | None = None,
        xdrope_section: list[float] | None = None,
        max_position_embeddings: int = 1024,
        image_token_id: int = 127968,
        im_start_id: int = 127962,
        im_end_id: int = 127963,
        im_newline_id: int = 127964,
        eod_token_id: int = 127957,
        bos_token_id: int = 127959,
        eos_token_id: int = 127960,
        pad_token_id: int = 127961,
        tie_word_embeddings: bool | None = None,
        **kwargs: Any,
    ) -> None:
        head_dim = kwargs.pop("head_dim", None)
        # transformers would try to interpret the legacy {"type": "dynamic", "alpha"}
        # block itself; we keep it verbatim and build rope_parameters ourselves.
        kwargs.pop("rope_parameters", None)
        # Keys we add ourselves come back on a to_dict() round trip.
        rope_scaling = rope_scaling or kwargs.pop("arc_rope_scaling", None)
        kwargs.pop("arc_rope_theta", None)
        if tie_word_embeddings is None:
            tie_word_embeddings = kwargs.pop("arc_tie_word_embeddings", None)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.attention_head_dim = (
            attention_head_dim or head_dim or hidden_size // num_attention_heads
        )
        self.head_dim = self.attention_head_dim
        self.hidden_act = hidden_act
        self.rms_norm_eps = rms_norm_eps
        # The checkpoint's value (1024 in the reference classes) is numerically
        # irrelevant: RoPE has no table limit and one 150-frame video alone takes
        # 17,100 tokens. vLLM derives its context limit from this field, so admit the
        # authors' serving length (max_model_len 20480).
        self.checkpoint_max_position_embeddings = kwargs.pop(
            "checkpoint_max_position_embeddings", max_position_embeddings
        )
        self.max_position_embeddings = max(max_position_embeddings, SERVING_CONTEXT)
        self.image_token_id = image_token_id
        self.im_start_id = im_start_id
        self.im_end_id = im_end_id
        self.im_newline_id = im_newline_id
        self.eod_token_id = eod_token_id
        self.xdrope_section = list(xdrope_section or [0.25, 0.25, 0.25, 0.25])
        self.arc_rope_scaling = dict(rope_scaling or {"type": "dynamic", "alpha": 1000.0})
        self.arc_rope_theta = rope_theta
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            **kwargs,
        )
        # Head tying: `None` means "not said here"; the top level decides (docs/model.md#lm-head).
        self.arc_tie_word_embeddings = tie_word_embeddings
        self.tie_word_embeddings = True if tie_word_embeddings is None else tie_word_embeddings
        self.rope_theta = rope_theta
        self.rope_parameters = {
            "rope_type": "default",
            "rope_theta": self.effective_rope_base,
            "mrope_section": self.mrope_section,
        }
        self.validate()

    @property
    def mrope_section(self) -> list[int]:
        """`xdrope_section` fractions of head_dim/2 as integers: [16]*4 for the 7B."""
        half = self.attention_head_dim // 2
        return [round(f * half) for f in self.xdrope_section]

    @property
    def effective_rope_base(self) -> float:
        """theta * alpha^(d/(d-2)): the NTK-alpha base, independent of length
        (docs/model.md#xd-rope)."""
        d = self.attention_head_dim
        alpha = float(self.arc_rope_scaling.get("alpha", 1.0) or 1.0)
        return float(self.arc_rope_theta) * alpha ** (d / (d - 2))

    def validate(self) -> None:
        heads, kv = self.num_attention_heads, self.num_key_value_heads
        _require(heads > 0 and kv > 0, "num_attention_heads", "must be positive")
        _require(
            heads % kv == 0,
            "num_key_value_heads",
            f"({kv}) must divide num_attention_heads ({heads})",
        )
        _require(
            self.attention_head_dim * heads == self.hidden_size,
            "attention_head_dim",
            f"({self.attention_head_dim}) x num_attention_heads ({heads}) must equal "
            f"hidden_size ({self.hidden_size})",
        )
        _require(
            self.attention_head_dim % 8 == 0,
            "attention_head_dim",
            f"({self.attention_head_dim}) must be divisible by 8 (4 RoPE axes)",
        )
        _require(
            len(self.xdrope_section) == 4,
            "xdrope_section",
            f"must have 4 entries (P, W, H, T), got {self.xdrope_section}",
        )
        _require(
            sum(self.mrope_section) == self.attention_head_dim // 2,
            "xdrope_section",
            f"{self.xdrope_section} must split head_dim/2 = "
            f"{self.attention_head_dim // 2} into whole sections",
        )


class ARCHunyuanVideoVisionConfig(PretrainedConfig):
    model_type = "arc_hunyuan_video_vision"

    def __init__(
        self,
        hidden_size: int = 1152,
        intermediate_size: int = 4304,
        num_hidden_layers: int = 27,
        num_attention_heads: int = 16,
        attention_head_dim: int | None = None,
        hidden_act: str = "gelu",
        patch_size: int = 16,
        num_channels: int = 3,
        max_image_size: int = 2048,
        max_vit_seq_len: int = 1600,
        anyres_pooling_size: int = 2,
        force_image_size: int = 640,
        rms_norm_eps: float = 1e-5,
        **kwargs: Any,
    ) -> None:
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.attention_head_dim = attention_head_dim or hidden_size // num_attention_heads
        self.hidden_act = hidden_act
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.max_image_size = max_image_size
        self.max_vit_seq_len = max_vit_seq_len
        self.anyres_pooling_size = anyres_pooling_size
        self.force_image_size = force_image_size
        # The reference reads rms_norm_eps as the LayerNorm eps (docs/model.md#configuration).
        self.rms_norm_eps = rms_norm_eps
        super().__init__(**kwargs)

    @property
    def grid_side(self) -> int:
        """Patches per side of a frame: S/16 = 40 at 640 px."""
        return self.force_image_size // self.patch_size

    @property
    def cells_per_row(self) -> int:
        """Rows (= cells per row) of the pooled grid: S/64 = 10 at 640 px."""
        return self.grid_side // (2 * self.anyres_pooling_size)

    @property
    def tokens_per_frame(self) -> int:
        """Embeddings per frame: R * (R + 1) + 2 = 112 at 640 px."""
        r = self.cells_per_row
        return r * (r + 1) + 2


class ARCHunyuanVideoAudioConfig(PretrainedConfig):
    """The Whisper-large-v3 encoder sizes; decoder fields are carried but unused."""

    model_type = "arc_hunyuan_video_audio"

    def __init__(
        self,
        d_model: int = 1280,
        encoder_layers: int = 32,
        encoder_attention_heads: int = 20,
        encoder_ffn_dim: int = 5120,
        num_mel_bins: int = 128,
        max_source_positions: int = 1500,
        activation_function: str = "gelu",
        scale_embedding: bool = False,
        **kwargs: Any,
    ) -> None:
        self.d_model = d_model
        self.encoder_layers = encoder_layers
        self.encoder_attention_heads = encoder_attention_heads
        self.encoder_ffn_dim = encoder_ffn_dim
        self.num_mel_bins = num_mel_bins
        self.max_source_positions = max_source_positions
        self.activation_function = activation_function
        self.scale_embedding = scale_embedding
        super().__init__(**kwargs)


class ARCHunyuanVideoConfig(PretrainedConfig):
    model_type = "arc_hunyuan_video"
    sub_configs: ClassVar[dict[str, type[PretrainedConfig]]] = {
        "text_config": ARCHunyuanVideoTextConfig,
        "vision_config": ARCHunyuanVideoVisionConfig,
        "audio_config": ARCHunyuanVideoAudioConfig,
    }

    def __init__(
        self,
        text_config: dict[str, Any] | ARCHunyuanVideoTextConfig | None = None,
        vision_config: dict[str, Any] | ARCHunyuanVideoVisionConfig | None = None,
        audio_config: dict[str, Any] | ARCHunyuanVideoAudioConfig | None = None,
        max_num_frame: int = 150,
        tie_word_embeddings: bool | None = None,
        **kwargs: Any,
    ) -> None:
        self.text_config = _sub(ARCHunyuanVideoTextConfig, text_config)
        self.vision_config = _sub(ARCHunyuanVideoVisionConfig, vision_config)
        self.audio_config = _sub(ARCHunyuanVideoAudioConfig, audio_config)
        self.max_num_frame = max_num_frame
        # docs/model.md#lm-head: text_config decides; else the top level; else tie (the 7B ties).
        tie = self.text_config.arc_tie_word_embeddings
        if tie is None:
            tie = True if tie_word_embeddings is None else bool(tie_word_embeddings)
        self.text_config.tie_word_embeddings = tie
        super().__init__(tie_word_embeddings=tie, **kwargs)
        self.validate()

    def get_text_config(self, *args: Any, **kwargs: Any) -> ARCHunyuanVideoTextConfig:
        return self.text_config

    def validate(self) -> None:
        v, a = self.vision_config, self.audio_config
        _require(
            v.force_image_size % (v.patch_size * 2 * v.anyres_pooling_size) == 0,
            "vision_config.force_image_size",
            f"({v.force_image_size}) must be a multiple of patch_size*2*pooling "
            f"({v.patch_size * 2 * v.anyres_pooling_size})",
        )
        _require(
            v.max_vit_seq_len == v.grid_side**2,
            "vision_config.max_vit_seq_len",
            f"({v.max_vit_seq_len}) must equal (force_image_size/patch_size)^2 = {v.grid_side**2}",
        )
        grid = v.max_image_size // v.patch_size
        _require(
            grid * v.patch_size == v.max_image_size and grid >= v.grid_side,
            "vision_config.max_image_size",
            f"({v.max_image_size}) must be a multiple of patch_size and >= force_image_size",
        )
        _require(
            v.attention_head_dim * v.num_attention_heads == v.hidden_size,
            "vision_config.num_attention_heads",
            f"({v.num_attention_heads}) x attention_head_dim ({v.attention_head_dim}) "
            f"must equal hidden_size ({v.hidden_size})",
        )
        _require(
            a.d_model % a.encoder_attention_heads == 0,
            "audio_config.encoder_attention_heads",
            f"({a.encoder_attention_heads}) must divide d_model ({a.d_model})",
        )
        _require(
            a.max_source_positions == 1500 and a.num_mel_bins == 128,
            "audio_config.max_source_positions",
            "must be 1500 with num_mel_bins 128 (whisper-large-v3: 50 tokens/s)",
        )
        # Audio tokens are added onto the first slots of each frame: up to
        # ceil(300/150*50) = 100 per frame for long videos (docs/model.md#audio-visual-fusion).
        needed = math.ceil(300 / self.max_num_frame * 50) if self.max_num_frame else 0
        _require(
            v.tokens_per_frame >= max(needed, 50),
            "vision_config.force_image_size",
            f"({v.force_image_size}) gives {v.tokens_per_frame} slots per frame, fewer "
            f"than the {max(needed, 50)} audio tokens a frame must take",
        )


def _sub(cls: type[PretrainedConfig], value: Any) -> Any:
    if value is None:
        return cls()
    if isinstance(value, dict):
        return cls(**value)
    return value
