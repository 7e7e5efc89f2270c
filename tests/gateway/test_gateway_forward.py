"""`--forward-mode shared`: the gateway writes the raw prepared container into a folder the
engine reads and sends its file:// URL. End to end against the real `arc-serve` (same
log-probs as the container mode and as the original file sent straight to the engine),
the file's life (gone after the answer, an upstream error, a client disconnect) against a
recording upstream, and the settings (start-up check, decode workers from the CPUs)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import FakeUpstream, data_url, serve, upload_video, uploaded, video_question
from logprobs import distance, first_step
from servers import free_port, start_gateway, stop

from arc_media import prepared
from server import config
from server.config import Settings, load_settings

CLIPS = ["w33698kgs05.mp4", "c3522vbgwaw.mp4"]
QUESTION = "What is happening?"


def chat_body(url: str, **extra: Any) -> dict[str, Any]:
    content = [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": QUESTION}]
    return {
        "model": "arc-tiny",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 5,
        **extra,
    }


def wait_empty(folder: Path, seconds: float = 10) -> list[str]:
    deadline = time.time() + seconds
    while True:
        left = sorted(p.name for p in folder.iterdir())
        if not left or time.time() > deadline:
            return left
        time.sleep(0.1)


def log_lines(log: Path, request_id: str) -> list[dict]:
    deadline = time.time() + 10
    while True:
        lines = [
            json.loads(line)
            for line in log.read_text().splitlines()
            if line.startswith("{") and f'"request_id": "{request_id}"' in line
        ]
        if lines or time.time() > deadline:
            return lines
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------
# end to end, real engine


@pytest.fixture(scope="module")
def gateways(
    engine: tuple[str, Path], forward_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A shared-mode and a container-mode gateway in front of the session engine."""
    folder = tmp_path_factory.mktemp("forward-gateways")
    forward = forward_root / "e2e"
    started = {}
    try:
        for mode in ("shared", "container"):
            port = free_port()
            extra = ["--forward-mode", mode, "--decode-workers", "1"]
            if mode == "shared":
                extra += ["--forward-dir", str(forward)]
            log = folder / f"{mode}.log"
            proc = start_gateway(engine[0], port, folder / f"files-{mode}", log, extra)
            started[mode] = (f"http://127.0.0.1:{port}", proc, log)
        yield {"forward": forward, **{mode: value for mode, value in started.items()}}
    finally:
        for _, proc, _ in started.values():
            stop(proc)


@pytest.mark.engine
@pytest.mark.parametrize("name", CLIPS)
def test_shared_mode_gives_the_logprobs_of_the_file_and_of_the_container_mode(
    gateways: dict[str, Any], engine: tuple[str, Path], media_dir: Path, name: str
) -> None:
    path = media_dir / name
    shared, _, shared_log = gateways["shared"]
    container, _, _ = gateways["container"]
    with httpx.Client(timeout=300) as client:
        reply = client.post(
            shared + "/v1/chat/completions",
            json=chat_body(data_url(path)),
            headers={"X-Request-Id": f"fwd-{name}"},
        )
        via_shared = first_step(reply)
        timing = reply.headers["server-timing"]
        via_container = first_step(
            client.post(container + "/v1/chat/completions", json=chat_body(data_url(path)))
        )
        direct = first_step(
            client.post(engine[0] + "/v1/chat/completions", json=chat_body(data_url(path)))
        )
    print(
        f"{name}: shared vs direct {distance(via_shared, direct):.2e}, "
        f"container vs direct {distance(via_container, direct):.2e}"
    )
    # The same frames and samples as the engine's own decode: the suite's tolerance for the
    # same input twice (the prefix cache reorders float32 sums).
    assert distance(via_shared, direct) < 1e-4
    # JPEG q97/FLAC moves the inputs by under 1/255 and 1e-4: the same top tokens, close.
    assert set(via_container) == set(via_shared)
    assert distance(via_container, via_shared) < 1e-2
    assert {"receive", "queue", "decode", "encode"} <= {
        item.split(";")[0].strip() for item in timing.split(",")
    }
    assert not wait_empty(gateways["forward"])
    (line,) = log_lines(shared_log, f"fwd-{name}")
    assert line["forward_mode"] == "shared" and line["encode_s"] >= 0 and line["decode_s"] > 0


