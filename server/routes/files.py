"""`/v1/files`: upload (prepared once, kept with a TTL and a disk budget), list, get, delete.

Each file is the uploading key's: another key gets 404 for it, as for a missing id; an
admin key sees every key's files."""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from ..batches.output import OUTPUT_PURPOSE
from ..batches.validate import check_bounds
from ..files import StoredFile
from ..keys.auth import Caller, CallerDep
from ..request_log import server_timing
from ..schemas import FileDeleted, FileList, FileObject
from ..state import Gateway, GatewayDep
from ..uploads import receive_upload

router = APIRouter()


# Files of batches (their input, their output): JSON lines, not videos.
BATCH_PURPOSES = ("batch", OUTPUT_PURPOSE)


def _file_object(stored: StoredFile) -> FileObject:
    video = None
    if stored.purpose not in BATCH_PURPOSES:  # a batch's JSONL files have no video
        video = {
            k: stored.video.get(k)
            for k in ("frames", "duration", "has_audio", "video_duration_s", "width", "height")
            # a long video: the segments its questions are asked in (video.segments auto)
            + (("segments",) if "segments" in stored.video else ())
        }
    return FileObject(
        id=stored.id,
        bytes=stored.bytes,
        created_at=stored.created_at,
        expires_at=stored.expires_at,
        filename=stored.filename,
        purpose=stored.purpose,
        video=video,
    )


@router.post("/v1/files", response_model=FileObject)
async def upload_file(
    request: Request, response: Response, gateway: GatewayDep, caller: CallerDep
) -> FileObject:
    """The upload streamed to disk (its cap enforced as bytes arrive), then checked and
    kept by the video service: prepared now up to five minutes, measured only beyond."""
    with ExitStack() as held:
        # The key's rate and concurrency limits (429) before a byte is read.
        await gateway.tenancy.admit(caller, request, held, upload=True)
        return await _upload(request, response, gateway, caller)


async def _upload(
    request: Request, response: Response, gateway: Gateway, caller: Caller
) -> FileObject:
    s = gateway.settings
    dest = gateway.store.incoming_path()
    fields = request.state.log
    t0 = time.perf_counter()
    try:
        upload = await receive_upload(
            request,
            dest,
            s.max_upload_bytes,
            s.upload_read_timeout_s,
            s.upload_total_timeout_s,
        )
        fields["receive_s"] = round(time.perf_counter() - t0, 4)
        if upload.purpose == "batch":  # requests as JSON lines, checked at POST /v1/batches
            await asyncio.to_thread(check_bounds, dest, s)
            stored = await asyncio.to_thread(
                gateway.store.add,
                dest,
                upload.filename,
                upload.purpose,
                upload.size,
                None,
                {},
                owner=caller.key_id,
                quota_bytes=caller.limits.storage_bytes,
            )
            response.headers["Server-Timing"] = server_timing(fields)
            return _file_object(stored)
        stored = await gateway.videos.store_upload(
            dest,
            upload.filename,
            upload.purpose,
            upload.size,
            fields,
            owner=caller.key_id,
            quota_bytes=caller.limits.storage_bytes,
        )
    finally:
        dest.unlink(missing_ok=True)
    response.headers["Server-Timing"] = server_timing(fields)
    return _file_object(stored)


@router.get("/v1/files", response_model=FileList)
async def list_files(gateway: GatewayDep, caller: CallerDep) -> FileList:
    files = await asyncio.to_thread(gateway.store.list, caller.scope)
    return FileList(data=[_file_object(f) for f in files])


@router.get("/v1/files/{file_id}", response_model=FileObject)
async def get_file(file_id: str, gateway: GatewayDep, caller: CallerDep) -> FileObject:
    return _file_object(await asyncio.to_thread(gateway.store.get, file_id, caller.scope))


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, gateway: GatewayDep, caller: CallerDep) -> FileResponse:
    """The file's bytes (a batch's output and error files: JSON lines)."""
    stored = await asyncio.to_thread(gateway.store.get, file_id, caller.scope)
    batch = stored.purpose in BATCH_PURPOSES
    return FileResponse(
        gateway.store.source_path(stored.id),
        media_type="application/jsonl" if batch else "application/octet-stream",
        filename=stored.filename,
    )


@router.delete("/v1/files/{file_id}", response_model=FileDeleted)
async def delete_file(file_id: str, gateway: GatewayDep, caller: CallerDep) -> FileDeleted:
    store = gateway.store
    await asyncio.to_thread(store.get, file_id, caller.scope)  # 404 when unknown or another's
    await asyncio.to_thread(store.delete, file_id, caller.scope)
    return FileDeleted(id=file_id)
