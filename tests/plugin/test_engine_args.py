"""The CPU engine settings (vllm_plugin/engine_args.py): KV cache sizes, the memory check
and its messages, the overrides. No engine starts here; tests/plugin/test_ask.py, test_serve.py
and test_golden.py start real ones with these settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vllm_plugin import engine_args
from vllm_plugin.engine_args import CpuEngine


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vllm_plugin.tiny_checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")


def test_parse_bytes_follows_vllm() -> None:
    from vllm.utils.argparse_utils import human_readable_int

    for text in ("123456", "512M", "2G", "1.5g", "300m", "4k", "1K"):
        assert engine_args.parse_bytes(text) == human_readable_int(text), text
    with pytest.raises(ValueError, match="not a byte count"):
        engine_args.parse_bytes("lots")
    with pytest.raises(ValueError, match="decimal suffix"):
        engine_args.parse_bytes("1.5G")


def test_kv_bytes_per_token(tiny: Path, tmp_path: Path) -> None:
    # The tiny checkpoint: 2 layers x (K + V) x 2 KV heads x 64 dims.
    assert engine_args.kv_bytes_per_token(tiny, "float32") == 2 * 2 * 2 * 64 * 4
    # vLLM runs a float32 checkpoint in 16 bits under "auto".
    assert engine_args.kv_bytes_per_token(tiny, "auto") == 2 * 2 * 2 * 64 * 2
    # The 7B's shape (ARC_MODEL.md: 32 layers, 8 KV heads of 128) when nothing says otherwise.
    assert engine_args.kv_bytes_per_token(tmp_path, "bfloat16") == 2 * 32 * 8 * 128 * 2
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"text_config": {"num_hidden_layers": 3, "num_key_value_heads": 1, "head_dim": 8}}
        )
    )
    assert engine_args.kv_bytes_per_token(tmp_path, "float32") == 2 * 3 * 1 * 8 * 4


def test_tensor_parallel_workers_share_the_kv_heads(tiny: Path) -> None:
    one = engine_args.kv_bytes_per_token(tiny, "float32")
    assert engine_args.kv_bytes_per_token(tiny, "float32", tp=2) == one // 2  # 2 KV heads
    assert engine_args.kv_bytes_per_token(tiny, "float32", tp=4) == one // 2  # one each


def test_kv_cache_bytes_for_whole_blocks(tiny: Path) -> None:
    per_token = engine_args.kv_bytes_per_token(tiny, "float32")
    # 20480 tokens = 160 blocks of 128, plus vLLM's null block; per request.
    assert engine_args.kv_cache_bytes_for(tiny, 20480, 1, "float32") == 161 * 128 * per_token
    assert engine_args.kv_cache_bytes_for(tiny, 1000, 4, "float32") == 33 * 128 * per_token


def test_flag_then_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(engine_args.KV_CACHE_ENV, raising=False)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    assert engine_args.kv_cache_bytes(None, 1234) == 1234
    monkeypatch.setenv(engine_args.KV_CACHE_ENV, "1G")
    assert engine_args.kv_cache_bytes(None, 1234) == 2**30
    assert engine_args.kv_cache_bytes("256M", 1234) == 256 * 2**20
    # vLLM's legacy variable wins over its own flag, so it does here too.
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    assert engine_args.kv_cache_bytes("256M", 1234) == 3 * 2**30


def test_too_small_a_cache_says_what_to_change(tiny: Path) -> None:
    engine = CpuEngine(tiny, 2**20, 20480, "float32", "arc-test", ", or lower --max-model-len")
    with pytest.raises(SystemExit) as refusal:
        engine.check_memory()
    message = str(refusal.value)
    assert message.startswith("arc-test: a KV cache of 1 MiB holds 512 tokens")
    need = engine_args.kv_cache_bytes_for(tiny, 20480, 1, "float32")
    assert f"--kv-cache-memory-bytes or ${engine_args.KV_CACHE_ENV} to at least {need}" in message
    assert "lower --max-model-len" in message


def test_memory_short_says_what_to_change(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_args, "available_memory", lambda: (3 * 2**30, 9 * 2**30))
    weights = engine_args.weights_bytes(tiny, "float32")
    # In one process: 1 GiB of runtime next to the cache and the weights.
    CpuEngine(tiny, 3 * 2**30 - weights - 2**30, 20480, "float32").check_memory()
    with pytest.raises(SystemExit) as refusal:
        CpuEngine(tiny, 2**30, 20480, "float32", "arc-test", processes=2).check_memory()
    message = str(refusal.value)
    # A server: API server, engine core.
    assert "the engine needs about 3.01 GiB (KV cache 1.00 GiB" in message
    assert "runtime and processor cache 2.00 GiB" in message
    assert "this NUMA node has 3.00 GiB of 9.00 GiB available" in message
    assert "Lower --kv-cache-memory-bytes or $ARC_KV_CACHE_MEMORY_BYTES" in message
    with pytest.raises(SystemExit) as refusal:
        CpuEngine(tiny, 2**28, 20480, "float32", workers=2, processes=4).check_memory()
    # 256 MiB per worker; the API server, the engine core and two workers.
    assert "KV cache 512 MiB, weights 12 MiB, runtime and processor cache 4.00 GiB" in str(
        refusal.value
    )


def test_available_memory_is_vllms_measure() -> None:
    from vllm.utils.cpu_resource_utils import get_allowed_cpu_list, get_memory_node_info

    free, total = engine_args.available_memory()
    theirs = get_memory_node_info(get_allowed_cpu_list()[0].numa_node)
    assert total == theirs.total_memory
    assert abs(free - theirs.available_memory) < 512 * 2**20  # other jobs allocate meanwhile


def test_cpu_build_as_vllm_decides() -> None:
    from vllm.platforms import current_platform

    assert engine_args.cpu_build() == current_platform.is_cpu()


def test_cpu_environment_keeps_what_the_caller_set() -> None:
    env: dict[str, str] = {}
    engine_args.set_cpu_environment(env)
    assert env == {"TORCH_COMPILE_DISABLE": "1"}
    env = {"TORCH_COMPILE_DISABLE": "0"}
    engine_args.set_cpu_environment(env)
    assert env == {"TORCH_COMPILE_DISABLE": "0"}


def test_worker_threads_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_args.os, "cpu_count", lambda: 16)
    env: dict[str, str] = {}
    engine_args.bind_worker_threads(1, env)
    assert env == {}
    engine_args.bind_worker_threads(2, env)
    assert env == {"VLLM_CPU_OMP_THREADS_BIND": "0-7|8-15"}
    env = {"VLLM_CPU_OMP_THREADS_BIND": "0|1"}
    engine_args.bind_worker_threads(2, env)
    assert env == {"VLLM_CPU_OMP_THREADS_BIND": "0|1"}
