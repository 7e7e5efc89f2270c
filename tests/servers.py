"""Start real servers for tests: `arc-serve` (vLLM + plugin) and `arc-gateway`, on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import FakeUpstream, serve

COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "clang++", "x86_64-linux-gnu-gcc")


def environment_without_compilers(folder: Path, tools: tuple[str, ...]) -> dict[str, str]:
    """This environment as a bare machine or image has it: PATH reduced to the venv's bin
    and links to `tools` (in `folder`), no C++ compiler, no TORCH_COMPILE_DISABLE. vLLM 0.32
    compiles its logprobs op with inductor even in eager mode, unless that variable is 1:
    the commands must set it themselves."""
    folder.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} not found")
        (folder / tool).symlink_to(found)
    path = f"{Path(sys.executable).parent}:{folder}"
    assert not [c for c in COMPILERS if shutil.which(c, path=path)], path
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_COMPILE_DISABLE", "CC", "CXX")}
    return {**env, "PATH": path}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(url: str, proc: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited; see {log}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    raise RuntimeError(f"{url} not up in {seconds:g} s; see {log}")


def start_engine(
    checkpoint: Path, port: int, log: Path, extra: list[str] | None = None
) -> subprocess.Popen:
    """`arc-serve CHECKPOINT` as the tests (and the CPU image) run it; waits for /health.

    On CPU, arc-serve's own engine settings apply (vllm_plugin/engine_args.py): eager,
    a KV cache for 4 full-length requests, no warm-up pass."""
    env = dict(os.environ, VLLM_LOGGING_LEVEL="WARNING")
    command = [
        sys.executable, "-m", "vllm_plugin.cli.serve", str(checkpoint),
        "--port", str(port), "--host", "127.0.0.1", "--dtype", "float32",
        "--served-model-name", "arc-tiny",
        *(extra or []),
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=log.open("a"), stderr=subprocess.STDOUT, env=env)
    wait_until(f"http://127.0.0.1:{port}/health", proc, log, 300)
    return proc


def start_gateway(
    upstream: str, port: int, files_dir: Path, log: Path, extra: list[str] | None = None
) -> subprocess.Popen:
    """`arc-gateway` as its image runs it; waits for /health."""
    command = [
        sys.executable, "-m", "server.cli",
        "--port", str(port), "--host", "127.0.0.1",
        "--upstream-url", upstream, "--files-dir", str(files_dir),
        *(extra or []),
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=log.open("a"), stderr=subprocess.STDOUT)
    wait_until(f"http://127.0.0.1:{port}/health", proc, log, 120)
    return proc


def keys_command(database: str, *args: str) -> subprocess.CompletedProcess:
    """`arc-gateway keys ...` as an operator runs it, on the gateway's `database` (a URL,
    or `--files-dir DIR` for the gateway's default SQLite there)."""
    where = ["--database-url", database] if "://" in database else ["--files-dir", database]
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "keys", *args, *where],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def create_key(database: str, name: str, *limits: str) -> str:
    """`arc-gateway keys create`: the secret alone on stdout."""
    done = keys_command(database, "create", "--name", name, *limits)
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert secret.startswith("sk-arc-") and "\n" not in secret
    return secret


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running_gateway(upstream: str, folder: Path, extra: list[str] | None = None) -> Iterator[str]:
    """A real `arc-gateway` in front of `upstream` (its files and log in `folder`) for the
    `with` block: its base URL."""
    port = free_port()
    proc = start_gateway(upstream, port, folder / "files", folder / "gateway.log", extra)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@contextlib.contextmanager
def gateway_on_stand_in(
    handler: type[FakeUpstream], folder: Path, extra: list[str] | None = None
) -> Iterator[str]:
    """A real `arc-gateway` (files and logs in `folder`) in front of a stand-in vLLM whose
    `handler` answers; yields the gateway's base URL and stops both."""
    with serve(handler) as upstream, running_gateway(upstream, folder, extra) as base:
        yield base


def prepare_container(
    path: Path, out: Path, encoding: str = "jpeg-flac", **job: object
) -> tuple[bytes, object]:
    """What a gateway decode worker makes of `path` (the typed job, run in this process
    under generous limits): (the prepared container's bytes, its VideoSummary)."""
    from server.video.jobs import PrepareJob, run_job

    settings = {"max_duration_s": 3600.0, "max_pixels": 3840 * 2160, "timeout_s": 300.0}
    summary = run_job(
        PrepareJob(path=str(path), out=str(out), encoding=encoding, **{**settings, **job})
    )
    return out.read_bytes(), summary
