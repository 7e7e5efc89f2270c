"""What the routes call for keys: admit a request (limits, release, accounting), check that
a chat request's stored files are the caller's, and keep tenants apart upstream.

Nothing shared between tenants: every upstream request carries
- `cache_salt`: vLLM salts its prefix cache with it, so one key's cached blocks (and the
  time they save) are never hit by another key's request;
- with `--isolate-mm-cache`, `mm_processor_kwargs.arc_cache_salt`: vLLM keys its
  multimodal processor cache and its encoder cache by the item's content hashed together
  with the processor kwargs, so the same video sent by two keys is two items there too
  (the plugin ignores the value). vLLM 0.32 takes per-request processor kwargs only from
  engines started with `--trust-request-mm-kwargs`, hence off by default: those caches are
  then shared by content (the residual timing bound is in the README);
- `x-arc-session` (the router's session key, when the video is a stored file): derived
  from the key and the file, so one key's questions about a file go to one engine and no
  two keys share a session.
The salt is an HMAC of the key id under a random secret the replicas share (made once, in
the database): stable per key, not guessable from the key id.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
from collections.abc import Iterable
from contextlib import ExitStack
from typing import Any

from fastapi import Request

from ..db import Database
from ..db.leases import Leases
from ..errors import APIError
from ..files import FileStore
from ..video.errors import too_long
from .accounting import Accounting
from .auth import Authenticator, Caller
from .limits import RateLimiter, duration_limit

SESSION_HEADER = "x-arc-session"


class Tenancy:
    def __init__(
        self, db: Database, leases: Leases, admin_key: str | None, isolate_mm_cache: bool = False
    ):
        self.db = db
        self.isolate_mm_cache = isolate_mm_cache
        self.leases = leases
        self.auth = Authenticator(db, admin_key)
        self.limiter = RateLimiter(db, leases)
        self.accounting = Accounting(leases)
        self._salt_key: bytes | None = None

    def start(self) -> None:
        self._salt_key = self.db.secret("cache_salt")

    async def admit(
        self, caller: Caller, request: Request, cleanup: ExitStack, upload: bool = False
    ) -> None:
        """Counts the request against the caller's limits (429 past one), before its body
        is read; releases it and records its usage (from its log fields) when `cleanup`
        closes. `upload`: a file upload (counted as such; no video seconds)."""
        headers = await self.admit_call(caller, cleanup, request.state.log, upload)
        if headers:
            request.state.response_headers = headers

    async def admit_call(
        self, caller: Caller, cleanup: ExitStack, log_fields: dict, upload: bool = False
    ) -> dict[str, str]:
        """`admit` without an HTTP request (a batch line): the rate-limit headers back."""
        admitted = await self.limiter.admit(caller, video=not upload)
        duration_limit.set(caller.limits.max_duration_s or math.inf)
        if admitted.lease_id is not None:
            cleanup.callback(self.leases.release_soon, admitted.lease_id)
        cleanup.callback(self.accounting.record_soon, caller.key_id, log_fields, upload)
        return admitted.headers

    async def check_files(
        self,
        caller: Caller,
        store: FileStore,
        file_ids: Iterable[str],
        start: float | None,
        end: float | None,
        param: str | None = None,
    ) -> None:
        """404 for a file id that is not the caller's (as for one that does not exist), 422
        `video_too_long` for a stored video (or its clip) longer than the caller's key
        allows: before anything is decoded. `param`: where the request names the file."""
        limit = caller.limits.max_duration_s
        for file_id in file_ids:
            try:
                stored = await asyncio.to_thread(store.get, file_id, caller.scope)
            except APIError as e:
                raise e.at(param or e.param) from None
            length = stored.video.get("video_duration_s")
            if limit is None or not isinstance(length, int | float):
                continue
            span = min(end if end is not None else length, length) - (start or 0.0)
            if span > limit:
                clipped = start is not None or end is not None
                raise too_long(round(span, 1), limit, by_key=True, clipped=clipped, param=param)

    def _digest(self, *parts: str) -> str:
        assert self._salt_key is not None, "Tenancy.start() has not run"
        message = "\x00".join(parts).encode()
        digest = hmac.new(self._salt_key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def cache_salt(self, caller: Caller) -> str:
        """43 characters of base64url (vLLM: at most 128, none of '@', '/', '\\')."""
        return self._digest("cache_salt", caller.key_id)

    def upstream_fields(self, caller: Caller) -> dict[str, Any]:
        """What every upstream chat request of `caller` carries, beside its own fields."""
        salt = self.cache_salt(caller)
        if not self.isolate_mm_cache:
            return {"cache_salt": salt}
        return {"cache_salt": salt, "mm_processor_kwargs": {"arc_cache_salt": salt}}

    def upstream_headers(self, caller: Caller, file_id: str | None) -> dict[str, str]:
        """The router's session header: per key and stored file (none for other videos)."""
        if not file_id:
            return {}
        return {SESSION_HEADER: self._digest("session", caller.key_id, file_id)[:32]}
