"""Stored videos (the Files API): the original and its prepared forms on disk, their
metadata in the gateway's database.

Layout: `<root>/<file-id>/{source, prepared-<clip>.arcz, prepared-<clip>.arcz.json}` and
`<root>/.incoming/` for uploads in progress (same filesystem, so storing is a rename). Ids
are generated (`file-` + 24 hex digits) and checked before any path is built from them.
The `files` table holds each file's owner (the key that uploaded it), sizes (the upload,
and the whole folder with its prepared forms), times and video summary, so owners survive
restarts and replicas sharing the volume and the database agree.

Each file is its owner's: a lookup with a `scope` (the caller's key id; None for an admin
key) finds only that owner's files, and another's is a 404 exactly like a missing one.

The store keeps what it accepted: a file that cannot fit is refused before it is
acknowledged (the owner's quota: 413 `file_exceeds_quota` / 507 `storage_quota_exceeded`;
the disk budget: 413 `file_exceeds_storage` / 507 `storage_full`); bytes still arriving
(`.incoming`) count for nothing; a file a question is using is pinned (a lease in the
database, so every replica sees it: it is not evicted, and a DELETE takes effect when the
question is done). To make room, the uploader's own clip caches go first, then its own
files used least recently; nothing of another key is evicted for it. Files expire after a
TTL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import Delete, delete, func, select, update
from sqlalchemy.orm import Session

from arc_media import prepared as prepared_container

from .db import Database, default_database_url
from .db.leases import Leases
from .db.models import ApiKey, StoredFileRow
from .errors import APIError

log = logging.getLogger("arc.gateway")

# \Z, not $: "$" also matches before a trailing newline.
_ID = re.compile(r"\Afile-[0-9a-f]{24}\Z")
FULL = "prepared-full.arcz"
# The prepared form's summary (a few hundred bytes).
META_MARGIN = 2048
PIN = "pin"
ANONYMOUS = "anonymous"
# A folder with no row that is older than this was left by an upload that never finished
# (a gateway killed while storing it): removed at start-up.
ORPHAN_AGE_S = 3600


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int
    video: dict
    owner: str = ANONYMOUS

    @classmethod
    def of(cls, row: StoredFileRow) -> StoredFile:
        return cls(
            row.id, row.filename, row.purpose, row.bytes, row.created_at, row.expires_at,
            row.video, row.owner,
        )  # fmt: skip


class FileStore:
    """Metadata changes are database transactions (any thread, any replica); the bytes are
    files, written before their row exists and removed after it is gone."""

    def __init__(
        self,
        root: str | Path,
        budget_bytes: int,
        ttl_s: int,
        db: Database | None = None,
        leases: Leases | None = None,
    ):
        self.root = Path(root)
        self.incoming = self.root / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.budget_bytes = budget_bytes
        self.ttl_s = ttl_s
        if db is None:  # a store of its own (tests, tools): SQLite in its folder
            db = Database(default_database_url(self.root))
            db.migrate()
        self.db = db
        self.leases = leases or Leases(db, ttl_s=600)
        self.leases.on_beat.append(self._finish_deletions)

    @staticmethod
    def new_id() -> str:
        return "file-" + secrets.token_hex(12)

    def incoming_path(self) -> Path:
        return self.incoming / secrets.token_hex(16)

    def _dir(self, file_id: str) -> Path:
        if not _ID.match(file_id):
            raise _not_found(file_id)
        return self.root / file_id

    # -- storing ---------------------------------------------------------------------------

    def check_quota(self, owner: str, quota_bytes: int | None, size: int) -> None:
        """Before decoding an upload of `size` bytes: refused (413, 507) if its owner's
        quota cannot hold it (the prepared form is counted when it is stored)."""
        if quota_bytes is None:
            return
        if size + META_MARGIN > quota_bytes:
            raise _exceeds_quota(size, quota_bytes)
        if self.db.call(_owner_bytes, owner) + size > quota_bytes:
            self._drop_clip_caches(size, owner, quota_bytes)
            if self.db.call(_owner_bytes, owner) + size > quota_bytes:
                raise _quota_full(quota_bytes)

    def add(
        self,
        source: Path,
        filename: str,
        purpose: str,
        size: int,
        container: Path | None,
        video: dict,
        file_id: str | None = None,
        owner: str = ANONYMOUS,
        quota_bytes: int | None = None,
    ) -> StoredFile:
        """Stores an upload and its prepared container (both files are moved in; a long
        video has none: its segments are kept as clip caches) for `owner`, or refuses it
        (413, 507) when it cannot fit its owner's quota or the disk budget: nothing is
        acknowledged that a sweep would drop."""
        need = size + (container.stat().st_size if container else 0) + META_MARGIN
        if need > self.budget_bytes:
            raise APIError(
                413,
                f"the video and its prepared form need {need / 2**20:.1f} MiB, more than the "
                f"file store's whole budget ({self.budget_bytes / 2**20:g} MiB: --files-budget-mb)",
                "file_exceeds_storage",
                param="file",
            )
        if quota_bytes is not None and need > quota_bytes:
            raise _exceeds_quota(need, quota_bytes)
        self._drop_expired()
        if quota_bytes is not None:
            self._drop_clip_caches(need, owner, quota_bytes)
        if not self._make_room(need, owner, files_too=True):
            raise APIError(
                507,
                "the file store is full of files in use by questions; retry shortly",
                "storage_full",
                headers={"Retry-After": "10"},
            )
        file_id = file_id or self.new_id()
        folder = self._dir(file_id)
        folder.mkdir(parents=True)
        source.replace(folder / "source")
        if container is not None:
            container.replace(folder / FULL)
            (folder / (FULL + ".json")).write_text(json.dumps(video))
        now = time.time()
        row = StoredFileRow(
            id=file_id,
            owner=owner,
            filename=filename,
            purpose=purpose,
            bytes=size,
            stored_bytes=_size(folder),
            created_at=int(now),
            expires_at=int(now) + self.ttl_s,
            last_used_at=now,
            video=video,
        )
        try:
            self.db.call(_insert_within_quota, row, quota_bytes)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return StoredFile.of(row)

    # -- reading -----------------------------------------------------------------------------

    def get(self, file_id: str, scope: str | None = None) -> StoredFile:
        """The file, if it exists and `scope` (an owner; None: any) may see it; else 404."""
        self._dir(file_id)
        row = self.db.call(_visible_row, file_id, scope)
        if row is None:
            raise _not_found(file_id)
        if row.expires_at <= time.time():
            self._remove_or_doom(file_id)
            raise APIError(404, f"file {file_id!r} has expired", "file_not_found", param="file_id")
        return StoredFile.of(row)

    def list(self, scope: str | None = None) -> list[StoredFile]:
        self._drop_expired()

        def rows(session: Session) -> list[StoredFileRow]:
            statement = select(StoredFileRow).where(~StoredFileRow.deleted)
            if scope is not None:
                statement = statement.where(StoredFileRow.owner == scope)
            return list(session.execute(statement.order_by(StoredFileRow.created_at)).scalars())

        return [StoredFile.of(row) for row in self.db.call(rows)]

    def delete(self, file_id: str, scope: str | None = None) -> bool:
        self._dir(file_id)
        if self.db.call(_visible_row, file_id, scope) is None:
            return False
        self._remove_or_doom(file_id)
        return True

    @contextmanager
    def using(self, file_id: str, scope: str | None = None) -> Iterator[StoredFile]:
        """Pins a stored file for the time a question uses it (404 naming it if gone)."""
        stored = self.get(file_id, scope)

        def pin(session: Session) -> str:
            session.execute(
                update(StoredFileRow)
                .where(StoredFileRow.id == file_id)
                .values(last_used_at=time.time())
            )
            return self.leases.acquire(session, PIN, file_id)

        lease_id = self.db.call(pin)
        try:
            yield stored
        finally:
            self.leases.release(lease_id)
            if self.db.call(_doomed_and_free, file_id):
                self._remove(file_id)

    def source_path(self, file_id: str) -> Path:
        return self._dir(file_id) / "source"

    def prepared(
        self, file_id: str, start: float | None, end: float | None, encoding: str | None = None
    ) -> tuple[BinaryIO, dict] | None:
        """The prepared container of the file (or of a clip of it), open (it stays readable
        if evicted meanwhile), and its summary; the caller closes it. Given `encoding`, a
        container of another one (kept before the forward mode changed) is not cached."""
        path = self._dir(file_id) / _prepared_name(start, end)
        try:
            summary = json.loads(path.with_name(path.name + ".json").read_text())
            handle = path.open("rb")
        except (FileNotFoundError, ValueError):
            return None
        if encoding is not None and container_encoding(handle) != encoding:
            handle.close()
            return None
        _touch(path)
        return handle, summary

    def link_prepared(
        self, file_id: str, start: float | None, end: float | None, dest: Path, encoding: str
    ) -> tuple[dict, str] | None:
        """The prepared container of the file (or of a clip of it) put at `dest` (shared
        mode's forward folder) by a hard link, or a copy where links fail (another
        filesystem); (its summary, "link" or "copy"), or None if it is not cached in
        `encoding` (one kept before the forward mode changed is prepared again)."""
        path = self._dir(file_id) / _prepared_name(start, end)
        try:
            summary = json.loads(path.with_name(path.name + ".json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        how = link_or_copy(path, dest)
        if how is None:
            return None
        with dest.open("rb") as handle:
            kept = container_encoding(handle)
        if kept != encoding:
            dest.unlink(missing_ok=True)
            return None
        _touch(path)
        return summary, how

    def keep_prepared(
        self, file_id: str, start: float | None, end: float | None, container: Path, summary: dict
    ) -> None:
        """Caches a clip's prepared form (a hard link to `container`) if it fits, evicting
        older clip caches of the same owner, never files."""
        folder = self._dir(file_id)
        row = self.db.call(_visible_row, file_id, None)
        if row is None or not folder.exists():
            return
        encoded = json.dumps(summary).encode()
        if not self._make_room(container.stat().st_size + len(encoded), row.owner, False):
            log.info(json.dumps({"event": "clip_not_cached", "file_id": file_id}))
            return
        name = _prepared_name(start, end)
        tmp = folder / f".{secrets.token_hex(8)}"
        tmp.write_bytes(encoded)
        tmp.replace(folder / (name + ".json"))
        link_or_copy(container, tmp)
        _touch(tmp)
        tmp.replace(folder / name)
        self._measure(file_id)

    def usage_bytes(self, owner: str | None = None) -> int:
        """Bytes of the stored files and their caches (uploads in progress excluded), of
        one owner or of all."""
        return self.db.call(_owner_bytes, owner)

    # -- housekeeping ------------------------------------------------------------------------

    def sweep(self) -> None:
        """At start-up: drops expired files, finishes deletions whose questions ended with
        a gateway that died, takes in folders of a store from before the database (their
        meta.json), removes leftovers of uploads that never finished, then makes the store
        fit its budget (a smaller budget after a restart)."""
        self._drop_expired()
        with self.db.transaction() as session:
            self._finish_deletions(session)
        known = set(self.db.call(lambda s: list(s.execute(select(StoredFileRow.id)).scalars())))
        for folder in self.root.iterdir():
            if not _ID.match(folder.name) or folder.name in known:
                continue
            if (folder / "meta.json").is_file():
                self._adopt(folder)
            elif _mtime(folder) < time.time() - ORPHAN_AGE_S:
                shutil.rmtree(folder, ignore_errors=True)
        for file_id in known:
            if not (self.root / file_id).is_dir():  # its bytes are gone: so is the file
                self.db.call(lambda s, i=file_id: s.execute(_delete_row(i)))
        self._make_room(0, None, files_too=True)

    def _adopt(self, folder: Path) -> None:
        try:
            meta = json.loads((folder / "meta.json").read_text())
            row = StoredFileRow(
                id=folder.name,
                owner=ANONYMOUS,
                filename=str(meta["filename"]),
                purpose=str(meta["purpose"]),
                bytes=int(meta["bytes"]),
                stored_bytes=_size(folder),
                created_at=int(meta["created_at"]),
                expires_at=int(meta["expires_at"]),
                last_used_at=_mtime(folder / "meta.json"),
                video=dict(meta["video"]),
            )
            self.db.call(lambda s: s.add(row))
            (folder / "meta.json").unlink()
            log.info(json.dumps({"event": "file_adopted", "file_id": folder.name}))
        except (OSError, ValueError, KeyError, TypeError):
            return

    def _finish_deletions(self, session: Session) -> None:
        """Files deleted while pinned whose pins are gone (released, or expired with the
        gateway that held them)."""
        doomed = session.execute(select(StoredFileRow.id).where(StoredFileRow.deleted)).scalars()
        for file_id in list(doomed):
            if not Leases.count(session, PIN, file_id):
                session.execute(_delete_row(file_id))
                shutil.rmtree(self.root / file_id, ignore_errors=True)

    def _drop_expired(self) -> None:
        now = time.time()
        expired = self.db.call(
            lambda s: list(
                s.execute(
                    select(StoredFileRow.id).where(
                        StoredFileRow.expires_at <= now, ~StoredFileRow.deleted
                    )
                ).scalars()
            )
        )
        for file_id in expired:
            self._remove_or_doom(file_id)

    def _remove_or_doom(self, file_id: str) -> None:
        """Gone for clients now; from disk now, or when the last question using it ends."""

        def doom(session: Session) -> bool:
            if Leases.count(session, PIN, file_id):
                session.execute(
                    update(StoredFileRow).where(StoredFileRow.id == file_id).values(deleted=True)
                )
                return False
            session.execute(_delete_row(file_id))
            return True

        if self.db.call(doom):
            shutil.rmtree(self.root / file_id, ignore_errors=True)

    def _remove(self, file_id: str) -> None:
        self.db.call(lambda s: s.execute(_delete_row(file_id)))
        shutil.rmtree(self.root / file_id, ignore_errors=True)

    def _measure(self, file_id: str) -> None:
        size = _size(self.root / file_id)
        self.db.call(
            lambda s: s.execute(
                update(StoredFileRow).where(StoredFileRow.id == file_id).values(stored_bytes=size)
            )
        )

    def _clip_caches(self, owner: str | None) -> list[tuple[float, str, Path]]:
        """(last use, file id, path) of the clip caches of `owner`'s files (None: all)."""

        def ids(session: Session) -> list[str]:
            statement = select(StoredFileRow.id).where(~StoredFileRow.deleted)
            if owner is not None:
                statement = statement.where(StoredFileRow.owner == owner)
            return list(session.execute(statement).scalars())

        caches = []
        for file_id in self.db.call(ids):
            for path in (self.root / file_id).glob("prepared-*.arcz"):
                if path.name != FULL:
                    caches.append((_mtime(path), file_id, path))
        return sorted(caches)

    def _drop_clip_caches(self, need: int, owner: str, quota_bytes: int) -> None:
        """Drops `owner`'s clip caches, least recently used first, until `need` more bytes
        fit its quota."""
        free = quota_bytes - self.db.call(_owner_bytes, owner)
        for _, file_id, path in self._clip_caches(owner):
            if need <= free:
                return
            for item in (path, path.with_name(path.name + ".json")):
                free += _size(item)
                item.unlink(missing_ok=True)
            self._measure(file_id)

    def _make_room(self, need: int, owner: str | None, files_too: bool) -> bool:
        """Evicts until `need` more bytes fit the disk budget: `owner`'s clip caches first,
        then (with `files_too`) its unpinned files, least recently used first (None: any
        owner's: a budget made smaller). True when they fit."""
        free = self.budget_bytes - self.usage_bytes()
        if need <= free:
            return True
        for _, file_id, path in self._clip_caches(owner):
            for item in (path, path.with_name(path.name + ".json")):
                free += _size(item)
                item.unlink(missing_ok=True)
            self._measure(file_id)
            if need <= free:
                return True
        if not files_too:
            return False
        for file_id, stored_bytes in self.db.call(_evictable, owner):
            if not self.db.call(_remove_unless_pinned, file_id):
                continue
            shutil.rmtree(self.root / file_id, ignore_errors=True)
            free += stored_bytes
            log.info(json.dumps({"event": "file_evicted", "file_id": file_id}))
            if need <= free:
                return True
        return False


