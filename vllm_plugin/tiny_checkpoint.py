"""`arc-tiny-checkpoint`: a small random-weight checkpoint of the real architecture.

The files mirror the published layout (docs/model.md: config schema, tokenizer and special
tokens, tensor names) at sizes that run on a CPU in seconds. The defaults deliberately cover
what the golden tiny-a checkpoint cannot (docs/model.md#tiny-checkpoints): 2 KV heads with 2
queries each (the interleaved qkv layout is observable), a tied LM head with no `lm_head`
tensor, and special ids at yet another offset (so hard-coded ids break). Everything is
generated in-process from a seed: no file from `../shared` is needed, and the same seed gives
the same bytes.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import torch

from arc_media.model_inputs import SAMPLE_RATE

from . import features

# The special tokens of the real tokenizer in id order (docs/model.md#tokenizer-and-special-tokens):
# they follow the BPE
# ranks directly, so only their offset changes from model to model.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|startoftext|>",
    "<|bos|>",
    "<|eos|>",
    "<|pad|>",
    "<img>",
    "</img>",
    "<newline>",
    *(f"<|extra_{i}|>" for i in range(31, 34)),
    "<IMG_CONTEXT>",
    *(f"<|extra_{i}|>" for i in range(31)),
    "<sep>",
    "<vid>",
    "</vid>",
    *(f"<|extra_{i}|>" for i in range(34, 205)),
)
REAL_FIRST_SPECIAL_ID = (
    127957  # `<|endoftext|>` in the 7B tokenizer (docs/model.md#tokenizer-and-special-tokens)
)

# config key -> token string (docs/model.md#configuration); the ids are always read back from the
# tokenizer.
CONFIG_TOKEN_KEYS: dict[str, str] = {
    "eod_token_id": "<|endoftext|>",
    "bos_token_id": "<|bos|>",
    "eos_token_id": "<|eos|>",
    "pad_token_id": "<|pad|>",
    "im_start_id": "<img>",
    "im_end_id": "</img>",
    "im_newline_id": "<newline>",
    "image_token_id": "<IMG_CONTEXT>",
}

# The spec's pre-tokenizer (docs/model.md#tokenizer-and-special-tokens): GPT-4 style, but numbers
# split into single digits.
PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BPE_MERGES = 400  # target; a small corpus may support fewer
VOCAB_MULTIPLE = 64
MIN_PADDING_ROWS = 16  # rows past the last token, as the 7B has (docs/model.md#configuration)
TINY_A_FIRST_SPECIAL_ID = 981  # our ids must differ from the golden checkpoint's

_INSTRUCTION_HEAD = "Output the thinking process in <think> </think> and final answer"
_INSTRUCTION_TAIL = (
    " in <answer> </answer> tags, i.e., <think> reasoning process here </think>"
    "<answer> answer here </answer>."
)
# Training text for the tiny BPE: the task prompts of docs/model.md#prompts-and-generation plus
# everyday English and
# Chinese, so prompts tokenize into plausible pieces in both languages.
CORPUS: tuple[str, ...] = (
    _INSTRUCTION_HEAD + " (only option index)" + _INSTRUCTION_TAIL,
    _INSTRUCTION_HEAD + " (only time range)" + _INSTRUCTION_TAIL,
    _INSTRUCTION_HEAD + _INSTRUCTION_TAIL,
    "<think> The man tastes the pork cutlet and frowns. </think><answer> B </answer>",
    "<think> The chef slices the cabbage first. </think><answer> 00:00:12-00:00:25 </answer>",
    "Describe the video content.",
    "The title of the video is a day in Tokyo\nDescribe the video content.",
    "When will we be able to see the man in the video eat the pork cutlet in the restaurant?",
    "Why is the man dissatisfied with the pork cutlet he cooked himself at home?",
    "Localize video chapters with temporal boundaries and the corresponding sentence description.",
    "What happens at the beginning of the video? What is the woman holding in her hand?",
    "The video shows a cooking tutorial. First the host washes the vegetables.",
    "Then she heats the oil in a pan and fries the onions until they are golden.",
    "A dog runs across the park, catches a red ball and brings it back to the children.",
    "At 00:01:30 the speaker introduces the product.",
    "From 00:02:10 to 00:03:45 he compares the prices of the three models.",
    "The weather is sunny today, and it will reach 25 degrees in the afternoon.",
    "Please answer the question about the video in one sentence.",
    "该视频标题为东京的一天\n描述视频内容.",
    "视频中最后老板提供了什么给顾客作为赠品？\nA.纸尿裤\nB.寿司\nC.现金\nD.面巾纸",
    "请按时间顺序给出视频的章节摘要和对应时间点",
    "视频开头，一位男士走进餐厅，点了一份炸猪排。",
    "他在家里自己做的炸猪排不够酥脆，所以他很不满意。",
    "主持人先介绍了今天的菜谱，然后开始切菜、炒菜，最后把菜端上桌。",
    "今天天气晴朗，下午气温将达到二十五度。",
    "这段视频展示了一个关于旅行的故事，画面里有山、有河，还有很多游客。",
    "Numbers: 0 1 2 3 4 5 6 7 8 9, 2024, 3.14, 100%, 12:30.",
)


# ----------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------
def default_config() -> dict[str, Any]:
    """The tiny config without token ids; same keys as the published schema
    (docs/model.md#configuration)."""
    text_config: dict[str, Any] = {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attention_head_dim": 64,
        "hidden_act": "silu",
        "hidden_size": 256,
        "initializer_range": 0.02,
        "intermediate_size": 512,
        "is_causal": True,
        "max_position_embeddings": 1024,
        "mlp_bias": False,
        "model_type": "arc_hunyuan_video_text",
        "norm_type": "hf_rms",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "num_media_embeds": 257,
        "position_embedding_xdrope": True,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "alpha": 1000.0,
            "beta_fast": 32,
            "beta_slow": 1,
            "factor": 1.0,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
            "type": "dynamic",
        },
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "use_cache": True,
        "use_qk_norm": True,
        "use_rotary_pos_emb": True,
        "xdrope_section": [0.25, 0.25, 0.25, 0.25],
    }
    vision_config: dict[str, Any] = {
        "anyres_pooling_size": 2,
        "attention_bias": True,
        "attention_dropout": 0.0,
        "attention_head_dim": 32,
        "force_image_size": 640,
        "hidden_act": "gelu",
        "hidden_size": 64,
        "intermediate_size": 128,
        "is_causal": False,
        "layer_norm_eps": 1e-05,
        "max_image_size": 2048,
        "max_vit_seq_len": 1600,
        "mlp_bias": True,
        "model_type": "arc_hunyuan_video_vision",
        "norm_type": "torch_nn",
        "num_attention_heads": 2,
        "num_channels": 3,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "patch_size": 16,
        "position_embedding_xdrope": False,
        "rms_norm_eps": 1e-05,
        "use_qk_norm": False,
        "use_rotary_pos_emb": False,
        "xdrope_section": None,
    }
    audio_config: dict[str, Any] = {
        "activation_dropout": 0.0,
        "activation_function": "gelu",
        "apply_spec_augment": False,
        "attention_dropout": 0.0,
        "bos_token_id": 50257,
        "classifier_proj_size": 256,
        "d_model": 64,
        "decoder_attention_heads": 2,
        "decoder_ffn_dim": 128,
        "decoder_layerdrop": 0.0,
        "decoder_layers": 2,
        "decoder_start_token_id": 50258,
        "dropout": 0.0,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 128,
        "encoder_layerdrop": 0.0,
        "encoder_layers": 2,
        "eos_token_id": 50257,
        "init_std": 0.02,
        "mask_feature_length": 10,
        "mask_feature_min_masks": 0,
        "mask_feature_prob": 0.0,
        "mask_time_length": 10,
        "mask_time_min_masks": 2,
        "mask_time_prob": 0.05,
        "max_source_positions": 1500,
        "max_target_positions": 448,
        "median_filter_width": 7,
        "model_type": "arc_hunyuan_video_audio",
        "num_hidden_layers": 2,
        "num_mel_bins": 128,
        "scale_embedding": False,
        "use_cache": True,
        "use_weighted_layer_sum": False,
        "vocab_size": 51866,
    }
    return {
        "architectures": ["ARCHunyuanVideoForConditionalGeneration"],
        "audio_config": audio_config,
        "max_num_frame": 150,
        "model_type": "arc_hunyuan_video",
        "text_config": text_config,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "transformers_version": "4.53.3",
        "vision_config": vision_config,
    }


