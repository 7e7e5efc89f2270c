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
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from .errors import APIError

# Over the cap, we read (and drop) up to this much more before answering, so an HTTP
# client that sends its whole body before reading gets the 413 instead of a broken pipe.
DRAIN_LIMIT = 64 * 1024 * 1024
FORM_FIELD_LIMIT = 1024
# Everything but the file's bytes together: part headers (python-multipart allows 8 of
# 4 kB per part), field names and values.
FORM_FIELDS_TOTAL = 16 * 1024
FORM_FIELDS = ("purpose",)
PURPOSES = ("user_data", "vision", "assistants", "batch")
# The JSON of a chat request, data URLs left out (they go to disk as they arrive).
MAX_JSON_BYTES = 4 * 1024 * 1024


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
            raise APIError(
                408,
                f"the request took longer than this gateway's {total_timeout_s:g} s to arrive "
                "(--upload-total-timeout-s); send it faster",
                "upload_timeout",
            )
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), wait)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise APIError(
                408,
                f"the upload stalled: no data for {read_timeout_s:g} s (--upload-read-timeout-s)",
                "upload_timeout",
            ) from None
        if chunk:
            yield chunk


def _too_large(limit: int, param: str | None) -> APIError:
    return APIError(
        413,
        f"the video is larger than this gateway's limit of {limit / 2**20:g} MiB (--max-upload-mb)",
        "file_too_large",
        param=param,
    )


def _declared_length(request: Request) -> int | None:
    try:
        return int(request.headers["content-length"])
    except (KeyError, ValueError):
        return None


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
        raise _too_large(max_bytes, "file")

    state = {"name": None, "filename": None, "header": b"", "value": b""}
    headers: dict[bytes, bytes] = {}
    fields: dict[str, bytearray] = {}
    written = 0
    fields_size = 0
    over = False
    out = dest.open("wb")

    def count_field_bytes(size: int) -> None:
        # Everything but the file's content counts: part headers, names and values.
        nonlocal fields_size
        fields_size += size
        if fields_size > FORM_FIELDS_TOTAL:
            raise APIError(
                400,
                f"the form fields besides the file exceed {FORM_FIELDS_TOTAL // 1024} KiB",
                "fields_too_large",
            )

    def on_header_field(data: bytes, start: int, end: int) -> None:
        count_field_bytes(end - start)
        state["header"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        count_field_bytes(end - start)
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
        name = state["name"]
        if name == "file":
            if "file_filename" in state:
                raise APIError(
                    400, "the upload has more than one `file` part", "multiple_files", param="file"
                )
            state["file_filename"] = state["filename"] or "video"
        elif name not in FORM_FIELDS:
            raise APIError(
                400,
                f"unknown form field {name[:64]!r}: send a `file` part and a `purpose` field",
                "unknown_parameter",
                param=name[:64],
            )
        elif name in fields:
            raise APIError(
                400, f"the form field {name!r} is given twice", "invalid_request", param=name
            )
        else:
            fields[name] = bytearray()

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
                raise APIError(
                    400,
                    f"form field {state['name']!r} is over {FORM_FIELD_LIMIT} bytes",
                    "field_too_long",
                    param=state["name"],
                )
            count_field_bytes(len(piece))
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
        raise _too_large(max_bytes, "file")
    filename = state.get("file_filename")
    if filename is None:
        dest.unlink(missing_ok=True)
        raise APIError(400, "the upload has no `file` part", "missing_file", param="file")
    purpose = bytes(fields.get("purpose", b"user_data")).decode("utf-8", "replace").strip()
    if purpose not in PURPOSES:
        dest.unlink(missing_ok=True)
        raise APIError(
            400,
            f"purpose must be one of {', '.join(PURPOSES)} (got {purpose[:64]!r})",
            "invalid_purpose",
            param="purpose",
        )
    return Upload(dest, written, _clean_name(filename or "video"), purpose)


def _clean_name(name: str) -> str:
    # Shown back to the client only; never used as a path.
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in name if ch.isprintable())[:255] or "video"


