"""The gateway's HTTP API (FastAPI): OpenAI-compatible chat with video, files, health, metrics.

A chat request's video (a file id, a data URL or an https URL) is prepared here, in the
decode workers, and forwarded to vLLM as the plugin's compact prepared container, so
vLLM never sees the user's file. The request is parsed into closed models (unknown keys
are refused) and the upstream request is rebuilt from the validated fields alone: one user
message of text and the prepared video, and the allowed sampling parameters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from arc_media.prepared import PREPARED_MIME

from . import safe_fetch
from .answers import parse_answer
from .config import Settings
from .errors import APIError, error_body, install_error_handlers, invalid_request
from .files import FileStore, StoredFile
from .ingest import Ingestor, VideoSummary
from .metrics import Metrics
from .schemas import (
    SAMPLING_PARAMETERS,
    ChatCompletion,
    ChatCompletionRequest,
    ContentPart,
    FileDeleted,
    FileList,
    FileObject,
    Message,
    ModelCard,
    ModelList,
    VideoOptions,
    VideoUsage,
)
from .uploads import MAX_JSON_BYTES, ChatBody, decode_data_url, read_chat_body, receive_upload
from .upstream import TRANSPORT_ERRORS, Body, Upstream, unavailable

log = logging.getLogger("arc.gateway")
T = TypeVar("T")


class Gateway:
    """The app's shared state: settings, metrics, stored files, workers, upstream."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.store = FileStore(
            settings.files_dir, settings.files_budget_mb * 1024 * 1024, settings.files_ttl_s
        )
        self.ingestor: Ingestor | None = None
        self.upstream: Upstream | None = None
        self.inflight = 0

    # -- video sources ------------------------------------------------------------------

    async def _prepare_file(self, path: Path, options: VideoOptions) -> tuple[Path, VideoSummary]:
        assert self.ingestor is not None
        return await self.ingestor.prepare(path, options.start, options.end)

    async def video_from_url(
        self, url: str, options: VideoOptions, body: ChatBody, cleanup: ExitStack, log_fields: dict
    ) -> tuple[BinaryIO, VideoSummary, str | None]:
        """(the prepared container, open; summary; file id when it is a stored file). The
        container is closed, and a stored file unpinned, when `cleanup` closes (the
        question is done)."""
        s = self.settings
        if url.startswith("file-"):
            stored = cleanup.enter_context(self.store.using(url))
            log_fields["video_source"] = "file"
            cached = self.store.prepared(stored.id, options.start, options.end)
            if cached is not None:
                handle, summary = cached
                cleanup.callback(handle.close)
                log_fields.update(prepared_cache="hit", decode_s=0.0)
                return handle, VideoSummary(**summary), stored.id
            container, summary = await self._prepare_file(
                self.store.source_path(stored.id), options
            )
            handle = self._open_container(container, cleanup)
            self.store.keep_prepared(
                stored.id, options.start, options.end, container, summary.as_dict()
            )
            container.unlink(missing_ok=True)
            return handle, summary, stored.id

        spooled = body.files.get(url)
        if spooled is not None:  # a data URL, decoded to disk as it arrived
            log_fields["video_source"] = "data_url"
            return await self._prepare_upload(
                spooled.path, spooled.size, options, cleanup, log_fields
            )
        tmp = self.store.incoming_path()
        cleanup.callback(tmp.unlink, missing_ok=True)
        try:
            if url.startswith("data:"):
                # Only a data URL the streaming reader did not take apart (an escaped key)
                # comes here: it is within the JSON's small cap.
                log_fields["video_source"] = "data_url"
                size = decode_data_url(url, tmp, s.max_upload_bytes)
            elif url.startswith(("https://", "http://")):
                log_fields["video_source"] = "url"
                result = await safe_fetch.fetch_to_file(url, tmp, self.fetch_policy())
                size = result.size
            else:
                raise APIError(
                    400,
                    "video_url.url must be an https URL, a data: URL or a file id from "
                    "POST /v1/files",
                    "bad_video_url",
                    param="video_url",
                )
        except safe_fetch.FetchError as e:
            raise APIError(e.status_code, e.message, e.code, param="video_url") from None
        return await self._prepare_upload(tmp, size, options, cleanup, log_fields)

    async def _prepare_upload(
        self, path: Path, size: int, options: VideoOptions, cleanup: ExitStack, log_fields: dict
    ) -> tuple[BinaryIO, VideoSummary, None]:
        self.metrics.upload_bytes.inc(size)
        log_fields["bytes_in"] = size
        if size == 0:
            raise APIError(400, "the video is empty (0 bytes)", "empty_file")
        container, summary = await self._prepare_file(path, options)
        handle = self._open_container(container, cleanup)
        container.unlink()  # the open handle keeps it readable until the answer is done
        log_fields["decode_wait_s"] = summary.wait_s
        if summary.notes:
            log_fields["video_notes"] = summary.notes
        return handle, summary, None

    @staticmethod
    def _open_container(container: Path, cleanup: ExitStack) -> BinaryIO:
        try:
            handle = container.open("rb")
        except OSError:
            container.unlink(missing_ok=True)
            raise
        cleanup.callback(handle.close)
        return handle

    def fetch_policy(self) -> safe_fetch.FetchPolicy:
        s = self.settings
        schemes = {"https", "http"} if s.allow_url_host else {"https"}
        return safe_fetch.FetchPolicy(
            allowed_schemes=frozenset(schemes),
            max_bytes=s.max_upload_bytes,
            total_timeout_s=s.url_timeout_s,
            allowed_hosts=frozenset(s.allow_url_host),
        )


