"""What the tests share to talk to servers: data URLs, uploads, checks of OpenAI-shaped
errors, and stand-in upstreams on loopback (a real vLLM cannot be made to fail or record
on cue). Starting the real servers is tests/servers.py's part."""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx


def data_url(video: Path | bytes, mime: str = "video/mp4") -> str:
    """A data: URL of a file's bytes (or of the bytes themselves)."""
    data = video.read_bytes() if isinstance(video, Path) else video
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    """An OpenAI error body with this status and code, a message and a type; returns it."""
    assert response.status_code == status, (response.status_code, response.text[:2000])
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"] and error["type"]
    return error


def upload_video(
    base: str, path: Path, *, headers: dict[str, str] | None = None, timeout: float = 120
) -> httpx.Response:
    """POST /v1/files of a video file, as a client uploads it."""
    with path.open("rb") as handle:
        return httpx.post(
            base + "/v1/files",
            files={"file": (path.name, handle, "video/mp4")},
            data={"purpose": "user_data"},
            headers=headers,
            timeout=timeout,
        )


def uploaded(base: str, path: Path, **kwargs: object) -> str:
    """The id of a video file uploaded with `upload_video` (which must succeed)."""
    reply = upload_video(base, path, **kwargs)  # type: ignore[arg-type]
    assert reply.status_code == 200, reply.text
    return reply.json()["id"]


def slow_upload(base: str, length: int, timeout: float) -> socket.socket:
    """A socket that has begun a multipart upload of `length` bytes to `base`'s /v1/files
    and sent no more than the part's headers: the test sends the rest, or nothing."""
    host, port = urllib.parse.urlparse(base).netloc.split(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.sendall(
        b"POST /v1/files HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=xyz\r\n"
        + f"Content-Length: {length}\r\n\r\n".encode()
        + b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="s.mp4"\r\n\r\n'
    )
    return sock


@contextlib.contextmanager
def serve(handler: object) -> Iterator[str]:
    """A threading HTTP server of `handler` on loopback for the `with` block: its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # type: ignore[arg-type]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    """Serves a folder's files, logging nothing."""

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_folder(folder: Path, handler: type[QuietFiles] = QuietFiles) -> Iterator[str]:
    """The files of `folder` over HTTP on loopback for the `with` block: the base URL."""
    with serve(functools.partial(handler, directory=str(folder))) as url:
        yield url


class FakeUpstream(http.server.BaseHTTPRequestHandler):
    """A stand-in for vLLM in fault tests: JSON answers, one model on GET; subclasses
    answer POST (`read_json`, `video_url` for what a request carries)."""

    def log_message(self, *args: object) -> None:
        pass

    def read_json(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    @staticmethod
    def video_url(body: dict) -> str:
        """The video URL of a chat request's one message."""
        content = body["messages"][0]["content"]
        return next(p["video_url"]["url"] for p in content if p["type"] == "video_url")

    def send_json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.send_json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

    def send_completion(self, text: str = "ok") -> None:
        """A whole chat completion of one short answer."""
        self.send_json(
            200,
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )


def video_question(url: str, text: str) -> list[dict]:
    """The messages of one question about a video (a URL or a stored file's id)."""
    content = [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def openai_client(base: str, timeout: float = 600):
    """OpenAI's own client of a server on `base`, without retries."""
    from openai import OpenAI

    return OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=timeout)
