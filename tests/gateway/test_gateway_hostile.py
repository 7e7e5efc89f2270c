"""Hostile and unusual requests against `arc-gateway` in front of a real `arc-serve` (tiny
checkpoint), on loopback: each must get a 4xx with an OpenAI error body or a correct
answer, the engine stays alive, nothing stored is lost, memory stays bounded.

Between the gateway and the engine sits a recording relay (a plain HTTP pass-through on
loopback) so the tests can see exactly what reaches vLLM.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from helpers import assert_error, data_url, serve, slow_upload, upload_video
from media_factory import ffmpeg, make_clip, sized_clip
from servers import free_port, running_gateway, start_gateway, stop

pytestmark = pytest.mark.engine

PUBLIC_NAME = "arc-video"


class _Relay(http.server.BaseHTTPRequestHandler):
    """Passes requests to the engine; records the JSON bodies it passed."""

    engine = ""
    seen: ClassVar[list[dict]] = []

    def _relay(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if body:
            _Relay.seen.append(json.loads(body))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
        reply = httpx.request(
            method, self.engine + self.path, content=body, headers=headers, timeout=600
        )
        self.send_response(reply.status_code)
        for key, value in reply.headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(reply.content)))
        self.end_headers()
        self.wfile.write(reply.content)

    def do_GET(self) -> None:
        self._relay("GET")

    def do_POST(self) -> None:
        self._relay("POST")

    def log_message(self, *args: object) -> None:
        pass


class _Bait(http.server.BaseHTTPRequestHandler):
    """A loopback server nobody should ever fetch from."""

    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Bait.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def relay(engine: tuple[str, Path]) -> Iterator[str]:
    _Relay.engine = engine[0]
    with serve(_Relay) as url:
        yield url


@pytest.fixture(scope="module")
def bait() -> Iterator[str]:
    with serve(_Bait) as url:
        yield url


@pytest.fixture(scope="module")
def gateway(relay: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("hostile")
    port = free_port()
    proc = start_gateway(
        relay,
        port,
        folder / "files",
        folder / "gateway.log",
        ["--served-model-name", PUBLIC_NAME, "--decode-workers", "2", "--max-upload-mb", "64"],
    )
    yield f"http://127.0.0.1:{port}"
    stop(proc)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=3, size="160x90")


# The text part of a question (qa, the default task, needs one).
QUESTION = {"type": "text", "text": "What is it?"}


def video_part(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def chat(base: str, content: list | str, **extra: object) -> httpx.Response:
    body = {"model": "arc", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(base + "/v1/chat/completions", json=body, timeout=300)


def assert_engine_alive(engine: tuple[str, Path]) -> None:
    assert httpx.get(engine[0] + "/health", timeout=10).status_code == 200


# -- nothing unchecked reaches the engine ---------------------------------------------------


def test_content_parts_with_extra_keys_never_reach_the_engine(
    gateway: str, engine, bait: str, tmp_path: Path
) -> None:
    jpeg = tmp_path / "tiny.jpg"
    ffmpeg("-f", "lavfi", "-i", "color=red:size=64x64", "-frames:v", "1", str(jpeg))
    big = tmp_path / "big.png"
    ffmpeg("-f", "lavfi", "-i", "color=black:size=2048x2048", "-frames:v", "1", str(big))
    jpeg_url, png_url = data_url(jpeg, "image/jpeg"), data_url(big, "image/png")
    hostile = [
        # vLLM infers a part's kind from its keys when it has a uuid: the bypass.
        {"type": "text", "text": "x", "uuid": "u", "video_url": {"url": bait + "/v.mp4"}},
        {"type": "text", "text": "x", "uuid": "u", "image_url": {"url": jpeg_url}},
        {"type": "text", "text": "x", "uuid": "u", "image_url": {"url": png_url}},
        {"type": "video_url", "video_url": {"url": bait + "/a.mp4", "uuid": "u"}},
        {"type": "video_url", "video_url": {"url": "file-" + "0" * 24}, "uuid": "u"},
        {"type": "text", "text": "x", "audio_url": {"url": bait + "/a.wav"}},
        {"type": "text", "text": "x", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "image_url", "image_url": {"url": bait + "/i.png"}},
        {"type": "audio_url", "audio_url": {"url": bait + "/a.wav"}},
    ]  # fmt: skip
    before = len(_Relay.seen)
    for part in hostile:
        reply = chat(gateway, [part, {"type": "text", "text": "what is it?"}], max_tokens=1)
        assert reply.status_code == 400, (part.keys(), reply.text[:500])
        error = reply.json()["error"]
        assert error["code"] in ("unknown_parameter", "unsupported_content", "invalid_request")
        assert error["param"].startswith("messages[0].content[0]"), error
    assert len(_Relay.seen) == before  # none of them went upstream
    assert _Bait.hits == []
    assert_engine_alive(engine)


def test_only_the_prepared_container_reaches_the_engine(gateway: str, clip: Path) -> None:
    before = len(_Relay.seen)
    reply = chat(
        gateway,
        [video_part(data_url(clip)), {"type": "text", "text": "What is it?"}],
        max_tokens=1,
    )
    assert reply.status_code == 200, reply.text
    sent = _Relay.seen[before:]
    assert len(sent) == 1
    (message,) = sent[0]["messages"]
    assert message["role"] == "user"
    kinds = [(part["type"], sorted(part)) for part in message["content"]]
    assert kinds == [("video_url", ["type", "video_url"]), ("text", ["text", "type"])]
    url = message["content"][0]["video_url"]["url"]
    assert url.startswith("data:video/x-arc-prepared;base64,")
    assert list(message["content"][0]["video_url"]) == ["url"]


# Each allowed parameter with a value vLLM accepts; the relay shows it arrived as sent.
ALLOWED = {
    "max_tokens": 3,
    "min_tokens": 3,
    "temperature": 0.8,
    "top_p": 0.9,
    "top_k": 5,
    "min_p": 0.05,
    "frequency_penalty": 0.5,
    "presence_penalty": 0.25,
    "repetition_penalty": 1.1,
    "seed": 7,
    "n": 2,
    "stop": ["never-in-the-answer"],
    "ignore_eos": True,
    "logprobs": True,
    "top_logprobs": 2,
    "return_token_ids": True,
    "user": "someone",
}


def test_every_allowed_sampling_parameter_reaches_vllm(gateway: str, clip: Path) -> None:
    from server.schemas import SAMPLING_PARAMETERS

    assert set(ALLOWED) == set(SAMPLING_PARAMETERS) - {"max_completion_tokens"}
    content = [video_part(data_url(clip)), {"type": "text", "text": "What is it?"}]
    before = len(_Relay.seen)
    reply = chat(gateway, content, **ALLOWED, chat_template_kwargs={"task": "summary"})
    assert reply.status_code == 200, reply.text
    sent = _Relay.seen[before]
    for name, value in ALLOWED.items():
        assert sent[name] == value, name
    assert sent["chat_template_kwargs"] == {"task": "summary"}
    data = reply.json()
    # What vLLM did with them: 2 choices of 3 tokens, 2 alternatives per token, the ids.
    assert len(data["choices"]) == 2 and data["usage"]["completion_tokens"] == 6
    for choice in data["choices"]:
        assert len(choice["logprobs"]["content"]) == 3
        assert all(len(t["top_logprobs"]) == 2 for t in choice["logprobs"]["content"])
        assert len(choice["token_ids"]) == 3
    assert data["prompt_token_ids"]

    # max_completion_tokens, and the stream options, the same way.
    before = len(_Relay.seen)
    with httpx.stream(
        "POST",
        gateway + "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": content}],
            "max_completion_tokens": 2,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        timeout=300,
    ) as streamed:
        assert streamed.status_code == 200
        chunks = [
            json.loads(line[5:]) for line in streamed.iter_lines() if line[5:].strip()[:1] == "{"
        ]
    sent = _Relay.seen[before]
    assert sent["max_completion_tokens"] == 2 and sent["stream_options"] == {"include_usage": True}
    assert chunks[-1]["usage"]["completion_tokens"] == 2
    assert {c["model"] for c in chunks} == {PUBLIC_NAME}


def test_response_format_and_priority_reach_vllm_as_sent(gateway: str, clip: Path) -> None:
    """A JSON answer's format and a lowered priority go upstream as sent, with the bare
    question (task none); a text answer at interactive priority sends neither."""
    content = [video_part(data_url(clip)), QUESTION]
    before = len(_Relay.seen)
    json_object = {"type": "json_object"}
    reply = chat(gateway, content, max_tokens=8, response_format=json_object, priority=5)
    assert reply.status_code == 200, reply.text
    sent = _Relay.seen[before]
    assert sent["response_format"] == json_object and sent["priority"] == 5
    assert sent["chat_template_kwargs"] == {"task": "none"}
    before = len(_Relay.seen)
    reply = chat(gateway, content, max_tokens=1, response_format={"type": "text"}, priority=0)
    assert reply.status_code == 200, reply.text
    sent = _Relay.seen[before]
    assert "response_format" not in sent and "priority" not in sent
    assert "chat_template_kwargs" not in sent  # the template's own default: qa


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("chat_template", "{{ messages }}"),
        ("mm_processor_kwargs", {"arc_layout": "B"}),
        ("media_io_kwargs", {"video": {"num_frames": 1}}),
        ("truncate_prompt_tokens", 10),
        ("tools", [{"type": "function", "function": {"name": "f"}}]),
        ("tool_choice", "auto"),
        ("structured_outputs", {"regex": "a+"}),
        ("guided_regex", "a+"),
        ("logit_bias", {"1": 5}),
        ("allowed_token_ids", [1, 2]),
        ("bad_words", ["x"]),
        ("prompt_logprobs", 1),
        ("echo", True),
        ("add_generation_prompt", False),
        ("continue_final_message", True),
        ("documents", [{"text": "x"}]),
        ("add_special_tokens", True),
        ("use_beam_search", True),
        ("request_id", "x"),
        ("cache_salt", "x"),
        ("kv_transfer_params", {}),
        ("vllm_xargs", {"a": 1}),
        ("stop_token_ids", [2]),
        ("skip_special_tokens", False),
        ("length_penalty", 2.0),
        ("reasoning_effort", "high"),
        ("parallel_tool_calls", True),
        ("return_tokens_as_token_ids", True),
    ],
)
def test_other_parameters_are_refused_by_name(gateway: str, name: str, value: object) -> None:
    before = len(_Relay.seen)
    reply = chat(gateway, "hello", max_tokens=1, **{name: value})
    error = assert_error(reply, 400, "unknown_parameter")
    assert error["param"] == name and name in error["message"]
    assert len(_Relay.seen) == before


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"top_logprobs": 50}, "top_logprobs"),
        ({"n": 100}, "n"),
        ({"seed": 2**70}, "seed"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["x"] * 20}, "stop"),
        ({"chat_template_kwargs": {"task": "jailbreak"}}, "chat_template_kwargs.task"),
        ({"video": {"start": 5, "end": 1}}, "video.end"),
        ({"priority": -1}, "priority"),
        ({"response_format": {"type": "regex"}}, "response_format.type"),
    ],
)
def test_out_of_range_values_are_refused_by_the_gateway(
    gateway: str, extra: dict, param: str
) -> None:
    before = len(_Relay.seen)
    error = assert_error(chat(gateway, "hello", **extra), 400, "invalid_request")
    assert error["param"] == param
    assert len(_Relay.seen) == before


def test_conversation_shapes_the_model_cannot_take(gateway: str) -> None:
    body = {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x"}]
    }
    reply = httpx.post(gateway + "/v1/chat/completions", json=body, timeout=60)
    assert "single user message" in assert_error(reply, 400, "single_user_message")["message"]
    body = {"messages": [{"role": "tool", "content": "x"}]}
    reply = httpx.post(gateway + "/v1/chat/completions", json=body, timeout=60)
    assert_error(reply, 400, "invalid_request")
    body = {"messages": [{"role": "user", "content": []}]}
    reply = httpx.post(gateway + "/v1/chat/completions", json=body, timeout=60)
    assert_error(reply, 400, "invalid_request")
    # Text alone is a question the model can take.
    reply = chat(gateway, "Hello?", max_tokens=2)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] is not None


# -- engine refusals, model name ------------------------------------------------------------


def test_engine_refusals_stay_4xx_in_the_gateways_words(gateway: str, engine, clip: Path) -> None:
    content = [video_part(data_url(clip)), {"type": "text", "text": "What is it?"}]
    leaks = ("validation error", "input_value", "pydantic", "Traceback", "{'type'", "Value error")
    # Values each within the gateway's bounds that vLLM refuses together.
    reply = chat(gateway, content, max_tokens=2, min_tokens=5)
    error = assert_error(reply, 400, "upstream_rejected")
    assert error["param"] == "min_tokens", error
    assert not any(leak in error["message"] for leak in leaks), error
    # A prompt longer than the model's context.
    long_text = [{"type": "text", "text": "hello world " * 20000}]
    error = assert_error(chat(gateway, long_text, max_tokens=1), 400, "context_length_exceeded")
    assert not any(leak in error["message"] for leak in leaks), error
    assert_engine_alive(engine)


def test_engine_refusals_name_the_parameter_and_the_limit(gateway: str, clip: Path) -> None:
    content = [video_part(data_url(clip)), QUESTION]
    for name in ("max_tokens", "max_completion_tokens"):
        reply = chat(gateway, content, **{name: 100_000})
        error = assert_error(reply, 400, "context_length_exceeded")
        assert error["param"] == name and "100000" in error["message"], error
        assert "20480 tokens (max_model_len)" in error["message"], error
    long_text = [{"type": "text", "text": "hello world " * 20000}]
    error = assert_error(chat(gateway, long_text, max_tokens=1), 400, "context_length_exceeded")
    assert error["param"] == "messages" and "20480 tokens" in error["message"], error
    assert "prompt" in error["message"], error
    # vLLM's own one-line reason, with the limit it applies.
    error = assert_error(
        chat(gateway, content, max_tokens=2, min_tokens=5), 400, "upstream_rejected"
    )
    assert error["param"] == "min_tokens" and "max_tokens=2" in error["message"], error


def test_answers_are_greedy_unless_the_request_sets_a_temperature(gateway: str, clip: Path) -> None:
    """The same request twice gives the same tokens: the gateway sends temperature 0 when the
    request sets none (greedy in front of any vLLM), and passes a temperature on."""
    content = [video_part(data_url(clip)), QUESTION]

    def token_ids(**extra: object) -> list[int]:
        reply = chat(
            gateway, content, max_tokens=6, ignore_eos=True, return_token_ids=True, **extra
        )
        assert reply.status_code == 200, reply.text
        return reply.json()["choices"][0]["token_ids"]

    before = len(_Relay.seen)
    first, second = token_ids(), token_ids()
    assert first == second and len(first) == 6
    assert [sent["temperature"] for sent in _Relay.seen[before:]] == [0.0, 0.0]
    before = len(_Relay.seen)
    assert token_ids(temperature=1.0, seed=1) != token_ids(temperature=1.0, seed=2)
    assert [sent["temperature"] for sent in _Relay.seen[before:]] == [1.0, 1.0]
    # Several answers need a temperature (greedy ones would all be the same).
    before = len(_Relay.seen)
    error = assert_error(chat(gateway, content, max_tokens=2, n=2), 400, "invalid_request")
    assert error["param"] == "n" and "temperature" in error["message"], error
    assert not error["message"].startswith("n: Value error"), error
    assert len(_Relay.seen) == before


@pytest.mark.parametrize(
    ("text", "extra"),
    [
        (None, {}),
        ("   ", {"video": {"task": "grounding"}}),
        (None, {"chat_template_kwargs": {"task": "mcq"}}),
        ("", {"video": {"task": "qa"}, "chat_template_kwargs": {"task": "summary"}}),
    ],
)
def test_a_task_that_needs_a_question_is_refused_without_one(
    gateway: str, clip: Path, text: str | None, extra: dict
) -> None:
    content = [video_part(data_url(clip))]
    if text is not None:
        content.append({"type": "text", "text": text})
    before = len(_Relay.seen)
    error = assert_error(chat(gateway, content, max_tokens=1, **extra), 400, "missing_question")
    assert error["param"] == "messages[0].content", error
    assert "needs a question" in error["message"], error
    assert len(_Relay.seen) == before


def test_tasks_with_a_default_question_take_the_video_alone(gateway: str, clip: Path) -> None:
    """Summary and chapters get the authors' question (arc-serve's template); none sends
    whatever text there is."""
    for task in ("summary", "chapters", "none"):
        reply = chat(gateway, [video_part(data_url(clip))], max_tokens=1, video={"task": task})
        assert reply.status_code == 200, (task, reply.text)


def test_model_name_is_clean_everywhere(gateway: str, clip: Path) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=gateway + "/v1", api_key="none", max_retries=0)
    assert [m.id for m in client.models.list()] == [PUBLIC_NAME]
    assert client.models.retrieve(PUBLIC_NAME).id == PUBLIC_NAME
    missing = httpx.get(gateway + "/v1/models/tmp", timeout=30)
    assert assert_error(missing, 404, "model_not_found")["param"] == "model"
    models = httpx.get(gateway + "/v1/models", timeout=30).json()
    assert [m["id"] for m in models["data"]] == [PUBLIC_NAME]
    assert httpx.get(gateway + "/ready", timeout=30).json()["models"] == [PUBLIC_NAME]
    reply = chat(gateway, [video_part(data_url(clip)), QUESTION], max_tokens=1)
    assert reply.status_code == 200 and reply.json()["model"] == PUBLIC_NAME
    assert "/" not in json.dumps(models)


# -- videos no decoder likes ---------------------------------------------------------------


@pytest.mark.parametrize("size", ["1x1", "2x2", "64x16", "16384x16", "16x4096"])
def test_tiny_and_extreme_videos_get_an_answer(gateway: str, size: str, tmp_path: Path) -> None:
    path = sized_clip(tmp_path / f"{size}.mp4", size)
    with httpx.Client(base_url=gateway, timeout=300) as client:
        uploaded = client.post(
            "/v1/files",
            files={"file": (path.name, path.read_bytes())},
            data={"purpose": "user_data"},
        )
        assert uploaded.status_code == 200, uploaded.text
        # The same connection goes on being used: nothing closed it.
        reply = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": [video_part(uploaded.json()["id"]),
                                                            QUESTION]}],
                  "max_tokens": 1},
        )  # fmt: skip
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["video"]["frames"] == 2


# -- multipart -----------------------------------------------------------------------------


def _multipart(parts: list[tuple[str, bytes, bytes]]) -> bytes:
    body = b""
    for headers, _, value in parts:
        body += b"--xyz\r\n" + headers.encode() + b"\r\n\r\n" + value + b"\r\n"
    return body + b"--xyz--\r\n"


def test_multipart_is_bounded_and_checked(gateway: str, clip: Path) -> None:
    video = clip.read_bytes()
    file_part = ('Content-Disposition: form-data; name="file"; filename="a.mp4"', b"", video)
    purpose = ('Content-Disposition: form-data; name="purpose"', b"", b"user_data")
    padding = "".join(f"\r\nX-Pad-{i}: " + "p" * 4000 for i in range(6))  # 24 kB of headers
    cases = {
        "fields_too_large": [purpose, (file_part[0] + padding, b"", video)],
        "multiple_files": [purpose, file_part, file_part],
        "invalid_purpose": [(purpose[0], b"", b"fine-tune"), file_part],
        "unknown_parameter": [purpose, (purpose[0].replace("purpose", "extra"), b"", b"x"),
                              file_part],
        "missing_file": [purpose],
        "invalid_request": [purpose, purpose, file_part],
        "field_too_long": [(purpose[0], b"", b"p" * 2000), file_part],
    }  # fmt: skip
    # The field each one names (none for all the fields together).
    params = {"fields_too_large": None, "multiple_files": "file", "invalid_purpose": "purpose",
              "unknown_parameter": "extra", "missing_file": "file", "invalid_request": "purpose",
              "field_too_long": "purpose"}  # fmt: skip
    listed = {f["id"] for f in httpx.get(gateway + "/v1/files").json()["data"]}
    for code, parts in cases.items():
        reply = httpx.post(
            gateway + "/v1/files",
            content=_multipart(parts),
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
            timeout=120,
        )
        assert assert_error(reply, 400, code)["param"] == params[code], code
    assert {f["id"] for f in httpx.get(gateway + "/v1/files").json()["data"]} == listed


# -- memory per data-URL request -----------------------------------------------------------


def _status_kb(pid: int, key: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE).group(1))


def test_a_data_url_request_holds_little_of_the_video_in_memory(
    engine: tuple[str, Path], tmp_path: Path
) -> None:
    # A 40 MB video long enough for the most frames (150): the largest prepared form too.
    video = tmp_path / "big.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=5:duration=160",
        "-f", "lavfi", "-i", "sine=duration=160",
        "-vf", "noise=alls=60:allf=t", "-c:v", "libx264", "-preset", "ultrafast",
        "-b:v", "2M", "-maxrate", "2M", "-bufsize", "4M", "-c:a", "aac", str(video),
    )  # fmt: skip
    size = video.stat().st_size
    assert 35e6 < size < 50e6, size
    body = json.dumps(
        {
            "messages": [{"role": "user", "content": [video_part(data_url(video)), QUESTION]}],
            "max_tokens": 1,
        }
    ).encode()
    port = free_port()
    proc = start_gateway(
        engine[0], port, tmp_path / "files", tmp_path / "gateway.log", ["--decode-workers", "1"]
    )
    base = f"http://127.0.0.1:{port}"
    try:
        small = make_clip(tmp_path / "small.mp4", seconds=2)
        assert chat(base, [video_part(data_url(small)), QUESTION], max_tokens=1).status_code == 200
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # peak RSS := current RSS
        baseline = _status_kb(proc.pid, "VmRSS")
        reply = httpx.post(
            base + "/v1/chat/completions",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=300,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["video"]["frames"] == 150
        peak = _status_kb(proc.pid, "VmHWM")
        grew = (peak - baseline) * 1024
        print(f"gateway peak memory: +{grew / 1e6:.1f} MB for a {size / 1e6:.1f} MB video")
        assert grew <= 2 * size, f"peak +{grew / 1e6:.0f} MB for a {size / 1e6:.0f} MB video"
    finally:
        stop(proc)


# -- the file store keeps what it accepted -------------------------------------------------


@pytest.fixture
def small_store(engine: tuple[str, Path], tmp_path: Path) -> Iterator[str]:
    extra = ["--files-budget-mb", "3", "--decode-workers", "1", "--upload-read-timeout-s", "20"]
    with running_gateway(engine[0], tmp_path, extra) as base:
        yield base


def test_an_upload_over_the_budget_is_refused_not_lost(
    small_store: str, media_dir: Path, tmp_path: Path
) -> None:
    big = media_dir / "c3522vbgwaw.mp4"  # over 3 MB with its prepared form
    reply = upload_video(small_store, big, timeout=300)
    assert reply.status_code in (413, 507), reply.text
    error = reply.json()["error"]
    assert error["code"] in ("file_exceeds_storage", "storage_full")
    if error["code"] == "file_exceeds_storage":
        assert error["param"] == "file" and "(3 MiB: --files-budget-mb)" in error["message"]
    assert httpx.get(small_store + "/v1/files").json()["data"] == []


def test_bytes_still_arriving_evict_nothing(small_store: str, tmp_path: Path) -> None:
    first = make_clip(tmp_path / "first.mp4", seconds=2)
    kept = upload_video(small_store, first, timeout=300).json()["id"]
    with slow_upload(small_store, 9000000, timeout=60) as slow:
        for _ in range(4):  # 4 MB arrive, more than the whole budget, and the upload waits
            slow.sendall(b"\0" * 1_000_000)
        time.sleep(1)
        second = make_clip(tmp_path / "second.mp4", seconds=2)
        assert upload_video(small_store, second, timeout=300).status_code == 200
        assert httpx.get(f"{small_store}/v1/files/{kept}").status_code == 200
    ids = {f["id"] for f in httpx.get(small_store + "/v1/files").json()["data"]}
    assert kept in ids


def test_a_file_deleted_while_its_question_waits_is_still_answered(
    small_store: str, media_dir: Path, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    clip_file = make_clip(tmp_path / "clip.mp4", seconds=4)
    file_id = upload_video(small_store, clip_file, timeout=300).json()["id"]
    long_url = data_url(media_dir / "syn_400s.mp4")
    busy = {"messages": [{"role": "user", "content": [video_part(long_url), QUESTION]}],
            "max_tokens": 1}  # fmt: skip
    question = {
        "messages": [{"role": "user", "content": [video_part(file_id), QUESTION]}],
        "max_tokens": 1,
        "video": {"start": 1, "end": 3},  # a clip: it needs the one decode worker
    }
    url = small_store + "/v1/chat/completions"
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, url, json=busy, timeout=300)
        time.sleep(1.5)
        waiting = pool.submit(httpx.post, url, json=question, timeout=300)
        time.sleep(1.0)
        deleted = httpx.delete(f"{small_store}/v1/files/{file_id}", timeout=30)
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        reply = waiting.result(timeout=300)
        first.result(timeout=300)
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["video"]["clip"] == [1.0, 3.0]
    gone = httpx.get(f"{small_store}/v1/files/{file_id}")
    error = assert_error(gone, 404, "file_not_found")
    assert file_id in error["message"] and "/" not in error["message"]
    again = chat(small_store, [video_part(file_id), QUESTION], max_tokens=1)
    assert file_id in assert_error(again, 404, "file_not_found")["message"]


def test_openai_client_file_part_and_upload(gateway: str, clip: Path) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=gateway + "/v1", api_key="none", max_retries=0, timeout=300)
    uploaded = client.files.create(file=clip.open("rb"), purpose="user_data")
    reply = client.chat.completions.create(
        model="anything",
        messages=[{"role": "user", "content": [
            {"type": "file", "file": {"file_id": uploaded.id, "filename": "clip.mp4"}},
            {"type": "text", "text": "What is it?"},
        ]}],
        max_tokens=1,
    )  # fmt: skip
    assert reply.model == PUBLIC_NAME and reply.usage.video["frames"] == 3
    # Bytes of a file inside the part are client media: refused.
    raw = chat(
        gateway,
        [{"type": "file", "file": {"file_id": uploaded.id, "file_data": "AAAA"}}],
        max_tokens=1,
    )
    assert (
        assert_error(raw, 400, "unknown_parameter")["param"]
        == "messages[0].content[0].file.file_data"
    )


@pytest.mark.parametrize(
    "extra",
    [
        {"top_k": 1_000_000},
        {"top_k": -1},
        {"seed": -1},
        {"seed": 2**63 - 1},
        {"min_p": 1.0},
        {"top_p": 1e-9},
        {"repetition_penalty": 2.0},
        {"temperature": 0, "n": 16},
        {"stop": ["x" * 256] * 16},
        {"min_tokens": 1_000_000},
        {"logprobs": True, "top_logprobs": 0},
        {"top_logprobs": 5},
        {"frequency_penalty": -2, "presence_penalty": 2},
        {"max_completion_tokens": 1, "max_tokens": 3},
        {"user": ""},
    ],
)
def test_edge_values_are_answered_or_refused_with_a_4xx(
    gateway: str, engine, clip: Path, extra: dict
) -> None:
    content = [video_part(data_url(clip)), {"type": "text", "text": "What is it?"}]
    reply = chat(gateway, content, **{"max_tokens": 2, **extra})
    assert reply.status_code in (200, 400), (reply.status_code, reply.text[:1000])
    if reply.status_code == 400:
        error = reply.json()["error"]
        assert error["code"] in ("upstream_rejected", "invalid_request", "context_length_exceeded")
        assert "validation error" not in error["message"]
    assert_engine_alive(engine)


def _gauge(base: str, name: str) -> float:
    for line in httpx.get(base + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(name)


def test_streams_abandoned_at_once_release_what_they_held(gateway: str, clip: Path) -> None:
    file_id = httpx.post(
        gateway + "/v1/files",
        files={"file": ("clip.mp4", clip.read_bytes())},
        data={"purpose": "user_data"},
        timeout=300,
    ).json()["id"]
    body = json.dumps(
        {"messages": [{"role": "user", "content": [video_part(file_id), QUESTION]}],
         "max_tokens": 50, "ignore_eos": True, "stream": True}
    ).encode()  # fmt: skip
    host, port = urllib.parse.urlparse(gateway).netloc.split(":")
    for wait in (0.0, 0.3, 1.0):
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            time.sleep(wait)
    deadline = time.monotonic() + 60
    while _gauge(gateway, "arc_gateway_inflight_requests") != 0:
        assert time.monotonic() < deadline, "an abandoned stream is still counted in flight"
        time.sleep(0.2)
    # And the file can still be deleted.
    assert httpx.delete(f"{gateway}/v1/files/{file_id}").json()["deleted"] is True
    assert httpx.get(f"{gateway}/v1/files/{file_id}").status_code == 404
