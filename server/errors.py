"""OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}` with the right status."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

# OpenAI's error types by status.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable_error",
    504: "timeout_error",
    507: "server_error",
}


class APIError(Exception):
    """An error the client gets as an OpenAI error body. `code` is the short reason
    (also the `reason` label of the rejection metric: never user data)."""

    def __init__(
        self,
        status_code: int,
        message: str,
        code: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status_code, self.message, self.code, self.param)

    def at(self, param: str | None) -> APIError:
        """The same error naming `param` (where this request gave what it is about)."""
        return APIError(
            self.status_code, self.message, self.code, param=param, headers=self.headers
        )


def error_body(
    status_code: int, message: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status_code, "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


def _where(loc: Sequence[Any]) -> str:
    """("messages", 0, "content", 1, "uuid") -> "messages[0].content[1].uuid"."""
    where = ""
    for part in loc:
        if part == "body":
            continue
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    return where or "body"


def _problem(error: Any) -> str:
    """The text of one validation error, without the prefix pydantic puts before the
    message of a validator's own ValueError ("Value error, ...")."""
    if error.get("type") == "value_error" and "error" in (error.get("ctx") or {}):
        return str(error["ctx"]["error"])
    return str(error.get("msg", "invalid"))


def invalid_request(errors: Sequence[Any]) -> APIError:
    """A 400 from pydantic/FastAPI validation errors: the first problem, where it is."""
    if not errors:
        return APIError(400, "the request body is not valid", "invalid_request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        message = f"the request body is not valid JSON: {first.get('msg', '')}"
        return APIError(400, message, "invalid_json")
    where = _where(first.get("loc", ()))
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    if first.get("type") == "extra_forbidden":
        message = f"unknown or unsupported parameter: {where}{more}"
        return APIError(400, message, "unknown_parameter", param=where)
    code = "unsupported_content" if first.get("type") == "unsupported_content" else None
    message = f"{where}: {_problem(first)}{more}"
    return APIError(400, message, code or "invalid_request", param=where)


def install_error_handlers(app: FastAPI, on_error=None) -> None:
    """`on_error(code)` is called for every error answer (the rejection metric)."""

    def note(code: str) -> None:
        if on_error is not None:
            on_error(code)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        note(exc.code)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = invalid_request(exc.errors())
        note(error.code)
        return error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        note(code)
        message = str(exc.detail) if exc.detail else "error"
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        return JSONResponse(error_body(exc.status_code, message, code), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        note("internal")
        return JSONResponse(
            error_body(500, "internal error in the gateway; see its log", "internal"),
            status_code=500,
        )
