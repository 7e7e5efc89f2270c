"""The chat pipeline without HTTP: a validated `ChatCompletionRequest` and a `ChatCall`
(what the caller holds and adds) in, a `WholeAnswer` (a chat completion) or a
`StreamedAnswer` (SSE bytes) out. The `/v1/chat/completions` route is a thin shell around
it; a batch runner calls it the same way.

    message checks -> video source (`server.video`) -> clip, or a long video's segments
    -> prepared -> the upstream request(s) (`upstream_requests`, the one place that builds
    them) -> one answer: as vLLM gave it (one pass), or integrated (`long_video`).

A video (or clip) longer than five minutes is asked about in segments (`video.segments`,
default "auto"); anything shorter, or `segments: "off"`, is one pass, exactly as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from arc_media.segments import plan_segments, segment_length

from .. import sse
from ..errors import APIError
from ..inflight import Admission
from ..keys.accounting import note_usage
from ..keys.auth import ANONYMOUS, Caller
from ..priority import INTERACTIVE
from ..request_log import server_timing
from ..schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    ContentPart,
    Message,
    VideoOptions,
    VideoUsage,
)
from ..uploads import ChatBody
from ..upstream import TRANSPORT_ERRORS, Body, unavailable
from ..video.jobs import VideoLength, VideoSummary
from ..video.service import Prepared
from . import integrate, stream
from .answers import JSON_ANSWER, parse_answer
from .long_video import LongVideo, check_parameters
from .upstream_requests import Integrator, UpstreamRequests

if TYPE_CHECKING:
    from ..state import Gateway

log = logging.getLogger("arc.gateway")


@dataclass
class ChatCall:
    """One chat request as the pipeline sees it: who asks (`caller`: its files, limits,
    cache salt and router sessions), what the caller holds (`held`: released once the
    answer is done; a streamed answer releases it when its stream ends) and what it adds
    to every upstream request the answer makes. The answer's usage goes to `log` (the
    request's log fields, which the key's accounts are read from)."""

    request_id: str
    held: Admission
    caller: Caller = ANONYMOUS
    log: dict = field(default_factory=dict)  # the request's log line fields
    body: ChatBody | None = None  # data URLs spooled to disk as the request arrived
    extra_body: dict[str, Any] = field(default_factory=dict)  # to every engine request
    headers: dict[str, str] = field(default_factory=dict)  # to every upstream request
    decode_priority: int = INTERACTIVE  # the decode queue's (server.priority)


@dataclass
class WholeAnswer:
    completion: dict[str, Any]
    headers: dict[str, str]


@dataclass
class StreamedAnswer:
    """SSE bytes. The stream releases the call's admission when it ends."""

    chunks: AsyncIterator[bytes]
    headers: dict[str, str]


STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_END = object()


