"""How a prepared video goes to the engine: the one place that owns the forward form and
its fallbacks.

Two forward modes (`--forward-mode`): `container` sends the compact JPEG/FLAC container
in the request as a data: URL (read from an open file as the request goes out); `shared`
puts the raw container in the forward folder, which the engine reads too, under a random
name, and sends its file:// URL: no codec, no base64, no JSON to parse. A forwarded file
is removed when its answer is done, whatever ended it (the caller's cleanup stack).

The fallbacks, all here: a stored container is hard-linked into the forward folder, or
copied where links fail (another filesystem: the compose tmpfs), in a thread; when the
forward folder is full, the video goes inline as a data: URL of its raw container (from
the store, or prepared again beside the file store when the worker could not write it):
slower, not a failed request (log field `forward_fallback`).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, TypeVar

from ..config import Settings
from ..errors import APIError
from ..files import FileStore
from .jobs import VideoSummary

log = logging.getLogger("arc.gateway")
T = TypeVar("T")


@dataclass
class Forward:
    """What goes upstream for the video: an open container sent as a data: URL
    (container mode) or a file:// URL of a file in the forward folder (shared mode)."""

    size: int
    handle: BinaryIO | None = None
    url: str | None = None

    @property
    def upstream(self) -> BinaryIO | str:
        """What `upstream.Body` takes: the open container, or the URL."""
        if self.url is not None:
            return self.url
        assert self.handle is not None
        return self.handle


async def off_loop(function: Callable[..., T], *args: object) -> T:
    """`function(*args)` in a thread: a copy into the forward folder (another filesystem,
    e.g. the compose tmpfs: up to ~184 MB of raw frames) would stop every other request
    for its whole length on the event loop. A cancelled caller (the client went away)
    still waits for it to end, so no file it writes appears after the cleanup that
    removes it."""
    task = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with suppress(asyncio.CancelledError):
                await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller gets
        raise


def prepare_forward_dir(settings: Settings) -> None:
    """Shared mode, at start-up: the forward folder exists and is writable (else the
    gateway does not start), files left by an earlier run that no answer can still need
    are removed, and the log says what the engine needs."""
    folder = settings.forward_path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RuntimeError(
            f"--forward-mode shared: the forward folder {folder} is not writable: {e}"
        ) from None
    # The engine reads a forwarded file when the request arrives, before it is scheduled:
    # one older than the upstream timeout belongs to no answer in progress.
    stale = time.time() - settings.upstream_timeout_s
    removed = 0
    for item in folder.glob("*.arcz"):
        try:
            if item.stat().st_mtime < stale:
                item.unlink()
                removed += 1
        except OSError:
            continue
    event = {
        "event": "forward_mode",
        "mode": "shared",
        "forward_dir": str(folder),
        "engine_forward_dir": settings.engine_forward_path,
        "stale_removed": removed,
        "engine_needs": f"--allowed-local-media-path {settings.engine_forward_path} "
        "(the same folder, readable by the engine)",
    }
    log.info(json.dumps(event))


def no_room(error: BaseException) -> bool:
    """A full forward folder (a tmpfs sized for the answers in progress): the video then
    goes inline, as in container mode, instead of failing the request."""
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    return isinstance(error, APIError) and error.code == "storage_full"


# Prepares a container into the folder it is given: (its file, its summary).
PrepareInto = Callable[[Path], Awaitable[tuple[Path, VideoSummary]]]


