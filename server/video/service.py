"""The video service: the gateway's one path for a video, from its source to what goes
upstream.

    source (stored file id, data: URL, https URL)          -> `open` (VideoSource)
    clip or segment (video.start/end, a long video's part)  -> `prepare` (a job on a decode
                                                               worker, or the file store's cache)
    forward (data: URL or shared-folder file:// URL)        -> `forward.Forwarder`

`prepare` answers a `Prepared` (what goes upstream and the video's summary) or, asked with
`split_above_s`, a `VideoLength` when the clip is longer: the chat service then cuts it into
segments (`segments.plan_segments`) and prepares each as its own clip. Stored files are
prepared once per clip (segments included) and kept by the file store; data URLs and URLs
are written to disk, prepared in the decode workers and dropped when the question is done.
Everything a source or a prepared clip holds (pins, temporary files, open containers,
forwarded files) is released when the caller's cleanup stack closes. Uploads
(`store_upload`) go through the same workers and store.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from arc_media.segments import AUTO_SEGMENT_S, plan_segments

from ..config import Settings
from ..errors import APIError
from ..files import ANONYMOUS, FileStore, StoredFile
from ..metrics import Metrics
from ..priority import INTERACTIVE
from ..uploads import ChatBody, decode_data_url
from . import safe_fetch
from .errors import UPLOAD_PARAM, clip_error, too_long
from .forward import Forward, Forwarder
from .jobs import VideoLength, VideoSummary
from .workers import DecodeWorkers

log = logging.getLogger("arc.gateway")

Clip = tuple[float | None, float | None]


@dataclass
class VideoSource:
    """A question's video on disk: a stored file (pinned while the question runs), or a
    data URL / URL's bytes written to a temporary file."""

    kind: str  # "file", "data_url", "url"
    path: Path
    size: int
    stored: StoredFile | None = None
    # Where the request gave it (`messages[0].content[0].video_url.url`): the `param` of
    # the errors about the video.
    param: str = "video_url"

    @property
    def file_id(self) -> str | None:
        return self.stored.id if self.stored else None


@dataclass
class Prepared:
    """A prepared clip (the whole video, a clip, or a segment): what goes upstream."""

    forward: Forward
    summary: VideoSummary


class _Longer(Exception):
    """A worker measured the video instead of preparing it (longer than asked)."""

    def __init__(self, length: VideoLength):
        self.length = length