class ChatService:
    def __init__(self, gateway: Gateway, integrator: Integrator):
        self.gateway = gateway
        self.settings = gateway.settings
        self.metrics = gateway.metrics
        self.integrator = integrator
        self.prompts = integrate.load_prompts(self.settings.integrator_prompts)

    async def answer(
        self, req: ChatCompletionRequest, call: ChatCall
    ) -> WholeAnswer | StreamedAnswer:
        gateway = self.gateway
        s = self.settings
        tenancy = gateway.tenancy
        message = user_message(req)
        req.check(s)  # a question where the task needs one, a schema within limits
        options = req.video or VideoOptions()
        parts = message.content or []
        videos = [p for p in parts if p.type != "text"]
        if len(videos) > 1:
            raise APIError(
                400,
                f"the model takes one video per request; this one has {len(videos)}",
                "too_many_videos",
                param="messages",
            )
        if not videos and (
            options.start is not None
            or options.end is not None
            or "segments" in options.model_fields_set
        ):
            raise APIError(
                400, "video.start/end/segments given without a video", "no_video", param="video"
            )
        # Where the request gives its video: the `param` of every error about it.
        where = _part_param(parts, videos[0]) if videos else None
        # Another key's file is a 404, as a missing one, before anything is decoded.
        file_ids = [url for p in videos if (url := _part_url(p)).startswith("file-")]
        await tenancy.check_files(
            call.caller, gateway.store, file_ids, options.start, options.end, where
        )
        # How the answer is parsed into `structured` (a JSON answer is not: answers.py).
        task = JSON_ANSWER if req.answers_in_json() else req.task()
        engine = req.engine_options()  # response_format, priority
        requests = UpstreamRequests(
            request_id=call.request_id,
            sampling=req.sampling_parameters(),
            task=req.template_task(),
            stream_options=req.stream_options.model_dump() if req.stream_options else None,
            response_format=engine.pop("response_format", None),
            # Tenants apart upstream: the key's cache salt, on every engine request.
            extra_body={**engine, **tenancy.upstream_fields(call.caller), **call.extra_body},
            headers=call.headers,
            session_headers=lambda key: tenancy.upstream_headers(call.caller, key),
        )
        # The upstream request is rebuilt from validated fields only; the video's URL is
        # put in by upstream.Body.
        content: list[dict[str, Any]] = [
            {"type": "text", "text": p.text}
            if p.type == "text"
            else {"type": "video_url", "video_url": {"url": ""}}
            for p in parts
        ]
        model = await gateway.upstream.model(s.model)
        name = gateway.public_name(model)
        if not videos:
            return await self._one_pass(req, call, requests, content, None, None, task, model)
        assert where is not None
        source = await gateway.videos.open(
            _part_url(videos[0]), call.body, call.held.cleanup, call.log, call.caller.scope, where
        )
        clip = (options.start, options.end)
        seconds = segment_length(options.segments)
        prepared = await gateway.videos.prepare(
            source,
            clip,
            call.held.cleanup,
            call.log,
            split_above_s=seconds,
            priority=call.decode_priority,
        )
        _note_clip_cut(options.end, prepared, call.log)
        if isinstance(prepared, VideoLength):
            assert seconds is not None
            plan = plan_segments(*prepared.span, seconds)
            if len(plan) > 1:
                check_parameters(requests.sampling)
                run = LongVideo(
                    settings=s,
                    metrics=self.metrics,
                    videos=gateway.videos,
                    upstream=gateway.upstream,
                    integrator=self.integrator,
                    prompts=self.prompts,
                    requests=requests,
                    model=model,
                    name=name,
                    parts=content,
                    question="\n".join(p.text or "" for p in parts if p.type == "text").strip(),
                    task=task,
                    source=source,
                    length=prepared,
                    plan=plan,
                    log_fields=call.log,
                    decode_priority=call.decode_priority,
                )
                return await self._segmented(req, call, run)
            # A tail under 10 s joined the one segment: one pass over all of it.
            prepared = await gateway.videos.prepare(
                source, clip, call.held.cleanup, call.log, priority=call.decode_priority
            )
        assert isinstance(prepared, Prepared)
        summary = prepared.summary
        call.log.update(
            frames=summary.frames,
            has_audio=summary.has_audio,
            forwarded_bytes=summary.prepared_bytes,
            video_seconds=_video_seconds(summary),
        )
        return await self._one_pass(
            req, call, requests, content, prepared, source.file_id, task, model
        )

    # -- one pass --------------------------------------------------------------------------

    async def _one_pass(
        self,
        req: ChatCompletionRequest,
        call: ChatCall,
        requests: UpstreamRequests,
        content: list[dict[str, Any]],
        prepared: Prepared | None,
        file_id: str | None,
        task: str,
        model: str,
    ) -> WholeAnswer | StreamedAnswer:
        """One request upstream for the whole video (or clip), answered as vLLM answers."""
        name = self.gateway.public_name(model)
        usage_extra = (
            video_usage(prepared.summary, self.settings.video_tokens_per_frame)
            if prepared is not None
            else None
        )
        body, headers = requests.video(
            model,
            content,
            prepared.forward if prepared is not None else None,
            stream=req.stream,
            file_id=file_id,
        )
        if req.stream:
            client_usage = bool(req.stream_options and req.stream_options.include_usage)
            return await self._one_pass_stream(
                call, body, headers, task, name, usage_extra, client_usage
            )
        fields = call.log
        t0 = time.perf_counter()
        data = await self.gateway.upstream.chat(body, headers, fields)
        upstream_s = time.perf_counter() - t0
        self.metrics.upstream_seconds.observe(upstream_s)
        self.metrics.upstream_ttft_seconds.observe(upstream_s)
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
        if completion.usage is not None:
            if usage_extra is not None:
                completion.usage.video = usage_extra
            note_usage(fields, completion.usage.model_dump())
        return WholeAnswer(
            completion.model_dump(mode="json", exclude_none=True),
            {"Server-Timing": server_timing(fields, engine_s=upstream_s)},
        )

    async def _one_pass_stream(
        self,
        call: ChatCall,
        body: Body,
        headers: dict[str, str],
        task: str,
        name: str,
        usage_extra: VideoUsage | None,
        client_usage: bool,
    ) -> StreamedAnswer:
        metrics = self.metrics
        fields = call.log
        held = call.held
        t0 = time.perf_counter()
        response = await self.gateway.upstream.open_stream(body, headers, fields)
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
                        yield stream.DONE
                        break
                    if first:
                        first = False
                        ttft = time.perf_counter() - t0
                        metrics.upstream_ttft_seconds.observe(ttft)
                        fields["upstream_ttft_s"] = round(ttft, 4)
                    if '"usage"' in data and not _usage_for_client(data, fields, client_usage):
                        continue  # the usage chunk the gateway asked for itself
                    chunk = stream.annotate_chunk(
                        data, texts, task, name, usage_extra, body.response_format
                    )
                    yield b"data: " + chunk + b"\n\n"
            except TRANSPORT_ERRORS as e:
                error = unavailable(e)
                fields["stream_error"] = error.code
                metrics.rejections.labels(error.code).inc()
                yield stream.event(error.body())
            finally:
                await held.release()

        headers_out = {**STREAM_HEADERS, "Server-Timing": server_timing(fields)}
        return StreamedAnswer(events(), headers_out)

    # -- a long video in segments ----------------------------------------------------------

    async def _segmented(
        self, req: ChatCompletionRequest, call: ChatCall, run: LongVideo
    ) -> WholeAnswer | StreamedAnswer:
        self.metrics.segmented_requests.inc()
        call.log.update(segments=run.count, segment_s=run.plan[0].length)
        if not req.stream:
            await run.ask_segments(lambda answer, done: None)
            completion = await run.whole()
            return WholeAnswer(completion, {"Server-Timing": server_timing(call.log)})
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        producer = asyncio.ensure_future(self._produce(run, queue, include_usage))
        # Released first (before the source's pin and files): the segments stop, and the
        # request waits for them to be gone upstream.
        call.held.cleanup.callback(producer.cancel)
        call.held.close_later(lambda: _finished(producer))
        # The answer starts with the first finished segment: an error before it is the
        # request's own status, later ones end the stream with an error event.
        first = await queue.get()
        if isinstance(first, APIError):
            raise first
        return StreamedAnswer(
            self._relay(first, queue, call),
            {**STREAM_HEADERS, "Server-Timing": server_timing(call.log)},
        )

    async def _produce(self, run: LongVideo, queue: asyncio.Queue, include_usage: bool) -> None:
        try:
            await run.ask_segments(
                lambda answer, done: queue.put_nowait(
                    stream.progress(answer.segment, run.count, done)
                )
            )
            async for chunk in run.streamed(include_usage):
                queue.put_nowait(chunk)
        except APIError as e:
            queue.put_nowait(e)
        except Exception:  # the stream ends with an error event, not in silence
            log.exception("segmented answer failed")
            queue.put_nowait(
                APIError(500, "internal error in the gateway; see its log", "internal")
            )
        finally:
            queue.put_nowait(_END)

    async def _relay(
        self, first: Any, queue: asyncio.Queue, call: ChatCall
    ) -> AsyncIterator[bytes]:
        item = first
        try:
            while item is not _END:
                if isinstance(item, APIError):
                    call.log["stream_error"] = item.code
                    self.metrics.rejections.labels(item.code).inc()
                    yield stream.event(item.body())
                    break
                yield item
                item = await queue.get()
        finally:
            await call.held.release()


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