def _user_message(req: ChatCompletionRequest) -> Message:
    """The one user message the model takes (its chat template refuses anything else)."""
    if len(req.messages) != 1 or req.messages[0].role != "user":
        raise APIError(
            400,
            "the model takes a single user message (no system prompt, no earlier turns); "
            f"this request has {len(req.messages)} message(s), the first from "
            f"{req.messages[0].role!r}",
            "single_user_message",
            param="messages",
        )
    message = req.messages[0]
    if not message.content:
        raise APIError(400, "the user message has no content", "invalid_request", param="messages")
    return message


def _part_url(part: ContentPart) -> str:
    if part.file is not None:
        return part.file.file_id
    assert part.video_url is not None
    return part.video_url.url


# What a client sees as the model's name: never a server path.
_CLEAN_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")


def public_model_name(settings: Settings, upstream_name: str | None) -> str:
    if settings.served_model_name:
        return settings.served_model_name
    if upstream_name and _CLEAN_NAME.match(upstream_name):
        return upstream_name
    return "arc"


def _file_object(stored: StoredFile) -> FileObject:
    return FileObject(
        id=stored.id,
        bytes=stored.bytes,
        created_at=stored.created_at,
        expires_at=stored.expires_at,
        filename=stored.filename,
        purpose=stored.purpose,
        video={
            k: stored.video.get(k)
            for k in ("frames", "duration", "has_audio", "video_duration_s", "width", "height")
        },
    )


def _video_usage(summary: VideoSummary, tokens_per_frame: int) -> VideoUsage:
    return VideoUsage(
        frames=summary.frames,
        has_audio=summary.has_audio,
        video_tokens=summary.frames * tokens_per_frame,
        duration_s=summary.video_duration_s,
        clip=summary.clip,
    )


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Runs `work`; if the client goes away first, cancels it (the upstream request with it)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise APIError(499, "the client closed the connection", "client_closed")
    finally:
        if not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await task


class _ReleasingStream(StreamingResponse):
    """A streamed answer that always releases what its request holds (pins, files, the
    in-flight count, the upstream connection), even if its body never started."""

    def __init__(
        self, content: AsyncIterator[bytes], release: Callable[[], Awaitable[None]], **kwargs: Any
    ):
        super().__init__(content, **kwargs)
        self.release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.release()  # its synchronous part runs even under cancellation


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


