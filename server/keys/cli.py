"""`arc-gateway keys ...` and `arc-gateway db ...`: keys and the schema, on the database the
gateway uses (ARC_GATEWAY_DATABASE_URL, or SQLite in the files folder: the same default
as the gateway's, from --files-dir / ARC_GATEWAY_FILES_DIR)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from typing import Any

from ..config import ENV_PREFIX, MB, _default_files_dir
from ..db import Database, default_database_url
from .accounting import usage_report
from .records import (
    KeyCommandError,
    KeyLimits,
    create_key,
    list_keys,
    revoke_key,
    set_limits,
)

LIMIT_FLAGS = {
    "rpm": ("--rpm", int, "requests per minute (chat and uploads)"),
    "concurrent": ("--concurrent", int, "chat requests and uploads in progress at once"),
    "storage_mb": ("--storage-mb", float, "stored files and their prepared forms, in MiB"),
    "max_duration_s": ("--max-duration-s", float, "longest video, in seconds"),
    "video_seconds_per_day": (
        "--video-seconds-per-day",
        float,
        "seconds of video asked about per UTC day",
    ),
}


def _database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help=f"the gateway's database (env {ENV_PREFIX}DATABASE_URL; default SQLite in the "
        "files folder)",
    )
    parser.add_argument(
        "--files-dir", help=f"the gateway's files folder (env {ENV_PREFIX}FILES_DIR)"
    )


def _limit_options(parser: argparse.ArgumentParser, removable: bool) -> None:
    for name, (flag, kind, help_text) in LIMIT_FLAGS.items():
        extra = " (0 removes the limit)" if removable else " (default: unlimited)"
        parser.add_argument(flag, dest=name, type=kind, help=help_text + extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arc-gateway",
        description="Manage the gateway's API keys and database. `arc-gateway [options]` "
        "without a command runs the gateway (arc-gateway --help).",
    )
    groups = parser.add_subparsers(dest="group", required=True)

    keys = groups.add_parser(
        "keys",
        help="create, list, limit and revoke API keys",
        description=textwrap.fill(
            "API keys of the gateway. As soon as the database holds a key (revoked "
            "ones included), every /v1 route wants `Authorization: Bearer <key>`; each key's "
            "files are its own, and its limits (--rpm, --concurrent, --storage-mb, "
            "--max-duration-s, --video-seconds-per-day) hold across replicas. The commands work "
            "on the database the gateway uses: --database-url / ARC_GATEWAY_DATABASE_URL, else "
            "SQLite in its files folder (--files-dir / ARC_GATEWAY_FILES_DIR); a running gateway "
            "sees a change at its next request.",
            79,
            break_on_hyphens=False,
        ),
        epilog="examples:\n"
        "  arc-gateway keys create --name team-a --rpm 60 --max-duration-s 600"
        "   # prints the secret once\n"
        "  arc-gateway keys list\n"
        "  arc-gateway keys limits team-a --rpm 120   # 0 removes a limit\n"
        "  arc-gateway keys revoke team-a\n"
        "  arc-gateway keys usage --since 2026-01-01",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = keys.add_subparsers(dest="command", required=True)
    create = commands.add_parser(
        "create",
        help="a new key; its secret is printed once (stdout), only its hash is kept",
    )
    create.add_argument("--name", required=True, help="a unique name, e.g. team-a")
    create.add_argument(
        "--admin", action="store_true", help="sees every key's files; no limits apply"
    )
    _limit_options(create, removable=False)
    listing = commands.add_parser("list", help="the keys, their limits, revoked ones too")
    listing.add_argument("--json", action="store_true", help="one JSON object per key")
    revoke = commands.add_parser("revoke", help="a revoked key is refused from then on (401)")
    revoke.add_argument("key", help="the key's name or id")
    limits = commands.add_parser("limits", help="change a key's limits")
    limits.add_argument("key", help="the key's name or id")
    _limit_options(limits, removable=True)
    usage = commands.add_parser("usage", help="what each key used (UTC days)")
    usage.add_argument("--since", help="first day counted, YYYY-MM-DD (default: all)")
    usage.add_argument("--json", action="store_true", help="one JSON object per key")
    for command in (create, listing, revoke, limits, usage):
        _database_options(command)

    db = groups.add_parser("db", help="the database's schema (Alembic migrations)")
    db_commands = db.add_subparsers(dest="command", required=True)
    for name, text in (
        ("upgrade", "apply the migrations the database lacks (the gateway does it at start)"),
        ("status", "the database's URL (no password) and schema revision"),
    ):
        _database_options(db_commands.add_parser(name, help=text))
    return parser


def open_database(args: argparse.Namespace) -> Database:
    url = args.database_url or os.environ.get(ENV_PREFIX + "DATABASE_URL")
    if not url:
        files_dir = args.files_dir or os.environ.get(ENV_PREFIX + "FILES_DIR")
        url = default_database_url(files_dir or _default_files_dir())
    db = Database(url)
    db.migrate()
    return db


def _limits(args: argparse.Namespace) -> dict[str, float | None]:
    values = {name: getattr(args, name) for name in LIMIT_FLAGS}
    if values["storage_mb"] is not None:
        values["storage_bytes"] = int(values["storage_mb"] * MB)
    del values["storage_mb"]
    return values


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(at)) if at else "-"


def _describe(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix + "…",
        "admin": row.admin,
        "created_at": round(row.created_at, 3),
        "revoked_at": round(row.revoked_at, 3) if row.revoked_at else None,
        "limits": KeyLimits.of(row).describe(),
    }


def run(args: argparse.Namespace) -> int:
    db = open_database(args)
    try:
        if args.group == "db":
            revision = db.revision()
            print(f"{db.describe()}: schema revision {revision}")
            return 0
        if args.command == "create":
            limits = KeyLimits(**{k: v for k, v in _limits(args).items()})
            row, secret = db.call(create_key, args.name, limits, args.admin)
            what = "admin key" if row.admin else "key"
            print(
                f"created {what} {row.name!r} ({row.id}), limits: {limits.describe()}. "
                "The secret follows, shown this once (only its hash is kept):",
                file=sys.stderr,
            )
            print(secret)
        elif args.command == "list":
            rows = [_describe(row) for row in db.call(list_keys)]
            if args.json:
                for row in rows:
                    print(json.dumps(row))
            else:
                print(f"{'NAME':20} {'ID':21} {'PREFIX':13} {'CREATED':16} {'REVOKED':16} LIMITS")
                for row in rows:
                    admin = " (admin)" if row["admin"] else ""
                    print(
                        f"{row['name']:20} {row['id']:21} {row['prefix']:13} "
                        f"{_when(row['created_at']):16} {_when(row['revoked_at']):16} "
                        f"{row['limits']}{admin}"
                    )
        elif args.command == "revoke":
            row = db.call(revoke_key, args.key)
            print(f"revoked key {row.name!r} ({row.id}) at {_when(row.revoked_at)} UTC")
        elif args.command == "limits":
            changes = {k: v for k, v in _limits(args).items() if v is not None}
            row = db.call(set_limits, args.key, changes)
            print(f"key {row.name!r} ({row.id}): {KeyLimits.of(row).describe()}")
        elif args.command == "usage":
            report = db.call(usage_report, args.since)
            if args.json:
                for row in report:
                    print(json.dumps(row))
            else:
                print(
                    f"{'NAME':20} {'FROM':10} {'TO':10} {'REQUESTS':>8} {'UPLOADS':>7} "
                    f"{'PROMPT':>10} {'COMPLETION':>10} {'CACHED':>10} {'VIDEO_S':>9} "
                    f"{'FRAMES':>8} {'DECODE_S':>9}"
                )
                for r in report:
                    print(
                        f"{r['name']:20} {r['from']:10} {r['to']:10} {r['requests']:>8} "
                        f"{r['uploads']:>7} {r['prompt_tokens']:>10} {r['completion_tokens']:>10} "
                        f"{r['cached_tokens']:>10} {r['video_seconds']:>9.1f} {r['frames']:>8} "
                        f"{r['decode_seconds']:>9.1f}"
                    )
        return 0
    finally:
        db.close()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (KeyCommandError, ValueError) as e:
        print(f"arc-gateway {args.group} {args.command}: {e}", file=sys.stderr)
        return 2
