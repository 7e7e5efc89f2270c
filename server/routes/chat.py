"""`/v1/chat/completions`: one user message of text and one video, answered whole or as SSE.

The request is parsed into closed models (unknown keys are refused) and the upstream
request is rebuilt from the validated fields alone: one user message of text and the
prepared video (see `server.videos`), and the allowed sampling parameters. Everything the
request holds is an `Admission` (`server.inflight`), released once when the answer is
done: by this route for a whole answer, by the stream for a streamed one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import suppress
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from arc_media.prepared import PREPARED_MIME

from .. import sse
from ..answers import JSON_ANSWER, parse_answer
from ..errors import APIError, error_body, invalid_request
from ..inflight import Admission
from ..ingest import VideoSummary
from ..keys.accounting import note_usage
from ..keys.auth import Caller, CallerDep
from ..request_log import server_timing
from ..schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    ContentPart,
    Message,
    VideoOptions,
    VideoUsage,
)
from ..state import Gateway, GatewayDep, public_model_name
from ..uploads import MAX_JSON_BYTES, ChatBody, read_chat_body
from ..upstream import TRANSPORT_ERRORS, Body, schema_failure, unavailable
from ..videos import Forward

log = logging.getLogger("arc.gateway")
T = TypeVar("T")

router = APIRouter()


@router.post(
    "/v1/chat/completions",
    openapi_extra={
        "requestBody": {
            "content": {"application/json": {"schema": ChatCompletionRequest.model_json_schema()}}
        }
    },
)
async def chat_completions(request: Request, gateway: GatewayDep, caller: CallerDep) -> Response:
    # Spooled data URLs, temporary files, pins on stored files and the in-flight count:
    # released when the answer is done (by the stream for a streamed answer).
    async with gateway.inflight.admit() as held:
        # The key's limits (429) before the body is read; its usage recorded on release.
        await gateway.tenancy.admit(caller, request, held.cleanup)
        return await _chat(request, gateway, held, caller)


async def _chat(request: Request, gateway: Gateway, held: Admission, caller: Caller) -> Response:
    s = gateway.settings
    metrics = gateway.metrics
    cleanup = held.cleanup
    fields = request.state.log
    # Data URLs go to disk as they arrive; the rest of the JSON has a small cap.
    body = ChatBody(gateway.store.incoming_path, s.max_upload_bytes, MAX_JSON_BYTES)
    cleanup.callback(body.cleanup)
    t_receive = time.perf_counter()
    raw = await read_chat_body(request, body, s.upload_read_timeout_s, s.upload_total_timeout_s)
    fields["receive_s"] = round(time.perf_counter() - t_receive, 4)
    try:
        req = ChatCompletionRequest.model_validate_json(raw)
    except ValidationError as e:
        raise invalid_request(e.errors()) from None
    del raw
    message = _user_message(req)
    req.check(s)
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
    # Another key's file is a 404, as a missing one, before anything is decoded.
    file_ids = [url for p in videos if (url := _part_url(parts[p])).startswith("file-")]
    await gateway.tenancy.check_files(caller, gateway.store, file_ids, options.start, options.end)

    # The upstream request is rebuilt from validated fields only.
    content: list[dict[str, Any]] = []
    forward: Forward | None = None
    summary: VideoSummary | None = None
    file_id: str | None = None
    for part in parts:
        if part.type == "text":
            content.append({"type": "text", "text": part.text})
            continue
        forward, summary, file_id = await gateway.videos.video_from_url(
            _part_url(part), options, body, cleanup, fields
        )
        metrics.forwarded_bytes.inc(forward.size)
        # The URL (a data URL written as the request goes out, or the forwarded file's
        # file:// URL) is put in by upstream.Body.
        content.append({"type": "video_url", "video_url": {"url": ""}})
        fields.setdefault("decode_s", summary.decode_s)
        fields.setdefault("encode_s", summary.encode_s)
        fields.update(
            frames=summary.frames,
            has_audio=summary.has_audio,
            forwarded_bytes=summary.prepared_bytes,
            video_seconds=_video_seconds(summary),
        )

    payload: dict[str, Any] = req.sampling_parameters()
    payload.update(req.engine_options())  # response_format, priority
    payload["messages"] = [{"role": "user", "content": content}]
    payload["model"] = await gateway.upstream.model(s.model)
    payload["stream"] = req.stream
    if req.stream_options is not None:
        payload["stream_options"] = req.stream_options.model_dump()
    task = req.template_task()
    if task:
        payload["chat_template_kwargs"] = {"task": task}
    # How the answer is parsed into `structured` (a JSON answer is not: server.answers).
    task = JSON_ANSWER if req.answers_in_json() else task or "qa"
    name = public_model_name(s, payload["model"])
    # Tenants apart upstream: the key's cache salt (prefix, processor and encoder caches)
    # and its router session for a stored file (one engine holds its tokens).
    payload.update(gateway.tenancy.upstream_fields(caller))
    headers = {"X-Request-Id": request.state.request_id}
    headers.update(gateway.tenancy.upstream_headers(caller, file_id))
    # Streamed answers always ask for the usage chunk (accounting); the client gets it only
    # if it asked.
    client_usage = bool(req.stream_options and req.stream_options.include_usage)
    if req.stream:
        payload["stream_options"] = {"include_usage": True}
    usage_extra = _video_usage(summary, s.video_tokens_per_frame) if summary else None

    video = forward.upstream if forward else None
    upstream_body = Body(payload, video, forward.size if forward else 0, PREPARED_MIME)
    if req.stream:
        return await _stream(
            gateway, held, upstream_body, headers, task, name, usage_extra, fields, client_usage
        )

    t0 = time.perf_counter()
    data = await _unless_disconnected(
        request, gateway.upstream.chat(upstream_body, headers, fields)
    )
    upstream_s = time.perf_counter() - t0
    metrics.upstream_seconds.observe(upstream_s)
    metrics.upstream_ttft_seconds.observe(upstream_s)
    fields["upstream_s"] = round(upstream_s, 4)
    timing = {"Server-Timing": server_timing(fields)}
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
        note_usage(fields, completion.usage.model_dump())
    return JSONResponse(completion.model_dump(mode="json", exclude_none=True), headers=timing)


async def _stream(
    gateway: Gateway,
    held: Admission,
    upstream_body: Body,
    headers: dict[str, str],
    task: str,
    name: str,
    usage_extra: VideoUsage | None,
    fields: dict,
    client_usage: bool,
) -> StreamingResponse:
    metrics = gateway.metrics
    t0 = time.perf_counter()
    response = await gateway.upstream.open_stream(upstream_body, headers, fields)
    # vLLM answers with headers once the request's inputs are ready (media loaded and
    # processed), before the model runs: the engine's input preparation.
    fields["engine_input_s"] = round(time.perf_counter() - t0, 4)

    def upstream_done() -> None:
        upstream_s = time.perf_counter() - t0
        metrics.upstream_seconds.observe(upstream_s)
        fields["upstream_s"] = round(upstream_s, 4)

    held.cleanup.callback(upstream_done)
    held.close_later(response.aclose)

    async def events() -> AsyncIterator[bytes]:
        first = True
        texts: dict[int, str] = {}
        try:
            async for data in sse.data_payloads(response.aiter_lines()):
                if data == sse.DONE:
                    yield b"data: [DONE]\n\n"
                    break
                if first:
                    first = False
                    ttft = time.perf_counter() - t0
                    metrics.upstream_ttft_seconds.observe(ttft)
                    fields["upstream_ttft_s"] = round(ttft, 4)
                if '"usage"' in data and not _usage_for_client(data, fields, client_usage):
                    continue  # the usage chunk the gateway asked for itself
                chunk = annotate_chunk(
                    data, texts, task, name, usage_extra, upstream_body.response_format
                )
                yield b"data: " + chunk + b"\n\n"
        except TRANSPORT_ERRORS as e:
            error = unavailable(e)
            fields["stream_error"] = error.code
            metrics.rejections.labels(error.code).inc()
            yield b"data: " + json.dumps(error.body()).encode() + b"\n\n"
        finally:
            await held.release()

    return _ReleasingStream(
        events(),
        held,
        media_type="text/event-stream",
        headers={
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "Server-Timing": server_timing(fields),
        },
    )


class _ReleasingStream(StreamingResponse):
    """A streamed answer that owns its request's admission and always releases it (pins,
    files, the in-flight count, the upstream connection), even if its body never started
    (a client gone before the first chunk: the generator's own `finally` never runs)."""

    def __init__(self, content: AsyncIterator[bytes], held: Admission, **kwargs: Any):
        super().__init__(content, **kwargs)
        held.hand_over()
        self.held = held

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.held.release()  # its synchronous part runs even under cancellation


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


def _video_seconds(summary: VideoSummary) -> float:
    """Seconds of video the model is asked about (the clip, or the whole video)."""
    if summary.clip:
        return round(float(summary.clip[1]) - float(summary.clip[0]), 3)
    return summary.video_duration_s


def _usage_for_client(data: str, fields: dict, client_usage: bool) -> bool:
    """Notes a stream chunk's usage for the accounts; False for the usage-only chunk the
    client did not ask for."""
    try:
        chunk = json.loads(data)
    except ValueError:
        return True
    if not isinstance(chunk, dict) or not isinstance(chunk.get("usage"), dict):
        return True
    note_usage(fields, chunk["usage"])
    return client_usage or bool(chunk.get("choices"))


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


def annotate_chunk(
    data: str,
    texts: dict[int, str],
    task: str,
    name: str,
    usage_extra: VideoUsage | None,
    response_format: str | None = None,
) -> bytes:
    """Adds the gateway's fields to a stream chunk: the model's public name, the structured
    answer on the chunk that finishes a choice, the video usage on the usage chunk. An
    error chunk is put in the gateway's words (`response_format`: the request's type, if
    it has one; an engine failure under a JSON schema is the schema's)."""
    try:
        chunk = json.loads(data)
    except ValueError:
        return data.encode()
    if not isinstance(chunk, dict):
        return data.encode()
    if "error" in chunk:
        # vLLM's own text (possibly its internals) goes to the log, not to the client.
        log.warning(json.dumps({"event": "upstream_stream_error", "detail": str(chunk)[:500]}))
        if response_format == "json_schema":
            return json.dumps(schema_failure().body()).encode()
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
