"""A stand-in engine for the long-video tests: it answers each segment request with a text
the test chooses for that segment (known segment-local times, for the chapters/grounding
mapping), answers the integration pass, fails or hangs on cue, and records every request
(its JSON and headers) and every request the gateway cancelled."""

from __future__ import annotations

import base64
import http.server
import io
import json
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from helpers import FakeUpstream
from PIL import Image


@dataclass
class Seen:
    payload: dict
    headers: dict[str, str]
    segment: int | None = None  # the minute its video starts in (`EngineState.cards`)

    @property
    def has_video(self) -> bool:
        content = self.payload["messages"][0]["content"]
        return isinstance(content, list) and any(p["type"] == "video_url" for p in content)

    @property
    def text(self) -> str:
        content = self.payload["messages"][0]["content"]
        if isinstance(content, str):
            return content
        return "\n".join(p.get("text", "") for p in content if p["type"] == "text")


@dataclass
class EngineState:
    """What the stand-in answers, and what it saw. Set the answers before each request."""

    # The colour card of each minute of the video asked about (`media_factory.card_colours`):
    # a segment request is told apart by the card its first frame shows.
    cards: list = field(default_factory=list)
    segment_answer: Callable[[int | None], str] = lambda segment: "<answer>ok</answer>"
    integration_answer: str = "<answer>integrated</answer>"
    fail: dict[int, int] = field(default_factory=dict)  # segment -> 500s still to answer
    hang: set[int] = field(default_factory=set)  # segments whose request waits for the end
    seen: list[Seen] = field(default_factory=list)
    cancelled: list[int | None] = field(default_factory=list)
    running: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        """The answers and what was seen, back to the start (the cards stay)."""
        with self.lock:
            self.segment_answer = lambda segment: "<answer>ok</answer>"
            self.integration_answer = "<answer>integrated</answer>"
            self.fail, self.hang = {}, set()
            self.seen, self.cancelled = [], []

    def segments_seen(self) -> list[Seen]:
        return [s for s in self.seen if s.has_video]

    def integrations_seen(self) -> list[Seen]:
        return [s for s in self.seen if not s.has_video]


def first_frame(payload: dict) -> np.ndarray | None:
    """The first frame of the prepared container a request carries as a data: URL."""
    content = payload["messages"][0]["content"]
    urls = [p["video_url"]["url"] for p in content if isinstance(p, dict) and "video_url" in p]
    if not urls or not urls[0].startswith("data:"):
        return None
    data = base64.b64decode(urls[0].split(",", 1)[1])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        name = min(n for n in archive.namelist() if n.startswith("frames/"))
        return np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGB"))


def _minute(payload: dict, cards: list) -> int | None:
    """The minute whose card the request's first frame shows (its centre, away from the
    timestamp overlay), if the state knows the cards."""
    if not cards:
        return None
    frame = first_frame(payload)
    if frame is None:
        return None
    colour = frame[280:360, 280:360].reshape(-1, 3).mean(axis=0)
    return int(np.argmin([np.abs(colour - card).sum() for card in cards]))


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


# Tokens the stand-in reports: segment k 1000 + k prompt tokens, the pass 50; 3 each out.
PASS_USAGE = usage(50, 3)


def segment_usage(segment: int | None) -> dict[str, int]:
    return usage(1000 + (segment or 0), 3)


class _Handler(FakeUpstream):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        state: EngineState = self.server.state  # type: ignore[attr-defined]
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        seen = Seen(payload, {k.lower(): v for k, v in self.headers.items()})
        seen.segment = _minute(payload, state.cards)
        with state.lock:
            state.seen.append(seen)
            state.running += 1
        try:
            self._answer(state, seen)
        finally:
            with state.lock:
                state.running -= 1

    def _answer(self, state: EngineState, seen: Seen) -> None:
        segment = seen.segment
        if not seen.has_video:
            self._reply(seen.payload, state.integration_answer, PASS_USAGE)
            return
        with state.lock:
            failing = state.fail.get(segment, 0) if segment is not None else 0
            if failing:
                state.fail[segment] = failing - 1
        if failing:
            self.send_json(500, {"error": {"message": "engine exploded", "code": 500}})
            return
        if segment in state.hang and self._client_left(within_s=60):
            with state.lock:
                state.cancelled.append(segment)
            return
        self._reply(seen.payload, state.segment_answer(segment), segment_usage(segment))

    def _client_left(self, within_s: float) -> bool:
        """Waits for the gateway to close the connection (it cancelled the request)."""
        self.connection.settimeout(within_s)
        try:
            return self.connection.recv(1) == b""
        except OSError:  # TimeoutError too
            return False

    def _reply(self, payload: dict, text: str, counts: dict[str, int]) -> None:
        if not payload.get("stream"):
            body = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": counts,
            }
            self.send_json(200, body)
            return
        head = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0}
        head["model"] = "fake"
        chunks = [
            {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
        ]
        for k in range(0, len(text), 7):
            piece = text[k : k + 7]
            chunks.append({**head, "choices": [{"index": 0, "delta": {"content": piece}}]})
        chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (payload.get("stream_options") or {}).get("include_usage"):
            chunks.append({**head, "choices": [], "usage": counts})
        data = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
        data += b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def stand_in_engine() -> Iterator[tuple[str, EngineState]]:
    """(base URL, state) of a stand-in engine on loopback, for the `with` block."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    state = EngineState()
    server.state = state  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def wait_for(condition: Callable[[], Any], seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    return condition()
