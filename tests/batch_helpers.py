"""Helpers of the batch tests: a slow stand-in engine that echoes the question (so an
output line shows which request it answers) and fails on cue, batch files, polling."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
from helpers import FakeUpstream, serve


@dataclass
class Echo:
    """What the stand-in does and saw. `delay_s`: each answer's time; a question that
    contains "fail-always" gets a 503, "fail-twice" a 500 its first two times."""

    delay_s: float = 0.0
    seen: list[str] = field(default_factory=list)
    priorities: list[int | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _EchoHandler(FakeUpstream):
    protocol_version = "HTTP/1.1"
    echo: Echo

    def do_POST(self) -> None:
        echo = self.echo
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        content = payload["messages"][0]["content"]
        text = (
            content
            if isinstance(content, str)
            else " ".join(p.get("text", "") for p in content if p.get("type") == "text")
        )
        with echo.lock:
            echo.seen.append(text)
            earlier = echo.seen.count(text)
            echo.priorities.append(payload.get("priority"))
        time.sleep(echo.delay_s)
        if "fail-always" in text:
            self.send_json(503, {"error": {"message": "engine overloaded", "code": 503}})
        elif "fail-twice" in text and earlier <= 2:
            self.send_json(500, {"error": {"message": "engine exploded", "code": 500}})
        else:
            self.send_completion("echo: " + text)


@contextlib.contextmanager
def echo_engine(delay_s: float = 0.0) -> Iterator[tuple[str, Echo]]:
    echo = Echo(delay_s)
    handler = type("EchoHandler", (_EchoHandler,), {"echo": echo})
    with serve(handler) as url:
        yield url, echo


def chat_line(custom_id: str, question: str | None = None, **body: object) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "arc",
            "messages": [{"role": "user", "content": question or f"question {custom_id}"}],
            "max_tokens": 8,
            **body,
        },
    }


def jsonl(lines: list[dict | str]) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


def upload_batch(base: str, data: bytes, key: str | None = None) -> httpx.Response:
    return httpx.post(
        base + "/v1/files",
        files={"file": ("batch.jsonl", data, "application/jsonl")},
        data={"purpose": "batch"},
        headers=auth(key),
        timeout=60,
    )


def auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def create_batch(base: str, file_id: str, key: str | None = None, **extra: object) -> dict:
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        **extra,
    }
    response = httpx.post(base + "/v1/batches", json=body, headers=auth(key), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def get_batch(base: str, batch_id: str, key: str | None = None) -> dict:
    response = httpx.get(f"{base}/v1/batches/{batch_id}", headers=auth(key), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


ENDED = ("completed", "failed", "expired", "cancelled")


def wait_batch(base: str, batch_id: str, statuses=ENDED, seconds: float = 120, key=None) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        batch = get_batch(base, batch_id, key)
        if batch["status"] in statuses or time.monotonic() > deadline:
            return batch
        time.sleep(0.2)


def file_lines(base: str, file_id: str | None, key: str | None = None) -> list[dict]:
    if file_id is None:
        return []
    response = httpx.get(f"{base}/v1/files/{file_id}/content", headers=auth(key), timeout=30)
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def wait_completed(base: str, batch_id: str, count: int, seconds: float = 60, key=None) -> dict:
    """The batch once at least `count` of its lines completed (or it ended)."""
    deadline = time.monotonic() + seconds
    while True:
        batch = get_batch(base, batch_id, key)
        done = batch["request_counts"]["completed"] >= count or batch["status"] in ENDED
        if done or time.monotonic() > deadline:
            return batch
        time.sleep(0.1)
