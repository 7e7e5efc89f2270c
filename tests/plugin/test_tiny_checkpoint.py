"""`arc-tiny-checkpoint`: files, schema, tokenizer and tensors (no engine).

The checkpoint must look like the published one (docs/model.md: #configuration,
#tokenizer-and-special-tokens, #checkpoint-tensors) while covering tiny-a's blind spots
(docs/model.md#tiny-checkpoints): 2 KV heads, a tied head, other special ids.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_weights import build_model, meta_weights, spec_tensor_shapes

from vllm_plugin.cli.tiny_checkpoint import main
from vllm_plugin.tiny_checkpoint import SPECIAL_TOKENS, write_tiny_checkpoint

FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "special_token_ids.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "README.md",
}
# The golden tiny-a checkpoint's ids (docs/model.md#tiny-checkpoints) and the 7B's
# (docs/model.md#tokenizer-and-special-tokens): ours must differ.
TINY_A_IDS = {"<|endoftext|>": 981, "<img>": 986, "<IMG_CONTEXT>": 992, "<sep>": 1024}
REAL_IDS = {"<|endoftext|>": 127957, "<img>": 127962, "<IMG_CONTEXT>": 127968, "<sep>": 128000}
CONFIG_KEYS = {
    "image_token_id": "<IMG_CONTEXT>",
    "im_start_id": "<img>",
    "im_end_id": "</img>",
    "im_newline_id": "<newline>",
    "eod_token_id": "<|endoftext|>",
    "bos_token_id": "<|bos|>",
    "eos_token_id": "<|eos|>",
    "pad_token_id": "<|pad|>",
}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "seed0")


@pytest.fixture(scope="module")
def config(ckpt: Path) -> dict:
    return json.loads((ckpt / "config.json").read_text())


@pytest.fixture(scope="module")
def tokenizer(ckpt: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ckpt))


def test_file_set(ckpt: Path) -> None:
    assert {p.name for p in ckpt.iterdir()} == FILES


def test_config_schema_and_sizes(config: dict) -> None:
    from vllm_plugin.config import ARCHunyuanVideoConfig

    assert config["architectures"] == ["ARCHunyuanVideoForConditionalGeneration"]
    assert config["model_type"] == "arc_hunyuan_video"
    t, v, a = config["text_config"], config["vision_config"], config["audio_config"]
    assert (t["model_type"], v["model_type"], a["model_type"]) == (
        "arc_hunyuan_video_text",
        "arc_hunyuan_video_vision",
        "arc_hunyuan_video_audio",
    )
    # Tied at both levels, and no head tensor (checked below).
    assert config["tie_word_embeddings"] is True and t["tie_word_embeddings"] is True
    assert (t["num_attention_heads"], t["num_key_value_heads"], t["attention_head_dim"]) == (
        4,
        2,
        64,
    )
    assert t["hidden_size"] == 256 and t["intermediate_size"] % 2 == 0
    # Structural constants of docs/model.md#tiny-checkpoints.
    assert (v["force_image_size"], v["patch_size"], v["anyres_pooling_size"]) == (640, 16, 2)
    assert (v["max_vit_seq_len"], v["max_image_size"]) == (1600, 2048)
    assert (a["num_mel_bins"], a["max_source_positions"]) == (128, 1500)
    assert config["max_num_frame"] == 150
    assert t["xdrope_section"] == [0.25] * 4 and t["rope_theta"] == 10000.0
    assert t["rope_scaling"]["alpha"] == 1000.0 and t["rope_scaling"]["type"] == "dynamic"
    assert t["rms_norm_eps"] == v["rms_norm_eps"] == 1e-5
    assert t["vocab_size"] % 64 == 0

    parsed = ARCHunyuanVideoConfig(**config)
    assert parsed.text_config.tie_word_embeddings is True
    assert parsed.text_config.mrope_section == [8, 8, 8, 8]
    assert parsed.vision_config.tokens_per_frame == 112


def test_schema_matches_tiny_a(ckpt: Path, config: dict, shared_dir: Path) -> None:
    """Same keys as the golden checkpoint's files; the same special tokens in order."""
    golden = shared_dir / "golden" / "model" / "tiny-a" / "checkpoint"
    if not golden.is_dir():
        pytest.skip("tiny-a not found")

    def read(root: Path, name: str) -> dict:
        return json.loads((root / name).read_text())

    theirs = read(golden, "config.json")
    assert set(config) == set(theirs)
    for sub in ("text_config", "vision_config", "audio_config"):
        assert set(config[sub]) == set(theirs[sub]), sub
    assert config["text_config"]["rope_scaling"] == theirs["text_config"]["rope_scaling"]
    for name in (
        "tokenizer_config.json",
        "special_token_ids.json",
        "generation_config.json",
        "special_tokens_map.json",
    ):
        assert set(read(ckpt, name)) == set(read(golden, name)), name
    assert read(ckpt, "special_tokens_map.json") == read(golden, "special_tokens_map.json")
    ours = read(ckpt, "preprocessor_config.json")
    assert ours.pop("video_processor_type") == "ARCHunyuanVideoProcessor"
    assert ours == read(golden, "preprocessor_config.json")
    golden_tokens = [e["token"] for e in read(golden, "special_token_ids.json")["special_tokens"]]
    assert list(SPECIAL_TOKENS) == golden_tokens
    golden_tok = read(golden, "tokenizer.json")
    our_tok = read(ckpt, "tokenizer.json")
    for part in ("normalizer", "pre_tokenizer", "decoder", "post_processor"):
        assert our_tok[part] == golden_tok[part], part
    assert our_tok["model"]["merges"] != golden_tok["model"]["merges"]  # not a copy


