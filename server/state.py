"""The app's shared state (`app.state.gateway`) and the dependency that hands it to routes."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from fastapi import Depends, Request

from .batches.runner import BatchRunner
from .chat.service import ChatService
from .chat.upstream_requests import Integrator
from .config import Settings
from .db import Database
from .db.leases import Leases
from .files import FileStore
from .inflight import InFlight
from .keys.auth import check_bind
from .keys.tenancy import Tenancy
from .metrics import Metrics
from .upstream import Upstream
from .video.forward import prepare_forward_dir
from .video.service import VideoService
from .video.workers import DecodeWorkers


class Gateway:
    """Settings, metrics, the database, stored files, keys and their limits, the in-flight
    count; while the app runs (`start` to `stop`), the decode workers, the video service,
    the upstream client (and the integrator's, when it is another server) and the chat
    service."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.db = Database(settings.database)
        self.leases = Leases(self.db, settings.lease_ttl_s)
        self.store = FileStore(
            settings.files_dir,
            settings.files_budget_mb * 1024 * 1024,
            settings.files_ttl_s,
            self.db,
            self.leases,
        )
        self.tenancy = Tenancy(
            self.db, self.leases, settings.admin_secret(), settings.isolate_mm_cache
        )
        self.inflight = InFlight(settings.max_inflight, self.metrics.inflight)
        self._workers: DecodeWorkers | None = None
        self._videos: VideoService | None = None
        self._upstream: Upstream | None = None
        self._integrator_upstream: Upstream | None = None
        self._chat: ChatService | None = None
        self._batches: BatchRunner | None = None

    async def start(self) -> None:
        s = self.settings
        # Migrated before anything reads it; refused before anything listens.
        await asyncio.to_thread(self.db.migrate)
        check_bind(s.host, await asyncio.to_thread(self.tenancy.auth.required), s.insecure_no_auth)
        await asyncio.to_thread(self.tenancy.start)
        if s.shared_forward:
            prepare_forward_dir(s)  # writable, or the gateway does not start
        self._workers = DecodeWorkers(s, self.metrics)
        self._videos = VideoService(s, self.metrics, self.store, self._workers)
        self._upstream = Upstream(s.upstream_url, s.upstream_api_key, s.upstream_timeout_s)
        if s.integrator_url:
            self._integrator_upstream = Upstream(
                s.integrator_url, s.integrator_api_key, s.upstream_timeout_s
            )
            integrator = Integrator(self._integrator_upstream, s.integrator_model, external=True)
        else:
            integrator = Integrator(self._upstream, s.integrator_model, external=False)
        self._chat = ChatService(self, integrator)
        await self._workers.warm_up()
        # A smaller budget, expired files, leftovers of a gateway that died
        await asyncio.to_thread(self.store.sweep)
        await self.leases.start()
        self._batches = BatchRunner(self)
        await self._batches.start()

    async def stop(self) -> None:
        if self._batches is not None:
            await self._batches.stop()
        await self.leases.stop()
        for upstream in (self._upstream, self._integrator_upstream):
            if upstream is not None:
                await upstream.close()
        if self._workers is not None:
            self._workers.shutdown()
        self.db.close()

    @property
    def workers(self) -> DecodeWorkers:
        assert self._workers is not None, "the gateway has not started"
        return self._workers

    @property
    def videos(self) -> VideoService:
        assert self._videos is not None, "the gateway has not started"
        return self._videos

    @property
    def upstream(self) -> Upstream:
        assert self._upstream is not None, "the gateway has not started"
        return self._upstream

    @property
    def batches(self) -> BatchRunner:
        assert self._batches is not None, "the gateway has not started"
        return self._batches

    @property
    def chat(self) -> ChatService:
        assert self._chat is not None, "the gateway has not started"
        return self._chat

    def public_name(self, upstream_name: str | None) -> str:
        return public_model_name(self.settings, upstream_name)

    async def model_name(self) -> str:
        """The model's public name (vLLM's own name for it may be the checkpoint's path)."""
        return self.public_name(await self.upstream.model(self.settings.model))


# What a client sees as the model's name: never a server path.
_CLEAN_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")


def public_model_name(settings: Settings, upstream_name: str | None) -> str:
    if settings.served_model_name:
        return settings.served_model_name
    if upstream_name and _CLEAN_NAME.match(upstream_name):
        return upstream_name
    return "arc"


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


# A route's parameter `gateway: GatewayDep` receives the app's shared state.
GatewayDep = Annotated[Gateway, Depends(get_gateway)]
