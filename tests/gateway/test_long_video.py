"""Long videos through the gateway, against a stand-in engine (`stand_in_engine.py`) that
answers known segment-local times, fails or hangs on cue and records every request: the
segment plan, times mapped to the whole video per task, what the integration pass is
asked, usage, session keys, faults, and the one-pass requests that must not change. The
same path against the real engine: test_long_video_engine.py."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import serve_folder, upload_video
from media_factory import card_colours, ffmpeg
from servers import free_port, running_gateway, start_gateway, stop
from stand_in_engine import PASS_USAGE, EngineState, segment_usage, stand_in_engine, wait_for

from arc_media import prepared as prepared_media
from arc_media.segments import clock

SEGMENT_S = 60  # the long video (420 s) in 7 segments of a minute


@pytest.fixture(scope="module")
def stand_in(long_video: Path) -> Iterator[tuple[str, EngineState]]:
    with stand_in_engine() as engine:
        engine[1].cards = card_colours(long_video, 7)  # tells the minutes apart
        yield engine


@pytest.fixture(autouse=True)
def fresh_state(stand_in: tuple[str, EngineState]) -> None:
    stand_in[1].reset()


@pytest.fixture(scope="module")
def media_server(long_video: Path) -> Iterator[str]:
    with serve_folder(long_video.parent) as url:
        yield url


@pytest.fixture(scope="module")
def gateway(
    stand_in: tuple[str, EngineState], media_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("long-gateway")
    extra = [
        "--decode-workers", "2", "--segments-in-flight", "4",
        "--allow-url-host", urllib.parse.urlparse(media_server).netloc,
    ]  # fmt: skip
    with running_gateway(stand_in[0], folder, extra) as base:
        yield base


@pytest.fixture(scope="module")
def stored(gateway: str, long_video: Path) -> str:
    """The long video uploaded once: measured, not prepared (its segments are, by the first
    question, and kept)."""
    reply = upload_video(gateway, long_video)
    assert reply.status_code == 200, reply.text
    video = reply.json()["video"]
    assert video["segments"] == 2 and video["frames"] is None  # auto: 300 s + 120 s
    assert video["video_duration_s"] == pytest.approx(420, abs=0.1)
    return reply.json()["id"]


def chat_body(url: str, text: str = "What happens?", **extra: object) -> dict:
    """A chat request about the video at `url` (a file id, data: URL or https URL)."""
    content = [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": text}]
    return {"messages": [{"role": "user", "content": content}], **extra}


def ask(
    base: str, url: str, text: str = "What happens?", timeout: float = 120, **video: object
) -> httpx.Response:
    body = chat_body(url, text, model="arc", max_tokens=16, video=video)
    return httpx.post(base + "/v1/chat/completions", json=body, timeout=timeout)


def metric(base: str, name: str) -> float:
    for line in httpx.get(base + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def bounds(reply: httpx.Response) -> list[tuple[float, float]]:
    return [(s["start"], s["end"]) for s in reply.json()["usage"]["video"]["segments"]]


MINUTES = [(60.0 * k, 60.0 * (k + 1)) for k in range(7)]


def test_chapters_come_back_absolute_and_a_cut_chapter_is_joined(
    gateway: str, stand_in: tuple[str, EngineState], stored: str
) -> None:
    _, state = stand_in
    # Each minute: a chapter of 25 s, then one to the minute's end (the cut).
    state.segment_answer = lambda k: (
        f"<think>cards</think><answer>00:00:00 - 00:00:25: card {k}\n"
        f"00:00:25 - 00:01:00: card {k} again</answer>"
    )
    state.integration_answer = "<answer>2, 5</answer>"  # cuts at 2:00 and 5:00 split one
    reply = ask(gateway, stored, "", task="chapters", segments=SEGMENT_S)
    assert reply.status_code == 200, reply.text
    assert bounds(reply) == MINUTES
    chapters = [
        (c["start"], c["end"]) for c in reply.json()["choices"][0]["structured"]["segments"]
    ]
    expected = []
    for k in range(7):
        expected += [(60.0 * k, 60.0 * k + 25), (60.0 * k + 25, 60.0 * k + 60)]
    expected[3:5] = [(85.0, 145.0)]  # minute 1's last chapter and minute 2's first
    expected[8:10] = [(265.0, 325.0)]
    assert chapters == expected
    content = reply.json()["choices"][0]["message"]["content"]
    assert "00:01:25 - 00:02:25: card 1 again; card 2" in content
    # The pass was asked about the six cuts, in the whole video's times.
    (integration,) = state.integrations_seen()
    for k in range(1, 7):
        assert f"{k}. cut at {clock(60 * k)}" in integration.text
    assert "chat_template_kwargs" in integration.payload
    assert integration.payload["chat_template_kwargs"] == {"task": "none"}
    # Each segment went with a router session of its own; the pass with none.
    assert sorted(s.segment for s in state.segments_seen()) == list(range(7))
    assert len({s.headers["x-arc-session"] for s in state.segments_seen()}) == 7
    assert "x-arc-session" not in integration.headers
    # The key's cache salt on every request to the engine.
    assert len({s.payload["cache_salt"] for s in state.seen}) == 1
    # Its own answer per segment, times on the whole video's timeline.
    segments = reply.json()["usage"]["video"]["segments"]
    assert segments[3]["answer"].startswith("00:03:00 - 00:03:25: card 3")
    assert [s["frames"] for s in segments] == [60] * 7
    assert all(s["video_tokens"] == 60 * 114 and s["has_audio"] for s in segments)


def test_grounding_picks_one_candidate_first(
    gateway: str, stand_in: tuple[str, EngineState], stored: str
) -> None:
    _, state = stand_in
    found = {1: "00:00:10 - 00:00:20", 4: "00:00:40 - 00:00:55"}
    state.segment_answer = lambda k: f"<answer>{found.get(k, 'not in this part')}</answer>"
    state.integration_answer = "<think>the second</think><answer>2</answer>"
    reply = ask(gateway, stored, "the dog jumps", task="grounding", segments=SEGMENT_S)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    ranges = [(s["start"], s["end"]) for s in choice["structured"]["segments"]]
    assert ranges == [(280.0, 295.0), (70.0, 80.0)]  # the chosen one first
    assert choice["message"]["content"] == "<answer>00:04:40 - 00:04:55</answer>"
    (integration,) = state.integrations_seen()
    assert "1. 00:01:10-00:01:20" in integration.text and "the dog jumps" in integration.text
    # A pass that names none: every candidate, in order.
    state.reset()
    state.segment_answer = lambda k: f"<answer>{found.get(k, 'no')}</answer>"
    state.integration_answer = "<answer>I cannot tell</answer>"
    reply = ask(gateway, stored, "the dog jumps", task="grounding", segments=SEGMENT_S)
    ranges = [(s["start"], s["end"]) for s in reply.json()["choices"][0]["structured"]["segments"]]
    assert ranges == [(70.0, 80.0), (280.0, 295.0)]


def test_the_integration_prompt_holds_every_segment_answer_and_usage_sums(
    gateway: str, stand_in: tuple[str, EngineState], stored: str
) -> None:
    _, state = stand_in
    state.segment_answer = lambda k: (
        f"<think>looking</think><answer>At 00:00:30 card {k} is blue.</answer>"
    )
    state.integration_answer = "<think>all</think><answer>Seven cards.</answer>"
    before = metric(gateway, 'arc_gateway_integration_passes_total{task="qa"}')
    reply = ask(gateway, stored, "Which colours?", segments=SEGMENT_S)
    assert reply.status_code == 200, reply.text
    completion = reply.json()
    assert completion["model"] == "fake"
    assert completion["choices"][0]["message"]["content"] == state.integration_answer
    assert completion["choices"][0]["structured"]["answer"] == "Seven cards."
    (integration,) = state.integrations_seen()
    prompt = integration.text
    for k in range(7):
        segment = f"[Segment {k + 1} of 7, {clock(60 * k)}-{clock(60 * k + 60)}]"
        assert f"{segment}\nAt {clock(60 * k + 30)} card {k} is blue." in prompt
    assert "Which colours?" in prompt and "<answer>" in prompt  # the task's format
    usage = completion["usage"]
    segments = [segment_usage(k) for k in range(7)]
    assert usage["prompt_tokens"] == sum(u["prompt_tokens"] for u in segments) + 50
    assert usage["completion_tokens"] == 3 * 7 + PASS_USAGE["completion_tokens"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    video = usage["video"]
    assert video["frames"] == 420 and video["video_tokens"] == 420 * 114
    assert video["duration_s"] == pytest.approx(420, abs=0.1)
    assert video["segments"][2]["answer"] == "At 00:02:30 card 2 is blue."
    assert metric(gateway, 'arc_gateway_integration_passes_total{task="qa"}') == before + 1
    # The sampling parameters reached every request; the pass has no video.
    assert all(s.payload["max_tokens"] == 16 for s in state.seen)
    assert all(s.payload["stream"] is False for s in state.segments_seen())


def test_streamed_progress_lines_then_the_answer(
    gateway: str, stand_in: tuple[str, EngineState], stored: str
) -> None:
    _, state = stand_in
    state.integration_answer = "<answer>Seven cards in a row.</answer>"
    body = chat_body(
        stored,
        "Which colours?",
        stream=True,
        stream_options={"include_usage": True},
        video={"segments": SEGMENT_S},
    )
    progress, data = [], []
    with httpx.stream("POST", gateway + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith(": arc-segment "):
                progress.append(json.loads(line[len(": arc-segment ") :]))
            elif line.startswith("data: "):
                assert len(progress) == 7, "every progress line comes before the answer"
                data.append(line[6:])
    assert [p["done"] for p in progress] == list(range(1, 8))
    assert sorted(p["index"] for p in progress) == list(range(7))
    assert all(p["count"] == 7 for p in progress)
    assert {(p["start"], p["end"]) for p in progress} == set(MINUTES)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == state.integration_answer
    finished = [c for c in chunks if c["choices"] and c["choices"][0].get("finish_reason")]
    assert finished[-1]["choices"][0]["structured"]["answer"] == "Seven cards in a row."
    assert chunks[-1]["usage"]["prompt_tokens"] == 7 * 1000 + sum(range(7)) + 50
    assert len(chunks[-1]["usage"]["video"]["segments"]) == 7
    assert all(c["model"] == "fake" for c in chunks)


def test_chapters_and_grounding_stream_as_written_chunks(
    gateway: str, stand_in: tuple[str, EngineState], stored: str
) -> None:
    from openai import OpenAI

    _, state = stand_in
    state.segment_answer = lambda k: "<answer>00:00:05 - 00:00:15</answer>" if k == 3 else "no"
    client = OpenAI(base_url=gateway + "/v1", api_key="none", max_retries=0)
    stream = client.chat.completions.create(
        model="arc",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": stored}},
                    {"type": "text", "text": "the red card"},
                ],
            }
        ],
        stream=True,
        extra_body={"video": {"task": "grounding", "segments": SEGMENT_S}},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "<answer>00:03:05 - 00:03:15</answer>"
    assert chunks[-1].choices[0].model_extra["structured"]["segments"] == [
        {"start": 185.0, "end": 195.0, "text": None}
    ]
    assert not state.integrations_seen()  # one candidate: nothing to decide


def test_an_engine_error_is_retried_once_then_fails_naming_the_segment(
    gateway: str, stand_in: tuple[str, EngineState], stored: str
) -> None:
    _, state = stand_in
    retried = metric(gateway, 'arc_gateway_segments_total{outcome="retried"}')
    state.fail = {2: 1}
    reply = ask(gateway, stored, segments=SEGMENT_S)
    assert reply.status_code == 200, reply.text
    assert [s.segment for s in state.segments_seen()].count(2) == 2
    assert metric(gateway, 'arc_gateway_segments_total{outcome="retried"}') == retried + 1

    # Twice: a 502 naming the segment; the requests still running are cancelled.
    state.reset()
    state.fail = {2: 2}
    state.hang = {0, 1}
    reply = ask(gateway, stored, segments=SEGMENT_S)
    assert reply.status_code == 502, reply.text
    error = reply.json()["error"]
    assert error["code"] == "upstream_error"
    assert "segment 3 of 7 (00:02:00-00:03:00, 120-180 s)" in error["message"]
    assert wait_for(lambda: sorted(state.cancelled) == [0, 1], 5), state.cancelled
    assert wait_for(lambda: state.running == 0, 5)
    seen = len(state.seen)
    time.sleep(1)
    assert len(state.seen) == seen  # no segment is asked after the failure


def test_a_client_gone_after_the_first_segment_cancels_the_others(
    gateway: str, stand_in: tuple[str, EngineState], stored: str
) -> None:
    _, state = stand_in
    state.hang = {1, 2, 3, 4, 5, 6}
    body = chat_body(stored, "?", stream=True, video={"segments": SEGMENT_S})
    with httpx.stream("POST", gateway + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()  # kept: a dropped iterator closes the connection
        first = next(lines)
        assert first.startswith(": arc-segment ") and json.loads(first[14:])["index"] == 0
        # Segment 0 answered: 1-4 run upstream (4 in flight), 5 and 6 wait.
        assert wait_for(lambda: state.running == 4, 10), (
            state.running,
            [s.segment for s in state.seen],
        )
    # Gone: the four running upstream are cancelled, the two waiting never start.
    assert wait_for(lambda: sorted(state.cancelled) == [1, 2, 3, 4], 10), state.cancelled
    assert wait_for(lambda: state.running == 0, 5)
    time.sleep(1)
    assert sorted(s.segment for s in state.segments_seen()) == [0, 1, 2, 3, 4]
    assert not state.integrations_seen()


@pytest.fixture(scope="module")
def truncated(long_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The long video with its index first and its last 45 % gone: it probes as 420 s, but
    the minutes past ~3:50 hold no frame."""
    folder = tmp_path_factory.mktemp("truncated")
    whole = folder / "faststart.mp4"
    ffmpeg("-i", str(long_video), "-c", "copy", "-movflags", "+faststart", str(whole))
    cut = folder / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.55)])
    return cut


