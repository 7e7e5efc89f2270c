"""vLLM plugin for ARC-Hunyuan-Video-7B (entry point `vllm.general_plugins`).

`register()` runs in every vLLM process (API server, engine core, TP workers). It
only records names: the model module is imported lazily by vLLM when needed.
"""

from __future__ import annotations

ARCHITECTURE = "ARCHunyuanVideoForConditionalGeneration"

_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    _registered = True

    from transformers import AutoConfig
    from vllm import ModelRegistry

    from .config import ARCHunyuanVideoConfig

    try:
        AutoConfig.register(ARCHunyuanVideoConfig.model_type, ARCHunyuanVideoConfig)
    except ValueError:
        pass  # already registered in this process
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "vllm_plugin.model:" + ARCHITECTURE)
    from .video_loader import register_video_loader

    register_video_loader()