def _note_clip_cut(end: float | None, prepared: Prepared | VideoLength, log_fields: dict) -> None:
    """An `end` past the video's end is cut to the video's end (`usage.video.clip` holds
    the clip used): said on the request's log line too."""
    clip = prepared.clip if isinstance(prepared, VideoLength) else prepared.summary.clip
    if end is not None and clip and clip[1] < end:
        note = f"video.end {end:g} s is past the video's end: the clip ends at {clip[1]:g} s"
        log_fields["video_notes"] = [*log_fields.get("video_notes", []), note]


def _video_seconds(summary: VideoSummary) -> float:
    """Seconds of video the model is asked about (the clip, or the whole video)."""
    if summary.clip:
        return round(float(summary.clip[1]) - float(summary.clip[0]), 3)
    return summary.video_duration_s


async def _finished(task: asyncio.Future) -> None:
    """Cancels `task` and waits for it to end. Shielded: a caller cancelled again and again
    (a stream's cancel scope) must not pass its cancellations on to the task's cleanup."""
    task.cancel()
    with suppress(asyncio.CancelledError, Exception):
        await asyncio.shield(task)


def user_message(req: ChatCompletionRequest) -> Message:
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


def _part_param(parts: list[ContentPart], part: ContentPart) -> str:
    """Where the request gives `part`: messages[0].content[1].video_url.url."""
    key = "file.file_id" if part.file is not None else "video_url.url"
    index = next(k for k, each in enumerate(parts) if each is part)
    return f"messages[0].content[{index}].{key}"


def _part_url(part: ContentPart) -> str:
    if part.file is not None:
        return part.file.file_id
    assert part.video_url is not None
    return part.video_url.url


def video_usage(summary: VideoSummary, tokens_per_frame: int) -> VideoUsage:
    return VideoUsage(
        frames=summary.frames,
        has_audio=summary.has_audio,
        video_tokens=summary.frames * tokens_per_frame,
        duration_s=summary.video_duration_s,
        clip=summary.clip,
    )


__all__ = ["ChatCall", "ChatService", "StreamedAnswer", "WholeAnswer", "user_message"]