class VideoService:
    def __init__(
        self, settings: Settings, metrics: Metrics, store: FileStore, workers: DecodeWorkers
    ):
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.workers = workers
        self.forwarder = Forwarder(settings, store, workers.encoding)

    # -- sources ---------------------------------------------------------------------------

    async def open(
        self,
        url: str,
        body: ChatBody | None,
        cleanup: ExitStack,
        log_fields: dict,
        scope: str | None = None,
        param: str = "video_url",
    ) -> VideoSource:
        """The video a chat request names, on disk until `cleanup` closes: a stored file
        of `scope`'s (its owner's key; None: any) pinned, a data URL (spooled to disk as
        the request arrived), or an https URL (fetched safely). `param`: where the request
        gave it, named by the errors about it."""
        log_fields["forward_mode"] = self.settings.forward_mode
        if url.startswith("file-"):
            try:
                stored = cleanup.enter_context(self.store.using(url, scope))
            except APIError as e:  # gone since the request's checks
                raise e.at(param) from None
            log_fields["video_source"] = "file"
            path = self.store.source_path(stored.id)
            return VideoSource("file", path, stored.bytes, stored, param)
        spooled = body.files.get(url) if body is not None else None
        if spooled is not None:  # a data URL, decoded to disk as it arrived
            log_fields["video_source"] = "data_url"
            return self._received("data_url", spooled.path, spooled.size, log_fields, param)
        tmp = self.store.incoming_path()
        cleanup.callback(tmp.unlink, missing_ok=True)
        try:
            if url.startswith("data:"):
                # Only a data URL the streaming reader did not take apart (an escaped key)
                # comes here: it is within the JSON's small cap.
                log_fields["video_source"] = "data_url"
                size = decode_data_url(url, tmp, self.settings.max_upload_bytes, param)
                return self._received("data_url", tmp, size, log_fields, param)
            if url.startswith(("https://", "http://")):
                log_fields["video_source"] = "url"
                result = await safe_fetch.fetch_to_file(url, tmp, self.fetch_policy())
                return self._received("url", tmp, result.size, log_fields, param)
        except safe_fetch.FetchError as e:
            raise APIError(e.status_code, e.message, e.code, param=param) from None
        raise APIError(
            400,
            "video_url.url must be an https URL, a data: URL or a file id from POST /v1/files",
            "bad_video_url",
            param=param,
        )

    def _received(
        self, kind: str, path: Path, size: int, log_fields: dict, param: str
    ) -> VideoSource:
        self.metrics.upload_bytes.inc(size)
        log_fields["bytes_in"] = size
        if size == 0:
            raise APIError(400, "the video is empty (0 bytes)", "empty_file", param=param)
        return VideoSource(kind, path, size, param=param)

    def fetch_policy(self) -> safe_fetch.FetchPolicy:
        s = self.settings
        schemes = {"https", "http"} if s.allow_url_host else {"https"}
        return safe_fetch.FetchPolicy(
            allowed_schemes=frozenset(schemes),
            max_bytes=s.max_upload_bytes,
            total_timeout_s=s.url_timeout_s,
            allowed_hosts=frozenset(s.allow_url_host),
        )

    # -- clip or segment -> prepared -> forward --------------------------------------------

    async def prepare(
        self,
        source: VideoSource,
        clip: Clip,
        cleanup: ExitStack,
        log_fields: dict,
        *,
        split_above_s: float | None = None,
        admit: bool = True,
        priority: int = INTERACTIVE,
    ) -> Prepared | VideoLength:
        """The clip (`(None, None)`: the whole video) prepared and ready to go upstream;
        or, when `split_above_s` is given and the clip is longer, its length (nothing is
        decoded). What it holds is released when `cleanup` closes. `admit=False`: a later
        segment of an admitted request (never refused by the decode queue's limit).
        `priority`: its place in the decode queue (server.priority)."""
        if source.stored is not None:
            if split_above_s is not None:
                length = self.stored_length(source.stored, clip, source.param)
                start, end = length.span
                if end - start > split_above_s:
                    return length
            return await self._prepare_stored(source, clip, cleanup, log_fields, admit, priority)
        start, end = clip

        async def prepare_into(folder: Path) -> tuple[Path, VideoSummary]:
            out = folder / f"{secrets.token_hex(16)}.arcz"
            job = self.workers.job(source.path, out, start, end, split_above_s)
            result = await self.workers.run(job, admit=admit, priority=priority, param=source.param)
            if isinstance(result, VideoLength):
                raise _Longer(result)
            return out, result

        try:
            forward, summary = await self.forwarder.prepared(prepare_into, cleanup, log_fields)
        except _Longer as longer:
            log_fields["decode_wait_s"] = longer.length.wait_s
            return longer.length
        self._decoded(summary, forward, log_fields)
        return Prepared(forward, summary)

    async def _prepare_stored(
        self,
        source: VideoSource,
        clip: Clip,
        cleanup: ExitStack,
        log_fields: dict,
        admit: bool,
        priority: int,
    ) -> Prepared:
        stored = source.stored
        assert stored is not None
        hit = await self.forwarder.stored(stored.id, clip, cleanup, log_fields)
        if hit is not None:
            forward, summary = hit
            log_fields.update(prepared_cache="hit", decode_s=0.0, encode_s=0.0)
            self.metrics.forwarded_bytes.inc(forward.size)
            return Prepared(forward, summary)
        start, end = clip
        out = self.forwarder.work_dir / f"{secrets.token_hex(16)}.arcz"
        job = self.workers.job(self.store.source_path(stored.id), out, start, end)
        summary = await self.workers.run(job, admit=admit, priority=priority, param=source.param)
        assert isinstance(summary, VideoSummary)
        try:
            self.store.keep_prepared(stored.id, start, end, out, summary.as_dict())
            forward = await self.forwarder.kept(out, cleanup, log_fields)
        finally:
            out.unlink(missing_ok=True)
        self._decoded(summary, forward, log_fields)
        return Prepared(forward, summary)

    def _decoded(self, summary: VideoSummary, forward: Forward, log_fields: dict) -> None:
        self.metrics.forwarded_bytes.inc(forward.size)
        log_fields.setdefault("decode_s", summary.decode_s)
        log_fields.setdefault("encode_s", summary.encode_s)
        # prepare_video's own stages (probe, decode, overlay, resize, frames, audio)
        log_fields.setdefault("decode_stages_s", summary.stages)
        log_fields["decode_wait_s"] = summary.wait_s
        if summary.notes:
            log_fields["video_notes"] = summary.notes

    def stored_length(
        self, stored: StoredFile, clip: Clip, param: str | None = None
    ) -> VideoLength:
        """A stored file's length and the clip asked about, from what its upload measured
        (no worker needed); a clip outside the video or over the gateway's longest is
        refused as a worker would refuse it (the key's longest: `Tenancy.check_files`)."""
        from arc_media.limits import ClipError
        from arc_media.plan import resolve_clip

        video = stored.video
        duration = float(video["video_duration_s"])
        try:
            resolved = resolve_clip(duration, *clip)
        except ClipError as e:
            raise clip_error(e) from None
        span = (resolved[1] - resolved[0]) if resolved else duration
        if span > self.settings.max_duration_s:
            raise too_long(
                round(span, 1),
                self.settings.max_duration_s,
                by_key=False,
                clipped=resolved is not None,
                param=param,
            )
        return VideoLength(
            video_duration_s=duration,
            clip=list(resolved) if resolved else None,
            width=int(video.get("width") or 0),
            height=int(video.get("height") or 0),
            has_audio=bool(video.get("has_audio")),
            video_codec=video.get("video_codec"),
            audio_codec=video.get("audio_codec"),
            source_bytes=stored.bytes,
            probe_s=0.0,
        )

    # -- uploads ---------------------------------------------------------------------------

    async def store_upload(
        self,
        path: Path,
        filename: str,
        purpose: str,
        size: int,
        log_fields: dict,
        owner: str = ANONYMOUS,
        quota_bytes: int | None = None,
    ) -> StoredFile:
        """`POST /v1/files`: the upload at `path` (moved into the store) checked by a decode
        worker and kept for `owner` (within its `quota_bytes`). A video up to five minutes
        is prepared now (its questions decode nothing); a longer one is measured only: its
        segments are prepared by its first question and kept like any clip cache."""
        store = self.store
        self.metrics.upload_bytes.inc(size)
        log_fields["bytes_in"] = size
        if size == 0:
            raise APIError(
                400, "the uploaded file is empty (0 bytes)", "empty_file", param=UPLOAD_PARAM
            )
        if size > store.budget_bytes:  # refused before decoding it
            raise APIError(
                413,
                f"the video ({size / 2**20:.1f} MiB) is larger than the file store's whole "
                f"budget ({store.budget_bytes / 2**20:g} MiB: --files-budget-mb)",
                "file_exceeds_storage",
                param=UPLOAD_PARAM,
            )
        # The owner's storage quota, before decoding it.
        await asyncio.to_thread(store.check_quota, owner, quota_bytes, size)
        out = self.forwarder.work_dir / f"{secrets.token_hex(16)}.arcz"
        job = self.workers.job(path, out, split_above_s=AUTO_SEGMENT_S)
        result = await self.workers.run(job, param=UPLOAD_PARAM)
        t_store = time.perf_counter()
        try:
            if isinstance(result, VideoLength):
                start, end = result.span
                video = {
                    **result.as_dict(),
                    "frames": None,
                    "duration": None,
                    "segments": len(plan_segments(start, end, AUTO_SEGMENT_S)),
                }
                container = None
            else:
                video, container = result.as_dict(), out
            stored = await asyncio.to_thread(
                store.add, path, filename, purpose, size, container, video, None, owner, quota_bytes
            )
            log_fields["store_s"] = round(time.perf_counter() - t_store, 4)
        finally:
            out.unlink(missing_ok=True)
        log_fields.update(file_id=stored.id, decode_wait_s=result.wait_s)
        if isinstance(result, VideoSummary):
            if result.notes:
                log_fields["video_notes"] = result.notes
            log_fields.update(
                frames=result.frames,
                decode_s=result.decode_s,
                encode_s=result.encode_s,
                prepared_bytes=result.prepared_bytes,
            )
        else:
            log_fields.update(segments=stored.video["segments"], decode_s=result.probe_s)
        return stored


__all__ = ["Clip", "Prepared", "VideoService", "VideoSource"]