def decode_data_url(url: str, dest: Path, max_bytes: int, param: str = "video_url") -> int:
    """`data:<type>;base64,<payload>` -> a file. Returns its size."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:") or ";base64" not in header:
        raise _bad_data_url(param)
    if len(payload) * 3 // 4 > max_bytes:
        raise _too_large(max_bytes, param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _bad_base64(param) from None
    dest.write_bytes(data)
    return len(data)


@dataclass
class Spooled:
    """A data URL of a chat request, decoded to a file as it arrived."""

    path: Path
    size: int


class _ByteBudget:
    """The video bytes a request may still send, shared by all its data URLs."""

    def __init__(self, allowed: int):
        self.left = allowed

    def spend(self, size: int) -> None:
        self.left -= size

    @property
    def exceeded(self) -> bool:
        return self.left < 0


class _Base64ToFile:
    """Decodes base64 text given in pieces, writing the bytes to a file."""

    def __init__(self, path: Path, budget: _ByteBudget):
        self.path = path
        self.out = path.open("wb")
        self.carry = b""
        self.size = 0
        self.padded = False
        self.budget = budget
        self.over = False

    def feed(self, text: bytes) -> None:
        data = self.carry + text
        whole = len(data) // 4 * 4
        self.carry = data[whole:]
        if not whole:
            return
        if self.padded:  # '=' may only end the payload
            raise _bad_base64()
        try:
            decoded = base64.b64decode(data[:whole], validate=True)
        except (binascii.Error, ValueError):
            raise _bad_base64() from None
        self.padded = data[whole - 1 : whole] == b"="
        self.size += len(decoded)
        self.budget.spend(len(decoded))
        if self.budget.exceeded:
            self.over = True
        if not self.over:
            self.out.write(decoded)

    def close(self) -> None:
        self.out.close()
        if self.carry:
            raise _bad_base64()


def _bad_data_url(param: str = "video_url") -> APIError:
    return APIError(
        400,
        "a data URL must look like data:video/mp4;base64,<base64 bytes>",
        "bad_data_url",
        param=param,
    )


def _bad_base64(param: str = "video_url") -> APIError:
    return APIError(400, "the data URL is not valid base64", "bad_data_url", param=param)


_STRING_END = re.compile(rb'["\\]')
_HEADER_END = re.compile(rb'[,"\\]')
_OUTSIDE, _STRING, _HEADER, _PAYLOAD = range(4)


class ChatBody:
    """A chat request's JSON read as it arrives: the value of every `"url": "data:..."`
    is decoded to its own file (base64 never held whole in memory) and replaced in the
    JSON by a placeholder string; the rest is kept, up to `max_json_bytes`."""

    def __init__(self, new_path: Callable[[], Path], max_video_bytes: int, max_json_bytes: int):
        self.new_path = new_path
        self.max_video_bytes = max_video_bytes
        self.max_json_bytes = max_json_bytes
        self.name = ""  # placeholder of the data URL being decoded
        self.budget = _ByteBudget(max_video_bytes)
        self.json = bytearray()
        self.files: dict[str, Spooled] = {}
        self.token = "arc-spooled-" + secrets.token_hex(8) + "-"
        self.state = _OUTSIDE
        self.held = b""  # bytes kept over a chunk boundary
        self.string = bytearray()  # start of the current string (enough to spot "url")
        self.last_string: bytes | None = None  # the string before the current one...
        self.between = bytearray()  # ...and what came after it (":" when it is a key)
        self.header = bytearray()
        self.decoder: _Base64ToFile | None = None

    @property
    def over(self) -> bool:
        return self.budget.exceeded or len(self.json) > self.max_json_bytes

    def cleanup(self) -> None:
        if self.decoder is not None:
            self.decoder.out.close()
            self.decoder.path.unlink(missing_ok=True)
        for spooled in self.files.values():
            spooled.path.unlink(missing_ok=True)

    def write(self, chunk: bytes) -> None:
        buf = self.held + chunk
        self.held = b""
        pos = 0
        while pos < len(buf):
            if self.state == _OUTSIDE:
                quote = buf.find(b'"', pos)
                end = len(buf) if quote < 0 else quote
                self.json += buf[pos:end]
                if len(self.between) < 16:
                    self.between += buf[pos:end][:16]
                if quote < 0:
                    return
                if len(buf) - quote < 6:  # not enough to tell whether it starts "data:
                    self.held = buf[quote:]
                    return
                is_url = self.last_string == b"url" and self.between.strip() == b":"
                if is_url and buf[quote + 1 : quote + 6] == b"data:":
                    self.name = self.token + str(len(self.files))
                    self.json += b'"' + self.name.encode() + b'"'
                    self.header = bytearray()
                    self.state = _HEADER
                    pos = quote + 6
                else:
                    self.json += b'"'
                    self.string = bytearray()
                    self.state = _STRING
                    pos = quote + 1
            elif self.state == _STRING:
                found = _STRING_END.search(buf, pos)
                end = len(buf) if found is None else found.start()
                self.json += buf[pos:end]
                if len(self.string) < 8:
                    self.string += buf[pos:end][:8]
                if found is None:
                    return
                if buf[end : end + 1] == b"\\":
                    if end + 1 >= len(buf):
                        self.held = buf[end:]
                        return
                    self.json += buf[end : end + 2]
                    self.string += b"\\\\"  # an escaped string is never taken for "url"
                    pos = end + 2
                    continue
                self.json += b'"'
                self.last_string = bytes(self.string)
                self.between = bytearray()
                self.state = _OUTSIDE
                pos = end + 1
            elif self.state == _HEADER:
                found = _HEADER_END.search(buf, pos)
                end = len(buf) if found is None else found.start()
                self.header += buf[pos:end]
                if found is not None and buf[end : end + 1] == b"\\":
                    if end + 1 >= len(buf):
                        self.held = buf[end:]
                        return
                    if buf[end + 1 : end + 2] != b"/":
                        raise _bad_data_url()
                    self.header += b"/"
                    pos = end + 2
                    continue
                if len(self.header) > 256 or (found is not None and buf[end : end + 1] != b","):
                    raise _bad_data_url()
                if found is None:
                    return
                if not self.header.endswith(b";base64"):
                    raise _bad_data_url()
                self.decoder = _Base64ToFile(self.new_path(), self.budget)
                self.state = _PAYLOAD
                pos = end + 1
            else:  # _PAYLOAD
                assert self.decoder is not None
                found = _STRING_END.search(buf, pos)
                end = len(buf) if found is None else found.start()
                self.decoder.feed(buf[pos:end])
                if found is None:
                    return
                if buf[end : end + 1] == b"\\":  # JSON may escape "/" as "\/"
                    if end + 1 >= len(buf):
                        self.held = buf[end:]
                        return
                    if buf[end + 1 : end + 2] != b"/":
                        raise _bad_base64()
                    self.decoder.feed(b"/")
                    pos = end + 2
                    continue
                self.decoder.close()
                self.files[self.name] = Spooled(self.decoder.path, self.decoder.size)
                self.decoder = None
                self.last_string = None
                self.between = bytearray()
                self.state = _OUTSIDE
                pos = end + 1

    def finish(self) -> bytes:
        if self.state in (_HEADER, _PAYLOAD):
            raise APIError(400, "the request body ends inside a data URL", "invalid_json")
        self.json += self.held
        return bytes(self.json)


async def read_chat_body(
    request: Request,
    body: ChatBody,
    read_timeout_s: float,
    total_timeout_s: float,
) -> bytes:
    """Reads a chat request into `body` (data URLs to disk); returns the JSON left."""
    cap = body.max_video_bytes + body.max_json_bytes
    declared = _declared_length(request)
    if declared is not None and declared > cap * 4 // 3 + DRAIN_LIMIT:
        raise _request_too_large(body)
    drained = 0
    async for chunk in _chunks(request, read_timeout_s, total_timeout_s):
        if body.over:
            # Read (and drop) a while so that a client that sends its whole body before
            # reading gets the 413 instead of a broken pipe.
            drained += len(chunk)
            if drained > DRAIN_LIMIT:
                break
            continue
        body.write(chunk)
    if body.over:
        raise _request_too_large(body)
    return body.finish()


def _request_too_large(body: ChatBody) -> APIError:
    if body.budget.exceeded:
        return _too_large(body.max_video_bytes, "video_url")
    return APIError(
        413,
        f"the request's JSON (data URLs aside) is over {body.max_json_bytes // 2**20} MiB",
        "request_too_large",
    )
