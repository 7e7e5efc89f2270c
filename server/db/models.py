"""The tables (SQLAlchemy 2 declarative models). Each change here comes with a migration in
`migrations/versions/` (tests/gateway/test_db.py checks that the migrated schema and these
models agree, on SQLite and PostgreSQL).

Times are Unix seconds (floats, the gateway's clock: replicas keep their clocks in sync,
e.g. NTP); owners are key ids as strings: `key-<hex>` for keys in this table, `admin` for
the key given by `--admin-key`, `anonymous` for requests in open mode (no keys).
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Float, Index, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints, so that a later migration can alter them on both backends.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ApiKey(Base):
    """A client key. The secret itself is never stored: its SHA-256 (a 256-bit random
    secret needs no slow hash) and its first characters, to recognise it in a list."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, default=None)
    # Limits (None: unlimited).
    rpm: Mapped[int | None] = mapped_column(default=None)
    concurrent: Mapped[int | None] = mapped_column(default=None)
    storage_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    max_duration_s: Mapped[float | None] = mapped_column(Float, default=None)
    video_seconds_per_day: Mapped[float | None] = mapped_column(Float, default=None)
    # The requests-per-minute limiter's state (GCRA: the theoretical arrival time).
    rpm_tat: Mapped[float] = mapped_column(Float, default=0.0)


class StoredFileRow(Base):
    """A stored video's metadata; its bytes are in `<files-dir>/<id>/`."""

    __tablename__ = "files"
    __table_args__ = (Index(None, "owner", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)  # the upload
    stored_bytes: Mapped[int] = mapped_column(BigInteger)  # its folder: upload + prepared forms
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    last_used_at: Mapped[float] = mapped_column(Float)
    video: Mapped[dict] = mapped_column(JSON)
    # Deleted (or expired) while a question used it: gone for clients, removed from disk
    # when its last pin goes.
    deleted: Mapped[bool] = mapped_column(default=False)


class Lease(Base):
    """Something a gateway process holds for a while: a request in flight (`kind`
    "request", `subject` the key id: the concurrency limit), a pin on a stored file
    ("pin", the file id). The holder renews its leases while it lives; those of a process
    that died expire after the lease time and count for nothing."""

    __tablename__ = "leases"
    __table_args__ = (Index(None, "kind", "subject", "expires_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(64))
    holder: Mapped[str] = mapped_column(String(40), index=True)
    expires_at: Mapped[float] = mapped_column(Float)


class DailyUsage(Base):
    """What a key used on one UTC day (`keys usage`; the video-seconds-per-day limit)."""

    __tablename__ = "usage_daily"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD (UTC)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    uploads: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    video_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    frames: Mapped[int] = mapped_column(BigInteger, default=0)
    decode_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class GatewaySecret(Base):
    """Secrets every replica shares (the cache-salt key), made at first start."""

    __tablename__ = "gateway_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))


class Batch(Base):
    """A batch of chat requests (the OpenAI Batch API): its state, counts and times. Its
    lines are `BatchLine` rows. `finalizer` is the gateway process (its holder id) that
    validates it or writes its output files, until `finalizer_expires_at`: one replica at
    a time, and another takes over once a dead one's claim expires."""

    __tablename__ = "batches"
    __table_args__ = (Index(None, "owner", "created_at"), Index(None, "status"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(32))
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(40))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    meta: Mapped[dict | None] = mapped_column("metadata", JSON, default=None)
    errors: Mapped[list | None] = mapped_column(JSON, default=None)
    output_file_id: Mapped[str | None] = mapped_column(String(40), default=None)
    error_file_id: Mapped[str | None] = mapped_column(String(40), default=None)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    in_progress_at: Mapped[float | None] = mapped_column(Float, default=None)
    finalizing_at: Mapped[float | None] = mapped_column(Float, default=None)
    completed_at: Mapped[float | None] = mapped_column(Float, default=None)
    failed_at: Mapped[float | None] = mapped_column(Float, default=None)
    expired_at: Mapped[float | None] = mapped_column(Float, default=None)
    cancelling_at: Mapped[float | None] = mapped_column(Float, default=None)
    cancelled_at: Mapped[float | None] = mapped_column(Float, default=None)
    total: Mapped[int] = mapped_column(default=0)
    completed: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    # Tokens of the answered lines (their chat completions' usage), summed as they finish.
    input_tokens: Mapped[int] = mapped_column(default=0, server_default="0")
    cached_tokens: Mapped[int] = mapped_column(default=0, server_default="0")
    output_tokens: Mapped[int] = mapped_column(default=0, server_default="0")
    finalizer: Mapped[str | None] = mapped_column(String(40), default=None)
    finalizer_expires_at: Mapped[float | None] = mapped_column(Float, default=None)


class BatchLine(Base):
    """One request of a batch. `state`: queued, running (claimed by `holder` with the
    token `claim` until `claim_expires_at`), done (answered: `result` is its output line),
    failed (`result` is its error line), or dropped (never run: the batch was cancelled
    or expired). A result is written only by the claim that holds the line."""

    __tablename__ = "batch_lines"
    __table_args__ = (Index(None, "batch_id", "state"),)

    batch_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    line: Mapped[int] = mapped_column(primary_key=True)  # 1-based, as in the input file
    custom_id: Mapped[str] = mapped_column(String(512))
    body: Mapped[str] = mapped_column(Text)  # the request's JSON, as the file gave it
    state: Mapped[str] = mapped_column(String(16))
    claim: Mapped[str | None] = mapped_column(String(40), default=None)
    holder: Mapped[str | None] = mapped_column(String(40), default=None)
    claim_expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    result: Mapped[dict | None] = mapped_column(JSON, default=None)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)