def test_a_segment_that_cannot_be_prepared_is_a_422_naming_it(
    gateway: str, stand_in: tuple[str, EngineState], truncated: Path
) -> None:
    reply = upload_video(gateway, truncated)
    assert reply.status_code == 200, reply.text  # a long upload is measured only
    failed = ask(gateway, reply.json()["id"], segments=SEGMENT_S)
    assert failed.status_code == 422, failed.text
    error = failed.json()["error"]
    assert error["code"] == "segment_unprocessable" and error["param"] == "video"
    named = error["message"].split(" (")[0]  # "segment 6 of 7"
    index = int(named.split()[1]) - 1
    assert index >= 3, error["message"]
    assert f"({clock(60 * index)}-{clock(60 * index + 60)}" in error["message"]
    assert str(truncated) not in error["message"]
    assert metric(gateway, 'arc_gateway_rejections_total{reason="segment_unprocessable"}') >= 1


def test_data_url_segments_are_the_clip_requests(
    gateway: str, stand_in: tuple[str, EngineState], long_video: Path
) -> None:
    """The same frames, audio and duration as asking for each segment's clip with
    video.start/end (prepared independently, both from a data URL)."""
    _, state = stand_in
    url = "data:video/mp4;base64," + base64.b64encode(long_video.read_bytes()).decode()
    # The last four minutes in two segments: seeks into the file, cards 3 to 6.
    reply = ask(gateway, url, start=180, end=420, segments=120, timeout=300)
    assert reply.status_code == 200, reply.text
    assert bounds(reply) == [(180, 300), (300, 420)]
    segments = [_container(s) for s in state.segments_seen()]
    assert all("x-arc-session" not in s.headers for s in state.seen)  # not a stored file
    for start, end in bounds(reply):
        state.reset()
        clip = ask(gateway, url, start=start, end=end, segments="off", timeout=300)
        assert clip.status_code == 200, clip.text
        (one,) = state.segments_seen()
        alone = _container(one)
        same = [
            s
            for s in segments
            if np.array_equal(s.frames, alone.frames) and np.array_equal(s.audio, alone.audio)
        ]
        assert len(same) == 1 and same[0].duration == alone.duration, (start, end)
        assert alone.frames.shape[0] == end - start


