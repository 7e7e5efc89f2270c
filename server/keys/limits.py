"""Per-key limits, checked in the database before a request reads its body or decodes
anything: requests per minute, requests in progress at once, video seconds per UTC day.
(Stored bytes are checked by the file store before an upload is kept; the longest video
before any decode: a stored file's known length here, other videos by the decode
worker's probe, through `duration_limit`.)

All three are decided in one transaction holding the key's row lock (`SELECT ... FOR
UPDATE`; SQLite's transactions are serial anyway), so they hold across gateway replicas
sharing one PostgreSQL:

- requests per minute: GCRA (a "theoretical arrival time" per key, one column): a burst of
  up to the limit, then one request every 60/limit seconds; a refused request costs nothing.
- concurrent requests: live leases of kind "request" on the key (`server.db.leases`),
  released when the answer is done, expiring if their gateway dies.
- video seconds per day: today's `usage_daily.video_seconds`; a request is admitted while
  the day's total is under the limit (its own video may take it past: the next is refused).

Past a limit: 429 `rate_limit_exceeded` with `Retry-After` and OpenAI's
`x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests`
headers (the three also come with every admitted answer of a key with a rate limit).
"""

from __future__ import annotations

import math
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import Database
from ..db.leases import Leases
from ..db.models import ApiKey, DailyUsage
from ..errors import APIError
from .auth import Caller

REQUEST_LEASE = "request"
WINDOW_S = 60.0

# The longest video the current request's key may send (seconds; inf: no key limit). Set
# per request by `Tenancy.admit`; the decode worker's probe refuses longer videos.
duration_limit: ContextVar[float] = ContextVar("duration_limit", default=math.inf)


def utc_day(at: float | None = None) -> str:
    return datetime.fromtimestamp(at if at is not None else time.time(), timezone.utc).strftime(
        "%Y-%m-%d"
    )


def seconds_to_midnight(now: float) -> float:
    return 86400.0 - now % 86400.0


def duration_text(seconds: float) -> str:
    """OpenAI's reset format: "20ms", "6s", "1m30s"."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


@dataclass
class Admitted:
    lease_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Decision:
    admitted: Admitted | None = None
    refusal: tuple[str, float] | None = None  # (message, retry after seconds)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def refuse(cls, message: str, wait_s: float, headers: dict[str, str]) -> _Decision:
        return cls(refusal=(message, wait_s), headers=headers)


class RateLimiter:
    def __init__(self, db: Database, leases: Leases):
        self.db = db
        self.leases = leases

    async def admit(self, caller: Caller, video: bool) -> Admitted:
        """Counts one request against `caller`'s limits, or raises the 429. `video`: a chat
        request (the daily video seconds apply). The caller releases `lease_id`."""
        limits = caller.limits
        if (
            limits.rpm is None
            and limits.concurrent is None
            and (not video or limits.video_seconds_per_day is None)
        ):
            return Admitted()
        decision = await self.db.run(self._decide, caller, video)
        if decision.refusal is not None:
            message, retry_after = decision.refusal
            raise APIError(
                429,
                message,
                "rate_limit_exceeded",
                headers={"Retry-After": str(max(1, math.ceil(retry_after))), **decision.headers},
            )
        assert decision.admitted is not None
        return decision.admitted

    def _decide(self, session: Session, caller: Caller, video: bool) -> _Decision:
        row = session.execute(
            select(ApiKey).where(ApiKey.id == caller.key_id).with_for_update()
        ).scalar_one_or_none()
        if row is None:
            return _Decision(admitted=Admitted())
        now = time.time()
        headers: dict[str, str] = {}
        new_tat = None
        if row.rpm:
            interval = WINDOW_S / row.rpm
            new_tat = max(row.rpm_tat, now) + interval
            allowed = new_tat - now <= WINDOW_S + 1e-9
            ahead = (new_tat if allowed else max(row.rpm_tat, now)) - now
            headers = {
                "x-ratelimit-limit-requests": str(row.rpm),
                "x-ratelimit-remaining-requests": str(
                    max(0, math.floor((WINDOW_S - ahead) / interval + 1e-9))
                ),
                "x-ratelimit-reset-requests": duration_text(ahead),
            }
            if not allowed:
                wait = new_tat - WINDOW_S - now
                return _Decision.refuse(
                    f"rate limit of key {row.name!r}: {row.rpm} requests per minute; "
                    f"retry in {duration_text(wait)}",
                    wait,
                    headers,
                )
        if row.concurrent:
            held = self.leases.count(session, REQUEST_LEASE, row.id)
            if held >= row.concurrent:
                return _Decision.refuse(
                    f"key {row.name!r} has {held} requests in progress, its limit of "
                    f"{row.concurrent}; retry when one is done",
                    1.0,
                    headers,
                )
        if video and row.video_seconds_per_day:
            today = session.get(DailyUsage, (row.id, utc_day(now)))
            used = today.video_seconds if today is not None else 0.0
            if used >= row.video_seconds_per_day:
                return _Decision.refuse(
                    f"key {row.name!r} has used its {row.video_seconds_per_day:g} seconds of "
                    f"video for today (UTC); the count starts again at midnight UTC",
                    seconds_to_midnight(now),
                    headers,
                )
        if new_tat is not None:
            row.rpm_tat = new_tat
        lease_id = self.leases.acquire(session, REQUEST_LEASE, row.id) if row.concurrent else None
        return _Decision(admitted=Admitted(lease_id, headers))
