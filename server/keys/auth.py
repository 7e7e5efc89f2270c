"""Who is asking: the `Authorization: Bearer <key>` of every `/v1` request.

Authentication is on as soon as there is a key to check: an admin key given to the gateway
(`--admin-key`, `--admin-key-file`, or their ARC_GATEWAY_* variables) or any key in the
database, revoked ones included (revoking the last key never opens the gateway). Then a
request without a key, with an unknown one or with a revoked one is a 401 with OpenAI's
body (`invalid_api_key`). With no key at all the gateway is open: every request is the
`anonymous` caller, which the gateway allows only on a loopback address unless started
with `--insecure-no-auth` (`check_bind`). `/health`, `/ready` and `/metrics` are always open.

Routes take the caller as a typed dependency: `caller: CallerDep`.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from ..db import Database
from ..errors import APIError
from .records import ADMIN_ID, ANONYMOUS_ID, KeyLimits, any_key, key_by_secret, secret_sha256


@dataclass(frozen=True)
class Caller:
    """The key a request came with. `key_id` owns what the request creates (files; later,
    batches) and names the key in logs and usage (never the secret)."""

    key_id: str
    name: str
    admin: bool = False
    limits: KeyLimits = field(default_factory=KeyLimits)

    @property
    def scope(self) -> str | None:
        """Whose things this caller sees: its own (its key id), or everyone's (None) for an
        admin key."""
        return None if self.admin else self.key_id

    def owns(self, owner: str) -> bool:
        return self.admin or owner == self.key_id


ANONYMOUS = Caller(ANONYMOUS_ID, "anonymous")
ADMIN = Caller(ADMIN_ID, "admin", admin=True)


def unauthorized(message: str) -> APIError:
    return APIError(
        401, message, "invalid_api_key", headers={"WWW-Authenticate": 'Bearer realm="arc"'}
    )


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class Authenticator:
    def __init__(self, db: Database, admin_key: str | None):
        self.db = db
        self._admin_sha256 = secret_sha256(admin_key) if admin_key else None
        # Keys never disappear (revoked ones stay), so once seen, authentication stays on.
        self._required = admin_key is not None

    def required(self) -> bool:
        if not self._required:
            self._required = self.db.call(any_key)
        return self._required

    async def authenticate(self, authorization: str | None) -> Caller:
        secret = bearer(authorization)
        if (
            secret is not None
            and self._admin_sha256 is not None
            and hmac.compare_digest(secret_sha256(secret), self._admin_sha256)
        ):
            return ADMIN
        caller, revoked, required = await self.db.run(self._look_up, secret)
        if caller is not None:
            return caller
        if revoked:
            raise unauthorized("this API key has been revoked; ask the operator for a new one")
        if not required:
            return ANONYMOUS
        if secret is None:
            raise unauthorized(
                "this gateway needs an API key: send it as `Authorization: Bearer <key>` "
                "(the openai client's api_key=)"
            )
        raise unauthorized("the API key is not valid")

    def _look_up(self, session: Session, secret: str | None) -> tuple[Caller | None, bool, bool]:
        row = key_by_secret(session, secret) if secret is not None else None
        if row is not None and row.revoked_at is None:
            return Caller(row.id, row.name, row.admin, KeyLimits.of(row)), False, True
        if not self._required:
            self._required = row is not None or any_key(session)
        return None, row is not None, self._required


async def get_caller(request: Request) -> Caller:
    gateway = request.app.state.gateway
    caller = await gateway.tenancy.auth.authenticate(request.headers.get("authorization"))
    request.state.log["key_id"] = caller.key_id  # the log names the key, never its secret
    return caller


# A route's parameter `caller: CallerDep` is the authenticated caller (401 otherwise).
CallerDep = Annotated[Caller, Depends(get_caller)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, auth_required: bool, insecure_no_auth: bool) -> None:
    """Refuses to serve an open gateway on an address others can reach."""
    if auth_required or insecure_no_auth or is_loopback(host):
        return
    raise RuntimeError(
        f"refusing to listen on {host} with no API key configured: anyone who can reach it "
        "could use it. Create a key (`arc-gateway keys create --name NAME`), give an admin "
        "key (--admin-key-file FILE or ARC_GATEWAY_ADMIN_KEY), listen on 127.0.0.1, or "
        "start with --insecure-no-auth to serve without keys on purpose."
    )