class Forwarder:
    """Turns prepared containers into what goes upstream (`Forward`), in the configured
    mode, with every fallback."""

    def __init__(self, settings: Settings, store: FileStore, encoding: str):
        self.settings = settings
        self.store = store
        self.encoding = encoding  # the container form the workers write
        self.shared = settings.shared_forward

    @property
    def work_dir(self) -> Path:
        """Where prepared containers wait beside the file store (same filesystem)."""
        return self.store.incoming

    async def prepared(
        self, prepare_into: PrepareInto, cleanup: ExitStack, log_fields: dict
    ) -> tuple[Forward, VideoSummary]:
        """A container made for this question only (a data URL's, a URL's): written by the
        worker straight into the forward folder in shared mode (no move, no copy), else
        beside the file store and sent inline. Its file is gone when `cleanup` closes."""
        if self.shared:
            try:
                container, summary = await prepare_into(self.settings.forward_path)
            except APIError as e:
                if not no_room(e):
                    raise
                # Prepared again beside the file store and sent inline: slower, not lost.
                self._fell_back(log_fields)
            else:
                cleanup.callback(container.unlink, missing_ok=True)
                return self._shared(container), summary
        container, summary = await prepare_into(self.work_dir)
        forward = self._inline(container, cleanup)
        container.unlink()  # the open handle keeps it readable until the answer is done
        return forward, summary

    async def stored(
        self,
        file_id: str,
        clip: tuple[float | None, float | None],
        cleanup: ExitStack,
        log_fields: dict,
    ) -> tuple[Forward, VideoSummary] | None:
        """A stored file's kept container for `clip` (a clip cache, a segment), or None when
        none is kept in this mode's form: hard-linked (or copied) into the forward folder in
        shared mode, opened to go inline otherwise or when that folder is full."""
        start, end = clip
        inline = not self.shared
        if self.shared:
            dest = self._forward_name(cleanup)
            try:
                linked = await off_loop(
                    self.store.link_prepared, file_id, start, end, dest, self.encoding
                )
            except OSError as e:
                if not no_room(e):
                    raise
                dest.unlink(missing_ok=True)
                self._fell_back(log_fields)
                linked, inline = None, True
            if linked is not None:
                summary, how = linked
                log_fields["forward_copy"] = how
                return self._shared(dest), VideoSummary(**summary)
        if not inline:
            return None
        # Container mode takes the compact form only; the full folder's fallback sends
        # either inline.
        wanted = None if self.shared else self.encoding
        cached = self.store.prepared(file_id, start, end, wanted)
        if cached is None:
            return None
        handle, summary = cached
        cleanup.callback(handle.close)
        return Forward(os.fstat(handle.fileno()).st_size, handle=handle), VideoSummary(**summary)

    async def kept(self, container: Path, cleanup: ExitStack, log_fields: dict) -> Forward:
        """A container just kept in the file store (`container` is its name beside the
        store, which the caller removes): moved or copied into the forward folder (shared
        mode; inline when the folder is full), or opened to go inline."""
        if self.shared:
            dest = self._forward_name(cleanup)
            try:
                container.replace(dest)
                return self._shared(dest)
            except OSError:  # the forward folder is on another filesystem
                pass
            try:
                await off_loop(shutil.copyfile, container, dest)
                return self._shared(dest)
            except OSError as e:
                dest.unlink(missing_ok=True)
                if not no_room(e):
                    raise
                self._fell_back(log_fields)
        return self._inline(container, cleanup)

    def _forward_name(self, cleanup: ExitStack) -> Path:
        """A new name in the forward folder, removed when the question is done."""
        dest = self.settings.forward_path / f"{secrets.token_hex(16)}.arcz"
        cleanup.callback(dest.unlink, missing_ok=True)
        return dest

    def _shared(self, path: Path) -> Forward:
        engine_path = PurePosixPath(self.settings.engine_forward_path, path.name)
        return Forward(path.stat().st_size, url=engine_path.as_uri())

    @staticmethod
    def _fell_back(log_fields: dict) -> None:
        log_fields["forward_fallback"] = "inline"
        log.warning(json.dumps({"event": "forward_dir_full", "sent": "inline"}))

    @staticmethod
    def _inline(container: Path, cleanup: ExitStack) -> Forward:
        """The container opened, to go upstream as a data: URL (read as the request goes
        out); it stays readable after the caller removes its name."""
        try:
            handle = container.open("rb")
        except OSError:
            container.unlink(missing_ok=True)
            raise
        cleanup.callback(handle.close)
        return Forward(os.fstat(handle.fileno()).st_size, handle=handle)


__all__ = ["Forward", "Forwarder", "no_room", "off_loop", "prepare_forward_dir"]
