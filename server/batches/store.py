"""A batch's rows in the database: every function takes the session of one transaction
(`Database.run`/`call`). What must happen once happens under a condition checked by the
update itself: a line is claimed only while unclaimed (or its claim expired), its result
is written only by the claim that holds it, a batch is finalized only by the replica
that holds its finalization."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from ..db.models import ApiKey, Batch, BatchLine
from ..errors import APIError
from ..keys.auth import ADMIN, ANONYMOUS, Caller
from ..keys.records import ADMIN_ID, ANONYMOUS_ID, KeyLimits
from . import objects as o
from .validate import Line


def get(session: Session, batch_id: str, scope: str | None) -> Batch:
    """The batch if `scope` (an owner; None: any) may see it, else 404 (as for none)."""
    row = session.get(Batch, batch_id)
    if row is None or (scope is not None and row.owner != scope):
        raise APIError(
            404, f"no batch with id {batch_id[:64]!r}", "batch_not_found", param="batch_id"
        )
    session.expunge(row)
    return row


def add(session: Session, row: Batch) -> Batch:
    session.add(row)
    session.flush()
    session.expunge(row)
    return row


def page(
    session: Session, scope: str | None, after: str | None, limit: int
) -> tuple[list[Batch], bool]:
    """Newest first; `after`: the id of the last batch of the previous page."""
    statement = select(Batch)
    if scope is not None:
        statement = statement.where(Batch.owner == scope)
    if after:
        mark = session.get(Batch, after)
        if mark is None or (scope is not None and mark.owner != scope):
            raise APIError(
                404, f"no batch with id {after[:64]!r}", "batch_not_found", param="after"
            )
        statement = statement.where(
            or_(
                Batch.created_at < mark.created_at,
                and_(Batch.created_at == mark.created_at, Batch.id < mark.id),
            )
        )
    statement = statement.order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit + 1)
    rows = list(session.execute(statement).scalars())
    for row in rows:
        session.expunge(row)
    return rows[:limit], len(rows) > limit


def cancel(session: Session, batch_id: str, scope: str | None) -> Batch:
    row = session.execute(
        select(Batch).where(Batch.id == batch_id).with_for_update()
    ).scalar_one_or_none()
    if row is None or (scope is not None and row.owner != scope):
        raise APIError(
            404, f"no batch with id {batch_id[:64]!r}", "batch_not_found", param="batch_id"
        )
    if row.status in (o.VALIDATING, o.IN_PROGRESS):
        row.status = o.CANCELLING
        row.cancelling_at = time.time()
    elif row.status not in (o.CANCELLING, o.CANCELLED):
        raise APIError(
            409,
            f"the batch is {row.status}: only a validating or in-progress batch can be cancelled",
            "batch_not_cancellable",
        )
    session.flush()
    session.expunge(row)
    return row


# -- the runner's side -------------------------------------------------------------------------


def active(session: Session) -> list[Batch]:
    """Batches with work left, oldest first."""
    statement = select(Batch).where(Batch.status.in_(o.ACTIVE)).order_by(Batch.created_at)
    rows = list(session.execute(statement).scalars())
    for row in rows:
        session.expunge(row)
    return rows


def claim_batch(
    session: Session, batch_id: str, holder: str, ttl_s: float, status: str, becomes: str
) -> bool:
    """Takes the batch's validation or finalization for `holder`, while it has `status`
    and nobody else holds it (or their claim expired); it then has status `becomes`."""
    now = time.time()
    values: dict[str, Any] = {
        "finalizer": holder,
        "finalizer_expires_at": now + ttl_s,
        "status": becomes,
    }
    if becomes == o.FINALIZING and status != o.FINALIZING:
        values["finalizing_at"] = now
    done = session.execute(
        update(Batch)
        .where(
            Batch.id == batch_id,
            Batch.status == status,
            or_(
                Batch.finalizer.is_(None),
                Batch.finalizer == holder,
                Batch.finalizer_expires_at < now,
            ),
        )
        .values(**values)
    )
    return done.rowcount == 1


def start(
    session: Session, batch_id: str, holder: str, lines: list[Line], errors: list[dict]
) -> str | None:
    """The validation's outcome: the lines written and the batch in progress, or failed
    with its errors. None if the batch is no longer this holder's to validate (cancelled
    meanwhile, or taken over)."""
    row = session.execute(
        select(Batch).where(Batch.id == batch_id).with_for_update()
    ).scalar_one_or_none()
    if row is None or row.status != o.VALIDATING or row.finalizer != holder:
        return None
    now = time.time()
    row.finalizer = None
    row.finalizer_expires_at = None
    if errors:
        row.status = o.FAILED
        row.failed_at = now
        row.errors = errors
        return o.FAILED
    session.add_all(
        BatchLine(
            batch_id=batch_id, line=x.line, custom_id=x.custom_id, body=x.body, state=o.QUEUED
        )
        for x in lines
    )
    row.total = len(lines)
    row.status = o.IN_PROGRESS
    row.in_progress_at = now
    return o.IN_PROGRESS


def claim_lines(
    session: Session, batch_id: str, holder: str, ttl_s: float, count: int
) -> list[tuple[int, str, str, str]]:
    """Up to `count` lines to run, each (line, custom_id, body, claim token): queued ones,
    or running ones whose claim expired (their gateway died), in file order."""
    now = time.time()
    claimable = and_(
        BatchLine.batch_id == batch_id,
        or_(
            BatchLine.state == o.QUEUED,
            and_(BatchLine.state == o.RUNNING, BatchLine.claim_expires_at < now),
        ),
    )
    candidates = session.execute(
        select(BatchLine.line, BatchLine.custom_id, BatchLine.body)
        .where(claimable)
        .order_by(BatchLine.line)
        .limit(count)
    ).all()
    claimed = []
    for line, custom_id, body in candidates:
        claim = "claim-" + secrets.token_hex(12)
        # Conditional: another replica may have claimed it since the select.
        done = session.execute(
            update(BatchLine)
            .where(claimable, BatchLine.line == line)
            .values(
                state=o.RUNNING,
                claim=claim,
                holder=holder,
                claim_expires_at=now + ttl_s,
                attempts=BatchLine.attempts + 1,
            )
        )
        if done.rowcount == 1:
            claimed.append((line, custom_id, body, claim))
    return claimed


def renew(session: Session, holder: str, ttl_s: float) -> None:
    """Pushes forward the claims of a living gateway: its lines and finalizations."""
    until = time.time() + ttl_s
    session.execute(
        update(BatchLine)
        .where(BatchLine.holder == holder, BatchLine.state == o.RUNNING)
        .values(claim_expires_at=until)
    )
    session.execute(
        update(Batch)
        .where(Batch.finalizer == holder, Batch.status.in_(o.ACTIVE))
        .values(finalizer_expires_at=until)
    )


def finish_line(
    session: Session, batch_id: str, line: int, claim: str, state: str, result: dict
) -> bool:
    """Writes a line's result if `claim` still holds it (once, whoever else ran it too),
    and counts it in the batch: completed for a 200, failed otherwise."""
    done = session.execute(
        update(BatchLine)
        .where(
            BatchLine.batch_id == batch_id,
            BatchLine.line == line,
            BatchLine.claim == claim,
            BatchLine.state == o.RUNNING,
        )
        .values(state=state, result=result, claim=None, holder=None, finished_at=time.time())
    )
    if done.rowcount != 1:
        return False
    response = result.get("response") or {}
    counter = "completed" if response.get("status_code") == 200 else "failed"
    counts = {counter: getattr(Batch, counter) + 1}
    if counter == "completed":
        for column, tokens in _tokens(response.get("body")).items():
            counts[column] = getattr(Batch, column) + tokens
    session.execute(update(Batch).where(Batch.id == batch_id).values(counts))
    return True


def _tokens(completion: object) -> dict[str, int]:
    """The token counts of a chat completion's usage, as the batch sums them."""
    usage = completion.get("usage") if isinstance(completion, dict) else None
    if not isinstance(usage, dict):
        return {}
    details = usage.get("prompt_tokens_details")
    counts = {
        "input_tokens": usage.get("prompt_tokens"),
        "output_tokens": usage.get("completion_tokens"),
        "cached_tokens": details.get("cached_tokens") if isinstance(details, dict) else None,
    }
    return {k: v for k, v in counts.items() if isinstance(v, int) and v > 0}


