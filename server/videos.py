"""The video-source service: a chat request's video (a stored file id, a data URL or an
https URL) turned into the prepared container that goes to vLLM.

Stored files are prepared once and their container kept by the file store; data URLs and
URLs are written to disk, prepared in the decode workers and dropped when the question is
done. Everything a source holds (pins, temporary files, open containers) is released when
the caller's `cleanup` stack closes.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

from . import safe_fetch
from .config import Settings
from .errors import APIError
from .files import FileStore
from .ingest import Ingestor, VideoSummary
from .metrics import Metrics
from .schemas import VideoOptions
from .uploads import ChatBody, decode_data_url


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
    ) -> tuple[BinaryIO, VideoSummary, str | None]:
        """(the prepared container, open; summary; file id when it is a stored file). The
        container is closed, and a stored file unpinned, when `cleanup` closes (the
        question is done)."""
        s = self.settings
        if url.startswith("file-"):
            stored = cleanup.enter_context(self.store.using(url))
            log_fields["video_source"] = "file"
            cached = self.store.prepared(stored.id, options.start, options.end)
            if cached is not None:
                handle, summary = cached
                cleanup.callback(handle.close)
                log_fields.update(prepared_cache="hit", decode_s=0.0, encode_s=0.0)
                return handle, VideoSummary(**summary), stored.id
            container, summary = await self._prepare_file(
                self.store.source_path(stored.id), options
            )
            handle = self._open_container(container, cleanup)
            self.store.keep_prepared(
                stored.id, options.start, options.end, container, summary.as_dict()
            )
            container.unlink(missing_ok=True)
            return handle, summary, stored.id

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
    ) -> tuple[BinaryIO, VideoSummary, None]:
        self.metrics.upload_bytes.inc(size)
        log_fields["bytes_in"] = size
        if size == 0:
            raise APIError(400, "the video is empty (0 bytes)", "empty_file")
        container, summary = await self._prepare_file(path, options)
        handle = self._open_container(container, cleanup)
        container.unlink()  # the open handle keeps it readable until the answer is done
        log_fields["decode_wait_s"] = summary.wait_s
        if summary.notes:
            log_fields["video_notes"] = summary.notes
        return handle, summary, None

    @staticmethod
    def _open_container(container: Path, cleanup: ExitStack) -> BinaryIO:
        try:
            handle = container.open("rb")
        except OSError:
            container.unlink(missing_ok=True)
            raise
        cleanup.callback(handle.close)
        return handle

    def fetch_policy(self) -> safe_fetch.FetchPolicy:
        s = self.settings
        schemes = {"https", "http"} if s.allow_url_host else {"https"}
        return safe_fetch.FetchPolicy(
            allowed_schemes=frozenset(schemes),
            max_bytes=s.max_upload_bytes,
            total_timeout_s=s.url_timeout_s,
            allowed_hosts=frozenset(s.allow_url_host),
        )
