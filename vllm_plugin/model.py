"""ARC-Hunyuan-Video-7B for vLLM: ViT + perceive, Whisper encoder + mlp2, Hunyuan decoder.

Follows docs/model.md (vision tower, audio path and fusion, decoder, checkpoint tensors) in
the idiom of vLLM's own model files. Encoders run inside the engine
(`embed_multimodal`); the decoder uses paged attention and vLLM's parallel layers,
so `--tensor-parallel-size` shards it.

One file for the whole network, as vLLM's own model files are: it reads top to bottom in
the order of docs/model.md (inputs, vision tower, fusion, decoder, weights).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from vllm.config import VllmConfig
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.logger import init_logger
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import (
    ColumnParallelLinear,
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.rotary_embedding.mrope import MRotaryEmbedding
from vllm.model_executor.layers.vocab_parallel_embedding import (
    ParallelLMHead,
    VocabParallelEmbedding,
)
from vllm.model_executor.model_loader.weight_utils import default_weight_loader
from vllm.model_executor.models.interfaces import (
    MultiModalEmbeddings,
    SupportsMRoPE,
    SupportsMultiModal,
)
from vllm.model_executor.models.utils import StageMissingLayer, WeightsMapper
from vllm.model_executor.models.whisper import WhisperEncoder
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.sequence import IntermediateTensors
from vllm.utils.tensor_schema import TensorSchema, TensorShape

from .config import (
    ARCHunyuanVideoConfig,
    ARCHunyuanVideoTextConfig,
    ARCHunyuanVideoVisionConfig,
)
from .processor import (
    ARCDummyInputsBuilder,
    ARCMultiModalProcessor,
    ARCProcessingInfo,
)

logger = init_logger(__name__)

# Frames per ViT chunk: bounds the [frames, heads, 1600, 1600] attention scratch.
VIT_FRAMES_PER_CHUNK = 8


# ----------------------------------------------------------------------------
# Load-time layout transforms (docs/model.md: #attention-and-the-interleaved-qkv, #mlp,
# #encoder-blocks)
# ----------------------------------------------------------------------------
def deinterleave_qkv(
    weight: torch.Tensor, num_kv_heads: int, queries_per_kv: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a Hunyuan interleaved qkv weight (or bias) into standard q, k, v.

    Rows are laid out as [KV, G + 2, head_dim]: for KV group g, slots 0..G-1 are
    its query heads, slot G its key head and slot G+1 its value head.
    """
    rest = weight.shape[1:]
    grouped = weight.reshape(num_kv_heads, queries_per_kv + 2, head_dim, *rest)
    q, k, v = grouped.split([queries_per_kv, 1, 1], dim=1)
    return (
        q.reshape(-1, *rest),
        k.reshape(-1, *rest),
        v.reshape(-1, *rest),
    )


def interpolate_position_table(table: torch.Tensor, grid: int, side: int) -> torch.Tensor:
    """The ViT position table resized once, exactly as the reference does
    (docs/model.md#patch-and-position-embedding).

    Bilinear with `scale_factor=(side + 0.1) / grid` (not `size=`): the sampling
    coordinates use that scale, which gives a different table from `size=`.
    """
    dim = table.shape[-1]
    patch_rows = table[1:]  # row 0 is the unused CLS slot
    image = patch_rows.reshape(1, grid, grid, dim).permute(0, 3, 1, 2).float()
    scale = (side + 0.1) / grid
    out = F.interpolate(image, scale_factor=(scale, scale), mode="bilinear", align_corners=False)
    assert out.shape[-2:] == (side, side), out.shape
    return out.permute(0, 2, 3, 1).reshape(side * side, dim).to(table.dtype)