@pytest.mark.engine
def test_shared_mode_stored_file_streamed(gateways: dict[str, Any], media_dir: Path) -> None:
    """A stored file keeps the raw form (counted by the store) and is forwarded by a hard
    link, removed after each (streamed) answer."""
    shared, _, shared_log = gateways["shared"]
    path = media_dir / "w33698kgs05.mp4"
    with httpx.Client(base_url=shared, timeout=300) as client, path.open("rb") as handle:
        upload = client.post(
            "/v1/files",
            files={"file": (path.name, handle, "video/mp4")},
            data={"purpose": "user_data"},
        )
        assert upload.status_code == 200, upload.text
        file_id = upload.json()["id"]
        files_dir = shared_log.parent / "files-shared"
        stored = prepared.decode((files_dir / file_id / "prepared-full.arcz").read_bytes())
        assert stored.frames.shape[0] == upload.json()["video"]["frames"]
        with zipfile.ZipFile(files_dir / file_id / "prepared-full.arcz") as archive:
            assert json.loads(archive.read("arc-prepared.json"))["encoding"] == "raw"
        for i in range(2):
            body = {**chat_body(file_id), "stream": True}
            with client.stream(
                "POST", "/v1/chat/completions", json=body, headers={"X-Request-Id": f"st-{i}"}
            ) as reply:
                assert reply.status_code == 200
                text = reply.read().decode()
            assert "data: [DONE]" in text
            assert not wait_empty(gateways["forward"])
            (line,) = log_lines(shared_log, f"st-{i}")
            assert line["forward_mode"] == "shared" and line["forward_copy"] == "link"
            assert line["prepared_cache"] == "hit" and line["engine_input_s"] > 0
        client.delete(f"/v1/files/{file_id}")


@pytest.fixture
def full_forward_folder(forward_root: Path) -> Iterator[Path]:
    """A forward folder with no room (a 64 kB tmpfs) inside the engine's allowed folder."""
    folder = forward_root / f"full-{os.getpid()}"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)
        folder.rmdir()


@pytest.mark.engine
def test_a_full_forward_folder_sends_the_video_inline(
    engine: tuple[str, Path],
    full_forward_folder: Path,
    media_dir: Path,
    tmp_path: Path,
) -> None:
    """Shared mode with no room to forward (the compose tmpfs under load): the video goes
    inline as a data: URL, the answer is the same; never a failed request."""
    path = media_dir / "w33698kgs05.mp4"
    port = free_port()
    log = tmp_path / "gateway.log"
    extra = ["--forward-mode", "shared", "--forward-dir", str(full_forward_folder)]
    proc = start_gateway(engine[0], port, tmp_path / "files", log, extra)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=300) as client:
            direct = first_step(
                client.post(engine[0] + "/v1/chat/completions", json=chat_body(data_url(path)))
            )
            reply = client.post(
                base + "/v1/chat/completions",
                json=chat_body(data_url(path)),
                headers={"X-Request-Id": "full-data-url"},
            )
            assert distance(first_step(reply), direct) < 1e-4
            upload = upload_video(base, path)  # kept raw in the store, on another filesystem
            assert upload.status_code == 200, upload.text
            reply = client.post(
                base + "/v1/chat/completions",
                json=chat_body(upload.json()["id"]),
                headers={"X-Request-Id": "full-file"},
            )
            assert distance(first_step(reply), direct) < 1e-4
        for request_id in ("full-data-url", "full-file"):
            (line,) = log_lines(log, request_id)
            assert line["forward_fallback"] == "inline" and line["status"] == 200, line
        assert not list(full_forward_folder.iterdir())
    finally:
        stop(proc)


