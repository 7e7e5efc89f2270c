"""The vLLM OpenAI server behind the gateway (arc-serve, or a router in front of several).

Errors become the gateway's answers: connection refused or dropped -> 503 (retry later),
timeout -> 504, an upstream 5xx -> 502, an upstream 4xx -> a 400 naming the parameter:
a length over the context with the limit parsed from vLLM's text, another refused
parameter with vLLM's reason when that is one short line (its longer messages can be a
dump of its internal validation: those go to the gateway's log only). A response_format
vLLM cannot follow is a 400 `invalid_response_format` with its reason; a 500 while it
generates under a JSON schema is the schema's fault, the same 400.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

import httpx

from .errors import APIError
from .response_format import SCHEMA_PARAM
from .schemas import SAMPLING_PARAMETERS

# Longest first, so that "max_completion_tokens" is not read as "max_tokens"...
_PARAMETERS = sorted(SAMPLING_PARAMETERS, key=len, reverse=True)

# What one upstream call can raise when the connection fails. httpx wraps most transport
# failures in httpx.HTTPError, but not all: on uvloop (uvicorn's default loop) a connection
# reset right after connect (vLLM killed while the gateway connects) escapes httpcore/anyio
# as AttributeError ('NoneType' object has no attribute 'getpeername'); OSError likewise.
TRANSPORT_ERRORS = (httpx.HTTPError, OSError, AttributeError)


def _upstream_error(response: httpx.Response) -> tuple[str, str | None]:
    """vLLM's error message and the parameter it names (`param` of its body), if any."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase, None
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        param = error.get("param")
        message = str(error.get("message") or error.get("detail") or error)[:1000]
        return message, param if isinstance(param, str) else None
    return str(error)[:1000], None


# vLLM's words for the limits (vllm/renderers/params.py), parsed for the numbers.
_OUTPUT_OVER_CONTEXT = (
    re.compile(r"\b(\w+)=(\d+) cannot be greater than max_model_len=(\d+)"),
    # before vLLM 0.11: "'max_tokens' or ... is too large: N. This model's maximum context
    # length is M tokens and your request has K input tokens"
    re.compile(
        r"\b(max_\w*tokens)\b.*? is too large: (\d+)\. This model's maximum context length is (\d+)"
    ),
)
_CONTEXT = re.compile(r"maximum context length is (\d+) tokens")
_PROMPT_TOKENS = re.compile(r"contains (at least )?(\d+) input tokens")
_PROMPT_CHARS = re.compile(r"contains (\d+) characters \(more than (\d+) characters")
# vLLM's own sentence is passed on when it is one short line about a sampling parameter
# (its VLLMValidationError texts); anything longer can be a dump of its internals.
_PARAMETER_SUFFIX = re.compile(r"\s*\(parameter=[^()]*\)\s*$")


def _context_error(message: str) -> APIError | None:
    """A 400 naming the parameter and the limit when vLLM refused a length."""
    found = next(filter(None, (p.search(message) for p in _OUTPUT_OVER_CONTEXT)), None)
    if found:
        name, value, limit = found.groups()
        param = name if name in SAMPLING_PARAMETERS else "max_tokens"
        return APIError(
            400,
            f"{param} = {value} is more than the model's context length, {limit} tokens "
            "(max_model_len), which also holds the prompt: ask for fewer tokens",
            "context_length_exceeded",
            param=param,
        )
    limit = _CONTEXT.search(message)
    tokens, chars = _PROMPT_TOKENS.search(message), _PROMPT_CHARS.search(message)
    if tokens:
        what = f"the prompt (video and text) takes {tokens.group(1) or ''}{tokens.group(2)} tokens"
    elif chars:
        what = (
            f"the prompt's text has {chars.group(1)} characters, more than the "
            f"{chars.group(2)} that fit"
        )
    elif limit or "context length" in message.lower():
        what = "the prompt (video and text) and max_tokens do not fit"
    else:
        return None
    length = f"{limit.group(1)} tokens" if limit else "its limit"
    return APIError(
        400,
        f"{what}: the model's context length is {length} (max_model_len); send a shorter "
        "clip (video.start/end), less text or a smaller max_tokens",
        "context_length_exceeded",
        param="messages",
    )


# vLLM's words when its structured-output backends refuse a response_format (xgrammar,
# guidance, outlines), and the log prefix xgrammar puts before its reason.
_FORMAT_REFUSAL = re.compile(
    r"json.?schema|grammar|structured.?output|response.?format|regex|xgrammar|guidance|outlines",
    re.IGNORECASE,
)
_NATIVE_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")


def schema_failure() -> APIError:
    """vLLM failed while generating under a JSON schema (a 500, or an error in a stream):
    the schema's fault (one no value can match, or one its backend cannot follow), not the
    engine's, which goes on serving."""
    return APIError(
        400,
        "the model server failed while following this JSON schema: no JSON value may match "
        "it, or it is too complex for the engine's grammar (many optional properties, "
        "required recursion); simplify the schema",
        "invalid_response_format",
        param=SCHEMA_PARAM,
    )


def _format_refusal(message: str, response_format: str) -> APIError:
    lines = [line.strip() for line in _NATIVE_PREFIX.sub("", message).splitlines()]
    lines = [line for line in lines if line]
    reason = " ".join(lines[:1] + lines[-1:] if len(lines) > 1 else lines)
    if len(reason) > 300 or "validation error" in reason.lower():
        reason = "its grammar backend cannot follow it"
    param = SCHEMA_PARAM if response_format == "json_schema" else "response_format"
    return APIError(
        400,
        f"the model server cannot follow this response_format: {reason}",
        "invalid_response_format",
        param=param,
    )


