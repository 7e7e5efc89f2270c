"""The playground's routes: the page and its files, with security headers and ETags.

`/` and `/playground` redirect to `/playground/` (the page); `/playground/NAME` serves a
file of `static/` by its name alone (the names are read from the folder once: nothing
else, no sub-path, can be asked for). None of these paths is under `/v1`: the page loads
without an API key and asks for one when an API call answers 401.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from ..errors import APIError

STATIC = Path(__file__).parent / "static"
PAGE = "/playground/"

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Our own scripts and styles only (no inline script or style attribute, nothing third
# party), API calls to this origin only. The player may show a video from a blob: (the
# file the user picked) or from an https URL the user pasted (the same URL the gateway
# fetches for the model).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: https:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    # Revalidated on every load (a cheap 304): an upgraded gateway's page is never mixed
    # with an old script from the browser's cache.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@cache
def assets() -> dict[str, Asset]:
    """The page's files by name, read once (they ship inside the package)."""
    found: dict[str, Asset] = {}
    for path in sorted(STATIC.iterdir()):
        media_type = _MEDIA_TYPES.get(path.suffix)
        if path.is_file() and media_type:
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            found[path.name] = Asset(body, media_type, etag)
    return found


router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse(PAGE, status_code=307)


@router.get("/playground")
async def playground_bare() -> RedirectResponse:
    return RedirectResponse(PAGE, status_code=307)


@router.get(PAGE)
async def page(request: Request) -> Response:
    return _serve("index.html", request)


@router.get(PAGE + "{name}")
async def static_file(name: str, request: Request) -> Response:
    return _serve(name, request)


def _serve(name: str, request: Request) -> Response:
    asset = assets().get(name)
    if asset is None:
        raise APIError(404, f"the playground has no file {name[:64]!r}", "not_found")
    headers = {**SECURITY_HEADERS, "ETag": asset.etag}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)
