"""The gateway's pure parts of long videos: times moved to the whole video, what the
integration pass's answers are read as, and the one place every upstream request is built
(what later work adds there reaches every request of an answer)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from server.chat.answers import shift_times
from server.chat.integrate import Cut, chosen_candidate, joined_cuts
from server.chat.upstream_requests import Integrator, UpstreamRequests, session_key
from server.schemas import Segment as TimeRange
from server.schemas import VideoOptions
from server.upstream import Body


def test_times_moved_to_the_whole_video() -> None:
    text = "00:00:10 - 00:00:25: a dog\nAt 1:05, then 12:30.5; 3 cats; 1:2:3:4; v1.2"
    assert shift_times(text, 600) == (
        "00:10:10 - 00:10:25: a dog\nAt 00:11:05, then 00:22:30.5; 3 cats; 1:2:3:4; v1.2"
    )
    assert shift_times(text, 0) == text


def test_what_the_integration_pass_answers_is_read_as() -> None:
    candidates = [TimeRange(start=70, end=80), TimeRange(start=280, end=295)]
    assert chosen_candidate("<think>hm</think><answer>2</answer>", candidates) == 1
    assert chosen_candidate("<answer>00:04:41 - 00:04:50</answer>", candidates) == 1
    assert chosen_candidate("<answer>candidate 7</answer>", candidates) is None
    assert chosen_candidate("<answer>none of them</answer>", candidates) is None
    cuts = [Cut(before=1, at=60), Cut(before=3, at=120), Cut(before=5, at=180)]
    assert joined_cuts("<answer>1, 3</answer>", cuts) == {0, 2}
    assert joined_cuts("<answer>0</answer>", cuts) == set()
    assert joined_cuts("4 and 9", cuts) == set()


def test_video_segments_values() -> None:
    assert VideoOptions().segments == "auto"
    assert VideoOptions(segments="off").segments == "off"
    assert VideoOptions(segments=120).segments == 120.0
    for bad in (59, 301, "120", "many", True):
        with pytest.raises(ValidationError):
            VideoOptions(segments=bad)


def test_session_keys() -> None:
    assert session_key(None) is None and session_key(None, 3) is None
    assert session_key("file-abc") == "file-abc"
    assert session_key("file-abc", 3) == "file-abc:seg-3"


def _sent(body: Body) -> dict:
    import asyncio

    async def collect() -> bytes:
        return b"".join([piece async for piece in body.pieces()])

    return json.loads(asyncio.run(collect()))


def test_every_upstream_request_is_built_in_one_place() -> None:
    """Extras set once (a key's cache_salt, a batch's priority, a header, the key's router
    sessions) reach the one-pass request, each segment's and the integration pass on the
    engine; an integrator that is not vLLM gets the OpenAI parameters only."""
    requests = UpstreamRequests(
        request_id="r-1",
        sampling={"max_tokens": 8, "top_k": 5, "seed": 1},
        task="summary",
        extra_body={"cache_salt": "salt", "priority": 10},
        headers={"x-tenant": "t"},
        session_headers=lambda key: {"x-arc-session": f"k/{key}"} if key else {},
    )
    parts = [{"type": "text", "text": "What?"}]
    one, one_headers = requests.video("m", parts, None, stream=False, file_id="file-1")
    seg, seg_headers = requests.video("m", parts, None, stream=False, file_id="file-1", segment=2)
    engine = Integrator(upstream=None, model=None, external=False)  # type: ignore[arg-type]
    joined, joined_headers = requests.integration(engine, "m", "prompt", stream=True)
    for body in (_sent(one), _sent(seg), _sent(joined)):
        assert body["cache_salt"] == "salt" and body["priority"] == 10
        assert body["max_tokens"] == 8 and body["top_k"] == 5
    assert _sent(one)["chat_template_kwargs"] == {"task": "summary"}
    assert _sent(joined)["chat_template_kwargs"] == {"task": "none"}
    assert _sent(joined)["stream_options"] == {"include_usage": True}
    assert one_headers["x-arc-session"] == "k/file-1"
    assert seg_headers["x-arc-session"] == "k/file-1:seg-2"
    assert "x-arc-session" not in joined_headers
    for headers in (one_headers, seg_headers, joined_headers):
        assert headers["x-tenant"] == "t" and headers["X-Request-Id"] == "r-1"
    other = Integrator(upstream=None, model="big", external=True)  # type: ignore[arg-type]
    body = _sent(requests.integration(other, "m", "prompt", stream=False, max_tokens=4)[0])
    assert body == {
        "seed": 1,
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "prompt"}],
        "model": "big",
        "stream": False,
    }
