"""A batch through the official `openai` client against a real gateway and the real
engine (tiny model): upload the JSONL, create, retrieve while it runs (an interactive
request answering meanwhile), list, download the output and error files and check them
line by line; a second batch cancelled through the client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from batch_helpers import chat_line, jsonl
from helpers import upload_video
from media_factory import make_clip
from openai import OpenAI
from servers import free_port, start_gateway, stop


@pytest.fixture(scope="module")
def gateway(engine: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("batches-engine")
    port = free_port()
    extra = ["--decode-workers", "1", "--batch-concurrency", "2"]
    proc = start_gateway(engine[0], port, folder / "files", folder / "gateway.log", extra)
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def _video_line(custom_id: str, video_id: str, question: str, **body: object) -> dict:
    content = [
        {"type": "video_url", "video_url": {"url": video_id}},
        {"type": "text", "text": question},
    ]
    return chat_line(custom_id, messages=[{"role": "user", "content": content}], **body)


def _wait(client: OpenAI, batch_id: str, statuses: tuple[str, ...], seconds: float = 600):
    deadline = time.monotonic() + seconds
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses or time.monotonic() > deadline:
            return batch
        time.sleep(0.5)


@pytest.mark.engine
def test_a_batch_of_good_and_bad_lines_through_the_openai_client(
    gateway: str, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", seconds=3, size="160x90")
    video_id = upload_video(gateway, clip).json()["id"]
    client = OpenAI(base_url=gateway + "/v1", api_key="unused", max_retries=0)
    schema = {
        "type": "object",
        "properties": {"tag": {"type": "string", "maxLength": 8}},
        "required": ["tag"],
        "additionalProperties": False,
    }
    lines = [
        _video_line("summary", video_id, "Summarize the video."),
        _video_line(
            "tags",
            video_id,
            "Tag this video as JSON.",
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "tags", "schema": schema, "strict": True},
            },
            max_tokens=40,
        ),
        chat_line("text-only", "What is a video?"),
        chat_line("two-turns", messages=[{"role": "user", "content": "a"}] * 2),
        chat_line("clip-without-video", video={"start": 1.0}),
    ]
    uploaded = client.files.create(file=("videos.jsonl", jsonl(lines)), purpose="batch")
    assert uploaded.purpose == "batch"
    created = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"library": "clips"},
    )
    assert created.status == "validating" and created.metadata == {"library": "clips"}
    running = _wait(client, created.id, ("in_progress", "completed", "failed"))
    assert running.status in ("in_progress", "completed"), running
    # interactive requests keep answering while the batch runs
    live = client.chat.completions.create(
        model="arc", messages=[{"role": "user", "content": "Hello?"}], max_tokens=4
    )
    assert live.choices[0].message.content is not None

    batch = _wait(client, created.id, ("completed", "failed", "expired", "cancelled"))
    assert batch.status == "completed", batch
    assert batch.request_counts.total == 5
    assert batch.request_counts.completed == 3 and batch.request_counts.failed == 2
    assert batch.completed_at and batch.in_progress_at and batch.finalizing_at
    assert created.id in [b.id for b in client.batches.list(limit=10)]

    output = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    assert [x["custom_id"] for x in output] == ["summary", "tags", "text-only"]
    usages = [x["response"]["body"]["usage"] for x in output]
    assert batch.usage is not None
    assert batch.usage.input_tokens == sum(u["prompt_tokens"] for u in usages)
    assert batch.usage.output_tokens == sum(u["completion_tokens"] for u in usages)
    for item in output:
        assert item["error"] is None and item["response"]["status_code"] == 200
        body = item["response"]["body"]
        assert body["object"] == "chat.completion" and body["choices"][0]["finish_reason"]
        assert isinstance(body["choices"][0]["message"]["content"], str)  # a tiny model's words
        assert body["usage"]["prompt_tokens"] > 0
    assert output[0]["response"]["body"]["usage"]["video"]["frames"] > 0
    tags = json.loads(output[1]["response"]["body"]["choices"][0]["message"]["content"])
    assert set(tags) == {"tag"} and isinstance(tags["tag"], str)

    errors = client.files.content(batch.error_file_id).text.splitlines()
    errors = {x["custom_id"]: x for x in map(json.loads, errors)}
    assert set(errors) == {"two-turns", "clip-without-video"}
    assert errors["two-turns"]["response"]["status_code"] == 400
    assert errors["two-turns"]["response"]["body"]["error"]["code"] == "single_user_message"
    assert errors["clip-without-video"]["response"]["body"]["error"]["code"] == "no_video"

    # a second batch, cancelled through the client
    many = [_video_line(f"v{k}", video_id, f"Question {k}?") for k in range(8)]
    second = client.files.create(file=("more.jsonl", jsonl(many)), purpose="batch")
    queued = client.batches.create(
        input_file_id=second.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    cancelling = client.batches.cancel(queued.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    cancelled = _wait(client, queued.id, ("cancelled",), seconds=120)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at
    assert cancelled.request_counts.completed < 8
    # the engine is free for the next request
    assert httpx.get(gateway + "/health", timeout=10).status_code == 200