def create_app(settings: Settings) -> FastAPI:
    gateway = Gateway(settings)
    metrics = gateway.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway.ingestor = Ingestor(settings, metrics)
        gateway.upstream = Upstream(
            settings.upstream_url, settings.upstream_api_key, settings.upstream_timeout_s
        )
        await gateway.ingestor.warm_up()
        gateway.store.sweep()  # a smaller budget or expired files since the last run
        log.info(json.dumps({"event": "ready", "upstream": settings.upstream_url}))
        try:
            yield
        finally:
            await gateway.upstream.close()
            gateway.ingestor.shutdown()

    app = FastAPI(
        title="arc-video-serve gateway",
        description="OpenAI-compatible chat about videos (ARC-Hunyuan-Video) in front of vLLM.",
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.add_middleware(RequestLog, metrics=metrics)
    install_error_handlers(app, on_error=lambda code: metrics.rejections.labels(code).inc())

    def upstream() -> Upstream:
        assert gateway.upstream is not None
        return gateway.upstream

    # -- health, metrics, models ---------------------------------------------------------

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    async def model_name() -> str:
        return public_model_name(settings, await upstream().model(settings.model))

    @app.get("/ready")
    async def ready() -> JSONResponse:
        try:
            listing = await upstream().get_json("/v1/models", timeout_s=5)
        except APIError as e:
            return JSONResponse(error_body(503, e.message, "not_ready"), status_code=503)
        models = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)]
        if not models:
            return JSONResponse(
                error_body(503, "the model server has no model loaded", "not_ready"), 503
            )
        return JSONResponse({"status": "ready", "models": [await model_name()]})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        # The one model, by its public name (vLLM's card holds the checkpoint's path).
        return ModelList(data=[ModelCard(id=await model_name())])

    @app.get("/v1/models/{model_id}", response_model=ModelCard)
    async def model_card(model_id: str) -> ModelCard:
        name = await model_name()
        if model_id != name:
            raise APIError(
                404, f"no model {model_id[:64]!r}; this gateway serves {name!r}", "model_not_found"
            )
        return ModelCard(id=name)

    # -- files ---------------------------------------------------------------------------

    @app.post("/v1/files", response_model=FileObject)
    async def upload_file(request: Request) -> FileObject:
        s = settings
        dest = gateway.store.incoming_path()
        fields = request.state.log
        try:
            upload = await receive_upload(
                request,
                dest,
                s.max_upload_bytes,
                s.upload_read_timeout_s,
                s.upload_total_timeout_s,
            )
            metrics.upload_bytes.inc(upload.size)
            fields["bytes_in"] = upload.size
            if upload.size == 0:
                raise APIError(400, "the uploaded file is empty (0 bytes)", "empty_file")
            if upload.size > gateway.store.budget_bytes:  # refused before decoding it
                raise APIError(
                    413,
                    f"the video ({upload.size / 2**20:.1f} MiB) is larger than the file "
                    f"store's whole budget ({gateway.store.budget_bytes / 2**20:g} MiB)",
                    "file_exceeds_storage",
                )
            assert gateway.ingestor is not None
            container, summary = await gateway.ingestor.prepare(dest)
            try:
                stored = gateway.store.add(
                    dest, upload.filename, upload.purpose, upload.size, container, summary.as_dict()
                )
            finally:
                container.unlink(missing_ok=True)
        finally:
            dest.unlink(missing_ok=True)
        if summary.notes:
            fields["video_notes"] = summary.notes
        fields.update(
            file_id=stored.id,
            frames=summary.frames,
            decode_s=summary.decode_s,
            decode_wait_s=summary.wait_s,
            prepared_bytes=summary.prepared_bytes,
        )
        return _file_object(stored)

    @app.get("/v1/files", response_model=FileList)
    async def list_files() -> FileList:
        return FileList(data=[_file_object(f) for f in gateway.store.list()])

    @app.get("/v1/files/{file_id}", response_model=FileObject)
    async def get_file(file_id: str) -> FileObject:
        return _file_object(gateway.store.get(file_id))

    @app.delete("/v1/files/{file_id}", response_model=FileDeleted)
    async def delete_file(file_id: str) -> FileDeleted:
        gateway.store.get(file_id)  # 404 when unknown
        gateway.store.delete(file_id)
        return FileDeleted(id=file_id)

    # -- chat ----------------------------------------------------------------------------

    @app.post(
        "/v1/chat/completions",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": ChatCompletionRequest.model_json_schema()}
                }
            }
        },
    )
    async def chat_completions(request: Request) -> Response:
        if gateway.inflight >= settings.max_inflight:
            raise APIError(
                429,
                f"the gateway has {gateway.inflight} requests in progress, its limit; "
                "retry shortly",
                "too_many_requests",
                headers={"Retry-After": "1"},
            )
        gateway.inflight += 1
        metrics.inflight.set(gateway.inflight)
        # Spooled data URLs, temporary files and pins on stored files: released when the
        # answer is done (by the stream's end for a streamed answer).
        cleanup = ExitStack()
        handed_to_stream = False
        try:
            response = await _chat(request, cleanup)
            handed_to_stream = isinstance(response, StreamingResponse)
            return response
        finally:
            if not handed_to_stream:
                cleanup.close()
                gateway.inflight -= 1
                metrics.inflight.set(gateway.inflight)

    async def _chat(request: Request, cleanup: ExitStack) -> Response:
        s = settings
        fields = request.state.log
        # Data URLs go to disk as they arrive; the rest of the JSON has a small cap.
        body = ChatBody(gateway.store.incoming_path, s.max_upload_bytes, MAX_JSON_BYTES)
        cleanup.callback(body.cleanup)
        raw = await read_chat_body(request, body, s.upload_read_timeout_s, s.upload_total_timeout_s)
        try:
            req = ChatCompletionRequest.model_validate_json(raw)
        except ValidationError as e:
            raise invalid_request(e.errors()) from None
        del raw
        message = _user_message(req)
        options = req.video or VideoOptions()
        parts = message.content or []
        videos = [p for p, part in enumerate(parts) if part.type != "text"]
        if len(videos) > 1:
            raise APIError(
                400,
                f"the model takes one video per request; this one has {len(videos)}",
                "too_many_videos",
                param="messages",
            )
        if (options.start is not None or options.end is not None) and not videos:
            raise APIError(400, "video.start/end given without a video", "no_video")

        # The upstream request is rebuilt from validated fields only.
        content: list[dict[str, Any]] = []
        container: BinaryIO | None = None
        summary: VideoSummary | None = None
        file_id: str | None = None
        for part in parts:
            if part.type == "text":
                content.append({"type": "text", "text": part.text})
                continue
            container, summary, file_id = await gateway.video_from_url(
                _part_url(part), options, body, cleanup, fields
            )
            metrics.forwarded_bytes.inc(os.fstat(container.fileno()).st_size)
            # The data URL itself is written as the request goes out (upstream.Body).
            content.append({"type": "video_url", "video_url": {"url": ""}})
            fields.setdefault("decode_s", summary.decode_s)
            fields.update(
                frames=summary.frames,
                has_audio=summary.has_audio,
                forwarded_bytes=summary.prepared_bytes,
            )

        payload: dict[str, Any] = req.model_dump(
            include=set(SAMPLING_PARAMETERS), exclude_none=True
        )
        payload["messages"] = [{"role": "user", "content": content}]
        payload["model"] = await upstream().model(s.model)
        payload["stream"] = req.stream
        if req.stream_options is not None:
            payload["stream_options"] = req.stream_options.model_dump()
        task = options.task or (req.chat_template_kwargs and req.chat_template_kwargs.task)
        if task:
            payload["chat_template_kwargs"] = {"task": task}
        task = task or "qa"
        name = public_model_name(s, payload["model"])
        headers = {"X-Request-Id": request.state.request_id}
        if file_id:
            # Lets a session-affine router send questions about one file to one replica
            # (its prefix cache holds the video's tokens).
            headers["x-arc-file-id"] = file_id
        usage_extra = _video_usage(summary, s.video_tokens_per_frame) if summary else None

        size = os.fstat(container.fileno()).st_size if container else 0
        upstream_body = Body(payload, container, size, PREPARED_MIME)
        if req.stream:
            return await _stream(
                request, upstream_body, headers, task, name, usage_extra, fields, cleanup
            )

        t0 = time.perf_counter()
        data = await _unless_disconnected(request, upstream().chat(upstream_body, headers, fields))
        upstream_s = time.perf_counter() - t0
        metrics.upstream_seconds.observe(upstream_s)
        metrics.upstream_ttft_seconds.observe(upstream_s)
        fields["upstream_s"] = round(upstream_s, 4)
        try:
            completion = ChatCompletion.model_validate(data)
        except ValidationError:
            raise APIError(
                502, "the model server sent an answer the gateway cannot read", "upstream_error"
            ) from None
        completion.model = name
        for choice in completion.choices:
            choice.structured = parse_answer(choice.message.content, task)
        if completion.usage is not None and usage_extra is not None:
            completion.usage.video = usage_extra
        if completion.usage is not None:
            fields["prompt_tokens"] = completion.usage.prompt_tokens
            fields["completion_tokens"] = completion.usage.completion_tokens
        return JSONResponse(completion.model_dump(mode="json", exclude_none=True))

    async def _stream(
        request: Request,
        upstream_body: Body,
        headers: dict[str, str],
        task: str,
        name: str,
        usage_extra: VideoUsage | None,
        fields: dict,
        cleanup: ExitStack,
    ) -> StreamingResponse:
        t0 = time.perf_counter()
        response = await upstream().open_stream(upstream_body, headers, fields)

        async def events() -> AsyncIterator[bytes]:
            first = True
            texts: dict[int, str] = {}
            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        yield b"data: [DONE]\n\n"
                        break
                    if first:
                        first = False
                        ttft = time.perf_counter() - t0
                        metrics.upstream_ttft_seconds.observe(ttft)
                        fields["upstream_ttft_s"] = round(ttft, 4)
                    chunk = _annotate_chunk(data, texts, task, name, usage_extra)
                    yield b"data: " + chunk + b"\n\n"
            except TRANSPORT_ERRORS as e:
                error = unavailable(e)
                fields["stream_error"] = error.code
                metrics.rejections.labels(error.code).inc()
                yield b"data: " + json.dumps(error.body()).encode() + b"\n\n"
            finally:
                await release()

        released = False

        async def release() -> None:
            # Once, whether the stream ran to its end or never started (a client gone
            # before the first chunk: the generator's own `finally` would never run).
            # Everything but the upstream connection's close is done before any await.
            nonlocal released
            if released:
                return
            released = True
            cleanup.close()
            upstream_s = time.perf_counter() - t0
            metrics.upstream_seconds.observe(upstream_s)
            fields["upstream_s"] = round(upstream_s, 4)
            gateway.inflight -= 1
            metrics.inflight.set(gateway.inflight)
            await response.aclose()

        return _ReleasingStream(
            events(),
            release,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    metrics.create_labels(
        [r.path for r in app.routes if getattr(r, "path", "") not in ("/metrics", "/health")]
    )
    return app


def _annotate_chunk(
    data: str, texts: dict[int, str], task: str, name: str, usage_extra: VideoUsage | None
) -> bytes:
    """Adds the gateway's fields to a stream chunk: the model's public name, the structured
    answer on the chunk that finishes a choice, the video usage on the usage chunk."""
    try:
        chunk = json.loads(data)
    except ValueError:
        return data.encode()
    if not isinstance(chunk, dict):
        return data.encode()
    if "error" in chunk:
        # vLLM's own text (possibly its internals) goes to the log, not to the client.
        log.warning(json.dumps({"event": "upstream_stream_error", "detail": str(chunk)[:500]}))
        return json.dumps(
            error_body(502, "the model server failed while answering", "upstream_error")
        ).encode()
    if "model" in chunk:
        chunk["model"] = name
    for choice in chunk.get("choices") or []:
        index = choice.get("index", 0)
        delta = choice.get("delta") or {}
        texts[index] = texts.get(index, "") + (delta.get("content") or "")
        if choice.get("finish_reason"):
            choice["structured"] = parse_answer(texts[index], task).model_dump(exclude_none=True)
    if chunk.get("usage") and usage_extra is not None:
        chunk["usage"]["video"] = usage_extra.model_dump(exclude_none=True)
    return json.dumps(chunk).encode()
