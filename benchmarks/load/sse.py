"""A streamed chat read from outside: the server-sent events vLLM's OpenAI server sends (and
the gateway relays), `data: <JSON chunk>` lines ending with `data: [DONE]`. The benchmark
reads them itself: it measures the gateway from outside and imports none of it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

DONE = "[DONE]"


class ChunkStream:
    """The JSON chunks of a streamed chat in order, read from its lines; `done` is True once
    `data: [DONE]` came (a stream that ends without it was cut short)."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines
        self.done = False

    async def __aiter__(self) -> AsyncIterator[dict]:
        async for line in self._lines:
            if not line.startswith("data:"):
                continue  # blank lines between events, comments, other fields
            payload = line[5:].strip()
            if payload == DONE:
                self.done = True
                return
            try:
                chunk = json.loads(payload)
            except ValueError:
                continue
            if isinstance(chunk, dict):
                yield chunk
