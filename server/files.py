"""Stored videos (the Files API): the original and its prepared forms on disk.

Layout: `<root>/<file-id>/{source, meta.json, prepared-<clip>.arcz}` and `<root>/.incoming/`
for uploads in progress (same filesystem, so storing is a rename). Ids are generated
(`file-` + 24 hex digits) and checked before any path is built from them. Files expire
after a TTL; over the disk budget the oldest go first.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import APIError

_ID = re.compile(r"^file-[0-9a-f]{24}$")


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
    def __init__(self, root: str | Path, budget_bytes: int, ttl_s: int):
        self.root = Path(root)
        self.incoming = self.root / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.budget_bytes = budget_bytes
        self.ttl_s = ttl_s

    @staticmethod
    def new_id() -> str:
        return "file-" + secrets.token_hex(12)

    def incoming_path(self) -> Path:
        return self.incoming / secrets.token_hex(16)

    def _dir(self, file_id: str) -> Path:
        if not _ID.match(file_id):
            raise APIError(404, f"no file with id {file_id[:64]!r}", "file_not_found")
        return self.root / file_id

    def add(
        self,
        source: Path,
        filename: str,
        purpose: str,
        size: int,
        container: bytes,
        video: dict,
        file_id: str | None = None,
    ) -> StoredFile:
        file_id = file_id or self.new_id()
        folder = self._dir(file_id)
        folder.mkdir(parents=True)
        source.replace(folder / "source")
        (folder / _prepared_name(None, None)).write_bytes(container)
        (folder / (_prepared_name(None, None) + ".json")).write_text(json.dumps(video))
        now = int(time.time())
        stored = StoredFile(file_id, filename, purpose, size, now, now + self.ttl_s, video)
        (folder / "meta.json").write_text(json.dumps(asdict(stored)))
        self.sweep()
        return stored

    def get(self, file_id: str) -> StoredFile:
        folder = self._dir(file_id)
        try:
            stored = StoredFile(**json.loads((folder / "meta.json").read_text()))
        except (OSError, ValueError, TypeError):
            raise APIError(404, f"no file with id {file_id!r}", "file_not_found") from None
        if stored.expires_at <= time.time():
            self.delete(file_id)
            raise APIError(404, f"file {file_id!r} has expired", "file_not_found")
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
        if not folder.exists():
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True

    def source_path(self, file_id: str) -> Path:
        return self._dir(file_id) / "source"

    def prepared(
        self, file_id: str, start: float | None, end: float | None
    ) -> tuple[bytes, dict] | None:
        """The prepared container of the file (or of a clip of it) and its summary."""
        path = self._dir(file_id) / _prepared_name(start, end)
        try:
            summary = json.loads(path.with_name(path.name + ".json").read_text())
            return path.read_bytes(), summary
        except (FileNotFoundError, ValueError):
            return None

    def keep_prepared(
        self, file_id: str, start: float | None, end: float | None, container: bytes, summary: dict
    ) -> None:
        folder = self._dir(file_id)
        if not folder.exists():
            return
        name = _prepared_name(start, end)
        for suffix, data in ((".json", json.dumps(summary).encode()), ("", container)):
            tmp = folder / f".{secrets.token_hex(8)}"
            tmp.write_bytes(data)
            tmp.replace(folder / (name + suffix))

    def usage_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def sweep(self) -> None:
        """Drop expired files, then the oldest until the store fits its budget."""
        files = self.list()  # get() already removes the expired ones
        total = self.usage_bytes()
        for stored in files:
            if total <= self.budget_bytes:
                break
            folder = self.root / stored.id
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            shutil.rmtree(folder, ignore_errors=True)
            total -= size


def _prepared_name(start: float | None, end: float | None) -> str:
    if start is None and end is None:
        return "prepared-full.arcz"
    return (
        f"prepared-{start if start is not None else 0:g}-{end if end is not None else 'end'}.arcz"
    )