# ---------------------------------------------------------------------------------------
# the forwarded file's life, against a recording upstream

ENGINE_VIEW = "/engine/forward"


class Recorder(FakeUpstream):
    """A stand-in for vLLM: records each request's video URL and whether the file it
    names (mapped from the engine's view) was there and a raw container; answers by the
    question: "error" -> 500, "hang" -> waits, anything else -> a completion."""

    forward: Path
    seen: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.read_json()
        url = self.video_url(body)
        text = next(p["text"] for p in body["messages"][0]["content"] if p["type"] == "text")
        path = urllib.parse.urlparse(url).path
        local = self.forward / Path(path).relative_to(ENGINE_VIEW)
        record = {"url": url, "exists": local.is_file(), "bytes": len(json.dumps(body))}
        if record["exists"]:
            record["frames"] = prepared.decode(local.read_bytes()).frames.shape[0]
        self.seen.append(record)
        if text == "error":
            self.send_json(500, {"error": {"message": "engine failure"}})
            return
        if text == "hang":
            time.sleep(20)
        self.send_completion()


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("forward-recorder")
    forward = folder / "forward"
    seen: list[dict[str, Any]] = []
    handler = type("Handler", (Recorder,), {"forward": forward, "seen": seen})
    port = free_port()
    log = folder / "gateway.log"
    extra = [
        "--forward-mode", "shared",
        "--forward-dir", str(forward),
        "--engine-forward-dir", ENGINE_VIEW,
        "--decode-workers", "1",
    ]  # fmt: skip
    with serve(handler) as upstream:
        proc = start_gateway(upstream, port, folder / "files", log, extra)
        yield {"url": f"http://127.0.0.1:{port}", "forward": forward, "seen": seen, "log": log}
        stop(proc)


def ask(recorder: dict[str, Any], video: str, text: str, **kwargs: Any) -> httpx.Response:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": video}},
                    {"type": "text", "text": text},
                ],
            }
        ],
        "max_tokens": 1,
    }
    return httpx.post(recorder["url"] + "/v1/chat/completions", json=body, **kwargs)


def test_forwarded_file_is_gone_after_the_answer_an_error_and_a_disconnect(
    recorder: dict[str, Any], media_dir: Path
) -> None:
    video = data_url(media_dir / "syn_short.mp4")
    seen = recorder["seen"]

    reply = ask(recorder, video, "describe", timeout=120)
    assert reply.status_code == 200, reply.text
    assert seen[-1]["exists"] and seen[-1]["frames"] == reply.json()["usage"]["video"]["frames"]
    assert seen[-1]["url"].startswith(f"file://{ENGINE_VIEW}/")  # the engine's view
    assert seen[-1]["bytes"] < 4096  # no base64 in the request
    assert not wait_empty(recorder["forward"])

    reply = ask(recorder, video, "error", timeout=120)
    assert reply.status_code == 502 and reply.json()["error"]["code"] == "upstream_error"
    assert seen[-1]["exists"]
    assert not wait_empty(recorder["forward"])

    count = len(seen)
    with pytest.raises(httpx.ReadTimeout):
        ask(recorder, video, "hang", timeout=httpx.Timeout(120, read=4))
    assert len(seen) == count + 1 and seen[-1]["exists"]
    # The gateway notices the disconnect (every 0.5 s), cancels and cleans up, long before
    # the upstream's 20 s are over.
    assert not wait_empty(recorder["forward"], seconds=6)


