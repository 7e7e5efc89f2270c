"""A batch's input file: its bounds at upload (413 past them) and its lines checked at
`POST /v1/batches` time, each problem an entry of OpenAI's `errors` list (code, message,
param, line). A file with any problem fails as a whole, as OpenAI's do."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..config import MB, Settings
from ..errors import APIError, invalid_request
from ..files import FileStore
from ..schemas import ChatCompletionRequest
from .objects import ENDPOINT

# The errors list names this many problems at most (a broken file of 50000 lines would
# otherwise make a batch object of megabytes).
MAX_ERRORS = 100
_CUSTOM_ID_CHARS = 512


@dataclass
class Line:
    line: int  # 1-based
    custom_id: str
    body: str  # the chat request's JSON


def check_bounds(path: Path, settings: Settings) -> None:
    """413 for an input file past the gateway's bounds: size, lines, a line's length."""
    size = path.stat().st_size
    max_file = int(settings.batch_max_file_mb * MB)
    if size > max_file:
        raise APIError(
            413,
            f"the batch file is larger than this gateway's limit of "
            f"{settings.batch_max_file_mb:g} MiB (--batch-max-file-mb)",
            "batch_file_too_large",
            param="file",
        )
    max_line = int(settings.batch_max_line_mb * MB)
    count = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(_lines(handle, max_line), start=1):
            if raw is None:
                raise APIError(
                    413,
                    f"line {number} of the batch file is longer than this gateway's limit "
                    f"of {settings.batch_max_line_mb:g} MiB (--batch-max-line-mb)",
                    "batch_line_too_long",
                    param="file",
                )
            if raw.strip():
                count += 1
            if count > settings.batch_max_lines:
                raise APIError(
                    413,
                    f"the batch file has more than this gateway's limit of "
                    f"{settings.batch_max_lines} requests (--batch-max-lines)",
                    "batch_too_many_lines",
                    param="file",
                )
    if count == 0:
        raise APIError(400, "the batch file has no requests", "empty_file", param="file")


def _lines(handle: Any, max_line: int):
    """The file's lines (bytes), or None for one longer than `max_line`, read in bounded
    pieces (never a whole long line in memory)."""
    while True:
        raw = handle.readline(max_line + 1)
        if not raw:
            return
        if len(raw.rstrip(b"\r\n")) > max_line:
            yield None
            return
        yield raw


def read_lines(
    path: Path, scope: str | None, store: FileStore, settings: Settings
) -> tuple[list[Line], list[dict[str, Any]]]:
    """(the requests, OpenAI's error entries). Checks each line: JSON, its fields, the
    method and url, a custom_id not seen before, a body the chat endpoint takes, stored
    files the batch's key may use."""
    lines: list[Line] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    files_ok: dict[str, bool] = {}
    max_line = int(settings.batch_max_line_mb * MB)

    def problem(number: int, code: str, message: str, param: str | None = None) -> None:
        if len(errors) < MAX_ERRORS:
            errors.append({"code": code, "message": message, "param": param, "line": number})

    with path.open("rb") as handle:
        for number, raw in enumerate(_lines(handle, max_line), start=1):
            if raw is None:
                problem(number, "line_too_long", "the line is longer than the gateway's limit")
                break
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
            except ValueError as e:
                problem(number, "invalid_json_line", f"the line is not valid JSON: {e}")
                continue
            if not isinstance(item, dict):
                problem(number, "invalid_json_line", "the line is not a JSON object")
                continue
            missing = [k for k in ("custom_id", "method", "url", "body") if k not in item]
            if missing:
                problem(
                    number,
                    "missing_required_parameter",
                    f"the line has no {missing[0]!r}",
                    missing[0],
                )
                continue
            unknown = sorted(set(item) - {"custom_id", "method", "url", "body"})
            if unknown:
                problem(number, "unknown_parameter", f"unknown field {unknown[0][:64]!r}")
                continue
            custom_id = item["custom_id"]
            if not isinstance(custom_id, str) or not 0 < len(custom_id) <= _CUSTOM_ID_CHARS:
                problem(
                    number,
                    "invalid_custom_id",
                    f"custom_id must be a string of 1 to {_CUSTOM_ID_CHARS} characters",
                    "custom_id",
                )
                continue
            if custom_id in seen:
                problem(
                    number,
                    "duplicate_custom_id",
                    f"the custom_id {custom_id[:64]!r} is used by an earlier line",
                    "custom_id",
                )
                continue
            seen.add(custom_id)
            if item["method"] != "POST":
                problem(number, "invalid_method", "method must be POST", "method")
                continue
            if item["url"] != ENDPOINT:
                problem(
                    number,
                    "invalid_url",
                    f"url must be the batch's endpoint {ENDPOINT}",
                    "url",
                )
                continue
            body = item["body"]
            refusal = _check_body(body, scope, store, files_ok)
            if refusal is not None:
                code, message, param = refusal
                problem(number, code, message, param)
                continue
            lines.append(Line(number, custom_id, json.dumps(body, separators=(",", ":"))))
    if not lines and not errors:
        problem(0, "empty_file", "the batch file has no requests")
    return lines, errors


def _check_body(
    body: Any, scope: str | None, store: FileStore, files_ok: dict[str, bool]
) -> tuple[str, str, str] | None:
    """(code, message, param) of why the chat endpoint would refuse `body`, or None."""
    try:
        req = ChatCompletionRequest.model_validate(body)
    except ValidationError as e:
        error = invalid_request(e.errors())
        return error.code, error.message, "body." + (error.param or "")
    if req.stream:
        return "invalid_request", "a batch answers whole: stream must be false", "body.stream"
    for m, message in enumerate(req.messages):
        for p, part in enumerate(message.content or []):
            url = part.file.file_id if part.file else part.video_url.url if part.video_url else ""
            if not url.startswith("file-"):
                continue
            if url not in files_ok:
                try:
                    store.get(url, scope)
                    files_ok[url] = True
                except APIError:
                    files_ok[url] = False
            if not files_ok[url]:
                return (
                    "file_not_found",
                    f"no file with id {url[:64]!r}",
                    f"body.messages[{m}].content[{p}]",
                )
    return None
