"""The request log: one JSON line, a request id and the latency metric per request."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from .errors import error_body
from .metrics import Metrics

log = logging.getLogger("arc.gateway")


# Log fields (seconds) that are stages of a request, as Server-Timing names them.
STAGES = {
    "receive_s": "receive",
    "decode_wait_s": "queue",
    "decode_s": "decode",
    "encode_s": "encode",
    "store_s": "store",
    "engine_input_s": "engine-input",
    # a long video answered in segments: all of them (prepared and answered), then the
    # integration pass
    "segments_s": "segments",
    "integration_s": "integration",
}


def server_timing(fields: dict[str, Any], engine_s: float | None = None) -> str:
    """The stages measured so far, as an HTTP Server-Timing header value (milliseconds):
    where a request's time went before the answer began (docs/architecture.md#where-the-time-goes).
    `engine_s`: a whole (non-streamed) answer's time in the engine, input preparation,
    prefill and generation together (`engine`): vLLM sends a whole answer in one piece, so
    its input preparation alone (`engine-input`, streamed answers) cannot be seen."""
    stages = [
        f"{name};dur={1000 * float(fields[key]):.1f}"
        for key, name in STAGES.items()
        if isinstance(fields.get(key), int | float)
    ]
    if engine_s is not None:
        stages.append(f"engine;dur={1000 * engine_s:.1f}")
    return ", ".join(stages)


class RequestLog:
    """Pure ASGI middleware: a request id, one JSON log line and the latency metric per
    request (measured to the last byte sent, so streaming answers count in full)."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")[:64]
        request_id = given if given.isprintable() and given else uuid.uuid4().hex
        fields: dict[str, Any] = {}
        scope.setdefault("state", {})
        scope["state"]["request_id"] = request_id
        scope["state"]["log"] = fields
        status = 0
        t0 = time.perf_counter()

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
                # Headers a dependency set for every answer (a key's x-ratelimit-*): an
                # answer's own headers win.
                present = {name.lower() for name, _ in message["headers"]}
                for name, value in scope["state"].get("response_headers", {}).items():
                    if name.encode().lower() not in present:
                        message["headers"].append((name.encode(), value.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Answered here rather than by Starlette's outer handler, which re-raises and so
            # makes uvicorn close a keep-alive connection that pooled clients then find reset.
            log.exception("unexpected error", exc_info=exc)
            fields["error"] = type(exc).__name__
            self.metrics.rejections.labels("internal").inc()
            if status != 0:
                raise  # the answer had begun: nothing sound left to send
            body = json.dumps(
                error_body(500, "internal error in the gateway; see its log", "internal")
            ).encode()
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            seconds = time.perf_counter() - t0
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            if path not in ("/metrics", "/health"):
                self.metrics.request_seconds.labels(path).observe(seconds)
                line = {
                    "ts": round(time.time(), 3),
                    "request_id": request_id,
                    "method": scope.get("method"),
                    "route": path,
                    "status": status,
                    "seconds": round(seconds, 4),
                    **fields,
                }
                log.info(json.dumps(line))