def _apply_overrides(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys replace; `*_config` dicts merge into the sub-config.

    `tie_word_embeddings` is set at both levels, since text_config decides (docs/model.md#lm-head).
    """
    config = copy.deepcopy(config)
    for key, value in overrides.items():
        if key.endswith("_config") and isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
        if key == "tie_word_embeddings":
            config["text_config"]["tie_word_embeddings"] = value
    audio = config["audio_config"]
    # Whisper's unused decoder fields follow the encoder, as in the published schema.
    audio["decoder_layers"] = audio["num_hidden_layers"] = audio["encoder_layers"]
    audio["decoder_attention_heads"] = audio["encoder_attention_heads"]
    audio["decoder_ffn_dim"] = audio["encoder_ffn_dim"]
    return config


# ----------------------------------------------------------------------------
# Tokenizer (docs/model.md#tokenizer-and-special-tokens)
# ----------------------------------------------------------------------------
def build_tokenizer(merges: int = BPE_MERGES):
    """A byte-level BPE trained on CORPUS, then the full special-token set.

    Returns a `tokenizers.Tokenizer`. Training is deterministic: the trainer breaks
    count ties by pair order, and the corpus is fixed.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=len(alphabet) + merges,
        min_frequency=2,
        initial_alphabet=alphabet,
        special_tokens=[],
        show_progress=False,
    )
    # Repeat the corpus so frequent pieces of the prompts merge first.
    tokenizer.train_from_iterator(list(CORPUS) * 3, trainer=trainer)
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    )
    return tokenizer