def _delete_row(file_id: str) -> Delete:
    return delete(StoredFileRow).where(StoredFileRow.id == file_id)


def _visible_row(session: Session, file_id: str, scope: str | None) -> StoredFileRow | None:
    row = session.get(StoredFileRow, file_id)
    if row is None or row.deleted or (scope is not None and row.owner != scope):
        return None
    return row


def _owner_bytes(session: Session, owner: str | None) -> int:
    statement = select(func.coalesce(func.sum(StoredFileRow.stored_bytes), 0))
    if owner is not None:
        statement = statement.where(StoredFileRow.owner == owner)
    return int(session.execute(statement).scalar_one())


def _doomed_and_free(session: Session, file_id: str) -> bool:
    row = session.get(StoredFileRow, file_id)
    return row is not None and row.deleted and not Leases.count(session, PIN, file_id)


def _evictable(session: Session, owner: str | None) -> list[tuple[str, int]]:
    statement = select(StoredFileRow.id, StoredFileRow.stored_bytes).where(~StoredFileRow.deleted)
    if owner is not None:
        statement = statement.where(StoredFileRow.owner == owner)
    return [tuple(r) for r in session.execute(statement.order_by(StoredFileRow.last_used_at))]


def _remove_unless_pinned(session: Session, file_id: str) -> bool:
    if Leases.count(session, PIN, file_id):
        return False
    return session.execute(_delete_row(file_id)).rowcount > 0


