"""`arc-gateway`: run the gateway (uvicorn) with settings from flags and ARC_GATEWAY_* env."""

from __future__ import annotations

import logging
import sys

import uvicorn

from .app import create_app
from .config import load_settings


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(argv)
    # One JSON line per request goes to stdout (the log message is the JSON itself).
    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s", stream=sys.stdout)
    # httpx logs every upstream call as plain text: keep the log one JSON line per request.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # our own JSON line per request replaces it
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