def release(session: Session, holder: str) -> None:
    """A gateway stopping: its running lines go back to the queue at once."""
    session.execute(
        update(BatchLine)
        .where(BatchLine.holder == holder, BatchLine.state == o.RUNNING)
        .values(state=o.QUEUED, claim=None, holder=None, claim_expires_at=None)
    )


def unfinished(session: Session, batch_id: str) -> int:
    return session.execute(
        select(func.count()).where(
            BatchLine.batch_id == batch_id, BatchLine.state.in_((o.QUEUED, o.RUNNING))
        )
    ).scalar_one()


def queued_lines(session: Session) -> int:
    """Lines waiting in every batch in progress (the metric)."""
    return session.execute(
        select(func.count())
        .select_from(BatchLine)
        .join(Batch, Batch.id == BatchLine.batch_id)
        .where(Batch.status == o.IN_PROGRESS, BatchLine.state == o.QUEUED)
    ).scalar_one()


def drop_unfinished(session: Session, batch_id: str, holder: str) -> None:
    """The lines not answered when a batch is cancelled or expires: never run (a claim on
    one still running elsewhere can no longer write it)."""
    if not _holds(session, batch_id, holder):
        return
    session.execute(
        update(BatchLine)
        .where(BatchLine.batch_id == batch_id, BatchLine.state.in_((o.QUEUED, o.RUNNING)))
        .values(state=o.DROPPED, claim=None, holder=None)
    )