def _container(seen: object) -> prepared_media.PreparedMedia:
    url = next(
        p["video_url"]["url"]
        for p in seen.payload["messages"][0]["content"]  # type: ignore[attr-defined]
        if p["type"] == "video_url"
    )
    return prepared_media.decode(base64.b64decode(url.split(",", 1)[1]))


def test_an_https_url_clip_is_segmented_with_the_tail_rule(
    gateway: str, media_server: str, long_video: Path
) -> None:
    # 35-400 s in segments of 120 s: the 5 s tail joins the third segment.
    reply = ask(gateway, f"{media_server}/{long_video.name}", start=35, end=400, segments=120)
    assert reply.status_code == 200, reply.text
    assert bounds(reply) == [(35, 155), (155, 275), (275, 400)]
    video = reply.json()["usage"]["video"]
    assert video["clip"] == [35, 400] and [s["frames"] for s in video["segments"]] == [
        120,
        120,
        125,
    ]


def test_short_videos_and_segments_off_are_one_pass_as_before(
    gateway: str, stand_in: tuple[str, EngineState], stored: str, media_dir: Path
) -> None:
    _, state = stand_in
    short = upload_video(gateway, media_dir / "syn_200s.mp4").json()["id"]
    default = ask(gateway, short)
    off = ask(gateway, short, segments="off")
    assert default.status_code == off.status_code == 200
    assert "segments" not in default.json()["usage"]["video"]
    first, second = state.seen
    assert first.payload == second.payload
    first.headers.pop("x-request-id"), second.headers.pop("x-request-id")
    assert first.headers == second.headers
    assert first.headers["x-arc-session"]  # the key's and the file's, as before
    # The request as the gateway built it before segments existed.
    payload = dict(first.payload)
    content = payload.pop("messages")[0]["content"]
    assert isinstance(payload.pop("cache_salt"), str)
    assert payload == {"max_tokens": 16, "temperature": 0.0, "model": "fake", "stream": False}
    assert content[0]["video_url"]["url"].startswith("data:video/x-arc-prepared;base64,")
    assert content[1] == {"type": "text", "text": "What happens?"}
    # A long video with segments off: one request of 150 frames over all of it.
    state.reset()
    reply = ask(gateway, stored, segments="off", timeout=300)
    assert reply.status_code == 200, reply.text
    assert len(state.seen) == 1 and "x-arc-session" in state.seen[0].headers
    video = reply.json()["usage"]["video"]
    assert video["frames"] == 150 and "segments" not in video


