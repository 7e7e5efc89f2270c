"""Weight names, shapes and load-time transforms (docs/model.md: #attention-and-the-interleaved-qkv,
#mlp, #lm-head, #checkpoint-tensors).

No engine is started, but the model is built from vLLM's real parallel layers:
- the published 7B (config written from docs/model.md#configuration) on the meta device, at
  TP 1 and a faked TP 2 (both ranks), fed meta tensors with every
  docs/model.md#checkpoint-tensors name and shape;
- a tiny checkpoint from `arc-tiny-checkpoint` on the CPU with real tensors, for the
  loader's error paths and the values that land in each TP shard.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

# ----------------------------------------------------------------------------
# The published checkpoint, from the spec (independent of tiny_checkpoint.py)
# ----------------------------------------------------------------------------


def published_config() -> dict[str, Any]:
    """ARC-Hunyuan-Video-7B config.json from the docs/model.md#configuration tables (tied head,
    docs/model.md#lm-head)."""
    return {
        "architectures": ["ARCHunyuanVideoForConditionalGeneration"],
        "model_type": "arc_hunyuan_video",
        "max_num_frame": 150,
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": True,
        "text_config": {
            "model_type": "arc_hunyuan_video_text",
            "vocab_size": 128256,
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "attention_head_dim": 128,
            "hidden_act": "silu",
            "norm_type": "hf_rms",
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "rope_scaling": {
                "type": "dynamic",
                "alpha": 1000.0,
                "factor": 1.0,
                "beta_fast": 32,
                "beta_slow": 1,
                "mscale": 1.0,
                "mscale_all_dim": 1.0,
            },
            "xdrope_section": [0.25, 0.25, 0.25, 0.25],
            "position_embedding_xdrope": True,
            "use_qk_norm": True,
            "use_rotary_pos_emb": True,
            "attention_bias": False,
            "mlp_bias": False,
            "max_position_embeddings": 1024,
            "image_token_id": 127968,
            "im_start_id": 127962,
            "im_end_id": 127963,
            "im_newline_id": 127964,
            "eod_token_id": 127957,
            "bos_token_id": 127959,
            "eos_token_id": 127960,
            "pad_token_id": 127961,
            "tie_word_embeddings": True,
        },
        "vision_config": {
            "model_type": "arc_hunyuan_video_vision",
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "attention_head_dim": 72,
            "hidden_act": "gelu",
            "patch_size": 16,
            "num_channels": 3,
            "max_image_size": 2048,
            "max_vit_seq_len": 1600,
            "anyres_pooling_size": 2,
            "force_image_size": 640,
            "norm_type": "torch_nn",
            "rms_norm_eps": 1e-5,
        },
        "audio_config": {
            "model_type": "arc_hunyuan_video_audio",
            "d_model": 1280,
            "encoder_layers": 32,
            "encoder_attention_heads": 20,
            "encoder_ffn_dim": 5120,
            "decoder_layers": 32,
            "decoder_attention_heads": 20,
            "decoder_ffn_dim": 5120,
            "num_mel_bins": 128,
            "max_source_positions": 1500,
            "activation_function": "gelu",
            "scale_embedding": False,
        },
    }


