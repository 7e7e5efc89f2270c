"""The Batch API as the benchmark uses it, over HTTP (OpenAI's shapes): the lines written and
uploaded (purpose batch), the batch created and polled until it ends (each poll kept: the
progress curve), cancelled, and its output file read back and checked."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field

import httpx

ENDED = ("completed", "failed", "expired", "cancelled")


def batch_lines(bodies: list[dict], count: int, prefix: str) -> bytes:
    """`count` lines taking the chat bodies in turn; custom_id `PREFIX-00042`."""
    lines = []
    for i in range(count):
        body = dict(bodies[i % len(bodies)])
        body.pop("stream", None)  # a batch line's answer is one JSON body
        body.pop("stream_options", None)
        lines.append(
            json.dumps(
                {
                    "custom_id": f"{prefix}-{i:05d}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                }
            )
        )
    return ("\n".join(lines) + "\n").encode()


@dataclass
class BatchRun:
    """One batch as the client saw it; times in seconds from its create request."""

    id: str = ""
    lines: int = 0
    status: str = ""
    created_s: float = 0.0  # the create request's round trip
    ended_s: float | None = None  # the first poll that saw it ended
    completed: int = 0
    failed: int = 0
    polls: list[tuple[float, int, int, str]] = field(default_factory=list)  # t, done, failed
    server_times: dict = field(default_factory=dict)  # the batch object's *_at
    output: dict = field(default_factory=dict)  # the output file checked (check_output)
    errors: list[str] = field(default_factory=list)
    t0: float = 0.0  # time.perf_counter() of the create request

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def lines_per_s(self) -> float | None:
        """Lines completed per second, from the create request to the end seen."""
        if self.ended_s and self.completed:
            return self.completed / self.ended_s
        return None


class BatchClient:
    def __init__(self, base: str, headers: dict[str, str], poll_s: float):
        self.base = base
        self.headers = headers
        self.poll_s = poll_s
        self.client = httpx.AsyncClient(
            base_url=base, headers=headers, timeout=httpx.Timeout(120.0, connect=10.0)
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def _json(self, method: str, path: str, **kwargs: object) -> dict:
        response = await self.client.request(method, path, **kwargs)
        if response.status_code != 200:
            raise RuntimeError(
                f"{method} {path}: HTTP {response.status_code} {response.text[:300]}"
            )
        return response.json()

    async def create(self, content: bytes, name: str, run: BatchRun) -> None:
        """Uploads the lines (untimed) and creates the batch; `run` starts counting here."""
        uploaded = await self._json(
            "POST",
            "/v1/files",
            files={"file": (name, content, "application/jsonl")},
            data={"purpose": "batch"},
        )
        run.lines = content.count(b"\n")
        t0 = time.perf_counter()
        batch = await self._json(
            "POST",
            "/v1/batches",
            json={
                "input_file_id": uploaded["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"benchmark": "batch_bench"},
            },
        )
        run.created_s = time.perf_counter() - t0
        run.id, run.status, run.t0 = batch["id"], batch["status"], t0

    async def poll(self, run: BatchRun, until: str = "ended", timeout_s: float = 1800.0) -> dict:
        """Polls every `poll_s` until the batch ended (`until` "ended") or has a line
        finished ("started"), or once ("once"); the last batch object."""
        t0 = run.t0
        deadline = time.monotonic() + timeout_s
        while True:
            batch = await self._json("GET", f"/v1/batches/{run.id}")
            now = time.perf_counter() - t0
            counts = batch.get("request_counts") or {}
            run.completed = int(counts.get("completed") or 0)
            run.failed = int(counts.get("failed") or 0)
            run.status = batch["status"]
            run.polls.append((round(now, 3), run.completed, run.failed, run.status))
            if run.status in ENDED:
                run.ended_s = now
                run.server_times = {k: v for k, v in batch.items() if k.endswith("_at") and v}
                return batch
            if until == "once" or (until == "started" and run.completed + run.failed > 0):
                return batch
            if time.monotonic() > deadline:
                raise TimeoutError(f"batch {run.id} still {run.status} after {timeout_s:g} s")
            await asyncio.sleep(self.poll_s)

    async def cancel(self, run: BatchRun) -> None:
        await self._json("POST", f"/v1/batches/{run.id}/cancel")

    async def check_output(self, run: BatchRun, batch: dict) -> None:
        """Reads the output and error files: each custom_id at most once, the answers' status
        codes and tokens."""
        seen: dict[str, int] = {}
        statuses: dict[str, int] = {}
        tokens = 0
        for key in ("output_file_id", "error_file_id"):
            if not batch.get(key):
                continue
            response = await self.client.get(f"/v1/files/{batch[key]}/content")
            if response.status_code != 200:
                run.errors.append(f"{key}: HTTP {response.status_code}")
                continue
            for text in response.text.splitlines():
                if not text.strip():
                    continue
                line = json.loads(text)
                seen[line["custom_id"]] = seen.get(line["custom_id"], 0) + 1
                answer = line.get("response") or {}
                code = str(answer.get("status_code") or "error")
                statuses[code] = statuses.get(code, 0) + 1
                usage = (answer.get("body") or {}).get("usage") or {}
                tokens += int(usage.get("completion_tokens") or 0)
                if line.get("error") and len(run.errors) < 5:
                    run.errors.append(json.dumps(line["error"])[:300])
        run.output = {
            "custom_ids": len(seen),
            "duplicates": sum(1 for n in seen.values() if n > 1),
            "status_codes": statuses,
            "completion_tokens": tokens,
        }
