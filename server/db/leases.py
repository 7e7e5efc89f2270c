"""Leases: rows a gateway process holds for a while (a request in flight, a pin on a stored
file; later, a batch line being worked on), renewed by the process while it lives.

Each process has a holder id. `Leases.start()` runs a heartbeat that pushes the expiry of
all of its holder's rows forward every third of the lease time and drops rows long
expired; a process that dies (SIGKILL, a lost node) stops renewing, and its leases count
for nothing once they expire. Counting live leases under a lock on what they count (the
key's row) is how a limit holds across replicas.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from .database import Database
from .models import Lease

log = logging.getLogger("arc.gateway")


class Leases:
    def __init__(self, db: Database, ttl_s: float):
        self.db = db
        self.ttl_s = ttl_s
        self.holder = "holder-" + secrets.token_hex(8)
        self._task: asyncio.Task | None = None
        self._pending: set[Future] = set()
        # Called (with a session) on every beat: housekeeping of other rooms (the file
        # store finishes deletions whose pins expired).
        self.on_beat: list[Callable[[Session], None]] = []

    # -- in a caller's transaction ---------------------------------------------------------

    def acquire(self, session: Session, kind: str, subject: str) -> str:
        lease_id = "lease-" + secrets.token_hex(12)
        session.add(
            Lease(
                id=lease_id,
                kind=kind,
                subject=subject,
                holder=self.holder,
                expires_at=time.time() + self.ttl_s,
            )
        )
        return lease_id

    @staticmethod
    def count(session: Session, kind: str, subject: str) -> int:
        """Live leases of `kind` on `subject` (any holder)."""
        statement = select(func.count()).where(
            Lease.kind == kind, Lease.subject == subject, Lease.expires_at > time.time()
        )
        return session.execute(statement).scalar_one()

    # -- releases ------------------------------------------------------------------------------

    def release(self, lease_id: str) -> None:
        self.db.call(lambda s: s.execute(delete(Lease).where(Lease.id == lease_id)))

    def release_soon(self, lease_id: str, then: Callable[[], None] | None = None) -> None:
        """Releases in a thread without waiting: safe from synchronous cleanup code, even
        while the releasing task is being cancelled (the thread runs regardless)."""

        def work() -> None:
            try:
                self.release(lease_id)
            except Exception as exc:  # noqa: BLE001 (the lease then expires by itself)
                log.warning(json.dumps({"event": "lease_release_failed", "error": repr(exc)}))
            if then is not None:
                then()

        self.soon(work)

    def soon(self, work: Callable[[], None]) -> None:
        """`work()` in a thread, now, awaited by `stop()`."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            work()
            return
        future = loop.run_in_executor(None, work)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    # -- the heartbeat ---------------------------------------------------------------------

    def beat(self) -> None:
        now = time.time()
        with self.db.transaction() as session:
            session.execute(
                update(Lease).where(Lease.holder == self.holder).values(expires_at=now + self.ttl_s)
            )
            session.execute(delete(Lease).where(Lease.expires_at < now - self.ttl_s))
        for hook in self.on_beat:
            with self.db.transaction() as session:
                hook(session)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                await asyncio.to_thread(self.beat)
            except Exception as exc:  # noqa: BLE001 (a database hiccup: try next beat)
                log.warning(json.dumps({"event": "lease_heartbeat_failed", "error": repr(exc)}))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        try:
            await self.db.run(lambda s: s.execute(delete(Lease).where(Lease.holder == self.holder)))
        except Exception as exc:  # noqa: BLE001
            log.warning(json.dumps({"event": "lease_cleanup_failed", "error": repr(exc)}))
