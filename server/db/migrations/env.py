"""Alembic's environment: run by `Database.migrate` (start-up, `arc-gateway db upgrade`) on
the connection it hands over in `config.attributes["connection"]`, or on the URL in the
config (the `alembic` command itself)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from server.db.models import Base

config = context.config
target_metadata = Base.metadata


def run(connection) -> None:
    # render_as_batch: ALTERs on SQLite are done by copying the table (its ALTER TABLE is
    # limited), the same migration file serving both backends.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


given = config.attributes.get("connection")
if given is not None:
    run(given)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        run(connection)
