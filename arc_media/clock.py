"""Stage timing as an explicit hook: where a preparation spends its seconds, per stage.

`prepare_video(..., timings=dict)` fills the dict with seconds per stage ("probe",
"decode", "overlay", "resize", "frames", "audio", "features"). Stages that run on several
threads (the overlay and resize of frames on the stamping threads, audio beside the frames)
are summed over the threads, so they can add up to more than the wall time. Without a dict
the pipeline uses `NO_CLOCK`, which measures nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageClock:
    """Seconds per stage, added from any thread."""

    def __init__(self, into: dict[str, float] | None = None):
        self.seconds: dict[str, float] = {} if into is None else into
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)


class _NoClock(StageClock):
    def add(self, stage: str, seconds: float) -> None:
        pass


NO_CLOCK: StageClock = _NoClock()

__all__ = ["NO_CLOCK", "StageClock"]
