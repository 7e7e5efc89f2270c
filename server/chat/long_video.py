"""A long video answered in segments: each segment prepared on the decode workers and sent
to the engine as soon as it is ready, at most `--segments-in-flight` at once (decode of
later segments overlaps with the engine's work on earlier ones), then the answers
integrated into one (`integrate.py`).

Faults: a segment whose video cannot be prepared fails the request with a 422
(`segment_unprocessable`) naming its time range; an engine error on a segment (5xx,
unreachable, busy) is retried once, then fails the request with the gateway's error naming
the segment; on any failure, and when the client goes away, every segment request still
running upstream is cancelled (its connection closed: vLLM aborts it) and every prepared
segment released.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from arc_media.segments import Segment

from .. import sse
from ..config import Settings
from ..errors import APIError
from ..keys.accounting import note_usage
from ..metrics import Metrics
from ..priority import INTERACTIVE
from ..schemas import ChatCompletion, SegmentUsage, StructuredAnswer, Usage, VideoUsage
from ..upstream import TRANSPORT_ERRORS, Body, Upstream, unavailable
from ..video.jobs import VideoLength, VideoSummary
from ..video.service import Prepared, VideoService, VideoSource
from . import integrate, stream
from .answers import JSON_ANSWER, parse_answer
from .upstream_requests import Integrator, UpstreamRequests

log = logging.getLogger("arc.gateway")
T = TypeVar("T")

# What a worker says about a video it cannot prepare: for a segment, a 422 naming it.
VIDEO_FAULTS = (
    "invalid_video",
    "invalid_clip",
    "video_too_long",
    "video_unprocessable",
    "video_timeout",
    "video_too_large",
    "decoder_crashed",
)
# The refused parameters of a segmented answer: which request's would they be?
SINGLE_PASS_ONLY = ("n", "logprobs", "top_logprobs", "return_token_ids")


def check_parameters(sampling: dict[str, Any]) -> None:
    for name in SINGLE_PASS_ONLY:
        value = sampling.get(name)
        if value and not (name == "n" and value == 1):
            raise APIError(
                400,
                f"{name} is not available for a video answered in segments (one request per "
                'segment, then an integration pass); set video.segments to "off" for one pass, '
                "or ask about a clip of up to five minutes (video.start/end)",
                "invalid_request",
                param=name,
            )


def _retryable(error: APIError) -> bool:
    return error.status_code >= 500 or error.code == "upstream_busy"


@dataclass
class SegmentAnswer:
    segment: Segment
    summary: VideoSummary
    content: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # of the prompt, served by the engine's prefix cache
    fields: dict = field(default_factory=dict)


@dataclass
class LongVideo:
    """One long video's segmented answer."""

    settings: Settings
    metrics: Metrics
    videos: VideoService
    upstream: Upstream
    integrator: Integrator
    prompts: dict
    requests: UpstreamRequests
    model: str  # the engine's
    name: str  # the public name answers carry
    parts: list[dict[str, Any]]  # the user message's parts, the video as a video_url part
    question: str
    task: str
    source: VideoSource
    length: VideoLength
    plan: list[Segment]
    log_fields: dict
    decode_priority: int = INTERACTIVE
    answers: list[SegmentAnswer] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.plan)

    # -- segments --------------------------------------------------------------------------

    async def ask_segments(self, on_done: Callable[[SegmentAnswer, int], None]) -> None:
        """Every segment answered (`self.answers`, in order); `on_done(answer, done)` as each
        finishes. The first failure cancels the rest and is raised."""
        window = asyncio.Semaphore(self.settings.segments_in_flight)
        failed = asyncio.Event()
        found: list[SegmentAnswer | None] = [None] * self.count
        done = 0
        t0 = time.perf_counter()

        async def one(segment: Segment) -> None:
            nonlocal done
            async with window:  # FIFO: segments start in order
                if failed.is_set():
                    return  # another segment failed while this one waited: never started
                try:
                    with ExitStack() as held:  # its prepared container: released once answered
                        answer = await self._answer(segment, held)
                except BaseException:
                    failed.set()  # before the window lets the next segment in
                    raise
            found[segment.index] = answer
            done += 1
            on_done(answer, done)

        tasks = [asyncio.ensure_future(one(segment)) for segment in self.plan]
        try:
            finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in finished:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            # Shielded: cancelled again meanwhile (an ASGI server's cancel scope re-delivers
            # its cancellation every loop cycle), the segments still finish closing their
            # upstream connections, which is what stops vLLM working on them.
            await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
        self.answers = [a for a in found if a is not None]
        fields = self.log_fields
        fields["segments_s"] = round(time.perf_counter() - t0, 4)
        for key in ("decode_s", "encode_s", "decode_wait_s", "upstream_s"):
            fields[key] = round(sum(a.fields.get(key, 0.0) for a in self.answers), 4)
        fields["prepared_cache_hits"] = sum(
            a.fields.get("prepared_cache") == "hit" for a in self.answers
        )

    async def _answer(self, segment: Segment, held: ExitStack) -> SegmentAnswer:
        fields: dict = {}
        try:
            prepared = await self.videos.prepare(
                self.source,
                (segment.start, segment.end),
                held,
                fields,
                admit=segment.index == 0,
                priority=self.decode_priority,
            )
        except APIError as e:
            if e.code not in VIDEO_FAULTS:
                raise
            self.metrics.segments.labels("failed").inc()
            raise APIError(
                422,
                f"{segment.label(self.count)} could not be prepared: {e.message}",
                "segment_unprocessable",
                param="video",
            ) from None
        assert isinstance(prepared, Prepared)
        body, headers = self.requests.video(
            self.model,
            self.parts,
            prepared.forward,
            stream=False,
            file_id=self.source.file_id,
            segment=segment.index,
        )
        t0 = time.perf_counter()
        data = await self._send(body, headers, fields, segment.label(self.count))
        fields["upstream_s"] = time.perf_counter() - t0
        self.metrics.upstream_seconds.observe(fields["upstream_s"])
        completion = _completion(data)
        self.metrics.segments.labels("answered").inc()
        choice = completion.choices[0] if completion.choices else None
        usage = completion.usage or Usage()
        return SegmentAnswer(
            segment=segment,
            summary=prepared.summary,
            content=choice.message.content if choice else None,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=_cached_tokens(usage),
            fields=fields,
        )

    async def _send(self, body: Body, headers: dict[str, str], fields: dict, what: str) -> dict:
        """One segment's request, retried once on an engine error."""

        def retried(error: APIError) -> None:
            self.metrics.segments.labels("retried").inc()
            self.log_fields["segments_retried"] = self.log_fields.get("segments_retried", 0) + 1
            log.warning(json.dumps({"event": "segment_retried", "what": what, "code": error.code}))

        try:
            return await once_more(lambda: self.upstream.chat(body, headers, fields), what, retried)
        except APIError:
            self.metrics.segments.labels("failed").inc()
            for key in ("upstream_status", "upstream_error"):  # vLLM's words, for the log
                if key in fields:
                    self.log_fields[key] = fields[key]
            raise

    # -- usage -----------------------------------------------------------------------------

    def usage(self, pass_usage: Usage | None = None) -> Usage:
        """Every request's tokens (the segments' and the integration pass's, if one was
        made), and the video; noted in the request's log fields (the key's accounts)."""
        pass_usage = pass_usage or Usage()
        tokens_per_frame = self.settings.video_tokens_per_frame
        results = [integrate.segment_result(a.segment, a.content, self.task) for a in self.answers]
        segments = [
            SegmentUsage(
                start=a.segment.start,
                end=a.segment.end,
                frames=a.summary.frames,
                video_tokens=a.summary.frames * tokens_per_frame,
                has_audio=a.summary.has_audio,
                answer=r.answer,
            )
            for a, r in zip(self.answers, results)
        ]
        prompt = pass_usage.prompt_tokens + sum(a.prompt_tokens for a in self.answers)
        completion = pass_usage.completion_tokens + sum(a.completion_tokens for a in self.answers)
        cached = _cached_tokens(pass_usage) + sum(a.cached_tokens for a in self.answers)
        video = VideoUsage(
            frames=sum(s.frames for s in segments),
            has_audio=any(s.has_audio for s in segments),
            video_tokens=sum(s.video_tokens for s in segments),
            duration_s=self.length.video_duration_s,
            clip=self.length.clip,
            segments=segments,
        )
        details = {"prompt_tokens_details": {"cached_tokens": cached}} if cached else {}
        usage = Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            video=video,
            **details,
        )
        start, end = self.length.span
        note_usage(self.log_fields, usage.model_dump())
        self.log_fields.update(frames=video.frames, video_seconds=round(end - start, 3))
        return usage

    # -- integration -----------------------------------------------------------------------

    def _results(self) -> list[integrate.SegmentResult]:
        return [integrate.segment_result(a.segment, a.content, self.task) for a in self.answers]

    async def _pass(self, prompt: str, max_tokens: int | None) -> dict:
        """A whole integration pass (retried once on an engine error)."""
        body, headers = self.requests.integration(
            self.integrator, self.model, prompt, stream=False, max_tokens=max_tokens
        )
        self.metrics.integration_passes.labels(self.task).inc()
        t0 = time.perf_counter()
        try:
            return await once_more(
                # vLLM's words on a failure go to the request's log line
                lambda: self.integrator.upstream.chat(body, headers, self.log_fields),
                self._pass_name(),
                _integration_retried,
            )
        finally:
            self._timed_pass(t0)

    def _pass_name(self) -> str:
        return f"the integration pass joining the {self.count} segment answers"

    def _timed_pass(self, t0: float) -> None:
        seconds = time.perf_counter() - t0
        self.metrics.integration_seconds.observe(seconds)
        self.log_fields["integration_s"] = round(
            self.log_fields.get("integration_s", 0.0) + seconds, 4
        )

    def _decision_tokens(self) -> int:
        asked = self.requests.sampling.get("max_tokens") or self.requests.sampling.get(
            "max_completion_tokens"
        )
        return min(asked or integrate.DECISION_MAX_TOKENS, integrate.DECISION_MAX_TOKENS)

    async def _decided(self) -> tuple[str, StructuredAnswer, Usage | None]:
        """chapters and grounding: (content, structured, the pass's usage), the pass made
        only where there is something to decide."""
        results = self._results()
        used: Usage | None = None
        if self.task == "grounding":
            candidates = integrate.grounding_candidates(results)
            chosen = 0 if len(candidates) == 1 else None
            if len(candidates) > 1:
                prompt = integrate.grounding_prompt(self.prompts, self.question, candidates)
                text, used = _text_and_usage(await self._pass(prompt, self._decision_tokens()))
                chosen = integrate.chosen_candidate(text, candidates)
            if candidates:
                content, structured = integrate.grounding_answer(candidates, chosen)
                return content, structured, used
        else:
            chapters = integrate.chapter_list(results)
            cuts = integrate.chapter_cuts(results, chapters)
            joined: set[int] = set()
            if cuts:
                prompt = integrate.chapters_prompt(self.prompts, chapters, cuts)
                text, used = _text_and_usage(await self._pass(prompt, self._decision_tokens()))
                joined = integrate.joined_cuts(text, cuts)
            if chapters:
                content, structured = integrate.chapters_answer(chapters, cuts, joined)
                return content, structured, used
        # Nothing the task's format could read: the segments' own answers, as evidence.
        shown = integrate.evidence(results)
        return shown, StructuredAnswer(answer=shown), used

    def _prompt(self) -> str:
        # A JSON answer's pass gets the plain template; the response format says the rest.
        template = "none" if self.task == JSON_ANSWER else self.task
        return integrate.answer_prompt(self.prompts, template, self.question, self._results())

    async def whole(self) -> dict:
        """The integrated answer as one chat completion (JSON)."""
        if self.task in ("chapters", "grounding"):
            content, structured, used = await self._decided()
            usage = self.usage(used)
            return {
                "id": f"chatcmpl-{secrets.token_hex(16)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                        "structured": structured.model_dump(exclude_none=True),
                    }
                ],
                "usage": usage.model_dump(mode="json", exclude_none=True),
            }
        completion = _completion(await self._pass(self._prompt(), None))
        completion.model = self.name
        for choice in completion.choices:
            choice.structured = parse_answer(choice.message.content, self.task)
        completion.usage = self.usage(completion.usage)
        return completion.model_dump(mode="json", exclude_none=True)

    async def streamed(self, include_usage: bool) -> AsyncIterator[bytes]:
        """The integrated answer as SSE chunks (after the segments' progress lines)."""
        if self.task in ("chapters", "grounding"):
            content, structured, used = await self._decided()
            usage = self.usage(used)
            for chunk in stream.written_answer(
                f"chatcmpl-{secrets.token_hex(16)}",
                self.name,
                content,
                structured,
                usage if include_usage else None,
            ):
                yield chunk
            yield stream.DONE
            return
        body, headers = self.requests.integration(
            self.integrator, self.model, self._prompt(), stream=True
        )
        self.metrics.integration_passes.labels(self.task).inc()
        t0 = time.perf_counter()
        response = await self._open_integration(body, headers)
        texts: dict[int, str] = {}
        try:
            async for data in sse.data_payloads(response.aiter_lines()):
                if data == sse.DONE:
                    break
                chunk = _json(data)
                if chunk is not None and chunk.get("usage") and not chunk.get("choices"):
                    usage = self.usage(Usage.model_validate(chunk["usage"]))
                    if include_usage:
                        chunk["usage"] = usage.model_dump(mode="json", exclude_none=True)
                        chunk["model"] = self.name
                        yield stream.event(chunk)
                    continue
                annotated = stream.annotate_chunk(
                    data, texts, self.task, self.name, None, body.response_format
                )
                yield b"data: " + annotated + b"\n\n"
        except TRANSPORT_ERRORS as e:
            raise unavailable(e) from None
        finally:
            await response.aclose()
            self._timed_pass(t0)
        yield stream.DONE

    async def _open_integration(self, body: Body, headers: dict[str, str]) -> Any:
        return await once_more(
            lambda: self.integrator.upstream.open_stream(body, headers, self.log_fields),
            self._pass_name(),
            _integration_retried,
        )