def _insert_within_quota(session: Session, row: StoredFileRow, quota_bytes: int | None) -> None:
    """The row, if its owner's files still fit the quota with it: checked under the key's
    row lock, so two uploads of one key on two replicas cannot both take the last room."""
    if quota_bytes is not None:
        session.execute(select(ApiKey.id).where(ApiKey.id == row.owner).with_for_update())
        if _owner_bytes(session, row.owner) + row.stored_bytes > quota_bytes:
            raise _quota_full(quota_bytes)
    session.add(row)


def _exceeds_quota(need: int, quota_bytes: int) -> APIError:
    return APIError(
        413,
        f"the video and its prepared form need {need / 2**20:.1f} MiB, more than this key's "
        f"whole storage quota ({quota_bytes / 2**20:g} MiB: the key's --storage-mb limit)",
        "file_exceeds_quota",
        param="file",
    )


def _quota_full(quota_bytes: int) -> APIError:
    return APIError(
        507,
        f"this key's stored files fill its storage quota ({quota_bytes / 2**20:g} MiB: the key's "
        "--storage-mb limit): delete some (DELETE /v1/files/{id}) or wait for them to expire",
        "storage_quota_exceeded",
        param="file",
    )


def container_encoding(handle: BinaryIO) -> str | None:
    """The encoding a prepared container's manifest names (arc_media.prepared: "jpeg-flac"
    when it names none), or None if it is not one; `handle` is left at its start."""
    try:
        with zipfile.ZipFile(handle) as archive:
            manifest = json.loads(archive.read(prepared_container.MANIFEST))
        encoding = manifest.get("encoding", prepared_container.JPEG_FLAC)
    except (OSError, ValueError, KeyError, AttributeError, zipfile.BadZipFile):
        encoding = None
    handle.seek(0)
    return encoding if isinstance(encoding, str) else None