def test_what_a_segmented_answer_refuses(gateway: str, stored: str) -> None:
    reply = ask(gateway, stored, segments=59)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "video.segments"
    reply = ask(gateway, stored, segments="many")
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "video.segments"
    body = {"messages": [{"role": "user", "content": "hi"}], "video": {"segments": 120}}
    reply = httpx.post(gateway + "/v1/chat/completions", json=body, timeout=30)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "no_video"
    for extra in ({"n": 2, "temperature": 0.7}, {"logprobs": True}):
        body = chat_body(stored, "?", video={"segments": SEGMENT_S}, **extra)
        reply = httpx.post(gateway + "/v1/chat/completions", json=body, timeout=30)
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["param"] == next(iter(extra))


def test_the_integration_pass_on_another_server(
    stand_in: tuple[str, EngineState], long_video: Path, tmp_path: Path
) -> None:
    engine_url, engine_state = stand_in
    with stand_in_engine() as (integrator_url, integrator):
        integrator.integration_answer = "<answer>from the big model</answer>"
        port = free_port()
        os.environ["ARC_GATEWAY_INTEGRATOR_API_KEY"] = "sk-integrator"
        try:
            proc = start_gateway(
                engine_url,
                port,
                tmp_path / "files",
                tmp_path / "gateway.log",
                [
                    "--decode-workers", "2", "--integrator-url", integrator_url,
                    "--integrator-model", "big-llm",
                ],
            )  # fmt: skip
        finally:
            del os.environ["ARC_GATEWAY_INTEGRATOR_API_KEY"]
        try:
            stored = upload_video(f"http://127.0.0.1:{port}", long_video).json()["id"]
            reply = ask(f"http://127.0.0.1:{port}", stored, start=0, end=130, segments=60)
        finally:
            stop(proc)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == integrator.integration_answer
    assert len(engine_state.segments_seen()) == 3 and not engine_state.integrations_seen()
    (integration,) = integrator.seen
    assert integration.headers["authorization"] == "Bearer sk-integrator"
    assert integration.payload["model"] == "big-llm"
    assert "chat_template_kwargs" not in integration.payload
    assert isinstance(integration.payload["messages"][0]["content"], str)
    assert "sk-integrator" not in (tmp_path / "gateway.log").read_text()