def test_special_ids_come_from_the_tokenizer(ckpt: Path, config: dict, tokenizer) -> None:
    text = config["text_config"]
    for key, token in CONFIG_KEYS.items():
        assert text[key] == tokenizer.convert_tokens_to_ids(token), key
    for token, tiny_a in TINY_A_IDS.items():
        ours = tokenizer.convert_tokens_to_ids(token)
        assert ours not in (tiny_a, REAL_IDS[token]), token
    # The docs/model.md#tokenizer-and-special-tokens set in its order, right after the BPE ranks,
    # then padding rows.
    first = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[0])
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(
        range(first, first + len(SPECIAL_TOKENS))
    )
    assert len(SPECIAL_TOKENS) == 217 and SPECIAL_TOKENS[-1] == "<|extra_204|>"
    assert len(tokenizer) == first + 217 < text["vocab_size"]
    listed = json.loads((ckpt / "special_token_ids.json").read_text())
    assert listed["bpe_ranks"] == first and listed["vocab_size"] == text["vocab_size"]
    for entry in listed["special_tokens"]:
        assert tokenizer.convert_tokens_to_ids(entry["token"]) == entry["tiny_id"]
        assert entry["tiny_id"] - entry["real_id"] == listed["id_offset_tiny_minus_real"]
    assert {e["token"]: e["real_id"] for e in listed["special_tokens"]}["<sep>"] == 128000

    generation = json.loads((ckpt / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [text["eod_token_id"], text["eos_token_id"]]
    assert generation["max_new_tokens"] == 1024
    preprocessor = json.loads((ckpt / "preprocessor_config.json").read_text())
    assert preprocessor["feature_size"] == 128 and preprocessor["nb_max_frames"] == 3000
    assert preprocessor["video_processor_type"] == "ARCHunyuanVideoProcessor"


def test_tokenizer_behaviour(tokenizer) -> None:
    assert tokenizer.bos_token == "<|startoftext|>" and tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.pad_token == "<|pad|>"
    ids = tokenizer.encode("2024", add_special_tokens=False)
    assert len(ids) == 4  # single-digit numbers (docs/model.md#tokenizer-and-special-tokens)
    assert tokenizer.decode(ids) == "2024"
    for token in ("<sep>", "<vid>", "</vid>", "<|startoftext|>", "<IMG_CONTEXT>"):
        assert tokenizer.encode(token, add_special_tokens=False) == [
            tokenizer.convert_tokens_to_ids(token)
        ]
    # No automatic BOS/EOS; special tokens are found inside text.
    text = "<|startoftext|><img><IMG_CONTEXT></img>\n视频中有什么？\nDescribe the video.<sep>"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.encode(text) == ids
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|startoftext|>")
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<sep>")
    assert tokenizer.decode(ids) == text
    # NFC: a decomposed "é" encodes like the composed one.
    assert tokenizer.encode("e\u0301", add_special_tokens=False) == tokenizer.encode(
        "\u00e9", add_special_tokens=False
    )


def test_tensors_match_the_spec_and_the_model(ckpt: Path, config: dict) -> None:
    from safetensors import safe_open

    from vllm_plugin.model import ARCWeightLoader

    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        names = f.keys()  # safe_open is not iterable itself
        shapes = {n: tuple(f.get_slice(n).get_shape()) for n in names}
        dtypes = {n: f.get_slice(n).get_dtype() for n in names}
    assert shapes == spec_tensor_shapes(config)
    assert "language_model.lm_head.weight" not in shapes
    assert "speech_encoder.layers.0.self_attn.k_proj.bias" not in shapes
    assert shapes["vision_model.vit.embeddings.position_ids"] == (1, 16385)
    assert dtypes.pop("vision_model.vit.embeddings.position_ids") == "I64"
    assert set(dtypes.values()) == {"F32"}
    # Every tensor has a place in the model the plugin builds from this config.
    model = build_model(ckpt)
    loaded = ARCWeightLoader(model).load(iter(meta_weights(shapes).items()))
    assert {n for n, _ in model.named_parameters()} <= loaded


def test_weights_look_sane(ckpt: Path) -> None:
    from safetensors.torch import load_file

    w = load_file(str(ckpt / "model.safetensors"))
    norm = w["language_model.model.layers.0.input_layernorm.weight"]
    assert 0.7 < float(norm.mean()) < 1.3 and float(norm.std()) > 0
    assert 0.8 < float(w["vision_model.vit.layers.0.input_layernorm.weight"].mean()) < 1.2
    assert float(w["language_model.model.embed_tokens.weight"].std()) > 0.05
    assert float(w["vision_model.vit.layers.0.mlp.dense_h_to_4h.weight"].std()) < 0.05
    assert torch.equal(
        w["vision_model.vit.embeddings.position_ids"], torch.arange(16385).view(1, -1)
    )
    assert all(torch.isfinite(t).all() for t in w.values())


def test_same_seed_same_bytes_other_seed_other_weights(ckpt: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    again = write_tiny_checkpoint(tmp_path / "again", seed=0)
    for name in FILES:
        assert (again / name).read_bytes() == (ckpt / name).read_bytes(), name
    other = write_tiny_checkpoint(tmp_path / "other", seed=1)
    assert (other / "tokenizer.json").read_bytes() == (ckpt / "tokenizer.json").read_bytes()
    assert (other / "config.json").read_bytes() == (ckpt / "config.json").read_bytes()
    a, b = load_file(str(ckpt / "model.safetensors")), load_file(str(other / "model.safetensors"))
    assert a.keys() == b.keys()
    assert not torch.equal(
        a["language_model.model.embed_tokens.weight"], b["language_model.model.embed_tokens.weight"]
    )


def test_untied_variant_has_a_head(tmp_path: Path) -> None:
    from safetensors import safe_open

    out = write_tiny_checkpoint(tmp_path / "untied", tie_word_embeddings=False)
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert config["text_config"]["tie_word_embeddings"] is False
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert "language_model.lm_head.weight" in set(f.keys())


def test_cli_writes_and_prints(tmp_path: Path) -> None:
    """The console command, in a fresh process and an unrelated directory."""
    exe = Path(sys.executable).with_name("arc-tiny-checkpoint")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "vllm_plugin.tiny_checkpoint"]
    run = subprocess.run(
        [*cmd, str(tmp_path / "cli"), "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert str(tmp_path / "cli") in run.stdout and "vocab" in run.stdout
    assert {p.name for p in (tmp_path / "cli").iterdir()} == FILES


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "random-weight" in out and "--seed" in out
