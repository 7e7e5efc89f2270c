"""Who goes first: interactive requests before batch work, at the engine and at the gateway.

One number, vLLM's meaning: lower goes first, 0 is interactive (the default), a batch
runner sends `BATCH`. The engine orders its waiting requests by it (`--scheduling-policy
priority`, which arc-serve and the deployments set); the gateway's decode workers are
handed out by it (`PriorityHandout`), so a batch decode never takes a worker an
interactive one is waiting for. Within one priority, first come first served.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from typing import Generic, TypeVar

INTERACTIVE = 0
# What a batch runner sends: behind every interactive request, ahead of a caller that asks
# for less than a batch.
BATCH = 10
# A request may lower its own priority this far, never raise it above interactive.
MAX_PRIORITY = 1000

T = TypeVar("T")


class PriorityHandout(Generic[T]):
    """Idle items (decode workers) handed to waiters: the lowest priority number first,
    first come first served within one. `get` waits for an item; `put_nowait` gives one
    back. An item handed to a waiter that was cancelled at that moment goes to the next."""

    def __init__(self) -> None:
        self._idle: deque[T] = deque()
        # (priority, arrival, future): cancelled waiters stay until they reach the top.
        self._waiters: list[tuple[int, int, asyncio.Future[T]]] = []
        self._arrival = itertools.count()

    def put_nowait(self, item: T) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(item)
                return
        self._idle.append(item)

    async def get(self, priority: int = INTERACTIVE) -> T:
        # An idle item means nobody is waiting (put_nowait serves waiters first).
        if self._idle:
            return self._idle.popleft()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._arrival), future))
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.put_nowait(future.result())  # handed over as the waiter left
            else:
                future.cancel()
            raise

    def waiting(self) -> int:
        return sum(1 for _, _, future in self._waiters if not future.done())

    def idle(self) -> int:
        return len(self._idle)
