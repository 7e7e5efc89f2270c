"""Decode worker faults stay with their job: a worker that dies fails only the job it held
(after one retry in a fresh worker), the other jobs in flight complete. Faults are real
process deaths (SIGKILL), injected by a job wrapper or from outside."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from helpers import upload_video
from media_factory import make_clip, sized_clip
from servers import free_port, prepare_container, start_gateway, stop

from server.config import Settings
from server.errors import APIError
from server.metrics import Metrics
from server.video.jobs import PrepareJob, VideoSummary, run_job
from server.video.workers import DecodeWorkers


def crashing_job(job: PrepareJob) -> VideoSummary:
    """run_job, but the worker dies on a "poison" video, and on a "once" video the
    first time only (a crash that was not the video's fault)."""
    name = Path(job.path).name
    if "poison" in name:
        time.sleep(0.5)  # the other jobs are under way by now
        os.kill(os.getpid(), signal.SIGKILL)
    if "once" in name:
        marker = Path(job.path + ".crashed")
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
    return run_job(job)


def _job(workers: DecodeWorkers, path: Path) -> PrepareJob:
    return workers.job(path, path.with_suffix(".arcz"))


def test_a_dead_worker_fails_only_its_own_job(tmp_path: Path) -> None:
    good = make_clip(tmp_path / "good.mp4", seconds=20, size="320x240")
    once = make_clip(tmp_path / "once.mp4", seconds=2)
    poison = make_clip(tmp_path / "poison.mp4", seconds=2)

    async def scenario() -> list:
        settings = Settings(decode_workers=2, files_dir=str(tmp_path / "files"))
        workers = DecodeWorkers(settings, Metrics(), run=crashing_job)
        await workers.warm_up()
        try:
            results = await asyncio.gather(
                workers.run(_job(workers, good)),
                workers.run(_job(workers, poison)),
                workers.run(_job(workers, once)),
                return_exceptions=True,
            )
            alive = [w.process.is_alive() for w in workers.workers]
            return [*results, alive]
        finally:
            workers.shutdown()

    good_result, poison_result, once_result, alive = asyncio.run(scenario())
    assert not isinstance(good_result, BaseException), good_result
    assert good_result.frames == 20 and good.with_suffix(".arcz").stat().st_size > 0
    assert isinstance(poison_result, APIError), poison_result
    assert poison_result.status_code == 422 and poison_result.code == "decoder_crashed"
    # Retried once in a fresh worker, where it did not crash.
    assert not isinstance(once_result, BaseException), once_result
    assert alive == [True, True]  # the dead workers were replaced, one for one


def _workers(gateway_pid: int) -> list[int]:
    """The decode workers: the gateway's children started by multiprocessing's spawn."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == gateway_pid and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


def _queue_depth(base: str) -> float:
    for line in httpx.get(base + "/metrics", timeout=10).text.splitlines():
        if line.startswith("arc_gateway_queue_depth "):
            return float(line.split()[1])
    return 0.0


def test_killing_a_busy_worker_loses_no_upload(media_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    proc = start_gateway(
        f"http://127.0.0.1:{free_port()}",  # no engine needed for uploads
        port,
        tmp_path / "files",
        tmp_path / "gateway.log",
        ["--decode-workers", "3"],
    )
    base = f"http://127.0.0.1:{port}"
    video = media_dir / "syn_200s.mp4"

    def upload(_: int) -> httpx.Response:
        return upload_video(base, video, timeout=300)

    try:
        assert len(_workers(proc.pid)) == 3
        with ThreadPoolExecutor(3) as pool:
            pending = [pool.submit(upload, i) for i in range(3)]
            deadline = time.monotonic() + 60
            while _queue_depth(base) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # each worker is decoding
            os.kill(_workers(proc.pid)[0], signal.SIGKILL)
            replies = [p.result(timeout=300) for p in pending]
        assert [r.status_code for r in replies] == [200, 200, 200], [r.text for r in replies]
        assert len({r.json()["id"] for r in replies}) == 3
        assert len(_workers(proc.pid)) == 3
        log = (tmp_path / "gateway.log").read_text()
        assert log.count('"event": "decode_worker_died"') == 1
    finally:
        stop(proc)


@pytest.mark.parametrize("size", ["1x1", "2x2", "64x16", "16384x16", "16x4096"])
def test_tiny_and_extreme_frames_are_prepared(size: str, tmp_path: Path) -> None:
    """Under 20 px high the overlay's font size is 0: the frames go unstamped (noted),
    never a 500."""
    path = sized_clip(tmp_path / f"{size}.mp4", size)
    height = int(size.split("x")[1])
    container, summary = prepare_container(path, tmp_path / "out.arcz")
    assert summary.frames == 2 and container
    assert bool(summary.notes) == (height < 20)


def failing_job(job: PrepareJob) -> VideoSummary:
    """An error no handler knows, raised in the worker."""
    raise KeyError("something no one mapped")


def test_an_unmapped_error_in_a_worker_is_a_4xx(tmp_path: Path) -> None:
    video = make_clip(tmp_path / "v.mp4", seconds=1)

    async def scenario() -> BaseException | None:
        settings = Settings(decode_workers=1, files_dir=str(tmp_path / "files"))
        workers = DecodeWorkers(settings, Metrics(), run=failing_job)
        await workers.warm_up()
        try:
            await workers.run(_job(workers, video))
        except APIError as e:
            return e
        finally:
            workers.shutdown()
        return None

    error = asyncio.run(scenario())
    assert isinstance(error, APIError)
    assert error.status_code == 422 and error.code == "video_unprocessable"


def test_an_unexpected_error_is_a_500_that_keeps_the_connection(tmp_path: Path) -> None:
    """The catch-all answer leaves a keep-alive connection open (pooled clients reuse it)."""
    import http.client
    import threading

    import uvicorn

    from server.app import create_app

    settings = Settings(
        files_dir=str(tmp_path / "files"), decode_workers=1, upstream_url="http://127.0.0.1:9"
    )
    app = create_app(settings)

    def broken() -> list:
        raise RuntimeError("injected fault")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.2)
        app.state.gateway.store.list = broken  # GET /v1/files now fails unexpectedly
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/v1/files")
        reply = connection.getresponse()
        body = reply.read()
        assert reply.status == 500 and b'"internal"' in body
        assert reply.getheader("connection") != "close"
        sock = connection.sock
        connection.request("GET", "/health")
        again = connection.getresponse()
        assert again.status == 200 and again.read()
        assert connection.sock is sock  # the same connection served both
        connection.close()
    finally:
        server.should_exit = True
        thread.join(60)
