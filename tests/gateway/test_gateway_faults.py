"""Upstream faults, injected with a fake model server: a slow one (504), a failing one (502),
one that refuses the request (a 4xx in the gateway's words), none at all (503)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import FakeUpstream
from servers import free_port, gateway_on_stand_in, start_gateway, stop


class _FakeUpstream(FakeUpstream):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][0]["content"][0]["text"]
        if text == "slow":
            time.sleep(4)
            self.send_json(200, {})
        elif text == "crash":
            self.send_json(500, {"error": {"message": "engine core died"}})
        else:
            # vLLM's 400s can hold its internal validation dumps: not for clients.
            dump = "1 validation error for ChatCompletionRequest\n  input_value={'secret': 1}"
            self.send_json(400, {"error": {"message": dump}})


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("faults")
    extra = ["--upstream-timeout-s", "1", "--decode-workers", "1"]
    with gateway_on_stand_in(_FakeUpstream, folder, extra) as base:
        yield base


def chat(base: str, text: str) -> httpx.Response:
    body = {"model": "fake", "messages": [{"role": "user", "content": text}]}
    return httpx.post(base + "/v1/chat/completions", json=body, timeout=30)


@pytest.mark.parametrize(
    ("text", "status", "code"),
    [
        ("slow", 504, "upstream_timeout"),
        ("crash", 502, "upstream_error"),
        ("refused", 400, "upstream_rejected"),
    ],
)
def test_upstream_faults(gateway: str, text: str, status: int, code: str) -> None:
    t0 = time.monotonic()
    reply = chat(gateway, text)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == code
    assert time.monotonic() - t0 < 10
    if code == "upstream_rejected":
        assert "validation" not in error["message"] and "input_value" not in error["message"]


def test_no_upstream_is_503(tmp_path: Path) -> None:
    port = free_port()
    proc = start_gateway(
        f"http://127.0.0.1:{free_port()}", port, tmp_path / "files", tmp_path / "log"
    )
    try:
        base = f"http://127.0.0.1:{port}"
        reply = chat(base, "hello")
        assert reply.status_code == 503 and reply.headers["Retry-After"]
        assert reply.json()["error"]["code"] == "upstream_unavailable"
        assert httpx.get(base + "/ready").status_code == 503
        assert httpx.get(base + "/health").status_code == 200
    finally:
        stop(proc)