def test_stored_file_is_forwarded_by_a_link_and_unlinked(
    recorder: dict[str, Any], media_dir: Path
) -> None:
    path = media_dir / "syn_short.mp4"
    file_id = uploaded(recorder["url"], path)
    stored = recorder["log"].parent / "files" / file_id / "prepared-full.arcz"
    for text in ("describe", "error"):
        ask(recorder, file_id, text, timeout=120)
        assert recorder["seen"][-1]["exists"]
        assert not wait_empty(recorder["forward"])
        assert stored.is_file() and stored.stat().st_nlink == 1  # the store's copy stays
    # A clip is prepared for the question (not cached yet), kept and forwarded.
    body = {"messages": video_question(file_id, "describe"), "video": {"start": 0, "end": 1}}
    reply = httpx.post(recorder["url"] + "/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    assert recorder["seen"][-1]["exists"] and recorder["seen"][-1]["frames"] == 1
    assert not wait_empty(recorder["forward"])
    assert (stored.parent / "prepared-0-1.0.arcz").is_file()  # the clip is kept


# ---------------------------------------------------------------------------------------
# settings


def test_forward_settings(tmp_path: Path) -> None:
    settings = load_settings([], env={"ARC_GATEWAY_FILES_DIR": str(tmp_path)})
    assert settings.forward_mode == "container"
    assert settings.forward_path == tmp_path / "forward"
    settings = load_settings(
        ["--forward-mode", "shared", "--engine-forward-dir", "/srv/forward"],
        env={"ARC_GATEWAY_FORWARD_DIR": str(tmp_path / "f")},
    )
    assert settings.shared_forward and settings.forward_path == tmp_path / "f"
    assert settings.engine_forward_path == "/srv/forward"
    assert load_settings([], env={"ARC_GATEWAY_FORWARD_MODE": "shared"}).shared_forward
    with pytest.raises(ValueError, match="forward_mode"):
        load_settings([], env={"ARC_GATEWAY_FORWARD_MODE": "nfs"})
    with pytest.raises(SystemExit):
        load_settings(["--forward-mode", "nfs"])
    with pytest.raises(ValueError, match="absolute"):
        Settings(forward_mode="shared", engine_forward_dir="forward")


def test_start_up_check_of_the_forward_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from server.video.forward import prepare_forward_dir

    folder = tmp_path / "forward"
    folder.mkdir()
    stale, fresh = folder / "old.arcz", folder / "new.arcz"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    settings = Settings(
        files_dir=str(tmp_path), forward_mode="shared", engine_forward_dir="/srv/forward"
    )
    with caplog.at_level("INFO", logger="arc.gateway"):
        prepare_forward_dir(settings)
    event = json.loads(caplog.records[-1].getMessage())
    assert event["engine_needs"].startswith("--allowed-local-media-path /srv/forward")
    assert event["stale_removed"] == 1 and not stale.exists() and fresh.exists()
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(RuntimeError, match="not writable"):
        prepare_forward_dir(Settings(forward_mode="shared", forward_dir=str(blocked / "sub")))


def test_decode_workers_follow_the_usable_cpus(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "cgroup"
    (root / "gateway.slice" / "app").mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    (root / "gateway.slice" / "cpu.max").write_text("300000 100000\n")
    (root / "gateway.slice" / "app" / "cpu.max").write_text("max 100000\n")
    proc = tmp_path / "cgroup-of-self"
    proc.write_text("0::/gateway.slice/app\n")
    assert config.cgroup_cpu_quota(proc, root) == 3.0
    proc.write_text("0::/\n")
    assert config.cgroup_cpu_quota(proc, root) is None
    assert config.cgroup_cpu_quota(tmp_path / "absent", root) is None

    monkeypatch.setattr(config.os, "sched_getaffinity", lambda _: set(range(8)))
    monkeypatch.setattr(config, "cgroup_cpu_quota", lambda: 2.5)
    assert config.usable_cpus() == 2
    monkeypatch.setattr(config, "cgroup_cpu_quota", lambda: 0.5)
    assert config.usable_cpus() == 1
    monkeypatch.setattr(config, "cgroup_cpu_quota", lambda: None)
    assert config.usable_cpus() == 8
    assert Settings().decode_workers == 8
