"""The gateway end to end on loopback: `arc-gateway` in front of a real `arc-serve` (tiny
checkpoint), called with the official `openai` client and raw HTTP."""

from __future__ import annotations

import functools
import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import (
    QuietFiles,
    assert_error,
    data_url,
    openai_client,
    serve_folder,
    slow_upload,
    upload_video,
    video_question,
)
from media_factory import ffmpeg, make_clip, rotate
from servers import free_port, start_gateway, stop

pytestmark = pytest.mark.engine

SHARED_VIDEOS = [
    "w33698kgs05.mp4",
    "c3522vbgwaw.mp4",
    "q35134y59x8.mp4",
    "syn_short.mp4",
    "syn_noaudio_8s.mp4",
    "syn_200s.mp4",
    "syn_400s.mp4",
]
GENERATED_VIDEOS = ["vp9_opus.webm", "rotated.mp4", "clip_0.6s.mp4"]
MAX_UPLOAD_MB = 8


@pytest.fixture(scope="module")
def videos(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder with the shared videos and the generated edge cases."""
    folder = tmp_path_factory.mktemp("videos")
    for name in SHARED_VIDEOS:
        (folder / name).symlink_to((media_dir / name).resolve())
    make_clip(
        folder / "vp9_opus.webm", seconds=5, size="320x240", vcodec="libvpx-vp9", acodec="libopus"
    )
    rotate(make_clip(folder / "upright.mp4", seconds=4, size="320x180"), folder / "rotated.mp4")
    make_clip(folder / "clip_0.6s.mp4", seconds=0.6, size="160x90")
    return folder


class _Handler(QuietFiles):
    """Serves the video folder; `/redirect?to=URL` answers a 302 to URL."""

    def do_GET(self) -> None:
        if self.path.startswith("/redirect"):
            target = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["to"][0]
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture(scope="module")
def media_server(videos: Path) -> Iterator[str]:
    with serve_folder(videos, _Handler) as url:
        yield url


@pytest.fixture(scope="module")
def gateway(
    engine: tuple[str, Path], media_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    engine_url, _ = engine
    port = free_port()
    folder = tmp_path_factory.mktemp("gateway")
    media_host = urllib.parse.urlparse(media_server).netloc
    proc = start_gateway(
        engine_url,
        port,
        folder / "files",
        folder / "gateway.log",
        [
            "--allow-url-host", media_host,
            "--max-upload-mb", str(MAX_UPLOAD_MB),
            "--max-duration-s", "900",
            "--upload-read-timeout-s", "2",
            "--decode-workers", "2",
        ],
    )  # fmt: skip
    LOGS["gateway"] = folder / "gateway.log"
    yield f"http://127.0.0.1:{port}"
    stop(proc)


LOGS: dict[str, Path] = {}


def test_one_json_log_line_per_request(gateway: str, videos: Path) -> None:
    reply = httpx.post(
        gateway + "/v1/chat/completions",
        json={"messages": ask(data_url(videos / "syn_short.mp4")), "max_tokens": 1},
        headers={"X-Request-Id": "log-check-1"},
        timeout=120,
    )
    assert reply.status_code == 200 and reply.headers["x-request-id"] == "log-check-1"
    # the line is written once the last byte has gone out: the client can be faster
    deadline = time.time() + 10
    while True:
        lines = [
            json.loads(line)
            for line in LOGS["gateway"].read_text().splitlines()
            if line.startswith("{") and "log-check-1" in line
        ]
        if lines or time.time() > deadline:
            break
        time.sleep(0.1)
    assert len(lines) == 1
    entry = lines[0]
    assert entry["route"] == "/v1/chat/completions" and entry["status"] == 200
    for key in ("seconds", "bytes_in", "forwarded_bytes", "frames", "decode_s", "upstream_s"):
        assert key in entry, entry
    for key in ("receive_s", "decode_wait_s", "encode_s"):
        assert entry[key] >= 0, entry
    # The decode worker's stages, from prepare_video's timings hook.
    assert {"probe", "frames", "audio", "decode"} <= set(entry["decode_stages_s"]), entry


def server_timing(header: str) -> dict[str, float]:
    stages = {}
    for item in header.split(","):
        name, _, duration = item.strip().partition(";dur=")
        stages[name] = float(duration)
    return stages


def test_server_timing_names_the_stages(gateway: str, videos: Path) -> None:
    """Where a request's time went reaches the client (the load benchmark's breakdown)."""
    video = videos / "w33698kgs05.mp4"
    body = {"messages": ask(data_url(video)), "max_tokens": 1, "stream": True}
    with httpx.stream("POST", gateway + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        stages = server_timing(r.headers["server-timing"])
        r.read()
    assert set(stages) == {"receive", "queue", "decode", "encode", "engine-input"}, stages
    assert stages["decode"] > 0 and stages["encode"] > 0 and stages["engine-input"] > 0

    upload = upload_video(gateway, video)
    assert upload.status_code == 200
    stages = server_timing(upload.headers["server-timing"])
    assert set(stages) == {"receive", "queue", "decode", "encode", "store"}, stages
    file_id = upload.json()["id"]
    reply = httpx.post(
        gateway + "/v1/chat/completions",
        json={"messages": ask(file_id), "max_tokens": 1},
        timeout=120,
    )
    assert reply.status_code == 200
    stages = server_timing(reply.headers["server-timing"])
    assert stages["decode"] == 0 and stages["encode"] == 0, stages  # prepared at upload
    # A whole answer comes from vLLM in one piece: its input preparation cannot be told
    # apart, the engine's whole time is there instead.
    assert "engine-input" not in stages and stages["engine"] > 0, stages
    httpx.delete(f"{gateway}/v1/files/{file_id}", timeout=30)


def ask(url: str, text: str = "What is happening?") -> list[dict]:
    return video_question(url, text)


@pytest.mark.parametrize("name", SHARED_VIDEOS + GENERATED_VIDEOS)
def test_every_video_by_upload_data_url_and_url(
    name: str, gateway: str, videos: Path, media_server: str
) -> None:
    client = openai_client(gateway)
    path = videos / name
    uploaded = client.files.create(file=path.open("rb"), purpose="user_data")
    assert uploaded.id.startswith("file-") and uploaded.bytes == path.stat().st_size
    # Over five minutes a video is measured at upload, not prepared: its questions go in
    # segments (tests/gateway/test_long_video.py). Here every video is asked in one pass.
    one_pass = {"video": {"segments": "off"}}
    if name == "syn_400s.mp4":
        assert uploaded.video["frames"] is None and uploaded.video["segments"] == 2
        frames = 150
    else:
        frames = uploaded.video["frames"]
        assert 1 <= frames <= 150 and "segments" not in uploaded.video

    reply = client.chat.completions.create(
        model="arc", messages=ask(uploaded.id), max_tokens=2, temperature=0, extra_body=one_pass
    )
    assert reply.choices[0].message.content is not None
    video = reply.usage.video
    assert video["frames"] == frames
    assert video["video_tokens"] == frames * 114
    assert video["has_audio"] is (name != "syn_noaudio_8s.mp4")
    assert reply.usage.prompt_tokens > video["video_tokens"]

    stream = client.chat.completions.create(
        model="arc",
        messages=ask(data_url(path)),
        max_tokens=2,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=one_pass,
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.video["frames"] == frames
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finished and "structured" in finished[-1].choices[0].model_extra

    by_url = client.chat.completions.create(
        model="arc",
        messages=ask(f"{media_server}/{name}"),
        max_tokens=2,
        temperature=0,
        extra_body=one_pass,
    )
    assert by_url.usage.video["frames"] == frames
    # Same prepared video, same prompt: the same number of tokens whichever way it came.
    assert by_url.usage.prompt_tokens == reply.usage.prompt_tokens


def test_start_end_narrow_the_frames(gateway: str, videos: Path) -> None:
    client = openai_client(gateway)
    uploaded = client.files.create(
        file=(videos / "w33698kgs05.mp4").open("rb"), purpose="user_data"
    )
    full = client.chat.completions.create(model="arc", messages=ask(uploaded.id), max_tokens=1)
    clip = client.chat.completions.create(
        model="arc",
        messages=ask(uploaded.id),
        max_tokens=1,
        extra_body={"video": {"start": 2, "end": 6}},
    )
    assert full.usage.video["frames"] == 8
    assert clip.usage.video["frames"] == 4
    assert clip.usage.video["clip"] == [2.0, 6.0]
    assert clip.usage.prompt_tokens == full.usage.prompt_tokens - 4 * 114


def test_clips_past_the_end(gateway: str, videos: Path) -> None:
    """An end past the video's end is cut there, and `usage.video.clip` says so (the clip
    actually used); a clip that starts at or past the end is a 400 naming video.start and
    the video's length, for a stored file and a data URL alike; an end before the start
    names video.end."""
    video = videos / "w33698kgs05.mp4"  # 7.53 s
    client = openai_client(gateway)
    uploaded = client.files.create(file=video.open("rb"), purpose="user_data")
    duration = uploaded.video["video_duration_s"]
    for url in (uploaded.id, data_url(video)):
        cut = client.chat.completions.create(
            model="arc",
            messages=ask(url),
            max_tokens=1,
            extra_body={"video": {"start": 2, "end": 100}},
        )
        assert cut.usage.video["clip"] == [2.0, duration]
        assert cut.usage.video["frames"] == 6 and cut.usage.video["duration_s"] == duration
    with httpx.Client(base_url=gateway, timeout=60) as http_client:
        for url in (uploaded.id, data_url(video)):
            for segments in ("auto", "off"):
                video_options = {"start": 8, "end": 20, "segments": segments}
                body = {"messages": ask(url), "max_tokens": 1, "video": video_options}
                response = http_client.post("/v1/chat/completions", json=body)
                error = assert_error(response, 400, "invalid_clip")
                assert error["param"] == "video.start", error
                assert error["message"] == (
                    "video.start: the clip starts at 8 s, at or past the end of the video "
                    f"({duration:g} s long)"
                ), error
        body = {"messages": ask(uploaded.id), "video": {"start": 5, "end": 3}}
        error = assert_error(
            http_client.post("/v1/chat/completions", json=body), 400, "invalid_request"
        )
        assert error["param"] == "video.end", error
        body = {"messages": [{"role": "user", "content": "hi"}], "video": {"start": 5}}
        error = assert_error(http_client.post("/v1/chat/completions", json=body), 400, "no_video")
        assert error["param"] == "video", error
    # The request's log line says the end was cut.
    lines = [
        json.loads(line)
        for line in LOGS["gateway"].read_text().splitlines()
        if '"video_notes"' in line
    ]
    assert any(
        "video.end 100 s is past the video's end" in n
        for line in lines
        for n in line["video_notes"]
    )
    client.files.delete(uploaded.id)


def test_task_presets_and_structured_answer(gateway: str, engine, videos: Path) -> None:
    """Each preset's prompt ends with the spec's text, token for token (vLLM echoes the ids)."""
    from transformers import AutoTokenizer

    from vllm_plugin.prompts import user_text

    _, checkpoint = engine
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    client = openai_client(gateway)
    uploaded = client.files.create(file=(videos / "syn_short.mp4").open("rb"), purpose="user_data")
    for task in ("none", "qa", "summary", "mcq", "grounding", "chapters"):
        question = None if task in ("summary", "chapters") else "When does it change?"
        content = [{"type": "video_url", "video_url": {"url": uploaded.id}}]
        if question:
            content.append({"type": "text", "text": question})
        reply = client.chat.completions.create(
            model="arc",
            messages=[{"role": "user", "content": content}],
            max_tokens=2,
            extra_body={"video": {"task": task}, "return_token_ids": True},
        )
        # Every key, null where the answer has no such part.
        structured = reply.choices[0].model_extra["structured"]
        assert list(structured) == ["thinking", "answer", "segments"], structured
        expected = "\n" + question if task == "none" else user_text(question, task)
        tail = tokenizer.encode(expected + "<sep>", add_special_tokens=False)
        assert reply.prompt_token_ids[-len(tail) :] == tail, task


def test_files_api(gateway: str, videos: Path) -> None:
    with httpx.Client(base_url=gateway, timeout=120) as http_client:
        with (videos / "syn_short.mp4").open("rb") as handle:
            created = http_client.post(
                "/v1/files",
                files={"file": ("syn_short.mp4", handle, "video/mp4")},
                data={"purpose": "user_data"},
            )
        assert created.status_code == 200, created.text
        file_id = created.json()["id"]
        listed = http_client.get("/v1/files").json()
        assert listed["object"] == "list" and file_id in [f["id"] for f in listed["data"]]
        got = http_client.get(f"/v1/files/{file_id}").json()
        assert got["filename"] == "syn_short.mp4" and got["object"] == "file"
        deleted = http_client.delete(f"/v1/files/{file_id}").json()
        assert deleted == {"id": file_id, "object": "file", "deleted": True}
        gone = http_client.get(f"/v1/files/{file_id}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "file_not_found"


def test_models_ready_metrics(gateway: str) -> None:
    with httpx.Client(base_url=gateway, timeout=30) as http_client:
        assert http_client.get("/health").json() == {"status": "ok"}
        assert http_client.get("/ready").json()["models"] == ["arc-tiny"]
        assert [m["id"] for m in http_client.get("/v1/models").json()["data"]] == ["arc-tiny"]
        text = http_client.get("/metrics").text
        for name in (
            "arc_gateway_request_seconds",
            "arc_gateway_decode_seconds",
            "arc_gateway_queue_depth",
            "arc_gateway_rejections_total",
            "arc_gateway_upload_bytes_total",
            "arc_gateway_frames_sampled",
            "arc_gateway_upstream_ttft_seconds",
        ):
            assert name in text


# -- bad input --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(videos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    files = {
        "zero bytes": folder / "empty.mp4",
        "truncated mp4": folder / "truncated.mp4",
        "text named .mp4": folder / "notes.mp4",
        "image": folder / "image.png",
        "audio only": folder / "audio.m4a",
        "8K frames": folder / "8k.mp4",
        "decompression bomb": folder / "bomb.mkv",
        "over the duration cap": folder / "long.mp4",
    }
    files["zero bytes"].write_bytes(b"")
    files["truncated mp4"].write_bytes((videos / "w33698kgs05.mp4").read_bytes()[:4000])
    files["text named .mp4"].write_text("this is not a video\n" * 50)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1", str(files["image"]))
    ffmpeg("-f", "lavfi", "-i", "sine=duration=2", "-c:a", "aac", str(files["audio only"]))
    # 7680x4320: one black frame, a few kB.
    ffmpeg(
        "-f", "lavfi", "-i", "color=black:size=7680x4320:rate=1:duration=1",
        "-c:v", "libx264", "-preset", "ultrafast", str(files["8K frames"]),
    )  # fmt: skip
    # A tiny file that would decode to 12288x12288 frames (450 MB of RGB each).
    ffmpeg(
        "-f", "lavfi", "-i", "color=black:size=12288x12288:rate=1:duration=2",
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "51", str(files["decompression bomb"]),
    )  # fmt: skip
    # 20 minutes (the test gateway takes up to 15).
    make_clip(files["over the duration cap"], seconds=1200, size="64x64", fps="1/4", audio=False)
    return files


EXPECTED = {
    "zero bytes": (400, "empty_file"),
    "truncated mp4": (400, "invalid_video"),
    "text named .mp4": (400, "invalid_video"),
    "image": (400, "invalid_video"),
    "audio only": (400, "invalid_video"),
    "8K frames": (422, "video_too_large"),
    "decompression bomb": (422, "video_too_large"),
    "over the duration cap": (422, "video_too_long"),
}


def test_bad_uploads(gateway: str, bad_files: dict[str, Path]) -> None:
    with httpx.Client(base_url=gateway, timeout=120) as http_client:
        for label, path in bad_files.items():
            status, code = EXPECTED[label]
            response = http_client.post(
                "/v1/files",
                files={"file": (path.name, path.read_bytes(), "application/octet-stream")},
                data={"purpose": "user_data"},
            )
            error = assert_error(response, status, code)
            # Each names the multipart field, and the limit with the option that sets it.
            assert error["param"] == "file", error
            if label in ("8K frames", "decompression bomb"):
                assert "8,294,400 pixels per frame (--max-pixels)" in error["message"], error
            if label == "over the duration cap":
                assert re.fullmatch(
                    r"the video is 120\d(\.\d)? s long; this gateway takes at most 900 s "
                    r"\(--max-duration-s\): ask about a clip of it \(video\.start/end\)",
                    error["message"],
                ), error
            # The same file as a data URL in a chat request: the same answer, naming
            # where the request gives the video.
            if label != "zero bytes":
                chat = http_client.post(
                    "/v1/chat/completions",
                    json={"model": "arc", "messages": ask(data_url(path)), "max_tokens": 1},
                )
                error = assert_error(chat, status, code)
                assert error["param"] == "messages[0].content[0].video_url.url", error


def test_over_the_size_cap_is_refused_while_uploading(gateway: str, tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (MAX_UPLOAD_MB + 2) * 1024 * 1024)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap must hold while streaming
        boundary = b"--xyz\r\n"
        yield boundary + b'Content-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
        yield boundary + (
            b'Content-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
            b"Content-Type: video/mp4\r\n\r\n"
        )
        data = big.read_bytes()
        for start in range(0, len(data), 1 << 20):
            yield data[start : start + (1 << 20)]
        yield b"\r\n--xyz--\r\n"

    with httpx.Client(base_url=gateway, timeout=120) as http_client:
        response = http_client.post(
            "/v1/files",
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        )
        error = assert_error(response, 413, "file_too_large")
        assert (
            error["param"] == "file"
            and f"{MAX_UPLOAD_MB} MiB (--max-upload-mb)" in error["message"]
        )
        with big.open("rb") as handle:
            response = http_client.post(
                "/v1/files", files={"file": ("big.mp4", handle)}, data={"purpose": "x"}
            )
        assert_error(response, 413, "file_too_large")
        # Nothing of it was kept.
        assert all(f["filename"] != "big.mp4" for f in http_client.get("/v1/files").json()["data"])


def test_unsafe_urls_are_refused(gateway: str, engine, media_server: str) -> None:
    engine_url, _ = engine
    urls = [
        engine_url + "/v1/models",  # loopback, another port than the allowed one
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:80/video.mp4",
        "http://2130706433/video.mp4",
        f"{media_server}/redirect?to=http://169.254.169.254/latest/meta-data/",
        f"{media_server}/redirect?to={engine_url}/v1/models",
    ]
    with httpx.Client(base_url=gateway, timeout=60) as http_client:
        for url in urls:
            response = http_client.post(
                "/v1/chat/completions",
                json={"model": "arc", "messages": ask(url), "max_tokens": 1},
            )
            assert_error(response, 400, "url_blocked_address")
        response = http_client.post(
            "/v1/chat/completions",
            json={"model": "arc", "messages": ask("ftp://example.com/a.mp4"), "max_tokens": 1},
        )
        assert_error(response, 400, "bad_video_url")


def test_malformed_requests(gateway: str, videos: Path) -> None:
    with httpx.Client(base_url=gateway, timeout=60) as http_client:
        response = http_client.post(
            "/v1/chat/completions",
            content=b'{"model": "arc", "messages": [',
            headers={"Content-Type": "application/json"},
        )
        assert_error(response, 400, "invalid_json")
        response = http_client.post("/v1/chat/completions", json={"model": "arc"})
        assert assert_error(response, 400, "invalid_request")["param"] == "messages"
        response = http_client.post(
            "/v1/chat/completions",
            json={"messages": ask("file-000000000000000000000000"), "max_tokens": 1},
        )
        assert_error(response, 404, "file_not_found")
        response = http_client.post(
            "/v1/files", json={"file": "abc"}, headers={"Content-Type": "application/json"}
        )
        assert_error(response, 415, "wrong_content_type")
        two = ask(data_url(videos / "syn_short.mp4"))
        two[0]["content"].append(dict(two[0]["content"][0]))
        response = http_client.post("/v1/chat/completions", json={"messages": two})
        assert_error(response, 400, "too_many_videos")
        # vLLM's own refusal (the chat template takes no system prompt) passes through as 400.
        system = [
            {"role": "system", "content": "Be brief."},
            *ask(data_url(videos / "syn_short.mp4")),
        ]
        response = http_client.post(
            "/v1/chat/completions", json={"messages": system, "max_tokens": 1}
        )
        assert response.status_code == 400 and "single user message" in response.text


def test_slow_loris_upload_is_dropped(gateway: str) -> None:
    with slow_upload(gateway, 1000000, timeout=30) as sock:
        t0 = time.monotonic()
        reply = b""
        while b"upload_timeout" not in reply and time.monotonic() - t0 < 20:
            piece = sock.recv(65536)
            if not piece:
                break
            reply += piece
        waited = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"upload_timeout" in reply
    assert waited < 20


def test_still_serving_after_bad_input(gateway: str, videos: Path) -> None:
    reply = openai_client(gateway).chat.completions.create(
        model="arc", messages=ask(data_url(videos / "syn_short.mp4")), max_tokens=2
    )
    assert reply.choices[0].message.content is not None
    metrics = httpx.get(gateway + "/metrics").text
    rejected = [line for line in metrics.splitlines() if line.startswith("arc_gateway_rejections")]
    assert any("invalid_video" in line for line in rejected)
    assert not any(json.dumps("file-") in line for line in rejected)  # no user data in labels


# -- admission control and cancellation ---------------------------------------------------


def _running(engine_url: str) -> float:
    for line in httpx.get(engine_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("vllm:num_requests_running"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_client_disconnect_cancels_the_upstream_request(gateway: str, engine, videos: Path) -> None:
    engine_url, _ = engine
    generated = functools.partial(_counter, engine_url, "vllm:generation_tokens_total")
    before = generated()
    body = {
        "messages": ask(data_url(videos / "syn_short.mp4")),
        "max_tokens": 4000,
        "ignore_eos": True,  # vLLM's option: the request would run for a long while
        "stream": True,
    }
    url = gateway + "/v1/chat/completions"
    with (
        httpx.Client(timeout=120) as http_client,
        http_client.stream("POST", url, json=body) as reply,
    ):
        assert reply.status_code == 200
        chunks = 0
        for line in reply.iter_lines():
            chunks += '"content"' in line
            if chunks == 20:
                break  # generation is under way: now go away
    time.sleep(2)
    stopped_at = generated()
    time.sleep(3)
    # vLLM stopped generating for it: the gateway closed its upstream request.
    assert generated() == stopped_at
    assert stopped_at - before < 1000


def test_admission_limits_answer_429(engine, videos: Path, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    engine_url, _ = engine
    port = free_port()
    proc = start_gateway(
        engine_url,
        port,
        tmp_path / "files",
        tmp_path / "gateway.log",
        ["--decode-workers", "1", "--max-queue", "0", "--max-inflight", "2"],
    )
    base = f"http://127.0.0.1:{port}"
    try:
        video = videos / "c3522vbgwaw.mp4"

        def upload(_: int) -> httpx.Response:
            return upload_video(base, video, timeout=300)

        with ThreadPoolExecutor(4) as pool:
            uploads = list(pool.map(upload, range(4)))
        statuses = sorted(r.status_code for r in uploads)
        assert 200 in statuses and 429 in statuses, statuses
        for reply in uploads:
            if reply.status_code == 429:
                assert reply.headers["Retry-After"]
                assert reply.json()["error"]["code"] == "decode_queue_full"
        file_id = next(r.json()["id"] for r in uploads if r.status_code == 200)

        def chat(_: int) -> httpx.Response:
            body = {"messages": ask(file_id), "max_tokens": 300, "ignore_eos": True}
            return httpx.post(base + "/v1/chat/completions", json=body, timeout=300)

        with ThreadPoolExecutor(5) as pool:
            chats = list(pool.map(chat, range(5)))
        statuses = sorted(r.status_code for r in chats)
        assert statuses.count(200) >= 2 and 429 in statuses, statuses
        rejected = next(r for r in chats if r.status_code == 429)
        assert rejected.json()["error"]["code"] == "too_many_requests"
        assert rejected.headers["Retry-After"]
    finally:
        stop(proc)


def _counter(engine_url: str, name: str) -> float:
    total = 0.0
    for line in httpx.get(engine_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_second_question_about_a_file_reuses_the_prefix_cache(
    gateway: str, engine, videos: Path
) -> None:
    engine_url, _ = engine
    client = openai_client(gateway)
    uploaded = client.files.create(
        file=(videos / "q35134y59x8.mp4").open("rb"), purpose="user_data"
    )
    first = client.chat.completions.create(
        model="arc", messages=ask(uploaded.id, "Who speaks?"), max_tokens=1
    )
    hits = _counter(engine_url, "vllm:prefix_cache_hits_total")
    second = client.chat.completions.create(
        model="arc", messages=ask(uploaded.id, "What colour is the sky?"), max_tokens=1
    )
    reused = _counter(engine_url, "vllm:prefix_cache_hits_total") - hits
    assert first.usage.video["video_tokens"] == second.usage.video["video_tokens"]
    # The video comes first in the prompt: its tokens are reused, bar the last partial KV
    # block (128 tokens on the CPU backend, 16 on GPUs).
    assert reused >= first.usage.video["video_tokens"] - 128, reused


def test_sigterm_lets_accepted_requests_finish(engine, videos: Path, tmp_path: Path) -> None:
    import signal
    from concurrent.futures import ThreadPoolExecutor

    engine_url, _ = engine
    port = free_port()
    proc = start_gateway(engine_url, port, tmp_path / "files", tmp_path / "gateway.log")
    body = {
        "messages": ask(data_url(videos / "syn_short.mp4")),
        "max_tokens": 200,
        "ignore_eos": True,
    }
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                httpx.post, f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=300
            )
            deadline = time.monotonic() + 60
            while _running(engine_url) == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            reply = pending.result(timeout=300)
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] == 200
        # uvicorn re-raises the signal once it has drained: -15 is a clean exit here.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        stop(proc)
