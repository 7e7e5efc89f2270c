"""The load benchmark's HTTP client of the five paths (benchmarks/load/paths.py): one
request timed from its start (the upload's for gateway-upload) to the end of its stream,
and a batch of them sent by concurrent clients back to back."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from .paths import DATA_URL, DIRECT, DIRECT_PATHS, DIRECT_RAW, SECOND_QUESTION
from .records import Record, Slo
from .sse import ChunkStream
from .videos import Video


@dataclass
class Target:
    """Where the requests go: the gateway, the engine behind it (the direct paths) and the
    engine's model name (the gateway fills it in itself)."""

    gateway_url: str | None
    engine_url: str | None
    model: str | None
    headers: dict[str, str]


@dataclass
class ChatSettings:
    """What every request asks, the same on every path."""

    question: str
    task: str
    max_tokens: int
    ignore_eos: bool
    request_timeout_s: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ChatSettings:
        return cls(
            args.question, args.task, args.max_tokens, args.ignore_eos, args.request_timeout_s
        )


class LoadClient:
    def __init__(self, target: Target, chat: ChatSettings, videos: list[Video], slo: Slo):
        self.target = target
        self.chat = chat
        self.videos = videos
        self.slo = slo
        self.bodies: dict[tuple[str, str], bytes] = {}
        self.uploaded: list[str] = []
        self.stored: dict[str, str] = {}  # video name -> file id, for the second question

    def body(self, url: str, model: str | None) -> dict:
        body = {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": url}},
                        {"type": "text", "text": self.chat.question},
                    ],
                }
            ],
            "max_tokens": self.chat.max_tokens,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "chat_template_kwargs": {"task": self.chat.task},
        }
        if self.chat.ignore_eos:
            body["ignore_eos"] = True
        if model:
            body["model"] = model
        return body

    def prebuilt(self, path: str, video: Video) -> bytes:
        """Request bodies are built once per (path, video): the client's JSON cost is no
        part of the measurement."""
        key = (path, video.name)
        if key not in self.bodies:
            if path == DIRECT:
                body = self.body(video.prepared_data_url, self.target.model)
            elif path == DIRECT_RAW:
                body = self.body(video.mp4_data_url, self.target.model)
            elif path == SECOND_QUESTION:
                body = self.body(self.stored[video.name], None)
            else:
                body = self.body(video.mp4_data_url, None)
            self.bodies[key] = json.dumps(body).encode()
        return self.bodies[key]

    async def _stream(
        self, client: httpx.AsyncClient, url: str, content: bytes, t0: float, record: Record
    ) -> None:
        headers = {**self.target.headers, "Content-Type": "application/json"}
        chunks = 0
        usage = None
        async with client.stream("POST", url, content=content, headers=headers) as response:
            record.headers_s = time.perf_counter() - t0
            record.add_timing(response.headers.get("server-timing"))
            record.status = response.status_code
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                try:
                    code = json.loads(text)["error"].get("code") or ""
                except (ValueError, KeyError, TypeError, AttributeError):
                    code = ""
                record.error = f"HTTP {response.status_code}" + (f" {code}" if code else "")
                return
            stream = ChunkStream(response.aiter_lines())
            async for chunk in stream:
                if chunk.get("error"):
                    error = chunk["error"]
                    code = error.get("code") if isinstance(error, dict) else None
                    record.error = f"stream error {code or ''}".strip()
                    return
                if chunk.get("choices"):
                    if record.ttft_s is None:
                        record.ttft_s = time.perf_counter() - t0
                    if any((c.get("delta") or {}).get("content") for c in chunk["choices"]):
                        chunks += 1
                if chunk.get("usage"):
                    usage = chunk["usage"]
        record.e2e_s = time.perf_counter() - t0
        if not stream.done:
            record.error = "stream ended without [DONE]"
            return
        record.output_tokens = int(usage["completion_tokens"]) if usage else chunks
        record.prompt_tokens = int(usage["prompt_tokens"]) if usage else None
        if record.ttft_s is None:
            record.error = "no token"
            return
        if record.output_tokens > 1:
            record.tpot_ms = 1000 * (record.e2e_s - record.ttft_s) / (record.output_tokens - 1)
        record.ok = True
        record.meets_slo = self.slo.met(record)

    async def _post_file(self, client: httpx.AsyncClient, video: Video) -> httpx.Response:
        return await client.post(
            f"{self.target.gateway_url}/v1/files",
            files={"file": (video.name, video.data, "application/octet-stream")},
            data={"purpose": "user_data"},
            headers=self.target.headers,
        )

    async def request(self, client: httpx.AsyncClient, path: str, record: Record) -> None:
        video = next(v for v in self.videos if v.name == record.video)
        t0 = time.perf_counter()
        try:
            if path in DIRECT_PATHS:
                url = f"{self.target.engine_url}/v1/chat/completions"
                await self._stream(client, url, self.prebuilt(path, video), t0, record)
            elif path in (DATA_URL, SECOND_QUESTION):
                url = f"{self.target.gateway_url}/v1/chat/completions"
                await self._stream(client, url, self.prebuilt(path, video), t0, record)
            else:
                await self._upload_and_ask(client, video, t0, record)
        except httpx.TimeoutException:
            record.error = "timeout"
        except httpx.HTTPError as e:
            record.error = f"connection error ({type(e).__name__})"

    async def _upload_and_ask(
        self, client: httpx.AsyncClient, video: Video, t0: float, record: Record
    ) -> None:
        response = await self._post_file(client, video)
        record.upload_s = time.perf_counter() - t0
        record.add_timing(response.headers.get("server-timing"))
        if response.status_code != 200:
            record.status = response.status_code
            record.error = f"upload HTTP {response.status_code}"
            return
        file_id = response.json()["id"]
        self.uploaded.append(file_id)
        content = json.dumps(self.body(file_id, None)).encode()
        url = f"{self.target.gateway_url}/v1/chat/completions"
        await self._stream(client, url, content, t0, record)

    async def batch(
        self,
        path: str,
        concurrency: int,
        count: int,
        deadline: float,
        on_done: Callable[[Record], None],
        first_index: int = 0,
        records: list[Record] | None = None,
    ) -> tuple[list[Record], float]:
        """`count` requests, `concurrency` clients sending back to back; the requests take
        the videos in turn. Returns the records (also appended to `records` as they finish,
        so an interrupted batch keeps what it measured) and the batch's wall time."""
        records = [] if records is None else records
        pending = iter(range(first_index, first_index + count))
        limits = httpx.Limits(max_connections=concurrency + 2)
        timeout_s = self.chat.request_timeout_s
        t_batch = time.perf_counter()
        async with httpx.AsyncClient(
            limits=limits, timeout=httpx.Timeout(timeout_s, connect=10.0)
        ) as client:

            async def client_loop() -> None:
                for index in pending:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    video = self.videos[index % len(self.videos)]
                    record = Record(path, concurrency, index, video.name)
                    record.start_s = time.perf_counter() - t_batch
                    limit = min(timeout_s, remaining)
                    try:
                        await asyncio.wait_for(self.request(client, path, record), limit)
                    except (asyncio.TimeoutError, TimeoutError):
                        record.ok = False
                        # Cut by the run's deadline, not by the request's own limit.
                        record.error = "timeout" if limit == timeout_s else "cancelled"
                    records.append(record)
                    on_done(record)

            await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        duration = time.perf_counter() - t_batch
        return sorted(records, key=lambda r: r.index), duration

    async def upload_all(self) -> None:
        """Uploads every video once, untimed: the files the second question is about."""
        self.stored.clear()
        self.bodies = {k: v for k, v in self.bodies.items() if k[0] != SECOND_QUESTION}
        async with httpx.AsyncClient(timeout=self.chat.request_timeout_s) as client:
            for video in self.videos:
                response = await self._post_file(client, video)
                if response.status_code != 200:
                    raise RuntimeError(
                        f"uploading {video.name} for the second question: HTTP "
                        f"{response.status_code} {response.text[:300]}"
                    )
                file_id = response.json()["id"]
                self.uploaded.append(file_id)
                self.stored[video.name] = file_id

    async def delete_uploads(self) -> None:
        if not self.uploaded or not self.target.gateway_url:
            return
        async with httpx.AsyncClient(timeout=30) as client:
            for file_id in self.uploaded:
                try:
                    await client.delete(
                        f"{self.target.gateway_url}/v1/files/{file_id}",
                        headers=self.target.headers,
                    )
                except httpx.HTTPError:
                    pass
        self.uploaded.clear()