# ----------------------------------------------------------------------------
# Vision tower (docs/model.md#vision-tower)
# ----------------------------------------------------------------------------
class ARCVisionAttention(nn.Module):
    def __init__(self, config: ARCHunyuanVideoVisionConfig, prefix: str) -> None:
        super().__init__()
        tp = get_tensor_model_parallel_world_size()
        self.total_heads = config.num_attention_heads
        self.head_dim = config.attention_head_dim
        if self.total_heads % tp:
            raise ValueError(
                f"vision_config.num_attention_heads ({self.total_heads}) must be "
                f"divisible by the tensor parallel size ({tp})"
            )
        self.num_heads = self.total_heads // tp
        self.qkv_proj = QKVParallelLinear(
            config.hidden_size,
            self.head_dim,
            self.total_heads,
            self.total_heads,
            bias=True,
            prefix=f"{prefix}.qkv_proj",
        )
        self.o_proj = RowParallelLinear(
            self.total_heads * self.head_dim,
            config.hidden_size,
            bias=True,
            prefix=f"{prefix}.o_proj",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames, tokens, _ = x.shape
        qkv, _ = self.qkv_proj(x)
        q, k, v = qkv.chunk(3, dim=-1)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(frames, tokens, self.num_heads, self.head_dim).transpose(1, 2)

        # Frames attend within themselves only: full bidirectional attention.
        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
        out = out.transpose(1, 2).reshape(frames, tokens, -1)
        out, _ = self.o_proj(out)
        return out


class ARCVisionMLP(nn.Module):
    def __init__(self, config: ARCHunyuanVideoVisionConfig, prefix: str) -> None:
        super().__init__()
        self.dense_h_to_4h = ColumnParallelLinear(
            config.hidden_size,
            config.intermediate_size,
            bias=True,
            prefix=f"{prefix}.dense_h_to_4h",
        )
        self.dense_4h_to_h = RowParallelLinear(
            config.intermediate_size,
            config.hidden_size,
            bias=True,
            prefix=f"{prefix}.dense_4h_to_h",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.dense_h_to_4h(x)
        x = F.gelu(x)  # exact erf GELU, as the reference
        x, _ = self.dense_4h_to_h(x)
        return x


class ARCVisionLayer(nn.Module):
    def __init__(self, config: ARCHunyuanVideoVisionConfig, prefix: str) -> None:
        super().__init__()
        eps = config.rms_norm_eps  # the reference's LayerNorm eps (docs/model.md#configuration)
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.self_attn = ARCVisionAttention(config, f"{prefix}.self_attn")
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.mlp = ARCVisionMLP(config, f"{prefix}.mlp")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x


class ARCVisionEmbeddings(nn.Module):
    def __init__(self, config: ARCHunyuanVideoVisionConfig) -> None:
        super().__init__()
        self.side = config.grid_side
        self.grid = config.max_image_size // config.patch_size
        self.patch_embedding = nn.Conv2d(
            config.num_channels,
            config.hidden_size,
            kernel_size=config.patch_size,
            stride=config.patch_size,
            bias=True,
        )
        self.position_embedding = nn.Embedding(self.grid * self.grid + 1, config.hidden_size)
        # Filled from position_embedding once the weights are loaded.
        self.register_buffer(
            "position_table",
            torch.zeros(self.side * self.side, config.hidden_size),
            persistent=False,
        )

    def finalize(self) -> None:
        with torch.no_grad():
            self.position_table.copy_(
                interpolate_position_table(
                    self.position_embedding.weight.data, self.grid, self.side
                )
            )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(pixel_values)  # [N, C, 40, 40]
        x = x.flatten(2).transpose(1, 2)  # row-major patches: [N, 1600, C]
        return x + self.position_table


class ARCVisionTransformer(nn.Module):
    def __init__(self, config: ARCHunyuanVideoVisionConfig, prefix: str) -> None:
        super().__init__()
        self.embeddings = ARCVisionEmbeddings(config)
        self.layers = nn.ModuleList(
            ARCVisionLayer(config, f"{prefix}.layers.{i}") for i in range(config.num_hidden_layers)
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixel_values)
        for layer in self.layers:
            x = layer(x)
        return x  # no final norm (docs/model.md#encoder-blocks)


class ARCPerceive(nn.Module):
    """ViT patches -> 112 LLM-width vectors per frame (docs/model.md#perceive-projector)."""

    def __init__(
        self,
        vision: ARCHunyuanVideoVisionConfig,
        text: ARCHunyuanVideoTextConfig,
    ) -> None:
        super().__init__()
        hv, ht = vision.hidden_size, text.hidden_size
        eps = text.rms_norm_eps
        self.side = vision.grid_side
        self.pool = vision.anyres_pooling_size
        self.before_rms = RMSNorm(hv, eps=eps)
        self.proj = nn.Sequential(
            nn.Conv2d(hv, 2 * hv, kernel_size=self.pool, stride=self.pool),
            nn.GELU(),
            nn.Conv2d(2 * hv, 4 * hv, kernel_size=1),
        )
        self.mlp = nn.Linear(4 * hv, ht)
        self.image_newline = nn.Parameter(torch.empty(4 * hv))
        self.image_begin = nn.Parameter(torch.empty(ht))
        self.image_end = nn.Parameter(torch.empty(ht))
        self.image_sep = nn.Parameter(torch.empty(ht))  # in the checkpoint, unused
        self.after_rms = RMSNorm(ht, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames, _, width = x.shape
        x = self.before_rms(x.reshape(-1, width)).reshape(frames, -1, width)
        x = x.transpose(1, 2).reshape(frames, width, self.side, self.side)
        x = self.proj(x)
        x = F.avg_pool2d(x, kernel_size=2, stride=2)  # [N, 4Hv, R, R]
        rows = x.shape[-2]
        newline = self.image_newline.to(x.dtype).view(1, -1, 1, 1)
        x = torch.cat([x, newline.expand(frames, -1, rows, 1)], dim=-1)  # 11th column
        x = x.flatten(2).transpose(1, 2)  # row-major: [N, R*(R+1), 4Hv]
        x = self.mlp(x)
        begin = self.image_begin.to(x.dtype).view(1, 1, -1).expand(frames, 1, -1)
        end = self.image_end.to(x.dtype).view(1, 1, -1).expand(frames, 1, -1)
        x = torch.cat([begin, x, end], dim=1)
        return self.after_rms(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class ARCVisionModel(nn.Module):
    def __init__(self, config: ARCHunyuanVideoConfig, prefix: str) -> None:
        super().__init__()
        self.vit = ARCVisionTransformer(config.vision_config, f"{prefix}.vit")
        self.perceive = ARCPerceive(config.vision_config, config.text_config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        outputs = [
            self.perceive(self.vit(chunk)) for chunk in pixel_values.split(VIT_FRAMES_PER_CHUNK)
        ]
        return torch.cat(outputs)


# The published names that differ from ours without any change to the tensor: Whisper's
# MLP lives under `mlp.`, its q/k/v load into one fused projection (by shard), and the
# buffers some exports carry are not weights.
ARC_WEIGHTS_MAPPER = WeightsMapper(
    orig_to_new_regex={
        re.compile(r"^(speech_encoder\.layers\.\d+)\.(fc[12])\."): r"\1.mlp.\2.",
        re.compile(r"(\.position_ids|rotary_emb\.inv_freq)$"): None,
    },
    orig_to_new_stacked={
        f".self_attn.{proj}_proj.": (".self_attn.qkv_proj.", proj) for proj in ("q", "k", "v")
    },
)


# ----------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------
class ARCVideoInputs(TensorSchema):
    """The videos of one encoder batch: frames and audio features of every video
    concatenated, with the per-video counts that split them.

    Dimensions:
        - nf: frames of all videos (each video 1 to 150)
        - s: frame side (force_image_size, 640)
        - nw: 30 s audio windows of all videos (each video 1 to 10)
        - nv: videos
    """

    type: Literal["video"] = "video"
    pixel_values: Annotated[torch.Tensor, TensorShape("nf", 3, "s", "s")]
    input_features: Annotated[torch.Tensor, TensorShape("nw", 128, 3000)]
    video_num_frames: Annotated[torch.Tensor, TensorShape("nv")]
    video_num_windows: Annotated[torch.Tensor, TensorShape("nv")]
    video_duration: Annotated[torch.Tensor, TensorShape("nv")]


def _batched(value: Any) -> torch.Tensor:
    """A flat field as one tensor (vLLM passes a list when the items' shapes differ)."""
    if isinstance(value, (list, tuple)):
        return torch.cat([torch.as_tensor(v) for v in value])
    return value


def _counts(value: Any) -> torch.Tensor:
    return torch.tensor(_as_ints(value), dtype=torch.long)


# ----------------------------------------------------------------------------
# Audio–visual fusion (docs/model.md#audio-visual-fusion)
# ----------------------------------------------------------------------------
def audio_tokens_per_frame(duration: int, num_frames: int) -> int:
    """Audio tokens added onto each frame: 50, or P for videos over 150 s."""
    if duration <= num_frames:
        return 50
    # Evaluated in IEEE double, in exactly this order (165 s -> 56, not 55).
    return math.ceil(duration / num_frames * 50)


def fuse_audio(frames: torch.Tensor, audio: torch.Tensor, duration: int) -> torch.Tensor:
    """Add each frame's audio tokens onto its first vectors.

    frames: [N, 112, H]; audio: [1500 * W, H] (50 tokens per second).
    """
    num_frames, slots, hidden = frames.shape
    per_second = audio.reshape(-1, 50, hidden)[:duration]
    out = frames.clone()
    if duration <= num_frames:
        n = min(num_frames, per_second.shape[0])
        out[:n, :50] += per_second[:n]
        return out
    p = audio_tokens_per_frame(duration, num_frames)
    if p > slots:
        raise ValueError(f"{duration} s of audio needs {p} slots per frame, only {slots}")
    flat = per_second.reshape(-1, hidden)
    flat = F.pad(flat, (0, 0, 0, num_frames * p - flat.shape[0]))
    out[:, :p] += flat.view(num_frames, p, hidden)
    return out


# ----------------------------------------------------------------------------
# Hunyuan decoder (docs/model.md#decoder)
# ----------------------------------------------------------------------------
class XDRotaryEmbedding(MRotaryEmbedding):
    """4-axis (P, W, H, T) M-RoPE with the pre-scaled NTK-alpha base (docs/model.md#xd-rope).

    vLLM's CUDA path calls a Triton kernel that only knows 3 sections; the native
    path handles any number of contiguous sections, so every device uses it.
    """

    def forward_cuda(self, positions, query, key=None, offsets=None):  # type: ignore[override]
        return self.forward_native(positions, query, key, offsets)

    def forward_xpu(self, positions, query, key=None, offsets=None):  # type: ignore[override]
        return self.forward_native(positions, query, key, offsets)

    def forward_hip(self, positions, query, key=None, offsets=None):  # type: ignore[override]
        return self.forward_native(positions, query, key, offsets)


class HunyuanAttention(nn.Module):
    def __init__(
        self,
        config: ARCHunyuanVideoTextConfig,
        max_position: int,
        vllm_config: VllmConfig,
        prefix: str,
    ) -> None:
        super().__init__()
        tp = get_tensor_model_parallel_world_size()
        self.total_heads = config.num_attention_heads
        self.total_kv_heads = config.num_key_value_heads
        self.head_dim = config.attention_head_dim
        if self.total_heads % tp:
            raise ValueError(
                f"text_config.num_attention_heads ({self.total_heads}) must be "
                f"divisible by the tensor parallel size ({tp})"
            )
        if self.total_kv_heads % tp and tp % self.total_kv_heads:
            raise ValueError(
                f"text_config.num_key_value_heads ({self.total_kv_heads}) and the "
                f"tensor parallel size ({tp}) must divide one another"
            )
        self.num_heads = self.total_heads // tp
        self.num_kv_heads = max(1, self.total_kv_heads // tp)
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.qkv_proj = QKVParallelLinear(
            config.hidden_size,
            self.head_dim,
            self.total_heads,
            self.total_kv_heads,
            bias=False,
            quant_config=vllm_config.quant_config,
            prefix=f"{prefix}.qkv_proj",
        )
        self.o_proj = RowParallelLinear(
            self.total_heads * self.head_dim,
            config.hidden_size,
            bias=False,
            quant_config=vllm_config.quant_config,
            prefix=f"{prefix}.o_proj",
        )
        self.rotary_emb = XDRotaryEmbedding(
            head_size=self.head_dim,
            rotary_dim=self.head_dim,
            max_position_embeddings=max_position,
            base=config.effective_rope_base,
            is_neox_style=True,
            dtype=torch.get_default_dtype(),
            mrope_section=config.mrope_section,
            positions_factor=1,
        )
        self.query_layernorm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.key_layernorm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.attn = Attention(
            self.num_heads,
            self.head_dim,
            self.head_dim**-0.5,
            num_kv_heads=self.num_kv_heads,
            cache_config=vllm_config.cache_config,
            quant_config=vllm_config.quant_config,
            prefix=f"{prefix}.attn",
        )

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        qkv, _ = self.qkv_proj(hidden_states)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q, k = self.rotary_emb(positions, q, k)
        # qk-norm comes after RoPE in Hunyuan (docs/model.md#attention-and-the-interleaved-qkv),
        # unlike Qwen3.
        q = self.query_layernorm(q.reshape(-1, self.head_dim)).view(q.shape)
        k = self.key_layernorm(k.reshape(-1, self.head_dim)).view(k.shape)
        out = self.attn(q, k, v)
        out, _ = self.o_proj(out)
        return out


class HunyuanMLP(nn.Module):
    def __init__(self, config: ARCHunyuanVideoTextConfig, vllm_config: VllmConfig, prefix: str):
        super().__init__()
        # Shard 0 is the gated half (checkpoint rows [I:2I]), shard 1 "up" ([0:I]).
        self.gate_and_up_proj = MergedColumnParallelLinear(
            config.hidden_size,
            [config.intermediate_size] * 2,
            bias=False,
            quant_config=vllm_config.quant_config,
            prefix=f"{prefix}.gate_and_up_proj",
        )
        self.down_proj = RowParallelLinear(
            config.intermediate_size,
            config.hidden_size,
            bias=False,
            quant_config=vllm_config.quant_config,
            prefix=f"{prefix}.down_proj",
        )
        self.act_fn = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.gate_and_up_proj(x)
        x = self.act_fn(x)
        x, _ = self.down_proj(x)
        return x


class HunyuanDecoderLayer(nn.Module):
    def __init__(self, config, max_position: int, vllm_config: VllmConfig, prefix: str):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = HunyuanAttention(config, max_position, vllm_config, f"{prefix}.self_attn")
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = HunyuanMLP(config, vllm_config, f"{prefix}.mlp")

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(positions, self.input_layernorm(x))
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x


class HunyuanModel(nn.Module):
    def __init__(self, config: ARCHunyuanVideoTextConfig, vllm_config: VllmConfig, prefix: str):
        super().__init__()
        # RoPE table must cover the longest prompt (positions never exceed L - 1).
        max_position = max(config.max_position_embeddings, vllm_config.model_config.max_model_len)
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            HunyuanDecoderLayer(config, max_position, vllm_config, f"{prefix}.layers.{i}")
            for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        positions: torch.Tensor,
        inputs_embeds: torch.Tensor,
    ) -> torch.Tensor:
        x = inputs_embeds
        for layer in self.layers:
            x = layer(positions, x)
        return self.norm(x)


class HunyuanForCausalLM(nn.Module):
    def __init__(self, config: ARCHunyuanVideoTextConfig, vllm_config: VllmConfig, prefix: str):
        super().__init__()
        self.config = config
        self.model = HunyuanModel(config, vllm_config, f"{prefix}.model")
        if config.tie_word_embeddings:
            self.lm_head = self.model.embed_tokens
        else:
            self.lm_head = ParallelLMHead(
                config.vocab_size, config.hidden_size, prefix=f"{prefix}.lm_head"
            )
        self.logits_processor = LogitsProcessor(config.vocab_size)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.embed_input_ids(input_ids)
        return self.model(positions, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.logits_processor(self.lm_head, hidden_states)


# ----------------------------------------------------------------------------
# The multimodal model
# ----------------------------------------------------------------------------
@MULTIMODAL_REGISTRY.register_processor(
    ARCMultiModalProcessor,
    info=ARCProcessingInfo,
    dummy_inputs=ARCDummyInputsBuilder,
)
class ARCHunyuanVideoForConditionalGeneration(nn.Module, SupportsMultiModal, SupportsMRoPE):
    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("video"):
            return ARCProcessingInfo.VIDEO_PLACEHOLDER
        raise ValueError(f"ARC-Hunyuan-Video takes one video (with its audio), not {modality!r}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config: ARCHunyuanVideoConfig = vllm_config.model_config.hf_config
        self.config = config
        text = config.text_config
        self.tokens_per_frame = config.vision_config.tokens_per_frame
        self.cells_per_row = config.vision_config.cells_per_row
        self.im_start_id = text.im_start_id
        self.im_end_id = text.im_end_id

        with self._mark_tower_model(vllm_config, "video"):
            self.vision_model = ARCVisionModel(config, "vision_model")
            self.speech_encoder = WhisperEncoder(
                vllm_config=vllm_config.with_hf_config(config.audio_config),
                prefix="speech_encoder",
                enable_pp=False,
            )
            d_audio = config.audio_config.d_model
            self.mlp2 = nn.Sequential(
                nn.LayerNorm(d_audio, eps=1e-5),
                nn.Linear(d_audio, text.hidden_size),
                nn.GELU(),
                nn.Linear(text.hidden_size, text.hidden_size),
            )
        with self._mark_language_model(vllm_config):
            self.language_model = HunyuanForCausalLM(text, vllm_config, "language_model")

    # --- encoders --------------------------------------------------------
    def _video_embeddings(
        self, pixel_values: torch.Tensor, input_features: torch.Tensor, duration: int
    ) -> torch.Tensor:
        dtype = self.mlp2[1].weight.dtype
        frames = self.vision_model(pixel_values.to(dtype))
        audio = self.speech_encoder(list(input_features.to(dtype)))  # [W, 1500, d]
        audio = self.mlp2(audio.reshape(-1, audio.shape[-1]))
        fused = fuse_audio(frames, audio, duration)
        return fused.reshape(-1, fused.shape[-1])

    def _parse_video_input(self, **kwargs: Any) -> ARCVideoInputs | None:
        if kwargs.get("pixel_values") is None:
            return None
        return ARCVideoInputs(
            pixel_values=_batched(kwargs["pixel_values"]),
            input_features=_batched(kwargs["input_features"]),
            video_num_frames=_counts(kwargs["video_num_frames"]),
            video_num_windows=_counts(kwargs["video_num_windows"]),
            video_duration=_counts(kwargs["video_duration"]),
            resolve_bindings={"s": self.config.vision_config.force_image_size},
        )

    def embed_multimodal(self, **kwargs: Any) -> MultiModalEmbeddings:
        videos = self._parse_video_input(**kwargs)
        if videos is None:
            return []
        num_frames = videos.video_num_frames.tolist()
        num_windows = videos.video_num_windows.tolist()
        pixel_list = videos.pixel_values.split(num_frames)
        feature_list = videos.input_features.split(num_windows)
        durations = videos.video_duration.tolist()
        return [
            self._video_embeddings(p, f, d) for p, f, d in zip(pixel_list, feature_list, durations)
        ]

    # --- positions (docs/model.md#position-ids) -----------------------------------------------
    def get_mrope_input_positions(
        self, input_tokens: list[int], mm_features: list[Any]
    ) -> tuple[torch.Tensor, int]:
        return (
            xd_positions(
                input_tokens,
                im_start_id=self.im_start_id,
                im_end_id=self.im_end_id,
                tokens_per_frame=self.tokens_per_frame,
                cells_per_row=self.cells_per_row,
            ),
            0,
        )

    # --- decoder ---------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        return self.language_model(input_ids, positions, intermediate_tensors, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    # --- weights (docs/model.md#checkpoint-tensors)
    # ----------------------------------------------------
    hf_to_vllm_mapper = ARC_WEIGHTS_MAPPER

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        loader = ARCWeightLoader(self)
        return loader.load(weights)


def xd_positions(
    input_tokens: list[int],
    *,
    im_start_id: int,
    im_end_id: int,
    tokens_per_frame: int,
    cells_per_row: int,
) -> torch.Tensor:
    """[4, L] position ids (rows P, W, H, T) from the token ids alone
    (docs/model.md#position-ids)."""
    length = len(input_tokens)
    positions = torch.arange(length, dtype=torch.int64).repeat(4, 1)
    block = tokens_per_frame + 2  # <img> + vectors + </img>
    columns = cells_per_row + 1
    rows = cells_per_row
    grid = torch.arange(rows * columns)
    col = grid % columns
    row = grid // columns
    frame = 0
    tokens = torch.tensor(input_tokens, dtype=torch.int64)
    starts = torch.nonzero(tokens == im_start_id).flatten().tolist()
    for s in starts:
        end = s + block - 1
        if end >= length or input_tokens[end] != im_end_id:
            continue  # a stray <img> in text, not a frame block
        first = s + 2
        positions[1, first : first + rows * columns] = col
        positions[2, first : first + rows * columns] = row
        positions[3, first : first + rows * columns] = frame
        frame += 1
    return positions


class ARCWeightLoader:
    """Loads the published checkpoint after `ARC_WEIGHTS_MAPPER`'s renames, with the
    transforms that change tensors (docs/model.md#checkpoint-tensors): the interleaved qkv of the
    decoder and the ViT split into q, k, v; the decoder's fused [up; gate] swapped into vLLM's
    [gate; up]."""

    def __init__(self, model: ARCHunyuanVideoForConditionalGeneration) -> None:
        self.model = model
        self.config = model.config
        self.params = dict(model.named_parameters())

    def load(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        text = self.config.text_config
        tied = text.tie_word_embeddings
        loaded: set[str] = set()
        saw_head = False
        # Towers of a modality limited to 0 items are not built (StageMissingLayer).
        skipped = tuple(
            f"{n}." for n, c in self.model.named_children() if isinstance(c, StageMissingLayer)
        )
        for name, tensor in weights:
            if skipped and name.startswith(skipped):
                continue
            if name == "language_model.lm_head.weight":
                saw_head = True
                if tied:
                    self._log_head_vs_embedding(tensor)
                    continue
            for target, value, shard in self.map_weight(name, tensor):
                param = self._param(target, name)
                loader = getattr(param, "weight_loader", default_weight_loader)
                if shard is None:
                    loader(param, value)
                else:
                    loader(param, value, shard)
                loaded.add(target)
        if not tied and not saw_head:
            raise ValueError(
                "checkpoint has no `language_model.lm_head.weight` but its config says "
                "tie_word_embeddings: false"
            )
        if tied:
            loaded.add("language_model.lm_head.weight")
        self._zero_missing_k_bias(loaded)
        self._check_complete(loaded)
        if "vision_model." not in skipped:
            self.model.vision_model.vit.embeddings.finalize()
        return loaded

    def _param(self, target: str, source: str) -> nn.Parameter:
        try:
            return self.params[target]
        except KeyError:
            raise ValueError(
                f"checkpoint tensor `{source}` has no place in the model (looked for "
                f"`{target}`): is this an ARC-Hunyuan-Video checkpoint?"
            ) from None

    def map_weight(
        self, name: str, tensor: torch.Tensor
    ) -> list[tuple[str, torch.Tensor, str | int | None]]:
        """(parameter, tensor, shard) for one published tensor; [] for a buffer."""
        return [
            piece
            for renamed, value in ARC_WEIGHTS_MAPPER.apply([(name, tensor)])
            for piece in self._transform(renamed, value)
        ]

    def _transform(self, name: str, tensor: torch.Tensor):
        text = self.config.text_config
        vision = self.config.vision_config
        if name.startswith("language_model.") and name.endswith("self_attn.qkv_proj.weight"):
            kv = text.num_key_value_heads
            q, k, v = deinterleave_qkv(
                tensor, kv, text.num_attention_heads // kv, text.attention_head_dim
            )
            return [(name, q, "q"), (name, k, "k"), (name, v, "v")]
        if name.endswith("mlp.gate_and_up_proj.weight"):
            up, gate = tensor.chunk(2, dim=0)
            return [(name, gate, 0), (name, up, 1)]
        if name.startswith("vision_model.vit.") and ".self_attn.qkv_proj." in name:
            heads = vision.num_attention_heads
            q, k, v = deinterleave_qkv(tensor, heads, 1, vision.attention_head_dim)
            return [(name, q, "q"), (name, k, "k"), (name, v, "v")]
        # A stacked name from the mapper carries its shard (Whisper's q, k, v).
        return [(name, tensor, getattr(tensor, "shard_id", None))]

    def _zero_missing_k_bias(self, loaded: set[str]) -> None:
        # Whisper's k_proj has no bias; the fused qkv bias slot for k must be zero.
        for i in range(self.config.audio_config.encoder_layers):
            name = f"speech_encoder.layers.{i}.self_attn.qkv_proj.bias"
            if name not in self.params:
                continue
            param = self.params[name]
            param.weight_loader(param, torch.zeros(self.config.audio_config.d_model), "k")

    def _check_complete(self, loaded: set[str]) -> None:
        missing = sorted(
            name
            for name in self.params
            if name not in loaded
            and not name.startswith("language_model.lm_head")
            and not name.endswith("image_sep")
        )
        if missing:
            shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
            raise ValueError(f"checkpoint is missing {len(missing)} tensor(s): {shown}")

    def _log_head_vs_embedding(self, head: torch.Tensor) -> None:
        # docs/model.md#lm-head: the config ties the head; say whether the shipped head agrees.
        embed = self.params["language_model.model.embed_tokens.weight"]
        if embed.shape == head.shape:
            same = bool(torch.equal(embed.data.cpu().to(head.dtype), head))
            logger.info(
                "tie_word_embeddings is true: ignoring language_model.lm_head.weight "
                "(%s the embedding)",
                "equal to" if same else "different from",
            )


def _as_ints(value: Any) -> list[int]:
    if isinstance(value, torch.Tensor):
        return [int(x) for x in value.flatten().tolist()]
    if isinstance(value, (list, tuple)):
        out: list[int] = []
        for v in value:
            out.extend(_as_ints(v))
        return out
    return [int(value)]
