"""`/v1/chat/completions`: the HTTP shell around the chat service (`server.chat.service`).

It admits the request (the in-flight count, the key's limits), reads the body (data URLs
to disk as they arrive), validates it into the closed request model, and hands both to
the chat service, which answers whole or as SSE. A client that goes away cancels the
answer (its decode jobs and upstream requests with it). Everything the request holds is an
`Admission` (`server.inflight`), released once when the answer is done: by this route for a whole
answer, by the stream for a streamed one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import suppress
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from ..chat.service import ChatCall, StreamedAnswer
from ..errors import APIError, invalid_request
from ..inflight import Admission
from ..keys.auth import CallerDep
from ..schemas import ChatCompletionRequest
from ..state import GatewayDep
from ..uploads import MAX_JSON_BYTES, ChatBody, read_chat_body

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
    s = gateway.settings
    async with gateway.inflight.admit() as held:
        # The key's limits (429) before the body is read; its usage recorded on release.
        await gateway.tenancy.admit(caller, request, held.cleanup)
        fields = request.state.log
        # Data URLs go to disk as they arrive; the rest of the JSON has a small cap.
        body = ChatBody(gateway.store.incoming_path, s.max_upload_bytes, MAX_JSON_BYTES)
        held.cleanup.callback(body.cleanup)
        t_receive = time.perf_counter()
        raw = await read_chat_body(request, body, s.upload_read_timeout_s, s.upload_total_timeout_s)
        fields["receive_s"] = round(time.perf_counter() - t_receive, 4)
        try:
            req = ChatCompletionRequest.model_validate_json(raw)
        except ValidationError as e:
            raise invalid_request(e.errors()) from None
        del raw
        call = ChatCall(
            request_id=request.state.request_id, held=held, caller=caller, log=fields, body=body
        )
        answer = await _unless_disconnected(request, gateway.chat.answer(req, call))
        if isinstance(answer, StreamedAnswer):
            return _ReleasingStream(
                answer.chunks, held, media_type="text/event-stream", headers=answer.headers
            )
        return JSONResponse(answer.completion, headers=answer.headers)


class _ReleasingStream(StreamingResponse):
    """A streamed answer that owns its request's admission and always releases it (pins,
    files, the in-flight count, the upstream connections), even if its body never started
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


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Runs `work`; if the client goes away first, cancels it (its decode jobs and upstream
    requests with it)."""
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
