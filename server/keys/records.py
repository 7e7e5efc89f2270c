"""API key records: create (the secret returned once, only its SHA-256 kept), list, change
limits, revoke. Used by `arc-gateway keys` and by the gateway's authentication."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass, fields

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..db.models import ApiKey

SECRET_PREFIX = "sk-arc-"
_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# Owner ids that are no row of api_keys.
ADMIN_ID = "admin"
ANONYMOUS_ID = "anonymous"


class KeyCommandError(ValueError):
    """A key command that cannot be done (the message says why)."""


@dataclass(frozen=True)
class KeyLimits:
    """A key's limits; None is unlimited."""

    rpm: int | None = None  # requests per minute (chat and uploads)
    concurrent: int | None = None  # chat requests and uploads in progress at once
    storage_bytes: int | None = None  # stored files and their prepared forms
    max_duration_s: float | None = None  # longest video
    video_seconds_per_day: float | None = None  # seconds of video asked about, per UTC day

    @classmethod
    def of(cls, row: ApiKey) -> KeyLimits:
        return cls(**{item.name: getattr(row, item.name) for item in fields(cls)})

    def describe(self) -> str:
        parts = []
        if self.rpm is not None:
            parts.append(f"rpm={self.rpm}")
        if self.concurrent is not None:
            parts.append(f"concurrent={self.concurrent}")
        if self.storage_bytes is not None:
            parts.append(f"storage={self.storage_bytes / 2**20:g}MB")
        if self.max_duration_s is not None:
            parts.append(f"max-duration={self.max_duration_s:g}s")
        if self.video_seconds_per_day is not None:
            parts.append(f"video/day={self.video_seconds_per_day:g}s")
        return " ".join(parts) or "unlimited"


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def create_key(
    session: Session, name: str, limits: KeyLimits, admin: bool = False
) -> tuple[ApiKey, str]:
    """(the new key's row, its secret: shown once, never stored)."""
    if not _NAME.match(name):
        raise KeyCommandError(
            f"invalid key name {name[:80]!r}: 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if name in (ADMIN_ID, ANONYMOUS_ID) or name.startswith("key-"):
        raise KeyCommandError(f"the name {name!r} is reserved; choose another")
    if session.execute(select(ApiKey.id).where(ApiKey.name == name)).first() is not None:
        raise KeyCommandError(
            f"a key named {name!r} exists already (revoked keys keep their names); "
            "choose another name"
        )
    for value in (limits.rpm, limits.concurrent, limits.storage_bytes):
        if value is not None and value < 1:
            raise KeyCommandError("limits must be positive numbers")
    for value in (limits.max_duration_s, limits.video_seconds_per_day):
        if value is not None and value <= 0:
            raise KeyCommandError("limits must be positive numbers")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id="key-" + secrets.token_hex(8),
        name=name,
        secret_sha256=secret_sha256(secret),
        prefix=secret[: len(SECRET_PREFIX) + 4],
        admin=admin,
        created_at=time.time(),
        rpm_tat=0.0,
        **{item.name: getattr(limits, item.name) for item in fields(KeyLimits)},
    )
    session.add(row)
    session.flush()
    return row, secret


def find_key(session: Session, name_or_id: str) -> ApiKey:
    row = session.execute(
        select(ApiKey).where(or_(ApiKey.name == name_or_id, ApiKey.id == name_or_id))
    ).scalar_one_or_none()
    if row is None:
        raise KeyCommandError(f"no key named {name_or_id!r} (see `arc-gateway keys list`)")
    return row


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.execute(select(ApiKey).order_by(ApiKey.created_at)).scalars())


def revoke_key(session: Session, name_or_id: str) -> ApiKey:
    row = find_key(session, name_or_id)
    if row.revoked_at is None:
        row.revoked_at = time.time()
    return row


def set_limits(session: Session, name_or_id: str, changes: dict[str, float | None]) -> ApiKey:
    """Changes the named limits (a value of 0 removes that limit)."""
    row = find_key(session, name_or_id)
    known = {item.name for item in fields(KeyLimits)}
    for name, value in changes.items():
        if name not in known:
            raise KeyCommandError(f"unknown limit {name!r}")
        if value is not None and value < 0:
            raise KeyCommandError("limits must be positive numbers (0 removes a limit)")
        setattr(row, name, None if not value else value)
    return row


def any_key(session: Session) -> bool:
    """Whether the database holds a key, revoked ones included."""
    return session.execute(select(ApiKey.id).limit(1)).first() is not None


def key_by_secret(session: Session, secret: str) -> ApiKey | None:
    return session.execute(
        select(ApiKey).where(ApiKey.secret_sha256 == secret_sha256(secret))
    ).scalar_one_or_none()
