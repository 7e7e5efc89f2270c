"""`/v1/batches`: OpenAI's Batch API (create, retrieve, list, cancel). The work is done by
the batch runner (`server.batches.runner`); these routes read and change the rows.

A batch is the creating key's: another key gets 404 for it, as for a missing id; an admin
key sees every key's batches."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from ..batches import objects as o
from ..batches import store
from ..db.models import Batch
from ..errors import APIError
from ..keys.auth import CallerDep
from ..state import GatewayDep

router = APIRouter()

INPUT_PURPOSE = "batch"


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(max_length=64)
    endpoint: str = Field(max_length=64)
    completion_window: str = Field(max_length=16)
    metadata: dict[str, str] | None = None


def _check(body: BatchCreate) -> None:
    if body.endpoint != o.ENDPOINT:
        raise APIError(
            400,
            f"endpoint must be {o.ENDPOINT} (the one endpoint this gateway runs batches for)",
            "invalid_batch",
            param="endpoint",
        )
    if body.completion_window not in o.WINDOWS:
        raise APIError(
            400,
            f"completion_window must be one of {', '.join(o.WINDOWS)}",
            "invalid_batch",
            param="completion_window",
        )
    meta = body.metadata or {}
    if len(meta) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in meta.items()):
        raise APIError(
            400,
            "metadata holds at most 16 pairs, keys up to 64 characters, values up to 512",
            "invalid_batch",
            param="metadata",
        )


@router.post("/v1/batches")
async def create_batch(body: BatchCreate, gateway: GatewayDep, caller: CallerDep) -> dict:
    _check(body)
    stored = await asyncio.to_thread(gateway.store.get, body.input_file_id, caller.scope)
    if stored.purpose != INPUT_PURPOSE:
        raise APIError(
            400,
            f"the input file must be uploaded with purpose {INPUT_PURPOSE!r} (it has "
            f"{stored.purpose!r})",
            "invalid_batch",
            param="input_file_id",
        )
    now = time.time()
    window = gateway.settings.batch_window_s or o.WINDOWS[body.completion_window]
    row = Batch(
        id=o.new_batch_id(),
        owner=caller.key_id,
        endpoint=body.endpoint,
        input_file_id=stored.id,
        completion_window=body.completion_window,
        status=o.VALIDATING,
        meta=body.metadata,
        created_at=now,
        expires_at=now + window,
        total=0,
        completed=0,
        failed=0,
    )
    row = await gateway.db.run(store.add, row)
    gateway.batches.wake()
    return o.batch_object(row)


@router.get("/v1/batches/{batch_id}")
async def get_batch(batch_id: str, gateway: GatewayDep, caller: CallerDep) -> dict:
    return o.batch_object(await gateway.db.run(store.get, batch_id, caller.scope))


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, gateway: GatewayDep, caller: CallerDep) -> dict:
    row = await gateway.db.run(store.cancel, batch_id, caller.scope)
    gateway.batches.wake()
    return o.batch_object(row)


@router.get("/v1/batches")
async def list_batches(
    gateway: GatewayDep,
    caller: CallerDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    rows, more = await gateway.db.run(store.page, caller.scope, after, limit)
    data = [o.batch_object(row) for row in rows]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }
