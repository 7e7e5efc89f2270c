"""A long video through the gateway to the real engine (tiny model): segmented with
`"auto"` and with a number, through the official `openai` client, whole and streamed;
usage against the engine's own token counters; the segments kept by the file store (the
same containers as the clip's job) so that a second question decodes nothing; a client
that goes away stops every segment upstream. Kept small: clips of the 7-minute video,
few tokens."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import openai_client, uploaded, video_question
from servers import free_port, prepare_container, start_gateway, stop

pytestmark = pytest.mark.engine

ONE_TOKEN_EACH = {"max_tokens": 2, "temperature": 0, "extra_body": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def gateway(
    engine: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("long-engine")
    port = free_port()
    proc = start_gateway(
        engine[0], port, folder / "files", folder / "gateway.log", ["--decode-workers", "2"]
    )
    yield f"http://127.0.0.1:{port}", folder / "files"
    stop(proc)


@pytest.fixture(scope="module")
def stored(gateway: tuple[str, Path], long_video: Path) -> str:
    return uploaded(gateway[0], long_video)


def _messages(url: str, text: str = "What colour is the card?") -> list[dict]:
    return video_question(url, text)


def _counter(base: str, name: str) -> float:
    for line in httpx.get(base + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_segments_by_number_whole_and_streamed(
    gateway: tuple[str, Path], engine: tuple[str, Path], stored: str, long_video: Path
) -> None:
    base, files = gateway
    engine_url, _ = engine
    client = openai_client(base)
    video = {"start": 0, "end": 150, "segments": 60}
    prompt_before = _counter(engine_url, "vllm:prompt_tokens_total")
    generated_before = _counter(engine_url, "vllm:generation_tokens_total")
    reply = client.chat.completions.create(
        model="arc",
        messages=_messages(stored),
        **{**ONE_TOKEN_EACH, "extra_body": {"ignore_eos": True, "video": video}},
    )
    assert reply.model == "arc-tiny" and reply.choices[0].message.content is not None
    usage = reply.usage
    segments = usage.video["segments"]
    assert [(s["start"], s["end"]) for s in segments] == [(0, 60), (60, 120), (120, 150)]
    assert [s["frames"] for s in segments] == [60, 60, 30]
    assert all(s["video_tokens"] == s["frames"] * 114 and s["has_audio"] for s in segments)
    assert usage.video["frames"] == 150 and usage.video["clip"] == [0, 150]
    # Three segment requests and the integration pass, two tokens each; every prompt token
    # the engine counted for them.
    assert usage.completion_tokens == 4 * 2
    assert _counter(engine_url, "vllm:generation_tokens_total") - generated_before == 8
    assert _counter(engine_url, "vllm:prompt_tokens_total") - prompt_before == usage.prompt_tokens
    assert usage.prompt_tokens > 150 * 114
    # Each segment is kept by the file store: the very container its clip's job makes.
    for start, end in ((0, 60), (60, 120), (120, 150)):
        kept = (files / stored / f"prepared-{start:g}-{float(end)}.arcz").read_bytes()
        alone, _ = prepare_container(
            long_video, files.parent / "clip.arcz", start=float(start), end=float(end)
        )
        assert kept == alone, (start, end)

    # Again, streamed: the segments are kept, so nothing is decoded.
    decoded = _counter(base, "arc_gateway_decode_seconds_count")
    stream = client.chat.completions.create(
        model="arc",
        messages=_messages(stored),
        stream=True,
        stream_options={"include_usage": True},
        **{**ONE_TOKEN_EACH, "extra_body": {"ignore_eos": True, "video": video}},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.video["segments"] == segments
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert _counter(base, "arc_gateway_decode_seconds_count") == decoded


def test_auto_cuts_over_five_minutes(gateway: tuple[str, Path], stored: str) -> None:
    """A 310 s clip: a 300 s segment and a 10 s one (a tail under 10 s would have joined)."""
    base, _ = gateway
    body = {
        "messages": _messages(stored),
        "max_tokens": 1,
        "stream": True,
        "video": {"start": 100, "end": 410},
    }
    progress = []
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=600) as r:
        assert r.status_code == 200
        lines = list(r.iter_lines())
    progress = [json.loads(x[14:]) for x in lines if x.startswith(": arc-segment ")]
    assert sorted((p["start"], p["end"]) for p in progress) == [(100, 400), (400, 410)]
    assert lines[-1] == "data: [DONE]" or lines[-2] == "data: [DONE]"
    assert _counter(base, "arc_gateway_segmented_requests_total") >= 3


def test_a_client_gone_stops_every_segment_upstream(
    gateway: tuple[str, Path], engine: tuple[str, Path], stored: str
) -> None:
    base, _ = gateway
    engine_url, _ = engine
    body = {
        "messages": _messages(stored),
        "max_tokens": 4000,
        "ignore_eos": True,  # each segment would generate for a long while
        "video": {"start": 0, "end": 150, "segments": 60},  # kept: no decode
    }
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(base + "/v1/chat/completions", json=body, timeout=6)

    def running() -> float:
        return _counter(engine_url, "vllm:num_requests_running")

    deadline = time.monotonic() + 10
    while running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running() == 0
    generated = _counter(engine_url, "vllm:generation_tokens_total")
    time.sleep(2)
    assert _counter(engine_url, "vllm:generation_tokens_total") == generated