def spec_tensor_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every checkpoint tensor of docs/model.md#checkpoint-tensors (name -> shape) for a config.json
    dict."""
    t, v, a = config["text_config"], config["vision_config"], config["audio_config"]
    ht, it, dh = t["hidden_size"], t["intermediate_size"], t["attention_head_dim"]
    qkv_rows = (t["num_attention_heads"] + 2 * t["num_key_value_heads"]) * dh
    out: dict[str, tuple[int, ...]] = {
        "language_model.model.embed_tokens.weight": (t["vocab_size"], ht)
    }
    for i in range(t["num_hidden_layers"]):
        p = f"language_model.model.layers.{i}"
        out |= {
            f"{p}.input_layernorm.weight": (ht,),
            f"{p}.post_attention_layernorm.weight": (ht,),
            f"{p}.self_attn.qkv_proj.weight": (qkv_rows, ht),
            f"{p}.self_attn.o_proj.weight": (ht, ht),
            f"{p}.self_attn.query_layernorm.weight": (dh,),
            f"{p}.self_attn.key_layernorm.weight": (dh,),
            f"{p}.mlp.gate_and_up_proj.weight": (2 * it, ht),
            f"{p}.mlp.down_proj.weight": (ht, it),
        }
    out["language_model.model.norm.weight"] = (ht,)
    if not t.get("tie_word_embeddings", config.get("tie_word_embeddings", True)):
        out["language_model.lm_head.weight"] = (t["vocab_size"], ht)

    hv, iv, ps = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    rows = (v["max_image_size"] // ps) ** 2 + 1
    e = "vision_model.vit.embeddings"
    out |= {
        f"{e}.patch_embedding.weight": (hv, 3, ps, ps),
        f"{e}.patch_embedding.bias": (hv,),
        f"{e}.position_embedding.weight": (rows, hv),
        f"{e}.position_ids": (1, rows),
    }
    for i in range(v["num_hidden_layers"]):
        p = f"vision_model.vit.layers.{i}"
        for n in ("input_layernorm", "post_attention_layernorm"):
            out |= {f"{p}.{n}.weight": (hv,), f"{p}.{n}.bias": (hv,)}
        out |= {
            f"{p}.self_attn.qkv_proj.weight": (3 * hv, hv),
            f"{p}.self_attn.qkv_proj.bias": (3 * hv,),
            f"{p}.self_attn.o_proj.weight": (hv, hv),
            f"{p}.self_attn.o_proj.bias": (hv,),
            f"{p}.mlp.dense_h_to_4h.weight": (iv, hv),
            f"{p}.mlp.dense_h_to_4h.bias": (iv,),
            f"{p}.mlp.dense_4h_to_h.weight": (hv, iv),
            f"{p}.mlp.dense_4h_to_h.bias": (hv,),
        }
    pc = "vision_model.perceive"
    out |= {
        f"{pc}.before_rms.weight": (hv,),
        f"{pc}.after_rms.weight": (ht,),
        f"{pc}.proj.0.weight": (2 * hv, hv, 2, 2),
        f"{pc}.proj.0.bias": (2 * hv,),
        f"{pc}.proj.2.weight": (4 * hv, 2 * hv, 1, 1),
        f"{pc}.proj.2.bias": (4 * hv,),
        f"{pc}.mlp.weight": (ht, 4 * hv),
        f"{pc}.mlp.bias": (ht,),
        f"{pc}.image_newline": (4 * hv,),
        f"{pc}.image_begin": (ht,),
        f"{pc}.image_end": (ht,),
        f"{pc}.image_sep": (ht,),
    }

    d, ffn = a["d_model"], a["encoder_ffn_dim"]
    out |= {
        "speech_encoder.conv1.weight": (d, a["num_mel_bins"], 3),
        "speech_encoder.conv1.bias": (d,),
        "speech_encoder.conv2.weight": (d, d, 3),
        "speech_encoder.conv2.bias": (d,),
        "speech_encoder.embed_positions.weight": (a["max_source_positions"], d),
        "speech_encoder.layer_norm.weight": (d,),
        "speech_encoder.layer_norm.bias": (d,),
    }
    for i in range(a["encoder_layers"]):
        p = f"speech_encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out[f"{p}.self_attn.{proj}.weight"] = (d, d)
            if proj != "k_proj":
                out[f"{p}.self_attn.{proj}.bias"] = (d,)
        for n in ("self_attn_layer_norm", "final_layer_norm"):
            out |= {f"{p}.{n}.weight": (d,), f"{p}.{n}.bias": (d,)}
        out |= {
            f"{p}.fc1.weight": (ffn, d),
            f"{p}.fc1.bias": (ffn,),
            f"{p}.fc2.weight": (d, ffn),
            f"{p}.fc2.bias": (d,),
        }
    out |= {
        "mlp2.0.weight": (d,),
        "mlp2.0.bias": (d,),
        "mlp2.1.weight": (ht, d),
        "mlp2.1.bias": (ht,),
        "mlp2.3.weight": (ht, ht),
        "mlp2.3.bias": (ht,),
    }
    return out


def spec_dtype(name: str) -> torch.dtype:
    return torch.int64 if name.endswith("position_ids") else torch.float32


# ----------------------------------------------------------------------------
# Building the model outside an engine
# ----------------------------------------------------------------------------


def _ensure_dist(vllm_config: Any) -> None:
    """Single-process distributed state, once per process (kept: others may share it)."""
    import torch.distributed as dist
    from vllm.config import set_current_vllm_config
    from vllm.distributed import ensure_model_parallel_initialized, init_distributed_environment

    with set_current_vllm_config(vllm_config):
        if not dist.is_initialized():
            init_distributed_environment(
                world_size=1,
                rank=0,
                local_rank=0,
                distributed_init_method=f"file://{tempfile.mkdtemp()}/store",
                backend="gloo",
            )
        ensure_model_parallel_initialized(1, 1)


@contextlib.contextmanager
def faked_tp(tp: int, rank: int) -> Iterator[None]:
    """Make the (single-process) TP group report `tp` ranks and this one as `rank`.

    Only for building layers and loading weights: every vLLM getter reads these two
    fields of the TP group, and nothing here communicates.
    """
    from vllm.distributed import parallel_state

    group = parallel_state.get_tp_group()
    saved = group.world_size, group.rank_in_group
    group.world_size, group.rank_in_group = tp, rank
    try:
        yield
    finally:
        group.world_size, group.rank_in_group = saved


def build_model(
    model_dir: Path,
    *,
    tokenizer: Path | None = None,
    tp: int = 1,
    rank: int = 0,
    device: str = "meta",
    video_limit: int = 1,
) -> Any:
    """ARCHunyuanVideoForConditionalGeneration from a checkpoint dir, without weights."""
    from vllm.config import ModelConfig, VllmConfig, set_current_vllm_config
    from vllm.utils.torch_utils import set_default_torch_dtype

    import vllm_plugin

    vllm_plugin.register()
    from vllm_plugin.model import ARCHunyuanVideoForConditionalGeneration

    model_config = ModelConfig(
        model=str(model_dir),
        tokenizer=str(tokenizer or model_dir),
        skip_tokenizer_init=tokenizer is None,
        dtype="float32",
        max_model_len=2048,
        enforce_eager=True,
        limit_mm_per_prompt={"video": video_limit},
    )
    # A fresh VllmConfig per model: attention layers register their names in it.
    vllm_config = VllmConfig(model_config=model_config)
    _ensure_dist(vllm_config)
    with (
        faked_tp(tp, rank),
        set_current_vllm_config(vllm_config),
        set_default_torch_dtype(torch.float32),
        torch.device(device),
    ):
        return ARCHunyuanVideoForConditionalGeneration(vllm_config=vllm_config)


def load(model: Any, weights: dict[str, torch.Tensor], tp: int = 1, rank: int = 0) -> set[str]:
    """ARCWeightLoader.load(); on a real device, also checks every element was written."""
    from vllm_plugin.model import ARCWeightLoader

    real = [p for p in model.parameters() if not p.is_meta]
    with torch.no_grad():
        for param in real:  # NaN marks anything the loader leaves unwritten
            param.fill_(float("nan"))
    with faked_tp(tp, rank):
        loaded = ARCWeightLoader(model).load(iter(weights.items()))
    unwritten = [n for n, p in model.named_parameters() if not p.is_meta and torch.isnan(p).any()]
    assert not unwritten, f"loader left parts of {unwritten} unwritten"
    return loaded


def meta_weights(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {n: torch.empty(s, dtype=spec_dtype(n), device="meta") for n, s in shapes.items()}


# ----------------------------------------------------------------------------
# Expected TP shards, computed from the layer types (not read from vLLM)
# ----------------------------------------------------------------------------
def sharded_dim(target: str) -> int | None:
    """Dim a parameter is split on under TP: column-parallel 0, row-parallel 1."""
    if target.startswith("language_model."):
        if target.endswith(("qkv_proj.weight", "gate_and_up_proj.weight", "embed_tokens.weight")):
            return 0  # QKVParallel / MergedColumnParallel / VocabParallelEmbedding
        if target.endswith(("o_proj.weight", "down_proj.weight")):
            return 1  # RowParallel
        return None
    if target.startswith(("vision_model.vit.layers.", "speech_encoder.layers.")):
        if ".qkv_proj." in target or ".dense_h_to_4h." in target or ".fc1." in target:
            return 0
        if target.endswith(
            ("o_proj.weight", "out_proj.weight", "dense_4h_to_h.weight", "fc2.weight")
        ):
            return 1
    return None  # norms, row-parallel biases, convs, tables, perceive, mlp2: replicated


def expected_param_shape(
    target: str, checkpoint_rows: list[tuple[int, ...]], tp: int
) -> tuple[int, ...]:
    """The parameter shape that the transformed checkpoint pieces must fill at `tp`."""
    dim = sharded_dim(target)
    shape = list(checkpoint_rows[0])
    if len(checkpoint_rows) > 1:  # stacked shards (q/k/v, gate/up) along dim 0
        shape[0] = sum(s[0] for s in checkpoint_rows)
    if target.endswith("embed_tokens.weight"):
        shape[0] = -(-shape[0] // 64) * 64  # vLLM pads the vocabulary to 64 rows
    if dim is not None:
        assert shape[dim] % tp == 0, (target, shape, tp)
        shape[dim] //= tp
    return tuple(shape)


# ----------------------------------------------------------------------------
# The published 7B: every docs/model.md#checkpoint-tensors name maps onto a parameter of the right
# shard shape
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def published_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding only the 7B config.json (no tokenizer, no weights)."""
    path = tmp_path_factory.mktemp("arc-7b")
    (path / "config.json").write_text(json.dumps(published_config()))
    return path


