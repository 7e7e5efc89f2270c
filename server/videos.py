"""The video-source service: a chat request's video (a stored file id, a data URL or an
https URL) turned into the prepared container that goes to vLLM, and how it goes there.

Stored files are prepared once and their container kept by the file store; data URLs and
URLs are written to disk, prepared in the decode workers and dropped when the question is
done. Everything a source holds (pins, temporary files, open containers, forwarded files)
is released when the caller's `cleanup` stack closes.

Two forward modes (`--forward-mode`): `container` sends the compact JPEG/FLAC container
in the request as a data: URL (read from an open file as the request goes out); `shared`
puts the raw container in the forward folder, which the engine reads too, under a random
name, and sends its file:// URL: no codec, no base64, no JSON to parse. The file is
removed when the answer is done, whatever ended it.
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
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, TypeVar

from . import safe_fetch
from .config import Settings
from .errors import APIError
from .files import FileStore
from .ingest import Ingestor, VideoSummary
from .metrics import Metrics
from .schemas import VideoOptions
from .uploads import ChatBody, decode_data_url

log = logging.getLogger("arc.gateway")
T = TypeVar("T")


async def _off_loop(function: Callable[..., T], *args: object) -> T:
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


def _no_room(error: BaseException) -> bool:
    """A full forward folder (a tmpfs sized for the answers in progress): the video then
    goes inline, as in container mode, instead of failing the request."""
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    return isinstance(error, APIError) and error.code == "storage_full"


class VideoSources:
    """Prepares a chat request's video from whichever source it names."""

    def __init__(self, settings: Settings, metrics: Metrics, store: FileStore, ingestor: Ingestor):
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.ingestor = ingestor

    async def _prepare_file(self, path: Path, options: VideoOptions) -> tuple[Path, VideoSummary]:
        return await self.ingestor.prepare(path, options.start, options.end)

    async def video_from_url(
        self, url: str, options: VideoOptions, body: ChatBody, cleanup: ExitStack, log_fields: dict
    ) -> tuple[Forward, VideoSummary, str | None]:
        """(what goes upstream; summary; file id when it is a stored file). The container
        is closed or the forwarded file removed, and a stored file unpinned, when `cleanup`
        closes (the question is done)."""
        s = self.settings
        log_fields["forward_mode"] = s.forward_mode
        if url.startswith("file-"):
            stored = cleanup.enter_context(self.store.using(url))
            log_fields["video_source"] = "file"
            inline = not s.shared_forward
            if s.shared_forward:
                dest = self._forward_name(cleanup)
                try:
                    linked = await _off_loop(
                        self.store.link_prepared,
                        stored.id,
                        options.start,
                        options.end,
                        dest,
                        self.ingestor.encoding,
                    )
                except OSError as e:
                    if not _no_room(e):
                        raise
                    dest.unlink(missing_ok=True)
                    self._fell_back(log_fields)
                    linked, inline = None, True
                if linked is not None:
                    summary, how = linked
                    log_fields.update(
                        prepared_cache="hit", decode_s=0.0, encode_s=0.0, forward_copy=how
                    )
                    return self._shared(dest), VideoSummary(**summary), stored.id
            if inline:
                # Container mode takes the compact form only; the full folder's fallback
                # sends either inline.
                wanted = None if s.shared_forward else self.ingestor.encoding
                cached = self.store.prepared(stored.id, options.start, options.end, wanted)
                if cached is not None:
                    handle, summary = cached
                    cleanup.callback(handle.close)
                    log_fields.update(prepared_cache="hit", decode_s=0.0, encode_s=0.0)
                    size = os.fstat(handle.fileno()).st_size
                    return Forward(size, handle=handle), VideoSummary(**summary), stored.id
            container, summary = await self._prepare_file(
                self.store.source_path(stored.id), options
            )
            try:
                self.store.keep_prepared(
                    stored.id, options.start, options.end, container, summary.as_dict()
                )
                forward = await self._forward(container, cleanup, log_fields)
            finally:
                container.unlink(missing_ok=True)
            return forward, summary, stored.id

        spooled = body.files.get(url)
        if spooled is not None:  # a data URL, decoded to disk as it arrived
            log_fields["video_source"] = "data_url"
            return await self._prepare_upload(
                spooled.path, spooled.size, options, cleanup, log_fields
            )
        tmp = self.store.incoming_path()
        cleanup.callback(tmp.unlink, missing_ok=True)
        try:
            if url.startswith("data:"):
                # Only a data URL the streaming reader did not take apart (an escaped key)
                # comes here: it is within the JSON's small cap.
                log_fields["video_source"] = "data_url"
                size = decode_data_url(url, tmp, s.max_upload_bytes)
            elif url.startswith(("https://", "http://")):
                log_fields["video_source"] = "url"
                result = await safe_fetch.fetch_to_file(url, tmp, self.fetch_policy())
                size = result.size
            else:
                raise APIError(
                    400,
                    "video_url.url must be an https URL, a data: URL or a file id from "
                    "POST /v1/files",
                    "bad_video_url",
                    param="video_url",
                )
        except safe_fetch.FetchError as e:
            raise APIError(e.status_code, e.message, e.code, param="video_url") from None
        return await self._prepare_upload(tmp, size, options, cleanup, log_fields)

    async def _prepare_upload(
        self, path: Path, size: int, options: VideoOptions, cleanup: ExitStack, log_fields: dict
    ) -> tuple[Forward, VideoSummary, None]:
        self.metrics.upload_bytes.inc(size)
        log_fields["bytes_in"] = size
        if size == 0:
            raise APIError(400, "the video is empty (0 bytes)", "empty_file")
        if self.settings.shared_forward:
            # Written by the worker straight into the forward folder: no move, no copy.
            out_dir = self.settings.forward_path
            try:
                container, summary = await self.ingestor.prepare(
                    path, options.start, options.end, out_dir=out_dir
                )
            except APIError as e:
                if not _no_room(e):
                    raise
                # Prepared again beside the file store and sent inline: slower, not lost.
                self._fell_back(log_fields)
                container, summary = await self._prepare_file(path, options)
                forward = self._inline(container, cleanup)
                container.unlink()
            else:
                cleanup.callback(container.unlink, missing_ok=True)
                forward = self._shared(container)
        else:
            container, summary = await self._prepare_file(path, options)
            forward = self._inline(container, cleanup)
            container.unlink()  # the open handle keeps it readable until the answer is done
        log_fields["decode_wait_s"] = summary.wait_s
        if summary.notes:
            log_fields["video_notes"] = summary.notes
        return forward, summary, None

    def _forward_name(self, cleanup: ExitStack) -> Path:
        """A new name in the forward folder, removed when the question is done."""
        dest = self.settings.forward_path / f"{secrets.token_hex(16)}.arcz"
        cleanup.callback(dest.unlink, missing_ok=True)
        return dest

    def _shared(self, path: Path) -> Forward:
        engine_path = PurePosixPath(self.settings.engine_forward_path, path.name)
        return Forward(path.stat().st_size, url=engine_path.as_uri())

    def _fell_back(self, log_fields: dict) -> None:
        log_fields["forward_fallback"] = "inline"
        log.warning(json.dumps({"event": "forward_dir_full", "sent": "inline"}))

    async def _forward(self, container: Path, cleanup: ExitStack, log_fields: dict) -> Forward:
        """The container in `container` (left there, the caller removes it) as it goes
        upstream: opened (container mode) or put in the forward folder (shared mode; inline
        when the folder is full)."""
        if self.settings.shared_forward:
            dest = self._forward_name(cleanup)
            try:
                container.replace(dest)
                return self._shared(dest)
            except OSError:  # the forward folder is on another filesystem
                pass
            try:
                await _off_loop(shutil.copyfile, container, dest)
                return self._shared(dest)
            except OSError as e:
                dest.unlink(missing_ok=True)
                if not _no_room(e):
                    raise
                self._fell_back(log_fields)
        return self._inline(container, cleanup)

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

    def fetch_policy(self) -> safe_fetch.FetchPolicy:
        s = self.settings
        schemes = {"https", "http"} if s.allow_url_host else {"https"}
        return safe_fetch.FetchPolicy(
            allowed_schemes=frozenset(schemes),
            max_bytes=s.max_upload_bytes,
            total_timeout_s=s.url_timeout_s,
            allowed_hosts=frozenset(s.allow_url_host),
        )
