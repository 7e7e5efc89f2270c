"""The batch object as OpenAI's API shows it, and the names of a batch's statuses."""

from __future__ import annotations

import secrets
from typing import Any

from ..db.models import Batch

ENDPOINT = "/v1/chat/completions"
WINDOWS = {"24h": 24 * 3600.0}

VALIDATING = "validating"
IN_PROGRESS = "in_progress"
FINALIZING = "finalizing"
COMPLETED = "completed"
FAILED = "failed"
EXPIRED = "expired"
CANCELLING = "cancelling"
CANCELLED = "cancelled"
# Statuses a runner still has work in.
ACTIVE = (VALIDATING, IN_PROGRESS, FINALIZING, CANCELLING)

# A line's states.
QUEUED = "queued"
RUNNING = "running"
DONE = "done"  # an answer (any status code): the output file, or the error file for 4xx
LINE_FAILED = "failed"  # no answer after its retries: the error file
DROPPED = "dropped"  # never answered: the batch was cancelled or expired

_TIMES = (
    "in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
    "cancelling_at", "cancelled_at",
)  # fmt: skip


def new_batch_id() -> str:
    return "batch_" + secrets.token_hex(12)


def new_line_id() -> str:
    return "batch_req_" + secrets.token_hex(12)


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


def batch_object(row: Batch) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "errors": {"object": "list", "data": row.errors} if row.errors else None,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": row.status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": int(row.created_at),
        "expires_at": _seconds(row.expires_at),
        **{name: _seconds(getattr(row, name)) for name in _TIMES},
        "request_counts": {"total": row.total, "completed": row.completed, "failed": row.failed},
        "usage": {
            "input_tokens": row.input_tokens,
            "input_tokens_details": {"cached_tokens": row.cached_tokens},
            "output_tokens": row.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": row.input_tokens + row.output_tokens,
        },
        "metadata": row.meta,
    }
