"""The engine, transactions and migrations, for SQLite and PostgreSQL alike.

SQLite: a file (WAL journal, a 30 s busy timeout), every transaction `BEGIN IMMEDIATE`, so
transactions of the gateway's threads (and of the CLI) run one after another and a check
followed by a write (a quota, a rate limit) is never interleaved. PostgreSQL (psycopg 3):
READ COMMITTED with explicit row locks (`SELECT ... FOR UPDATE` on the key being charged),
which serialises what must be serialised across replicas and nothing else.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Table, create_engine, event, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .models import GatewaySecret

T = TypeVar("T")
log = logging.getLogger("arc.gateway")

# PostgreSQL advisory lock held while migrating ("ARCV"): the second of two gateways
# starting at once waits for the first one's migration, then finds nothing to do.
MIGRATION_LOCK = 0x41524356
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}
_KNOWN = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")


def default_database_url(files_dir: str | Path) -> str:
    """SQLite in the files folder: it lives and moves with the stored files (one volume)."""
    return f"sqlite:///{Path(files_dir).absolute() / 'gateway.db'}"


def normalize_url(url: str) -> str:
    """The URL as SQLAlchemy takes it: `postgresql://` and `postgres://` mean psycopg 3 (the
    driver the gateway ships). Anything but SQLite or PostgreSQL is refused, naming it."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            "the database URL is not a URL (examples: sqlite:////var/lib/arc/gateway.db, "
            "postgresql://user:password@host:5432/arc)"
        ) from None
    parsed = parsed.set(drivername=_DRIVERS.get(parsed.drivername, parsed.drivername))
    if parsed.drivername not in _KNOWN:
        raise ValueError(
            f"database {parsed.drivername!r} is not supported: use sqlite:///PATH or "
            "postgresql://..."
        )
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ValueError("a SQLite database must be a file (sqlite:////absolute/path.db)")
    return parsed.render_as_string(hide_password=False)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Python's sqlite3 would issue its own BEGIN (DEFERRED, and not before DDL): off, so
    # the "begin" listener below decides.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """One engine (a connection pool) per process; sessions come from `transaction()`."""

    def __init__(self, url: str):
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.backend = parsed.get_backend_name()  # "sqlite" or "postgresql"
        if self.backend == "sqlite":
            self.path: Path | None = Path(parsed.database or "").absolute()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(
                self.url, connect_args={"timeout": 30, "check_same_thread": False}
            )
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.path = None
            self.engine = create_engine(
                self.url, pool_pre_ping=True, pool_size=8, max_overflow=16, pool_recycle=1800
            )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def describe(self) -> str:
        """The URL without its password (for logs and messages)."""
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back if it
        raises."""
        with self._sessions.begin() as session:
            yield session

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """`function(session, *args)` in one transaction."""
        with self.transaction() as session:
            return function(session, *args)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(session, *args)` in one transaction, in a thread: a PostgreSQL round
        trip never stops the event loop."""
        return await asyncio.to_thread(self.call, function, *args)

    def close(self) -> None:
        self.engine.dispose()

    # -- migrations ----------------------------------------------------------------------

    def migrate(self) -> tuple[str | None, str]:
        """Brings the schema to the newest migration (one transaction: all or nothing).
        Safe when several processes start at once: PostgreSQL takes an advisory lock, SQLite
        a lock file beside the database. (revision before, revision now)."""
        from alembic import command

        config = alembic_config(self.url)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        with self._migration_lock(), self.engine.connect() as connection:
            before = _current(connection)
            connection.commit()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
            after = _current(connection)
            connection.commit()
        if before != after:
            event_line = {"event": "database_migrated", "from": before, "to": after}
            log.info(json.dumps(event_line))
        return before, after or ""

    def revision(self) -> str | None:
        """The schema's current revision (None: not created yet)."""
        with self.engine.connect() as connection:
            return _current(connection)

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.path is not None:
            lock_path = self.path.with_name(self.path.name + ".migrate-lock")
            with lock_path.open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                yield
            return
        with self.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
                connection.commit()

    # -- values every replica shares -----------------------------------------------------

    def secret(self, name: str) -> bytes:
        """A random 32-byte secret made once and shared by every replica (the first to ask
        creates it; one racing it reads the winner's)."""
        for _ in range(3):
            try:
                with self.transaction() as session:
                    row = session.get(GatewaySecret, name)
                    if row is not None:
                        return bytes.fromhex(row.value)
                    value = secrets.token_bytes(32)
                    session.add(GatewaySecret(name=name, value=value.hex()))
                return value
            except IntegrityError:
                continue
        raise RuntimeError(f"could not read or create the secret {name!r}")


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def add_to_row(
    session: Session, table: Table, key: Mapping[str, Any], amounts: Mapping[str, Any]
) -> None:
    """Adds `amounts` to the row `key` of `table`, creating it at those amounts: one
    statement (INSERT ... ON CONFLICT DO UPDATE), so concurrent writers never lose a count."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(table).values({**key, **amounts})
    statement = statement.on_conflict_do_update(
        index_elements=list(key),
        set_={name: table.c[name] + statement.excluded[name] for name in amounts},
    )
    session.execute(statement)


def exists(session: Session, statement: Any) -> bool:
    return session.execute(select(statement.exists())).scalar_one()
