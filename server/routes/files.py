"""`/v1/files`: upload (prepared once, kept with a TTL and a disk budget), list, get, delete."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response

from ..files import StoredFile
from ..request_log import server_timing
from ..schemas import FileDeleted, FileList, FileObject
from ..state import GatewayDep
from ..uploads import receive_upload

router = APIRouter()


def _file_object(stored: StoredFile) -> FileObject:
    return FileObject(
        id=stored.id,
        bytes=stored.bytes,
        created_at=stored.created_at,
        expires_at=stored.expires_at,
        filename=stored.filename,
        purpose=stored.purpose,
        video={
            k: stored.video.get(k)
            for k in ("frames", "duration", "has_audio", "video_duration_s", "width", "height")
            # a long video: the segments its questions are asked in (video.segments auto)
            + (("segments",) if "segments" in stored.video else ())
        },
    )


@router.post("/v1/files", response_model=FileObject)
async def upload_file(request: Request, response: Response, gateway: GatewayDep) -> FileObject:
    """The upload streamed to disk (its cap enforced as bytes arrive), then checked and
    kept by the video service: prepared now up to five minutes, measured only beyond."""
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
        stored = await gateway.videos.store_upload(
            dest, upload.filename, upload.purpose, upload.size, fields
        )
    finally:
        dest.unlink(missing_ok=True)
    response.headers["Server-Timing"] = server_timing(fields)
    return _file_object(stored)


@router.get("/v1/files", response_model=FileList)
async def list_files(gateway: GatewayDep) -> FileList:
    return FileList(data=[_file_object(f) for f in gateway.store.list()])


@router.get("/v1/files/{file_id}", response_model=FileObject)
async def get_file(file_id: str, gateway: GatewayDep) -> FileObject:
    return _file_object(gateway.store.get(file_id))


@router.delete("/v1/files/{file_id}", response_model=FileDeleted)
async def delete_file(file_id: str, gateway: GatewayDep) -> FileDeleted:
    gateway.store.get(file_id)  # 404 when unknown
    gateway.store.delete(file_id)
    return FileDeleted(id=file_id)
