"""Nothing shared between tenants, against the real engine (tiny model): the same video
asked about by two keys gets no prefix-cache hit (`usage.prompt_tokens_details.
cached_tokens`) across them, while a key's repeated question does; the multimodal cache
stays shared by content unless the engine trusts per-request processor kwargs (vLLM's
`vllm:mm_cache_hits` shows it: the README's residual bound); and the official `openai` client works
with a key, unchanged: files, chat, streaming, its error classes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from servers import free_port, start_gateway, stop
from test_gateway_keys import quick_key

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def gateway(
    engine: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    engine_url, _ = engine
    folder = tmp_path_factory.mktemp("tenancy")
    database = f"sqlite:///{folder / 'gateway.db'}"
    keys = {
        name: quick_key(database, f"tenant-{name}")["Authorization"].split()[1]
        for name in ("a", "b")
    }
    port = free_port()
    proc = start_gateway(
        engine_url,
        port,
        folder / "files",
        folder / "gateway.log",
        ["--database-url", database, "--decode-workers", "1"],
    )
    yield f"http://127.0.0.1:{port}", keys
    stop(proc)


def mm_cache_hits(engine_url: str) -> float:
    text = httpx.get(engine_url + "/metrics", timeout=30).text
    return sum(
        float(v)
        for v in re.findall(r"^vllm:mm_cache_hits_total\{[^}]*\} (\S+)$", text, re.MULTILINE)
    )


def test_prefix_and_multimodal_caches_stay_within_one_key(
    gateway: tuple[str, dict[str, str]], engine: tuple[str, Path], media_dir: Path
) -> None:
    base, keys = gateway
    clients = {
        name: openai.OpenAI(base_url=base + "/v1", api_key=secret, max_retries=0)
        for name, secret in keys.items()
    }
    clip = media_dir / "syn_short.mp4"
    files = {}
    for name, client in clients.items():
        with clip.open("rb") as handle:
            files[name] = client.files.create(file=handle, purpose="user_data").id

    def cached(name: str) -> int:
        reply = clients[name].chat.completions.create(
            model="arc",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": files[name]}},
                        {"type": "text", "text": "What happens?"},
                    ],
                }
            ],
            max_tokens=2,
            temperature=0,
        )
        details = reply.usage.prompt_tokens_details
        return (details.cached_tokens or 0) if details is not None else 0

    assert cached("a") == 0  # A's first question: its salt is new to the engine
    after_a = mm_cache_hits(engine[0])
    # B asks about the same bytes: no block of A's prefix...
    assert cached("b") == 0
    # ...though the processed item is found by its content (the documented residual:
    # without --isolate-mm-cache, the engine's input processing is shared).
    assert mm_cache_hits(engine[0]) > after_a
    # A again: its own cache serves the video's tokens (whole 128-token blocks).
    repeat = cached("a")
    assert repeat >= 128, repeat
    # And B's repeat hits its own.
    assert cached("b") >= 128


def test_the_openai_client_with_a_key(gateway: tuple[str, dict[str, str]], media_dir: Path) -> None:
    base, keys = gateway
    client = openai.OpenAI(base_url=base + "/v1", api_key=keys["a"], max_retries=0)
    other = openai.OpenAI(base_url=base + "/v1", api_key=keys["b"], max_retries=0)
    with (media_dir / "syn_short.mp4").open("rb") as handle:
        stored = client.files.create(file=handle, purpose="user_data")
    assert stored.id in [f.id for f in client.files.list()]
    assert stored.id not in [f.id for f in other.files.list()]
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(stored.id)
    with pytest.raises(openai.AuthenticationError) as err:
        openai.OpenAI(base_url=base + "/v1", api_key="sk-arc-wrong", max_retries=0).models.list()
    assert err.value.code == "invalid_api_key"
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "video_url", "video_url": {"url": stored.id}},
                {"type": "text", "text": "Describe it."},
            ],
        }
    ]
    reply = client.chat.completions.create(model="arc", messages=messages, max_tokens=3)
    assert reply.usage.prompt_tokens > 100
    chunks = list(
        client.chat.completions.create(
            model="arc",
            messages=messages,
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    # Without include_usage the client gets no usage chunk (the gateway's own is dropped).
    plain = list(
        client.chat.completions.create(model="arc", messages=messages, max_tokens=3, stream=True)
    )
    assert all(chunk.usage is None for chunk in plain) and plain[-1].choices
    client.files.delete(stored.id)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(stored.id)
