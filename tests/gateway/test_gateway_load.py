"""Bounded load and an engine crash, on loopback: 50 concurrent uploads + questions through the
gateway with no 5xx (its peak memory reported), then the vLLM process group killed mid-run
(503s, no hangs), then vLLM back on the same port and the stored files answering again.

It starts its own engine and gateway (it kills the engine, so it cannot share the session one).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from helpers import video_question
from servers import free_port, start_gateway, stop, wait_until

pytestmark = pytest.mark.engine

CLIENTS = 50
VIDEO = "q35134y59x8.mp4"  # a real phone clip, 0.85 MB, 30 frames


class Engine:
    """`arc-serve` in its own process group, so a kill takes its engine-core child too."""

    def __init__(self, checkpoint: Path, port: int, log: Path):
        self.checkpoint, self.port, self.log = checkpoint, port, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            sys.executable, "-m", "vllm_plugin.cli.serve", str(self.checkpoint),
            "--port", str(self.port), "--host", "127.0.0.1",
            "--dtype", "float32", "--served-model-name", "arc-tiny",
            "--kv-cache-memory-bytes", str(1 << 30),
        ]  # fmt: skip
        env = dict(os.environ, VLLM_LOGGING_LEVEL="WARNING")
        self.proc = subprocess.Popen(
            command,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        wait_until(f"http://127.0.0.1:{self.port}/health", self.proc, self.log, 300)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Engine, Path]]:
    from vllm_plugin.tiny_checkpoint import write_tiny_checkpoint

    folder = tmp_path_factory.mktemp("load")
    engine = Engine(write_tiny_checkpoint(folder / "ckpt"), free_port(), folder / "engine.log")
    engine.start()
    port = free_port()
    gateway = start_gateway(
        f"http://127.0.0.1:{engine.port}",
        port,
        folder / "files",
        folder / "gateway.log",
        ["--decode-workers", "2", "--max-queue", "64", "--max-inflight", "64",
         "--upstream-timeout-s", "120"],
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}", engine, folder
    finally:
        stop(gateway)
        engine.stop()


def _peak_memory_kib(pid: int) -> int:
    """VmHWM of a process and all its descendants (the decode workers, their ffmpeg)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def _gateway_pid(port: int) -> int:
    out = subprocess.run(
        ["pgrep", "-f", f"server.cli --port {port} "], capture_output=True, text=True, check=False
    ).stdout.split()
    return int(out[0])


def _ask(base: str, file_id: str, max_tokens: int = 2) -> httpx.Response:
    body = {"messages": video_question(file_id, "What happens?"), "max_tokens": max_tokens}
    return httpx.post(base + "/v1/chat/completions", json=body, timeout=180)


def test_fifty_concurrent_uploads_then_engine_crash_and_return(
    stack: tuple[str, Engine, Path], media_dir: Path
) -> None:
    base, engine, folder = stack
    video = (media_dir / VIDEO).read_bytes()

    def client(_: int) -> tuple[int, int, str | None]:
        uploaded = httpx.post(
            base + "/v1/files",
            files={"file": (VIDEO, video, "video/mp4")},
            data={"purpose": "user_data"},
            timeout=300,
        )
        if uploaded.status_code != 200:
            return uploaded.status_code, 0, None
        file_id = uploaded.json()["id"]
        return 200, _ask(base, file_id).status_code, file_id

    t0 = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(client, range(CLIENTS)))
    load_s = time.monotonic() - t0
    uploads = [r[0] for r in results]
    answers = [r[1] for r in results]
    assert uploads == [200] * CLIENTS, uploads
    assert answers == [200] * CLIENTS, answers
    peak_mib = _peak_memory_kib(_gateway_pid(int(base.rsplit(":", 1)[1]))) / 1024
    report = {
        "clients": CLIENTS,
        "video": VIDEO,
        "seconds": round(load_s, 1),
        "gateway_peak_memory_mib": round(peak_mib),
    }
    (folder / "load_report.json").write_text(json.dumps(report, indent=2))
    print(f"\n[load] {json.dumps(report)} ({folder / 'load_report.json'})")
    assert peak_mib < 4096  # generous: only a leak would cross it

    # The engine dies while questions are in flight.
    file_ids = [r[2] for r in results]
    with ThreadPoolExecutor(8) as pool:
        pending = [pool.submit(_ask, base, file_ids[i], 64) for i in range(8)]
        time.sleep(1.0)
        engine.kill()
        t_kill = time.monotonic()
        during = [f.result(timeout=120) for f in pending]
    assert time.monotonic() - t_kill < 60  # nobody hung
    # Finished before the kill (200), or cut off with it: a dropped stream (502) or refused (503).
    for reply in during:
        assert reply.status_code in (200, 502, 503), (reply.status_code, reply.text)

    t0 = time.monotonic()
    down = _ask(base, file_ids[0])
    assert down.status_code == 503, down.text
    assert down.json()["error"]["code"] == "upstream_unavailable"
    assert down.headers["Retry-After"]
    assert time.monotonic() - t0 < 5
    assert httpx.get(base + "/ready", timeout=10).status_code == 503
    assert httpx.get(base + "/health", timeout=10).status_code == 200

    # vLLM back on the same port: the stored files answer again, no re-upload.
    engine.start()
    deadline = time.monotonic() + 60
    while httpx.get(base + "/ready", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the gateway did not see vLLM come back"
        time.sleep(1)
    again = _ask(base, file_ids[-1])
    assert again.status_code == 200, again.text
    assert again.json()["usage"]["video"]["frames"] == 30
