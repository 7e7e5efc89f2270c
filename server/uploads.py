"""Reading request bodies with the caps enforced while the bytes arrive.

A multipart upload is parsed as it streams (python-multipart, which FastAPI itself uses)
and its `file` part written straight to disk: past the byte cap nothing more is stored.
A client that stops sending for `read_timeout_s` (slow loris) or takes longer than
`total_timeout_s` is answered 408.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from .errors import APIError

# Over the cap, we read (and drop) up to this much more before answering, so an HTTP
# client that sends its whole body before reading gets the 413 instead of a broken pipe.
DRAIN_LIMIT = 64 * 1024 * 1024
FORM_FIELD_LIMIT = 64 * 1024


@dataclass
class Upload:
    path: Path
    size: int
    filename: str
    purpose: str


async def _chunks(
    request: Request, read_timeout_s: float, total_timeout_s: float
) -> AsyncIterator[bytes]:
    deadline = time.monotonic() + total_timeout_s
    stream = request.stream().__aiter__()
    while True:
        wait = min(read_timeout_s, deadline - time.monotonic())
        if wait <= 0:
            raise APIError(408, "the upload took too long; send it faster", "upload_timeout")
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), wait)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise APIError(
                408,
                f"the upload stalled: no data for {read_timeout_s:g} s",
                "upload_timeout",
            ) from None
        if chunk:
            yield chunk


def _too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"the video is larger than the gateway's limit of {limit / 2**20:g} MiB",
        "file_too_large",
    )


def _declared_length(request: Request) -> int | None:
    try:
        return int(request.headers["content-length"])
    except (KeyError, ValueError):
        return None


async def read_body(
    request: Request, max_bytes: int, read_timeout_s: float, total_timeout_s: float
) -> bytes:
    """A JSON body (chat requests carry data URLs, hence the cap)."""
    declared = _declared_length(request)
    if declared is not None and declared > max_bytes + DRAIN_LIMIT:
        raise _too_large(max_bytes)
    body = bytearray()
    async for chunk in _chunks(request, read_timeout_s, total_timeout_s):
        body += chunk
        if len(body) > max_bytes + DRAIN_LIMIT:
            break
    if len(body) > max_bytes:
        raise _too_large(max_bytes)
    return bytes(body)


async def receive_upload(
    request: Request,
    dest: Path,
    max_bytes: int,
    read_timeout_s: float,
    total_timeout_s: float,
) -> Upload:
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise APIError(
            415,
            "upload a video as multipart/form-data with a `file` part and a `purpose` field "
            f"(got content type {ctype.decode('latin-1') or 'none'!r})",
            "wrong_content_type",
        )
    declared = _declared_length(request)
    if declared is not None and declared > max_bytes + DRAIN_LIMIT:
        raise _too_large(max_bytes)

    state = {"name": None, "filename": None, "header": b"", "value": b""}
    headers: dict[bytes, bytes] = {}
    fields: dict[str, bytearray] = {}
    written = 0
    over = False
    out = dest.open("wb")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        headers[state["header"].lower()] = state["value"]
        state["header"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        state["name"] = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        state["filename"] = filename.decode("utf-8", "replace") if filename is not None else None
        headers.clear()
        if state["name"] == "file":
            state["file_filename"] = state["filename"] or "video"
        else:
            fields[state["name"]] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal written, over
        piece = data[start:end]
        if state["name"] == "file":
            written += len(piece)
            if written > max_bytes:
                over = True
            elif not over:
                out.write(piece)
        else:
            field = fields[state["name"]]
            if len(field) + len(piece) > FORM_FIELD_LIMIT:
                raise APIError(400, f"form field {state['name']!r} is too long", "field_too_long")
            field += piece

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
    )
    received = 0
    try:
        async for chunk in _chunks(request, read_timeout_s, total_timeout_s):
            received += len(chunk)
            if over and received > max_bytes + DRAIN_LIMIT:
                break
            parser.write(chunk)
        parser.finalize()
    except APIError:
        out.close()
        dest.unlink(missing_ok=True)
        raise
    except ValueError as e:  # python-multipart's parse errors are ValueErrors
        out.close()
        dest.unlink(missing_ok=True)
        raise APIError(400, f"malformed multipart body: {e}", "bad_multipart") from None
    out.close()
    if over:
        dest.unlink(missing_ok=True)
        raise _too_large(max_bytes)
    filename = state.get("file_filename")
    if filename is None:
        dest.unlink(missing_ok=True)
        raise APIError(400, "the upload has no `file` part", "missing_file", param="file")
    purpose = bytes(fields.get("purpose", b"user_data")).decode("utf-8", "replace") or "user_data"
    return Upload(dest, written, _clean_name(filename or "video"), purpose[:64])


def _clean_name(name: str) -> str:
    # Shown back to the client only; never used as a path.
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in name if ch.isprintable())[:255] or "video"


def decode_data_url(url: str, dest: Path, max_bytes: int) -> int:
    """`data:<type>;base64,<payload>` -> a file. Returns its size."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:") or ";base64" not in header:
        raise APIError(
            400,
            "a data URL must look like data:video/mp4;base64,<base64 bytes>",
            "bad_data_url",
            param="video_url",
        )
    if len(payload) * 3 // 4 > max_bytes:
        raise _too_large(max_bytes)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "the data URL is not valid base64", "bad_data_url") from None
    dest.write_bytes(data)
    return len(data)