def _tokenizer_config(bpe_ranks: int) -> dict[str, Any]:
    added = {
        str(bpe_ranks + i): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, token in enumerate(SPECIAL_TOKENS)
    }
    return {
        "add_bos_token": False,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "bos_token": "<|startoftext|>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "extra_special_tokens": {},
        "model_max_length": 131072,
        "pad_token": "<|pad|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


# ----------------------------------------------------------------------------
# Tensors (docs/model.md#checkpoint-tensors)
# ----------------------------------------------------------------------------
def tensor_specs(config: dict[str, Any]) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """Every checkpoint tensor (name, shape, dtype) for a config dict, in
    docs/model.md#checkpoint-tensors order."""
    t, v, a = config["text_config"], config["vision_config"], config["audio_config"]
    f32 = torch.float32
    ht, it, dh = t["hidden_size"], t["intermediate_size"], t["attention_head_dim"]
    heads, kv = t["num_attention_heads"], t["num_key_value_heads"]
    specs: list[tuple[str, tuple[int, ...], torch.dtype]] = []

    def add(name: str, *shape: int, dtype: torch.dtype = f32) -> None:
        specs.append((name, tuple(shape), dtype))

    lm = "language_model.model"
    add(f"{lm}.embed_tokens.weight", t["vocab_size"], ht)
    for i in range(t["num_hidden_layers"]):
        p = f"{lm}.layers.{i}"
        add(f"{p}.input_layernorm.weight", ht)
        add(f"{p}.self_attn.qkv_proj.weight", (heads + 2 * kv) * dh, ht)
        add(f"{p}.self_attn.o_proj.weight", ht, heads * dh)
        add(f"{p}.self_attn.query_layernorm.weight", dh)
        add(f"{p}.self_attn.key_layernorm.weight", dh)
        add(f"{p}.post_attention_layernorm.weight", ht)
        add(f"{p}.mlp.gate_and_up_proj.weight", 2 * it, ht)
        add(f"{p}.mlp.down_proj.weight", ht, it)
    add(f"{lm}.norm.weight", ht)
    if not t.get("tie_word_embeddings", config.get("tie_word_embeddings", True)):
        add("language_model.lm_head.weight", t["vocab_size"], ht)

    hv, iv, patch = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    table = (v["max_image_size"] // patch) ** 2 + 1
    vit = "vision_model.vit"
    add(f"{vit}.embeddings.patch_embedding.weight", hv, v["num_channels"], patch, patch)
    add(f"{vit}.embeddings.patch_embedding.bias", hv)
    add(f"{vit}.embeddings.position_embedding.weight", table, hv)
    add(f"{vit}.embeddings.position_ids", 1, table, dtype=torch.int64)
    for i in range(v["num_hidden_layers"]):
        p = f"{vit}.layers.{i}"
        for norm in ("input_layernorm", "post_attention_layernorm"):
            add(f"{p}.{norm}.weight", hv)
            add(f"{p}.{norm}.bias", hv)
        add(f"{p}.self_attn.qkv_proj.weight", 3 * hv, hv)
        add(f"{p}.self_attn.qkv_proj.bias", 3 * hv)
        add(f"{p}.self_attn.o_proj.weight", hv, hv)
        add(f"{p}.self_attn.o_proj.bias", hv)
        add(f"{p}.mlp.dense_h_to_4h.weight", iv, hv)
        add(f"{p}.mlp.dense_h_to_4h.bias", iv)
        add(f"{p}.mlp.dense_4h_to_h.weight", hv, iv)
        add(f"{p}.mlp.dense_4h_to_h.bias", hv)
    pool = v["anyres_pooling_size"]
    pc = "vision_model.perceive"
    add(f"{pc}.before_rms.weight", hv)
    add(f"{pc}.proj.0.weight", 2 * hv, hv, pool, pool)
    add(f"{pc}.proj.0.bias", 2 * hv)
    add(f"{pc}.proj.2.weight", 4 * hv, 2 * hv, 1, 1)
    add(f"{pc}.proj.2.bias", 4 * hv)
    add(f"{pc}.mlp.weight", ht, 4 * hv)
    add(f"{pc}.mlp.bias", ht)
    add(f"{pc}.image_newline", 4 * hv)
    for extra in ("image_begin", "image_end", "image_sep"):
        add(f"{pc}.{extra}", ht)
    add(f"{pc}.after_rms.weight", ht)

    d, ffn, mel = a["d_model"], a["encoder_ffn_dim"], a["num_mel_bins"]
    se = "speech_encoder"
    add(f"{se}.conv1.weight", d, mel, 3)
    add(f"{se}.conv1.bias", d)
    add(f"{se}.conv2.weight", d, d, 3)
    add(f"{se}.conv2.bias", d)
    add(f"{se}.embed_positions.weight", a["max_source_positions"], d)
    for i in range(a["encoder_layers"]):
        p = f"{se}.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            add(f"{p}.self_attn.{proj}.weight", d, d)
            if proj != "k_proj":  # Whisper's k has no bias (docs/model.md#audio-encoder)
                add(f"{p}.self_attn.{proj}.bias", d)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            add(f"{p}.{norm}.weight", d)
            add(f"{p}.{norm}.bias", d)
        add(f"{p}.fc1.weight", ffn, d)
        add(f"{p}.fc1.bias", ffn)
        add(f"{p}.fc2.weight", d, ffn)
        add(f"{p}.fc2.bias", d)
    add(f"{se}.layer_norm.weight", d)
    add(f"{se}.layer_norm.bias", d)
    add("mlp2.0.weight", d)
    add("mlp2.0.bias", d)
    add("mlp2.1.weight", ht, d)
    add("mlp2.1.bias", ht)
    add("mlp2.3.weight", ht, ht)
    add("mlp2.3.bias", ht)
    return specs


_NORM_SUFFIXES = ("layernorm.weight", "layer_norm.weight", "_rms.weight", "norm.weight")


def _random_tensor(
    name: str, shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator
) -> torch.Tensor:
    if dtype == torch.int64:  # the ViT position_ids buffer
        return torch.arange(shape[-1], dtype=torch.int64).reshape(shape)
    if name.endswith(_NORM_SUFFIXES) or name == "mlp2.0.weight":
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)
    if name.endswith(("embed_tokens.weight", "lm_head.weight")):
        # Rows of norm ~1.6: logits spread (std ~1.6) instead of being near ties.
        return 0.1 * torch.randn(shape, generator=gen)
    if name.startswith("language_model."):
        # 2/sqrt(fan_in): the layers move the residual stream several times as far
        # as the embedding, so with a tied head the greedy token depends on the
        # context instead of echoing the last input token forever.
        return 2.0 * torch.randn(shape, generator=gen) / math.sqrt(shape[-1])
    if name.endswith(("image_begin", "image_end", "image_newline", "image_sep")):
        return 0.5 * torch.randn(shape, generator=gen)
    return 0.02 * torch.randn(shape, generator=gen)


def random_weights(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        name: _random_tensor(name, shape, dtype, gen).contiguous()
        for name, shape, dtype in tensor_specs(config)
    }


# ----------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------
def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_tiny_checkpoint(out: Path, seed: int = 0, **overrides: Any) -> Path:
    """Write the tiny checkpoint into `out` and return `out`.

    `overrides` change config values: top-level keys replace, `text_config=`,
    `vision_config=`, `audio_config=` dicts merge (e.g. `tie_word_embeddings=False`
    adds a separate `language_model.lm_head.weight`). Special ids and `vocab_size`
    always come from the tokenizer; `vocab_size` may only be raised.
    """
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer()
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    bpe_ranks = ids[SPECIAL_TOKENS[0]]
    if bpe_ranks == TINY_A_FIRST_SPECIAL_ID or bpe_ranks == REAL_FIRST_SPECIAL_ID:
        raise RuntimeError(f"tiny BPE has {bpe_ranks} ranks: special ids would not be remapped")
    num_tokens = bpe_ranks + len(SPECIAL_TOKENS)
    vocab_size = -(-(num_tokens + MIN_PADDING_ROWS) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

    config = _apply_overrides(default_config(), overrides)
    text = config["text_config"]
    text["vocab_size"] = max(vocab_size, int(overrides.get("text_config", {}).get("vocab_size", 0)))
    for key, token in CONFIG_TOKEN_KEYS.items():
        text[key] = ids[token]
    config["text_config"] = dict(sorted(text.items()))

    # Refuse a config the plugin would refuse, before writing anything large.
    from .config import ARCHunyuanVideoConfig

    ARCHunyuanVideoConfig(**copy.deepcopy(config))

    tokenizer.save(str(out / "tokenizer.json"))
    _dump(out / "tokenizer_config.json", _tokenizer_config(bpe_ranks))
    _dump(
        out / "special_tokens_map.json",
        {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>"},
    )
    offset = bpe_ranks - REAL_FIRST_SPECIAL_ID
    _dump(
        out / "special_token_ids.json",
        {
            "bpe_ranks": bpe_ranks,
            "vocab_size": text["vocab_size"],
            "id_offset_tiny_minus_real": offset,
            "special_tokens": [
                {"token": token, "tiny_id": ids[token], "real_id": ids[token] - offset}
                for token in SPECIAL_TOKENS
            ],
        },
    )
    _dump(out / "config.json", config)
    _dump(
        out / "generation_config.json",
        {
            "bos_token_id": text["bos_token_id"],
            "eos_token_id": [text["eod_token_id"], text["eos_token_id"]],
            "max_new_tokens": 1024,
            "pad_token_id": text["pad_token_id"],
            "transformers_version": config["transformers_version"],
        },
    )
    # the Whisper front end the features are computed with (features.py)
    _dump(
        out / "preprocessor_config.json",
        {
            "chunk_length": features.WINDOW_SAMPLES // SAMPLE_RATE,
            "dither": 0.0,
            "feature_extractor_type": "WhisperFeatureExtractor",
            "feature_size": features.N_MELS,
            "hop_length": features.HOP,
            "n_fft": features.N_FFT,
            "n_samples": features.WINDOW_SAMPLES,
            "nb_max_frames": features.WINDOW_SAMPLES // features.HOP,
            "padding_side": "right",
            "padding_value": 0.0,
            "return_attention_mask": False,
            "sampling_rate": SAMPLE_RATE,
            # Makes vLLM pick the plugin's `arc` video loader by itself.
            "video_processor_type": "ARCHunyuanVideoProcessor",
        },
    )
    save_file(
        random_weights(config, seed), str(out / "model.safetensors"), metadata={"format": "pt"}
    )
    (out / "README.md").write_text(_readme(config, seed, bpe_ranks), encoding="utf-8")
    return out


def summary(config: dict[str, Any]) -> str:
    t, v, a = config["text_config"], config["vision_config"], config["audio_config"]
    tie = "tied head" if t["tie_word_embeddings"] else "separate lm_head"
    return (
        f"text {t['hidden_size']}x{t['num_hidden_layers']} "
        f"(heads {t['num_attention_heads']}/{t['num_key_value_heads']} KV, "
        f"head_dim {t['attention_head_dim']}, vocab {t['vocab_size']}, {tie}), "
        f"vision {v['hidden_size']}x{v['num_hidden_layers']}, "
        f"audio {a['d_model']}x{a['encoder_layers']}, "
        f"<|endoftext|>={t['eod_token_id']} <IMG_CONTEXT>={t['image_token_id']}"
    )


def _readme(config: dict[str, Any], seed: int, bpe_ranks: int) -> str:
    return (
        "# ARC-Hunyuan-Video tiny random-weight checkpoint\n\n"
        "Written by `arc-tiny-checkpoint` (arc-video-serve) with seed "
        f"{seed}. It has the real ARC-Hunyuan-Video-7B architecture, config schema, "
        "tensor names and special-token set at toy sizes, with **random weights**: its "
        "answers are noise. Use it to test loading, serving and plumbing, never quality.\n\n"
        f"- {summary(config)}\n"
        f"- tokenizer: byte-level BPE with {bpe_ranks} ranks trained on a small embedded "
        "English/Chinese corpus, then the model's special tokens in their real order "
        "(ids shifted: read them from `special_token_ids.json` or the tokenizer)\n"
        "- `model.safetensors`: float32, every tensor name of the published checkpoint\n"
    )