async def once_more(
    send: Callable[[], Awaitable[T]], what: str, on_retry: Callable[[APIError], None]
) -> T:
    """`send()`, sent again once after an engine error (5xx, unreachable, busy); the error
    that stays names `what`."""
    for attempt in (1, 2):
        try:
            return await send()
        except APIError as e:
            if attempt == 1 and _retryable(e):
                on_retry(e)
                continue
            raise APIError(
                e.status_code, f"{what}: {e.message}", e.code, param=e.param, headers=e.headers
            ) from None
    raise AssertionError("unreachable")


def _integration_retried(error: APIError) -> None:
    log.warning(json.dumps({"event": "integration_retried", "code": error.code}))


def _json(data: str) -> dict | None:
    try:
        chunk = json.loads(data)
    except ValueError:
        return None
    return chunk if isinstance(chunk, dict) else None


def _completion(data: Any) -> ChatCompletion:
    try:
        return ChatCompletion.model_validate(data)
    except ValidationError:
        raise APIError(
            502, "the model server sent an answer the gateway cannot read", "upstream_error"
        ) from None


def _text_and_usage(data: Any) -> tuple[str | None, Usage | None]:
    completion = _completion(data)
    text = completion.choices[0].message.content if completion.choices else None
    return text, completion.usage


def _cached_tokens(usage: Usage) -> int:
    """The prompt tokens the engine's prefix cache served (vLLM: prompt_tokens_details)."""
    details = getattr(usage, "prompt_tokens_details", None)
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) else 0


__all__ = ["LongVideo", "SegmentAnswer", "check_parameters"]
