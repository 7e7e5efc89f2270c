"""Every upstream request a chat request makes is built here, and only here: the one-pass
request, each segment's, and the integration pass. So whatever is added to them (the
caller key's `cache_salt`, a request's `priority`, a batch's headers) is added in one place
and reaches all of them: `UpstreamRequests.extra_body` and `.headers`.

The request is rebuilt from validated fields only: one user message of the client's text
parts and the gateway's own prepared video (or, for the integration pass, the gateway's
prompt), the allowed sampling parameters, the response format, and the chat template's
task.

`session_key` names what a request is about for the router's session header: the stored
file's id, or `file-abc:seg-3` for a segment of it, so a long video's segments spread over
the engines while a repeated question about one segment lands where its cache is. The
header itself is the caller's to make (`session_headers`: per key, `server.keys.tenancy`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from arc_media.prepared import PREPARED_MIME

from ..upstream import Body, Upstream
from ..video.forward import Forward

# What an OpenAI-compatible integrator that is not vLLM takes of the client's sampling
# parameters (vLLM's own ones, top_k, min_p, repetition_penalty..., would be refused).
OPENAI_SAMPLING = (
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "stop",
    "user",
)


def session_key(file_id: str | None, segment: int | None = None) -> str | None:
    """What a request is about, for the router's session: the stored file's id, or
    `<id>:seg-<n>` for a segment of it (0-based); None without a stored file."""
    if file_id is None:
        return None
    return file_id if segment is None else f"{file_id}:seg-{segment}"


def file_session(key: str | None) -> dict[str, str]:
    """The session header without keys (tools, tests): the key itself."""
    return {"x-arc-session": key} if key else {}


@dataclass
class Integrator:
    """Where the integration pass goes: the engine itself (`external` False), or another
    OpenAI-compatible server and model (`--integrator-url`, `--integrator-model`)."""

    upstream: Upstream
    model: str | None  # None: the engine's model
    external: bool


@dataclass
class UpstreamRequests:
    """The upstream requests of one chat request."""

    request_id: str
    sampling: dict[str, Any]  # the validated sampling parameters
    task: str | None  # the chat template's task (None: its default)
    stream_options: dict[str, Any] | None = None  # as the client sent them
    response_format: dict[str, Any] | None = None  # a JSON answer's, as vLLM takes it
    # Added to every request sent to the engine (one pass, segments, integration there).
    extra_body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    # The router's session header for a `session_key` (none without one).
    session_headers: Callable[[str | None], dict[str, str]] = file_session

    def _headers(self, session: str | None) -> dict[str, str]:
        return {"X-Request-Id": self.request_id, **self.headers, **self.session_headers(session)}

    def video(
        self,
        model: str,
        parts: list[dict[str, Any]],
        forward: Forward | None,
        *,
        stream: bool,
        file_id: str | None = None,
        segment: int | None = None,
    ) -> tuple[Body, dict[str, str]]:
        """A request about the video (the whole of it, a clip, or a segment): `parts` are
        the user message's parts in order, the video as `{"type": "video_url"}` (its URL is
        put in by `upstream.Body`: the data URL written as the request goes out, or the
        forwarded file's file:// URL)."""
        payload: dict[str, Any] = dict(self.sampling)
        if self.response_format is not None:
            payload["response_format"] = self.response_format
        payload["messages"] = [{"role": "user", "content": parts}]
        payload["model"] = model
        payload["stream"] = stream
        if self.stream_options is not None and segment is None:
            payload["stream_options"] = self.stream_options
        if stream:
            # The usage chunk, always: the accounts need it (the client gets it if it asked).
            payload["stream_options"] = {"include_usage": True}
        if self.task:
            payload["chat_template_kwargs"] = {"task": self.task}
        payload.update(self.extra_body)
        video = forward.upstream if forward is not None else None
        body = Body(payload, video, forward.size if forward else 0, PREPARED_MIME)
        return body, self._headers(session_key(file_id, segment))

    def integration(
        self,
        integrator: Integrator,
        model: str,
        prompt: str,
        *,
        stream: bool,
        max_tokens: int | None = None,
    ) -> tuple[Body, dict[str, str]]:
        """The integration pass: a text-only request of the gateway's prompt. On the engine
        it asks the chat template for no instruction of its own (task `none`: the prompt
        says what to answer); another server gets the OpenAI parameters only."""
        if integrator.external:
            payload = {k: v for k, v in self.sampling.items() if k in OPENAI_SAMPLING}
        else:
            payload = {**self.sampling, "chat_template_kwargs": {"task": "none"}}
        payload.pop("n", None)
        if max_tokens is not None:
            payload.pop("max_completion_tokens", None)
            payload["max_tokens"] = max_tokens
        if self.response_format is not None and max_tokens is None:
            # the answer's own format (a decision pass, bounded, answers a number)
            payload["response_format"] = self.response_format
        payload["messages"] = [{"role": "user", "content": prompt}]
        payload["model"] = integrator.model or model
        payload["stream"] = stream
        if stream:
            # The pass's usage is summed into the answer's, asked for or not.
            payload["stream_options"] = {"include_usage": True}
        if not integrator.external:
            payload.update(self.extra_body)
        return Body(payload, None, 0, PREPARED_MIME), self._headers(None)


__all__ = ["Integrator", "UpstreamRequests", "file_session", "session_key"]
