"""`/v1/files`: upload (prepared once, kept with a TTL and a disk budget), list, get, delete."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response

from ..errors import APIError
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
        },
    )


@router.post("/v1/files", response_model=FileObject)
async def upload_file(request: Request, response: Response, gateway: GatewayDep) -> FileObject:
    s = gateway.settings
    store = gateway.store
    dest = store.incoming_path()
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
        gateway.metrics.upload_bytes.inc(upload.size)
        fields["bytes_in"] = upload.size
        if upload.size == 0:
            raise APIError(400, "the uploaded file is empty (0 bytes)", "empty_file")
        if upload.size > store.budget_bytes:  # refused before decoding it
            raise APIError(
                413,
                f"the video ({upload.size / 2**20:.1f} MiB) is larger than the file "
                f"store's whole budget ({store.budget_bytes / 2**20:g} MiB)",
                "file_exceeds_storage",
            )
        container, summary = await gateway.ingestor.prepare(dest)
        t_store = time.perf_counter()
        try:
            stored = store.add(
                dest, upload.filename, upload.purpose, upload.size, container, summary.as_dict()
            )
            fields["store_s"] = round(time.perf_counter() - t_store, 4)
        finally:
            container.unlink(missing_ok=True)
    finally:
        dest.unlink(missing_ok=True)
    if summary.notes:
        fields["video_notes"] = summary.notes
    fields.update(
        file_id=stored.id,
        frames=summary.frames,
        decode_s=summary.decode_s,
        encode_s=summary.encode_s,
        decode_wait_s=summary.wait_s,
        prepared_bytes=summary.prepared_bytes,
    )
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
