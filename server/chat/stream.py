"""The SSE side of a chat answer: vLLM's chunks relayed with the gateway's fields, the long
video's progress lines, and chunks the gateway writes itself.

A long video's stream (docs/long-videos.md#streaming):

    : arc-segment {"index": 2, "count": 12, "start": 600.0, "end": 900.0, "done": 1}

one SSE comment line per segment as it finishes (`index` 0-based, `start`/`end` seconds of
the whole video, `done` the segments finished so far; clients that do not look for it, the
`openai` client among them, skip comments), then the integrated answer as ordinary
`data:` chunks and `data: [DONE]`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from arc_media.segments import Segment

from ..errors import error_body
from ..schemas import StructuredAnswer, Usage, VideoUsage
from ..upstream import schema_failure
from .answers import parse_answer

log = logging.getLogger("arc.gateway")

DONE = b"data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def progress(segment: Segment, count: int, done: int) -> bytes:
    """The progress line of a finished segment."""
    fields = {
        "index": segment.index,
        "count": count,
        "start": segment.start,
        "end": segment.end,
        "done": done,
    }
    return b": arc-segment " + json.dumps(fields).encode() + b"\n\n"


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


def written_answer(
    completion_id: str,
    name: str,
    content: str,
    structured: StructuredAnswer,
    usage: Usage | None,
) -> list[bytes]:
    """An answer the gateway wrote itself (chapters, grounding) as the chunks vLLM would
    stream: the role and the text, the finish with `structured`, the usage if asked."""
    created = int(time.time())
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": created}
    head["model"] = name
    chunks = [
        event(
            {
                **head,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": content},
                        "finish_reason": None,
                    }
                ],
            }
        ),
        event(
            {
                **head,
                "choices": [
                    {
                        "index": 0,
                        "delta": {},
                        "finish_reason": "stop",
                        "structured": structured.model_dump(exclude_none=True),
                    }
                ],
            }
        ),
    ]
    if usage is not None:
        chunks.append(event({**head, "choices": [], "usage": usage.model_dump(exclude_none=True)}))
    return chunks


__all__ = ["DONE", "annotate_chunk", "event", "progress", "written_answer"]
