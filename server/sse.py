"""Server-sent events as vLLM's OpenAI server streams a chat: `data: <payload>` lines, the
last one `data: [DONE]`. Read by the chat route (relaying vLLM's stream); the load benchmark
has its own reader (benchmarks/load/sse.py), as it measures the gateway from outside."""

from __future__ import annotations

from collections.abc import AsyncIterator

DONE = "[DONE]"


async def data_payloads(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The payload of each `data:` line in order, `DONE` included; other lines skipped."""
    async for line in lines:
        if line.startswith("data:"):
            yield line[5:].strip()