def link_or_copy(source: Path, dest: Path) -> str | None:
    """`dest` made the same file as `source`: a hard link, or a copy on a filesystem
    without them or across filesystems. "link" or "copy"; None if `source` is gone."""
    try:
        os.link(source, dest)
        return "link"
    except FileNotFoundError:
        return None
    except OSError:  # another filesystem, or one without hard links (some network ones)
        pass
    try:
        shutil.copyfile(source, dest)
    except FileNotFoundError:
        if not source.exists():
            return None
        raise
    return "copy"


def _not_found(file_id: str) -> APIError:
    return APIError(404, f"no file with id {file_id[:64]!r}", "file_not_found", param="file_id")


def _touch(path: Path) -> None:
    # The last use, to the nanosecond: the kernel's own timestamps are coarse (a clock
    # tick), so two uses close together would tie.
    now = time.time_ns()
    try:
        os.utime(path, ns=(now, now))
    except OSError:
        pass


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for item in path.rglob("*"):
        try:
            if item.is_file():
                total += item.stat().st_size
        except OSError:
            continue
    return total


def _prepared_name(start: float | None, end: float | None) -> str:
    if start is None and end is None:
        return "prepared-full.arcz"
    return (
        f"prepared-{start if start is not None else 0:g}-{end if end is not None else 'end'}.arcz"
    )
