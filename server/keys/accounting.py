"""Accounting: what each key used, per UTC day, in `usage_daily` (`arc-gateway keys usage`).

A request's usage is read from its log fields when the request is released (answered,
failed, or its client gone), so the request log and the accounts agree: requests and
uploads, prompt / completion / cached prompt tokens, seconds of video asked about, frames,
decode seconds. One upsert adds it to the day's row (never lost between replicas).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db.database import add_to_row
from ..db.leases import Leases
from ..db.models import ApiKey, DailyUsage
from .limits import utc_day

log = logging.getLogger("arc.gateway")


@dataclass
class Usage:
    requests: int = 0
    uploads: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    video_seconds: float = 0.0
    frames: int = 0
    decode_seconds: float = 0.0

    @classmethod
    def from_log(cls, fields: dict[str, Any], upload: bool = False) -> Usage:
        def number(name: str) -> float:
            value = fields.get(name)
            return value if isinstance(value, int | float) and not isinstance(value, bool) else 0

        return cls(
            requests=0 if upload else 1,
            uploads=1 if upload else 0,
            prompt_tokens=int(number("prompt_tokens")),
            completion_tokens=int(number("completion_tokens")),
            cached_tokens=int(number("cached_tokens")),
            video_seconds=0.0 if upload else float(number("video_seconds")),
            frames=int(number("frames")),
            decode_seconds=float(number("decode_s")),
        )


def note_usage(fields: dict[str, Any], usage: dict[str, Any] | None) -> None:
    """Copies an answer's token counts (OpenAI's `usage`) into the request's log fields."""
    if not isinstance(usage, dict):
        return
    for name in ("prompt_tokens", "completion_tokens"):
        if isinstance(usage.get(name), int):
            fields[name] = usage[name]
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        fields["cached_tokens"] = details["cached_tokens"]


def record(session: Session, key_id: str, usage: Usage, at: float | None = None) -> None:
    add_to_row(session, DailyUsage.__table__, {"key_id": key_id, "day": utc_day(at)}, asdict(usage))


class Accounting:
    def __init__(self, leases: Leases):
        self.leases = leases  # its thread helper: records are written even under cancellation

    def record_soon(self, key_id: str, fields: dict[str, Any], upload: bool = False) -> None:
        usage = Usage.from_log(fields, upload)
        db = self.leases.db

        def work() -> None:
            try:
                db.call(record, key_id, usage)
            except Exception as exc:  # noqa: BLE001 (the answer is sent; say it in the log)
                event = {"event": "usage_not_recorded", "key_id": key_id, "error": repr(exc)}
                log.error(json.dumps(event))

        self.leases.soon(work)


def usage_report(session: Session, since: str | None = None) -> list[dict[str, Any]]:
    """Per key since `since` (YYYY-MM-DD, UTC; all days without it): the sums, with the
    key's name where it is a key of the database."""
    columns = [c for c in DailyUsage.__table__.columns if c.name not in ("key_id", "day")]
    statement = select(
        DailyUsage.key_id,
        func.min(DailyUsage.day),
        func.max(DailyUsage.day),
        *[func.sum(c) for c in columns],
    ).group_by(DailyUsage.key_id)
    if since:
        statement = statement.where(DailyUsage.day >= since)
    names = dict(session.execute(select(ApiKey.id, ApiKey.name)).all())
    report = []
    for key_id, first, last, *sums in session.execute(statement).all():
        row = {"key_id": key_id, "name": names.get(key_id, key_id), "from": first, "to": last}
        for column, value in zip(columns, sums):
            row[column.name] = (
                round(float(value), 3) if column.name.endswith("seconds") else int(value)
            )
        report.append(row)
    return sorted(report, key=lambda r: r["name"])
