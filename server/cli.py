"""`arc-gateway`: run the gateway (uvicorn) with settings from flags and ARC_GATEWAY_* env;
`arc-gateway keys ...` and `arc-gateway db ...` manage keys and the database
(server/keys/cli.py); `arc-gateway batch ...` submits and follows batches on a running
gateway (server/batches/cli.py)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from .app import create_app
from .config import load_settings
from .db import Database
from .keys.auth import Authenticator, check_bind

COMMANDS = ("keys", "db")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        from .keys.cli import main as command

        return command(argv)
    if argv and argv[0] == "batch":
        from .batches.cli import main as batch_command

        return batch_command(argv[1:])
    settings = load_settings(argv)
    # Refused here, with the reason, before anything starts: a bad database URL, an
    # unreadable admin key file, an open gateway on a public address.
    try:
        db = Database(settings.database)
        try:
            db.migrate()
            auth = Authenticator(db, settings.admin_secret())
            check_bind(settings.host, auth.required(), settings.insecure_no_auth)
        finally:
            db.close()
    except (RuntimeError, ValueError) as e:
        print(f"arc-gateway: {e}", file=sys.stderr)
        return 2
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