@pytest.mark.parametrize(("tp", "rank"), [(1, 0), (2, 0), (2, 1)])
def test_published_names_map_to_sharded_params(published_dir: Path, tp: int, rank: int) -> None:
    from vllm_plugin.model import ARCWeightLoader

    config = published_config()
    shapes = spec_tensor_shapes(config)
    model = build_model(published_dir, tp=tp, rank=rank)
    loader = ARCWeightLoader(model)
    params = dict(model.named_parameters())

    pieces: dict[str, list[tuple[int, ...]]] = {}
    for name, shape in shapes.items():
        if name.endswith("position_ids"):
            continue  # a buffer; the loader skips it
        for target, value, _shard in loader.map_weight(name, torch.empty(shape, device="meta")):
            assert target in params, f"{name} -> {target}: no such parameter"
            pieces.setdefault(target, []).append(tuple(value.shape))

    # Whisper's k has no bias in the checkpoint (docs/model.md#audio-encoder): its slot is
    # zero-filled.
    d = config["audio_config"]["d_model"]
    for target in params:
        if target.startswith("speech_encoder.layers.") and target.endswith("qkv_proj.bias"):
            assert len(pieces[target]) == 2
            pieces[target].append((d,))
    assert sorted(pieces) == sorted(params), set(params) ^ set(pieces)
    for target, rows in pieces.items():
        assert tuple(params[target].shape) == expected_param_shape(target, rows, tp), target

    # Spot checks with the numbers worked out by hand from docs/model.md#configuration (TP 2
    # halves).
    lm = "language_model.model.layers.31"
    by_tp = {
        f"{lm}.self_attn.qkv_proj.weight": (6144 // tp, 4096),
        f"{lm}.self_attn.o_proj.weight": (4096, 4096 // tp),
        f"{lm}.mlp.gate_and_up_proj.weight": (28672 // tp, 4096),
        f"{lm}.mlp.down_proj.weight": (4096, 14336 // tp),
        "language_model.model.embed_tokens.weight": (128256 // tp, 4096),
        "vision_model.vit.layers.26.self_attn.qkv_proj.weight": (3456 // tp, 1152),
        "vision_model.vit.layers.26.self_attn.qkv_proj.bias": (3456 // tp,),
        "vision_model.vit.layers.26.mlp.dense_4h_to_h.weight": (1152, 4304 // tp),
        "vision_model.vit.embeddings.position_embedding.weight": (16385, 1152),
        "speech_encoder.layers.31.self_attn.qkv_proj.weight": (3840 // tp, 1280),
        "speech_encoder.layers.31.mlp.fc1.weight": (5120 // tp, 1280),
        "vision_model.perceive.proj.0.weight": (2304, 1152, 2, 2),
        "mlp2.3.weight": (4096, 4096),
    }
    for target, shape in by_tp.items():
        assert tuple(params[target].shape) == shape, target
    assert "language_model.lm_head.weight" not in params  # tied: the head is the embedding
    assert model.language_model.lm_head is model.language_model.model.embed_tokens

    # The whole loader on meta tensors: vLLM's weight loaders assert every shard shape.
    loaded = load(model, meta_weights(shapes), tp, rank)
    assert set(params) <= loaded


def test_published_parameter_count(published_dir: Path) -> None:
    """8.64 B parameters with the tied head (docs/model.md#checkpoint-tensors), counted on the TP-1
    model."""
    model = build_model(published_dir)
    total = sum(p.numel() for p in model.parameters())
    assert abs(total / 1e9 - 8.64) < 0.01, total
    checkpoint = sum(
        torch.Size(s).numel()
        for n, s in spec_tensor_shapes(published_config()).items()
        if not n.endswith("position_ids")
    )
    # The model has the checkpoint's tensors plus Whisper's (zero) k biases, no more.
    extra_k_bias = 32 * 1280
    assert total == checkpoint + extra_k_bias


# ----------------------------------------------------------------------------
# A tiny checkpoint on the CPU: real tensors through ARCWeightLoader.load()
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_tied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vllm_plugin.tiny_checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tied", seed=1)


@pytest.fixture(scope="module")
def tiny_untied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vllm_plugin.tiny_checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(
        tmp_path_factory.mktemp("tiny") / "untied", seed=2, tie_word_embeddings=False
    )


def read_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(ckpt / "model.safetensors"))


def test_tiny_loads_on_cpu(tiny_tied: Path) -> None:
    weights = read_weights(tiny_tied)
    assert "language_model.lm_head.weight" not in weights
    assert weights["vision_model.vit.embeddings.position_ids"].dtype == torch.int64
    model = build_model(tiny_tied, tokenizer=tiny_tied, device="cpu")
    loaded = load(model, weights)
    params = dict(model.named_parameters())
    assert set(params) <= loaded
    embed = params["language_model.model.embed_tokens.weight"]
    assert torch.equal(embed, weights["language_model.model.embed_tokens.weight"])
    assert model.language_model.lm_head.weight is embed  # tied
    # Whisper positions come from the checkpoint, not recomputed sinusoids
    # (docs/model.md#audio-encoder).
    assert torch.equal(
        params["speech_encoder.embed_positions.weight"],
        weights["speech_encoder.embed_positions.weight"],
    )
    # The interpolated ViT table was built from the loaded position table.
    table = model.vision_model.vit.embeddings.position_table
    assert table.shape == (1600, 64) and table.abs().sum() > 0


def test_stray_head_and_position_ids_are_ignored(tiny_tied: Path) -> None:
    weights = read_weights(tiny_tied)
    embed = weights["language_model.model.embed_tokens.weight"]
    # (b) a head tensor in a tied checkpoint: ignored, the embedding stays the head.
    weights["language_model.lm_head.weight"] = torch.randn_like(embed)
    # (c) the position_ids buffer (already in the file) in a different dtype: skipped.
    weights["vision_model.vit.embeddings.position_ids"] = torch.zeros(1, 16385)
    model = build_model(tiny_tied, device="cpu")
    load(model, weights)
    assert torch.equal(model.language_model.lm_head.weight, embed)


def test_missing_tensor_is_named(tiny_tied: Path) -> None:
    weights = read_weights(tiny_tied)
    gone = "language_model.model.layers.1.self_attn.o_proj.weight"
    del weights[gone]
    model = build_model(tiny_tied, device="cpu")
    with pytest.raises(ValueError, match=gone.replace(".", r"\.")):
        load(model, weights)


def test_unknown_tensor_is_named(tiny_tied: Path) -> None:
    weights = read_weights(tiny_tied)
    weights["vision_model.perceive.extra.weight"] = torch.zeros(3)
    model = build_model(tiny_tied, device="cpu")
    with pytest.raises(ValueError, match=r"vision_model\.perceive\.extra\.weight"):
        load(model, weights)


def test_untied_head_loads_and_missing_head_is_refused(tiny_untied: Path) -> None:
    weights = read_weights(tiny_untied)
    head = weights["language_model.lm_head.weight"]
    model = build_model(tiny_untied, device="cpu")
    load(model, weights)
    assert model.language_model.lm_head is not model.language_model.model.embed_tokens
    assert torch.equal(model.language_model.lm_head.weight, head)

    del weights["language_model.lm_head.weight"]
    model = build_model(tiny_untied, device="cpu")
    with pytest.raises(ValueError, match="lm_head"):
        load(model, weights)


def test_text_only_mode_loads_without_towers(tiny_tied: Path) -> None:
    """With `--limit-mm-per-prompt '{"video": 0}'` vLLM builds no encoders (they become
    StageMissingLayer placeholders); their checkpoint tensors must be skipped."""
    model = build_model(tiny_tied, device="cpu", video_limit=0)
    loaded = load(model, read_weights(tiny_tied))
    assert {n for n, _ in model.named_parameters()} <= loaded
    assert all(n.startswith("language_model.") for n, _ in model.named_parameters())


@pytest.mark.parametrize("rank", [0, 1])
def test_tp2_shards_hold_the_right_rows(tiny_tied: Path, rank: int) -> None:
    """Real values at a faked TP 2: each rank gets its heads after the transforms."""
    weights = read_weights(tiny_tied)
    config = json.loads((tiny_tied / "config.json").read_text())
    t, v, a = config["text_config"], config["vision_config"], config["audio_config"]
    model = build_model(tiny_tied, device="cpu", tp=2, rank=rank)
    load(model, weights, tp=2, rank=rank)
    params = dict(model.named_parameters())

    def heads_of(rows: torch.Tensor, per_rank: int, dh: int) -> torch.Tensor:
        return rows[rank * per_rank * dh : (rank + 1) * per_rank * dh]

    # LLM qkv: interleaved [KV, G+2, Dh] -> this rank's q heads, then k, then v
    # (docs/model.md#attention-and-the-interleaved-qkv).
    kv, heads, dh = t["num_key_value_heads"], t["num_attention_heads"], t["attention_head_dim"]
    g = heads // kv
    raw = weights["language_model.model.layers.0.self_attn.qkv_proj.weight"]
    grouped = raw.view(kv, g + 2, dh, -1)
    q = grouped[:, :g].reshape(heads * dh, -1)
    k = grouped[:, g].reshape(kv * dh, -1)
    vv = grouped[:, g + 1].reshape(kv * dh, -1)
    want = torch.cat(
        [heads_of(q, heads // 2, dh), heads_of(k, kv // 2, dh), heads_of(vv, kv // 2, dh)]
    )
    assert torch.equal(params["language_model.model.layers.0.self_attn.qkv_proj.weight"], want)

    # gate/up: checkpoint [up; gate] -> shard 0 gated half, shard 1 up half (docs/model.md#mlp).
    it = t["intermediate_size"]
    raw = weights["language_model.model.layers.0.mlp.gate_and_up_proj.weight"]
    up, gate = raw[:it], raw[it:]
    half = it // 2
    want = torch.cat([gate[rank * half : (rank + 1) * half], up[rank * half : (rank + 1) * half]])
    assert torch.equal(params["language_model.model.layers.0.mlp.gate_and_up_proj.weight"], want)

    # Row-parallel: input columns split.
    raw = weights["language_model.model.layers.1.mlp.down_proj.weight"]
    assert torch.equal(
        params["language_model.model.layers.1.mlp.down_proj.weight"],
        raw[:, rank * half : (rank + 1) * half],
    )
    raw = weights["language_model.model.embed_tokens.weight"]
    rows = t["vocab_size"] // 2
    assert torch.equal(
        params["language_model.model.embed_tokens.weight"], raw[rank * rows : (rank + 1) * rows]
    )

    # ViT qkv: per-head [q, k, v] (G = 1), weight and bias alike (docs/model.md#encoder-blocks).
    vh, vd = v["num_attention_heads"], v["attention_head_dim"]
    for suffix in ("weight", "bias"):
        raw = weights[f"vision_model.vit.layers.1.self_attn.qkv_proj.{suffix}"]
        per_head = raw.view(vh, 3, vd, *raw.shape[1:])
        parts = [per_head[:, j].reshape(vh * vd, *raw.shape[1:]) for j in range(3)]
        want = torch.cat([heads_of(p, vh // 2, vd) for p in parts])
        assert torch.equal(params[f"vision_model.vit.layers.1.self_attn.qkv_proj.{suffix}"], want)

    # Whisper: q/k/v fused, k bias zero.
    ah, ad = a["encoder_attention_heads"], a["d_model"] // a["encoder_attention_heads"]
    p = "speech_encoder.layers.0.self_attn"
    want = torch.cat([heads_of(weights[f"{p}.{x}_proj.weight"], ah // 2, ad) for x in "qkv"])
    assert torch.equal(params[f"{p}.qkv_proj.weight"], want)
    bias = params[f"{p}.qkv_proj.bias"]
    n = ad * ah // 2
    assert torch.equal(bias[:n], heads_of(weights[f"{p}.q_proj.bias"], ah // 2, ad))
    assert torch.count_nonzero(bias[n : 2 * n]) == 0
    assert torch.equal(bias[2 * n :], heads_of(weights[f"{p}.v_proj.bias"], ah // 2, ad))


# ----------------------------------------------------------------------------
# Layout transforms on hand-built weights
# ----------------------------------------------------------------------------
def test_deinterleave_llm_qkv_two_kv_heads() -> None:
    """KV = 2, G = 2: rows [q0 q1 k0 v0 | q2 q3 k1 v1] -> [q0 q1 q2 q3 | k0 k1 | v0 v1]."""
    from vllm_plugin.model import deinterleave_qkv

    dh, hidden = 3, 5
    # Each head block is filled with a code: 100 + head for q, 200 + head for k, 300 + head for v.
    order = [("q", 0), ("q", 1), ("k", 0), ("v", 0), ("q", 2), ("q", 3), ("k", 1), ("v", 1)]
    code = {"q": 100, "k": 200, "v": 300}

    def block(kind: str, head: int) -> torch.Tensor:
        rows = torch.arange(dh).view(dh, 1).float() / 10  # keeps the row order visible
        return (code[kind] + head + rows).expand(dh, hidden).clone()

    weight = torch.cat([block(kind, head) for kind, head in order])
    q, k, v = deinterleave_qkv(weight, num_kv_heads=2, queries_per_kv=2, head_dim=dh)
    assert torch.equal(q, torch.cat([block("q", h) for h in range(4)]))
    assert torch.equal(k, torch.cat([block("k", h) for h in range(2)]))
    assert torch.equal(v, torch.cat([block("v", h) for h in range(2)]))


def test_deinterleave_vit_per_head_with_bias() -> None:
    """ViT (G = 1): rows [q0 k0 v0 | q1 k1 v1], and the bias the same way."""
    from vllm_plugin.model import deinterleave_qkv

    dh, hidden, heads = 4, 6, 2
    weight = torch.randn(heads * 3 * dh, hidden)
    bias = torch.randn(heads * 3 * dh)
    q, k, v = deinterleave_qkv(weight, heads, 1, dh)
    qb, kb, vb = deinterleave_qkv(bias, heads, 1, dh)

    def rows(tensor: torch.Tensor, head: int, slot: int) -> torch.Tensor:
        start = (head * 3 + slot) * dh
        return tensor[start : start + dh]

    for slot, (w, b) in enumerate([(q, qb), (k, kb), (v, vb)]):
        assert torch.equal(w, torch.cat([rows(weight, h, slot) for h in range(heads)]))
        assert torch.equal(b, torch.cat([rows(bias, h, slot) for h in range(heads)]))
    assert q.shape == (heads * dh, hidden) and qb.shape == (heads * dh,)


# ----------------------------------------------------------------------------
# Config refusals (field named in the message)
# ----------------------------------------------------------------------------
def test_config_refuses_too_few_slots_for_audio() -> None:
    from vllm_plugin.config import ARCHunyuanVideoConfig, ConfigError

    config = published_config()
    config["vision_config"].update(force_image_size=320, max_vit_seq_len=400)
    with pytest.raises(ConfigError, match="force_image_size"):
        ARCHunyuanVideoConfig(**config)


def test_config_refuses_heads_not_divisible_by_kv() -> None:
    from vllm_plugin.config import ARCHunyuanVideoConfig, ConfigError

    config = published_config()
    config["text_config"].update(
        num_attention_heads=5, num_key_value_heads=2, hidden_size=640, attention_head_dim=128
    )
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        ARCHunyuanVideoConfig(**config)


def test_config_refuses_hidden_not_heads_times_head_dim() -> None:
    from vllm_plugin.config import ARCHunyuanVideoConfig, ConfigError

    config = published_config()
    config["text_config"].update(hidden_size=4000)
    with pytest.raises(ConfigError, match="attention_head_dim"):
        ARCHunyuanVideoConfig(**config)


def test_published_config_derived_values() -> None:
    """The 7B config loads and derives docs/model.md#derived-constants's constants."""
    from vllm_plugin.config import ARCHunyuanVideoConfig

    config = ARCHunyuanVideoConfig(**published_config())
    text = config.text_config
    assert text.mrope_section == [16, 16, 16, 16]
    assert text.effective_rope_base == pytest.approx(11158839.92507748, rel=1e-12)
    assert config.vision_config.tokens_per_frame == 112
    assert text.tie_word_embeddings is True
