"""Encoder parity on tiny-a: the ViT tower, perceive, Whisper encoder and mlp2 outputs
against the authors' float32 reference (bound 1e-4), built with vLLM's layers outside
an engine (single-process distributed state)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def tiny_a_model(golden_dir: Path):
    ckpt = golden_dir / "model" / "tiny-a" / "checkpoint"
    if not ckpt.is_dir():
        pytest.skip("tiny-a not found")
    from safetensors.torch import load_file
    from vllm.config import set_current_vllm_config
    from vllm.distributed import (
        ensure_model_parallel_initialized,
        init_distributed_environment,
    )
    from vllm.engine.arg_utils import EngineArgs

    import vllm_plugin

    vllm_plugin.register()
    config = EngineArgs(
        model=str(ckpt),
        dtype="float32",
        max_model_len=4096,
        limit_mm_per_prompt={"video": 1},
    ).create_engine_config()
    with set_current_vllm_config(config):
        init_distributed_environment(
            world_size=1,
            rank=0,
            local_rank=0,
            distributed_init_method="tcp://127.0.0.1:29517",
            backend="gloo",
        )
        ensure_model_parallel_initialized(1, 1)
        from vllm_plugin.model import ARCHunyuanVideoForConditionalGeneration

        torch.set_default_dtype(torch.float32)
        model = ARCHunyuanVideoForConditionalGeneration(vllm_config=config)
        model.load_weights(load_file(ckpt / "model.safetensors").items())
        from vllm.model_executor.model_loader.utils import process_weights_after_loading

        # As the engine's loader does: lets the CPU linear kernels prepare weights.
        process_weights_after_loading(model, config.model_config, torch.device("cpu"))
        model.eval()
        yield model


@pytest.mark.parametrize("case", ["syn_short", "w33698kgs05"])
def test_encoder_outputs_match_reference(tiny_a_model, golden_dir: Path, case: str) -> None:
    from vllm_plugin.cli.golden import load_pixel_values

    inputs = golden_dir / "model" / "inputs" / case
    ref = golden_dir / "model" / "tiny-a" / "cases" / case
    meta = json.loads((inputs / "inputs.json").read_text())
    pixels = load_pixel_values(inputs, meta["num_frames"]).float()
    features = torch.from_numpy(np.load(inputs / "audio_features.npz")["audio_features"])
    model = tiny_a_model
    with torch.no_grad():
        tower0 = model.vision_model.vit(pixels[:1])[0]
        vit = model.vision_model(pixels)
        speech = model.speech_encoder([f for f in features])
        audio = model.mlp2(speech.reshape(-1, speech.shape[-1]))

    def close(ours: torch.Tensor, name: str) -> float:
        expected = torch.from_numpy(np.load(ref / name)).reshape(ours.shape)
        return float((ours - expected).abs().max())

    assert close(tower0, "vit_tower_out_frame0.npy") <= 1e-4
    assert close(vit, "vit_embeds.npy") <= 1e-4
    assert close(speech[0], "speech_encoder_out_window0.npy") <= 1e-4
    assert close(audio.unsqueeze(0), "audio_embeds.npy") <= 1e-4