def results(
    session: Session, batch_id: str, after: int = -1, limit: int | None = None
) -> Sequence[tuple[int, str, str, dict | None]]:
    """(line, custom_id, state, result) of the lines after line `after`, in file order; at
    most `limit` of them (a page: a batch's results are read a page at a time)."""
    return session.execute(
        select(BatchLine.line, BatchLine.custom_id, BatchLine.state, BatchLine.result)
        .where(BatchLine.batch_id == batch_id, BatchLine.line > after)
        .order_by(BatchLine.line)
        .limit(limit)
    ).all()


def close(
    session: Session,
    batch_id: str,
    holder: str,
    status: str,
    output_file_id: str | None,
    error_file_id: str | None,
) -> bool:
    """The batch's end (completed, expired, cancelled) with its files, if `holder` still
    holds its finalization."""
    if not _holds(session, batch_id, holder):
        return False
    now = time.time()
    times = {o.COMPLETED: "completed_at", o.EXPIRED: "expired_at", o.CANCELLED: "cancelled_at"}
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id)
        .values(
            {
                "status": status,
                times[status]: now,
                "output_file_id": output_file_id,
                "error_file_id": error_file_id,
                "finalizer": None,
                "finalizer_expires_at": None,
            }
        )
    )
    return True


def _holds(session: Session, batch_id: str, holder: str) -> bool:
    row = session.execute(
        select(Batch.finalizer).where(Batch.id == batch_id).with_for_update()
    ).first()
    return row is not None and row[0] == holder


def caller_for(session: Session, owner: str) -> Caller:
    """The key that made a batch, as its lines are answered for: its limits and cache salt
    apply. A key revoked since is a 401 for its lines."""
    if owner == ADMIN_ID:
        return ADMIN
    if owner == ANONYMOUS_ID:
        return ANONYMOUS
    row = session.get(ApiKey, owner)
    if row is None or row.revoked_at is not None:
        raise APIError(401, "the batch's API key has been revoked", "invalid_api_key")
    return Caller(row.id, row.name, row.admin, KeyLimits.of(row))
