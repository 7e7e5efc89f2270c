"""The gateway's database: keys, files' metadata, leases, usage (SQLAlchemy 2, Alembic).

SQLite in the files folder by default (`<files-dir>/gateway.db`: nothing to start), or
PostgreSQL when `ARC_GATEWAY_DATABASE_URL` names one (several gateway replicas share it);
the same code runs on both. `Database` holds the engine and hands out transactions:
`with db.transaction() as session:` in synchronous code (the CLI, the file store), `await
db.run(function, *args)` from the event loop (the function gets the session, runs in a
thread, in one transaction). The schema is the Alembic history in `migrations/versions/`,
applied at start-up (`Database.migrate`, safe when several gateways start at once) and by
`arc-gateway db upgrade`; a new table is a model in `models.py` plus one new migration.
"""

from .database import Database, default_database_url, normalize_url
from .models import Base

__all__ = ["Base", "Database", "default_database_url", "normalize_url"]
