"""Every upstream request a chat request makes is built here, and only here: the one-pass
request, each segment's, and the integration pass. So whatever is added to them later
(vLLM's `cache_salt` per API key, a lower `priority` for batch work, headers) is added in
one place and reaches all of them: `UpstreamRequests.extra_body` and `.headers`.

The request is rebuilt from validated fields only: one user message of the client's text
parts and the gateway's own prepared video (or, for the integration pass, the gateway's
prompt), the allowed sampling parameters, and the chat template's task.

`session_key` is the router's session header (`x-arc-file-id`): questions about one stored
file go to the engine that holds its prefix cache, and a long video's segments each have a
key of their own (`file-abc:seg-3`), so they spread over the engines while a repeated
question about one segment lands where its cache is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from arc_media.prepared import PREPARED_MIME

from ..upstream import Body, Upstream
from ..video.forward import Forward

SESSION_HEADER = "x-arc-file-id"

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


def session_key(file_id: str | None, segment: int | None = None, prefix: str = "") -> str | None:
    """The router's session key: the stored file's id, `<id>:seg-<n>` for a segment of
    it (0-based), behind `prefix` (per API key); None without a stored file."""
    if file_id is None:
        return None
    key = file_id if segment is None else f"{file_id}:seg-{segment}"
    return prefix + key


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
    sampling: dict[str, Any]  # the validated sampling parameters the client gave
    task: str | None  # the chat template's task the client asked for (None: its default)
    stream_options: dict[str, Any] | None = None
    # Added to every request sent to the engine (segments, one pass, integration there).
    extra_body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    session_prefix: str = ""

    def _headers(self, session: str | None) -> dict[str, str]:
        headers = {"X-Request-Id": self.request_id, **self.headers}
        if session is not None:
            headers[SESSION_HEADER] = session
        return headers

    def video(
        self,
        model: str,
        parts: list[dict[str, Any]],
        forward: Forward | None,
        *,
        stream: bool,
        file_id: str | None = None,
        segment: int | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> tuple[Body, dict[str, str]]:
        """A request about the video (the whole of it, a clip, or a segment): `parts` are
        the user message's parts in order, the video as `{"type": "video_url"}` (its URL is
        put in by `upstream.Body`: the data URL written as the request goes out, or the
        forwarded file's file:// URL). `overrides` replace sampling parameters (a
        segment is always asked for one choice)."""
        payload: dict[str, Any] = {**self.sampling, **(overrides or {})}
        payload["messages"] = [{"role": "user", "content": parts}]
        payload["model"] = model
        payload["stream"] = stream
        if self.stream_options is not None and (stream or segment is None):
            # As the client sent it (vLLM refuses it without a stream); a segment asks
            # for a whole answer.
            payload["stream_options"] = self.stream_options
        if self.task:
            payload["chat_template_kwargs"] = {"task": self.task}
        payload.update(self.extra_body)
        video = forward.upstream if forward is not None else None
        body = Body(payload, video, forward.size if forward else 0, PREPARED_MIME)
        key = session_key(file_id, segment, self.session_prefix)
        return body, self._headers(key)

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
        payload["messages"] = [{"role": "user", "content": prompt}]
        payload["model"] = integrator.model or model
        payload["stream"] = stream
        if stream:
            # The pass's usage is summed into the answer's, asked for or not.
            payload["stream_options"] = {"include_usage": True}
        if not integrator.external:
            payload.update(self.extra_body)
        return Body(payload, None, 0, PREPARED_MIME), self._headers(None)


__all__ = ["SESSION_HEADER", "Integrator", "UpstreamRequests", "session_key"]
