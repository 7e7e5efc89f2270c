"""The in-flight count of chat requests: admitted in one place, released in one place.

`InFlight.admit()` refuses a request over the limit (429) or counts it and hands back an
`Admission`: what the request holds (spooled data URLs, temporary files, pins on stored
files, the count itself, an upstream connection). `Admission.release()` gives all of it
back, once, whoever calls it first: the chat route when its answer is complete, or the
streamed answer when its stream ends or is abandoned (even before its first chunk).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from types import TracebackType
from typing import final

from prometheus_client import Gauge

from .errors import APIError


class InFlight:
    """Chat requests in progress, bounded by `limit`, mirrored in the `inflight` gauge."""

    def __init__(self, limit: int, gauge: Gauge):
        self.limit = limit
        self.gauge = gauge
        self.count = 0
        self.left_at = 0.0  # time.monotonic() when the last request left

    def busy_within(self, seconds: float) -> bool:
        """Requests in flight now, or one ended less than `seconds` ago."""
        return self.count > 0 or time.monotonic() - self.left_at < seconds

    def admit(self) -> Admission:
        if self.count >= self.limit:
            raise APIError(
                429,
                f"the gateway has {self.count} requests in progress, its limit "
                "(--max-inflight); retry shortly",
                "too_many_requests",
                headers={"Retry-After": "1"},
            )
        self.count += 1
        self.gauge.set(self.count)
        return Admission(self)

    def _leave(self) -> None:
        self.count -= 1
        self.left_at = time.monotonic()
        self.gauge.set(self.count)


@final
class Admission:
    """What one admitted request holds, released exactly once.

    Used as `async with inflight.admit() as held:`; leaving the block releases, unless a
    streamed answer took the admission over (`hand_over()`): the stream then releases it.
    """

    def __init__(self, inflight: InFlight):
        self._inflight = inflight
        # Synchronous releases (files, pins, metrics): all done before any await, so they
        # happen even when the releasing task is being cancelled.
        self.cleanup = ExitStack()
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._handed_over = False
        self.released = False

    def close_later(self, closer: Callable[[], Awaitable[None]]) -> None:
        """An asynchronous release (an upstream connection's close), run last."""
        self._closers.append(closer)

    def hand_over(self) -> None:
        """The answer's stream now owns the admission and releases it when it ends."""
        self._handed_over = True

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        try:
            self.cleanup.close()
        finally:
            self._inflight._leave()
        for closer in self._closers:
            await closer()

    async def __aenter__(self) -> Admission:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None or not self._handed_over:
            await self.release()
