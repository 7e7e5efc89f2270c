"""The load benchmark's client (benchmarks/load/client.py) and its own SSE reader
(benchmarks/load/sse.py) against a stand-in server on loopback that answers on cue: a good
stream, a refusal, an error inside the stream, a stream cut short, a slow answer. (The
smoke test, test_benchmarks_load.py, runs the client against the real stack.)"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from helpers import FakeUpstream

from benchmarks.load.client import ChatSettings, LoadClient, Target
from benchmarks.load.records import Slo
from benchmarks.load.sse import ChunkStream
from benchmarks.load.videos import Video

VIDEO = Video(
    name="v.mp4",
    path=Path("v.mp4"),
    data=b"raw mp4 bytes",
    duration_s=1.0,
    mp4_data_url="data:video/mp4;base64,cmF3",
    prepared_data_url="data:video/x-arc-prepared;base64,cHJlcGFyZWQ=",
)


def chunk(content: str | None = None, usage: dict | None = None) -> dict:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}}]
    return {"object": "chat.completion.chunk", "choices": choices, "usage": usage}


class StandIn(FakeUpstream):
    """Answers a chat as its question asks; keeps what it was sent."""

    seen: ClassVar[list[tuple[str, str, object]]] = []

    def _sse(self, events: list[object], done: bool = True) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Server-Timing", "receive;dur=5, decode;dur=20, engine-input;dur=10")
        self.end_headers()
        self.wfile.write(b": a comment line, skipped\n\n")
        for event in events:
            data = event if isinstance(event, str) else json.dumps(event)
            self.wfile.write(f"data: {data}\n\n".encode())
            self.wfile.flush()
        if done:
            self.wfile.write(b"data: [DONE]\n\n")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/files":
            self.seen.append(("POST", self.path, self.headers["Content-Type"]))
            self.send_response(200)
            self.send_header("Server-Timing", "receive;dur=3, decode;dur=30, store;dur=1")
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({"id": f"file-{len(self.seen)}"}).encode())
            return
        body = json.loads(raw)
        self.seen.append(("POST", self.path, body))
        question = body["messages"][0]["content"][1]["text"]
        if question == "busy":
            self.send_json(429, {"error": {"message": "busy", "code": "too_many_requests"}})
        elif question == "fail":
            self._sse([chunk("a"), {"error": {"message": "engine died", "code": "upstream"}}])
        elif question == "cut":
            self._sse([chunk("a"), chunk("b")], done=False)
        elif question == "slow":
            time.sleep(1.5)
            with contextlib.suppress(OSError):  # the client has given up and gone
                self._sse([chunk("a")])
        else:
            usage = {"prompt_tokens": 17, "completion_tokens": 3, "total_tokens": 20}
            # a first chunk without content counts for TTFT; a payload that is not JSON is skipped
            self._sse(
                [chunk(""), "not json", chunk("a"), chunk("b"), chunk("c"), chunk(usage=usage)]
            )

    def do_DELETE(self) -> None:
        self.seen.append(("DELETE", self.path, None))
        self.send_json(200, {"deleted": True})


@pytest.fixture(scope="module")
def stand_in() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def client_for(url: str, question: str = "go", timeout_s: float = 30.0) -> LoadClient:
    settings = ChatSettings(
        question, "qa", max_tokens=3, ignore_eos=True, request_timeout_s=timeout_s
    )
    target = Target(gateway_url=url, engine_url=url, model="arc-tiny", headers={})
    return LoadClient(target, settings, [VIDEO], Slo(ttft_s=10.0, e2e_s=None, tpot_ms=None))


def one(client: LoadClient, path: str, deadline_s: float = 60.0) -> object:
    deadline = time.monotonic() + deadline_s
    records, seconds = asyncio.run(client.batch(path, 1, 1, deadline, lambda r: None))
    assert seconds > 0
    return records[0]


def test_a_good_stream_is_timed_and_counted(stand_in: str) -> None:
    StandIn.seen.clear()
    r = one(client_for(stand_in), "direct")
    assert r.ok and r.error is None and r.status == 200
    assert 0 < r.headers_s <= r.ttft_s <= r.e2e_s
    assert (r.output_tokens, r.prompt_tokens) == (3, 17)
    assert r.tpot_ms == pytest.approx(1000 * (r.e2e_s - r.ttft_s) / 2)
    assert r.meets_slo
    assert (r.receive_s, r.decode_s, r.engine_input_s) == (0.005, 0.02, 0.01)
    # The direct path names the engine's model and sends the input prepared beforehand.
    ((_, url_path, body),) = StandIn.seen
    assert url_path == "/v1/chat/completions" and body["model"] == "arc-tiny"
    assert body["messages"][0]["content"][0]["video_url"]["url"] == VIDEO.prepared_data_url
    assert body["max_tokens"] == 3 and body["ignore_eos"] and body["stream"]
    assert body["stream_options"] == {"include_usage": True}
    assert body["chat_template_kwargs"] == {"task": "qa"}


def test_the_gateway_paths_send_the_raw_video_or_an_uploaded_file(stand_in: str) -> None:
    StandIn.seen.clear()
    client = client_for(stand_in)
    assert one(client, "gateway-data-url").ok
    (_, _, body) = StandIn.seen[-1]
    assert "model" not in body
    assert body["messages"][0]["content"][0]["video_url"]["url"] == VIDEO.mp4_data_url

    upload = one(client, "gateway-upload")
    assert upload.ok and 0 < upload.upload_s < upload.e2e_s
    # the upload's stages and the chat's add up
    assert upload.receive_s == pytest.approx(0.008) and upload.decode_s == pytest.approx(0.05)
    assert upload.store_s == 0.001
    (_, files_path, content_type), (_, _, chat) = StandIn.seen[-2:]
    assert files_path == "/v1/files" and content_type.startswith("multipart/form-data")
    file_id = chat["messages"][0]["content"][0]["video_url"]["url"]
    assert file_id.startswith("file-") and client.uploaded == [file_id]

    asyncio.run(client.upload_all())
    assert one(client, "gateway-second-question").ok
    (_, _, asked) = StandIn.seen[-1]
    assert asked["messages"][0]["content"][0]["video_url"]["url"] == client.stored["v.mp4"]
    asyncio.run(client.delete_uploads())
    deleted = [p for method, p, _ in StandIn.seen if method == "DELETE"]
    assert deleted == [f"/v1/files/{file_id}", f"/v1/files/{client.stored['v.mp4']}"]
    assert client.uploaded == []


@pytest.mark.parametrize(
    ("question", "error"),
    [
        ("busy", "HTTP 429 too_many_requests"),
        ("fail", "stream error upstream"),
        ("cut", "stream ended without [DONE]"),
    ],
)
def test_failures_are_named(stand_in: str, question: str, error: str) -> None:
    r = one(client_for(stand_in, question), "direct")
    assert not r.ok and r.error == error and r.meets_slo is None


def test_a_slow_answer_is_a_timeout_or_cancelled_at_the_deadline(stand_in: str) -> None:
    assert one(client_for(stand_in, "slow", timeout_s=0.3), "direct").error == "timeout"
    assert one(client_for(stand_in, "slow"), "direct", deadline_s=0.3).error == "cancelled"


def test_a_batch_sends_count_requests_with_that_many_clients(stand_in: str) -> None:
    client = client_for(stand_in)
    done: list[int] = []
    deadline = time.monotonic() + 60
    records, _ = asyncio.run(
        client.batch("direct", 3, 7, deadline, lambda r: done.append(r.index), first_index=2)
    )
    assert [r.index for r in records] == list(range(2, 9)) and sorted(done) == list(range(2, 9))
    assert all(r.ok and r.concurrency == 3 and r.video == "v.mp4" for r in records)


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def _read(stream: ChunkStream) -> list[dict]:
    return [c async for c in stream]


def test_sse_reader_yields_json_chunks_until_done() -> None:
    stream = ChunkStream(
        _lines(
            ": keep-alive", "", "event: message", 'data: {"a": 1}', "", "data:{\"b\": 2}",
            "data: not json", "data: [1, 2]", "data: [DONE]", 'data: {"after": 1}',
        )
    )  # fmt: skip
    assert asyncio.run(_read(stream)) == [{"a": 1}, {"b": 2}]
    assert stream.done
    cut = ChunkStream(_lines('data: {"a": 1}'))
    assert asyncio.run(_read(cut)) == [{"a": 1}] and not cut.done
