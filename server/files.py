"""Stored videos (the Files API): the original and its prepared forms on disk.

Layout: `<root>/<file-id>/{source, meta.json, prepared-<clip>.arcz}` and `<root>/.incoming/`
for uploads in progress (same filesystem, so storing is a rename). Ids are generated
(`file-` + 24 hex digits) and checked before any path is built from them.

The store keeps what it accepted: a file that cannot fit the disk budget is refused before
it is acknowledged; bytes still arriving (`.incoming`) count for nothing; a file a question
is using is pinned (not evicted, and a DELETE takes effect when the question is done).
Over the budget, clip caches go first, then the files used least recently. Files expire
after a TTL.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from arc_media import prepared as prepared_container

from .errors import APIError

log = logging.getLogger("arc.gateway")

# \Z, not $: "$" also matches before a trailing newline.
_ID = re.compile(r"\Afile-[0-9a-f]{24}\Z")
FULL = "prepared-full.arcz"
# meta.json and the prepared form's summary (a few hundred bytes).
META_MARGIN = 2048


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int
    video: dict


class FileStore:
    """All methods are synchronous and called from the event loop's thread only: each runs
    to its end before another request's, which is the store's lock."""

    def __init__(self, root: str | Path, budget_bytes: int, ttl_s: int):
        self.root = Path(root)
        self.incoming = self.root / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.budget_bytes = budget_bytes
        self.ttl_s = ttl_s
        self.pins: dict[str, int] = {}
        self.doomed: set[str] = set()  # deleted or expired while pinned

    @staticmethod
    def new_id() -> str:
        return "file-" + secrets.token_hex(12)

    def incoming_path(self) -> Path:
        return self.incoming / secrets.token_hex(16)

    def _dir(self, file_id: str) -> Path:
        if not _ID.match(file_id):
            raise _not_found(file_id)
        return self.root / file_id

    def add(
        self,
        source: Path,
        filename: str,
        purpose: str,
        size: int,
        container: Path | None,
        video: dict,
        file_id: str | None = None,
    ) -> StoredFile:
        """Stores an upload and its prepared container (both files are moved in; a long
        video has none: its segments are kept as clip caches), or refuses it (413, 507)
        when it cannot fit: nothing is acknowledged that a sweep would drop."""
        need = size + (container.stat().st_size if container else 0) + META_MARGIN
        if need > self.budget_bytes:
            raise APIError(
                413,
                f"the video and its prepared form need {need / 2**20:.1f} MiB, more than the "
                f"file store's whole budget ({self.budget_bytes / 2**20:g} MiB)",
                "file_exceeds_storage",
            )
        self.list()  # drops the expired files first
        if not self._make_room(need, files_too=True):
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
        now = int(time.time())
        stored = StoredFile(file_id, filename, purpose, size, now, now + self.ttl_s, video)
        (folder / "meta.json").write_text(json.dumps(asdict(stored)))
        _touch(folder / "meta.json")
        return stored

    def get(self, file_id: str) -> StoredFile:
        folder = self._dir(file_id)
        if file_id in self.doomed:
            raise _not_found(file_id)
        try:
            stored = StoredFile(**json.loads((folder / "meta.json").read_text()))
        except (OSError, ValueError, TypeError):
            raise _not_found(file_id) from None
        if stored.expires_at <= time.time():
            self.delete(file_id)
            raise APIError(404, f"file {file_id!r} has expired", "file_not_found", param="file_id")
        return stored

    def list(self) -> list[StoredFile]:
        found = []
        for folder in self.root.iterdir():
            if _ID.match(folder.name):
                try:
                    found.append(self.get(folder.name))
                except APIError:
                    continue
        return sorted(found, key=lambda f: f.created_at)

    def delete(self, file_id: str) -> bool:
        folder = self._dir(file_id)
        if not folder.exists() or file_id in self.doomed:
            return False
        if self.pins.get(file_id):
            self.doomed.add(file_id)  # removed when its last question is done
        else:
            shutil.rmtree(folder, ignore_errors=True)
        return True

    @contextmanager
    def using(self, file_id: str) -> Iterator[StoredFile]:
        """Pins a stored file for the time a question uses it (404 naming it if gone)."""
        stored = self.get(file_id)
        self.pins[file_id] = self.pins.get(file_id, 0) + 1
        _touch(self.root / file_id / "meta.json")
        try:
            yield stored
        finally:
            self.pins[file_id] -= 1
            if not self.pins[file_id]:
                del self.pins[file_id]
                if file_id in self.doomed:
                    self.doomed.discard(file_id)
                    shutil.rmtree(self.root / file_id, ignore_errors=True)

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
        older clip caches, never files."""
        folder = self._dir(file_id)
        if not folder.exists() or file_id in self.doomed:
            return
        encoded = json.dumps(summary).encode()
        if not self._make_room(container.stat().st_size + len(encoded), files_too=False):
            log.info(json.dumps({"event": "clip_not_cached", "file_id": file_id}))
            return
        name = _prepared_name(start, end)
        tmp = folder / f".{secrets.token_hex(8)}"
        tmp.write_bytes(encoded)
        tmp.replace(folder / (name + ".json"))
        link_or_copy(container, tmp)
        _touch(tmp)
        tmp.replace(folder / name)

    def usage_bytes(self) -> int:
        """Bytes of the stored files and their caches (uploads in progress excluded)."""
        total = 0
        for folder in self.root.iterdir():
            if _ID.match(folder.name):
                total += _size(folder)
        return total

    def sweep(self) -> None:
        """Drops expired files, then makes the store fit its budget (a smaller budget
        after a restart)."""
        self.list()  # get() removes the expired ones
        self._make_room(0, files_too=True)

    def _make_room(self, need: int, files_too: bool) -> bool:
        """Evicts until `need` more bytes fit: clip caches first, then (with `files_too`)
        unpinned files, least recently used first. True when they fit."""
        free = self.budget_bytes - self.usage_bytes()
        if need <= free:
            return True
        caches = []
        for stored in self.list():
            for path in (self.root / stored.id).glob("prepared-*.arcz"):
                if path.name != FULL:
                    caches.append((_mtime(path), path))
        for _, path in sorted(caches):
            for item in (path, path.with_name(path.name + ".json")):
                free += _size(item)
                item.unlink(missing_ok=True)
            if need <= free:
                return True
        if not files_too:
            return False
        files = [f for f in self.list() if not self.pins.get(f.id)]
        files.sort(key=lambda f: _mtime(self.root / f.id / "meta.json"))
        for stored in files:
            folder = self.root / stored.id
            free += _size(folder)
            shutil.rmtree(folder, ignore_errors=True)
            log.info(json.dumps({"event": "file_evicted", "file_id": stored.id}))
            if need <= free:
                return True
        return False


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