def raise_for_upstream(
    response: httpx.Response, log_fields: dict | None = None, response_format: str | None = None
) -> None:
    """`response_format`: the request's type (json_object, json_schema), if it has one."""
    if response.status_code < 400:
        return
    message, upstream_param = _upstream_error(response)
    if log_fields is not None:
        log_fields["upstream_status"] = response.status_code
        log_fields["upstream_error"] = message[:500]
    if response.status_code == 500 and response_format == "json_schema":
        raise schema_failure()
    if response.status_code >= 500:
        raise APIError(502, "the model server failed on this request", "upstream_error")
    if response.status_code == 429:
        raise APIError(
            429,
            "the model server is busy; retry shortly",
            "upstream_busy",
            headers={"Retry-After": "2"},
        )
    context = _context_error(message)
    if context is not None:
        raise context
    if response_format and (upstream_param == "response_format" or _FORMAT_REFUSAL.search(message)):
        raise _format_refusal(message, response_format)
    # Name the parameter vLLM complained about: the one its body names, else the first
    # its message names ("n must be 1 when using greedy sampling").
    named = upstream_param if upstream_param in SAMPLING_PARAMETERS else None
    if named is None:
        found = re.search(rf"\b({'|'.join(_PARAMETERS)})\b", message)
        named = found.group(1) if found else None
    if named is None:
        raise APIError(
            400,
            f"the model server refused one of the request's parameters (HTTP "
            f"{response.status_code}): it is outside what this model accepts, alone or with "
            "the other parameters given",
            "upstream_rejected",
        )
    reason = _PARAMETER_SUFFIX.sub("", message).strip()
    if "\n" in reason or len(reason) > 300 or "validation error" in reason.lower():
        reason = "it is outside what this model accepts, alone or with the other parameters given"
    raise APIError(
        400,
        f"the model server refused the value of {named}: {reason}",
        "upstream_rejected",
        param=named,
    )


def unavailable(error: Exception) -> APIError:
    if isinstance(error, httpx.TimeoutException):
        return APIError(504, "the model server did not answer in time", "upstream_timeout")
    return APIError(
        503,
        "the model server is not reachable; retry shortly",
        "upstream_unavailable",
        headers={"Retry-After": "5"},
    )


# Raw bytes per base64 piece of the video in the upstream body (4 MiB of text).
_PIECE = 3 * 1024 * 1024


class Body:
    """The upstream request's JSON. The video is an open container, whose data URL is
    written piece by piece from its file as it is sent (the gateway never holds the video
    in memory), or a plain URL (shared mode's file://), which goes in the JSON as it is."""

    def __init__(self, payload: dict, video: BinaryIO | str | None, size: int, mime: str):
        content = payload["messages"][0]["content"]  # text alone: the integration pass
        parts = (
            [p for p in content if p["type"] == "video_url"] if isinstance(content, list) else []
        )
        if isinstance(video, str):
            for part in parts:
                part["video_url"]["url"] = video
            video = None
        self.video = video
        # What the engine is asked to follow (json_object, json_schema), if anything.
        self.response_format: str | None = (payload.get("response_format") or {}).get("type")
        if video is None:
            self.head, self.tail = json.dumps(payload).encode(), b""
            self.length = len(self.head)
            return
        mark = "arc-video-" + secrets.token_hex(8)
        for part in parts:
            part["video_url"]["url"] = mark
        self.head, self.tail = json.dumps(payload).encode().split(mark.encode())
        self.head += f"data:{mime};base64,".encode()
        self.length = len(self.head) + 4 * ((size + 2) // 3) + len(self.tail)

    async def pieces(self) -> AsyncIterator[bytes]:
        yield self.head
        if self.video is not None:
            self.video.seek(0)
            while piece := self.video.read(_PIECE):
                yield base64.b64encode(piece)
        if self.tail:
            yield self.tail


class Upstream:
    def __init__(self, base_url: str, api_key: str | None, timeout_s: float):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=5.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
        )
        self._model: str | None = None

    async def close(self) -> None:
        await self.client.aclose()

    async def get_json(self, path: str, timeout_s: float | None = None) -> Any:
        try:
            response = await self.client.get(path, timeout=timeout_s or self.client.timeout)
        except TRANSPORT_ERRORS as e:
            raise unavailable(e) from None
        raise_for_upstream(response)
        return response.json()

    async def model(self, configured: str | None) -> str:
        if configured:
            return configured
        if self._model is None:
            listing = await self.get_json("/v1/models", timeout_s=10)
            models = listing.get("data") or []
            if not models:
                raise APIError(503, "the model server lists no model yet", "upstream_no_model")
            self._model = str(models[0]["id"])
        return self._model

    def _request(self, body: Body, headers: dict[str, str]) -> httpx.Request:
        return self.client.build_request(
            "POST",
            "/v1/chat/completions",
            content=body.pieces(),
            headers={
                **headers,
                "Content-Type": "application/json",
                "Content-Length": str(body.length),
            },
        )

    async def chat(self, body: Body, headers: dict[str, str], log_fields: dict) -> dict:
        try:
            response = await self.client.send(self._request(body, headers))
        except TRANSPORT_ERRORS as e:
            raise unavailable(e) from None
        raise_for_upstream(response, log_fields, body.response_format)
        try:
            return response.json()
        except ValueError:
            raise APIError(
                502, "the model server sent an answer the gateway cannot read", "upstream_error"
            ) from None

    async def open_stream(
        self, body: Body, headers: dict[str, str], log_fields: dict
    ) -> httpx.Response:
        """Sends the request; returns the open response (the caller closes it)."""
        try:
            response = await self.client.send(self._request(body, headers), stream=True)
        except TRANSPORT_ERRORS as e:
            raise unavailable(e) from None
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            raise_for_upstream(response, log_fields, body.response_format)
        return response
