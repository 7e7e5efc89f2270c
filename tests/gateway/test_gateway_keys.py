"""API keys, each key's files its own, per-key limits and accounting: real `arc-gateway`
processes on loopback against SQLite and against a real PostgreSQL server, keys made with
the real `arc-gateway keys` command.

The model server is a stand-in (a known answer; held on cue to keep requests in flight,
the one fault a real engine cannot be made to show). That the answers and the caches of
the real engine stay per key is tests/gateway/test_gateway_tenancy.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from helpers import FakeUpstream, assert_error, data_url, serve, upload_video
from media_factory import make_clip
from servers import create_key, free_port, keys_command, start_gateway, stop

from server.app import create_app
from server.config import Settings

LEASE_TTL_S = 3


class _Upstream(FakeUpstream):
    """Answers every chat request with a known answer; records what it got; holds each
    request while `gate` is clear (requests in flight on cue)."""

    received: ClassVar[list[dict]] = []
    gate = threading.Event()

    def do_POST(self) -> None:
        body = self.read_json()
        type(self).received.append({"body": body, "headers": dict(self.headers)})
        type(self).gate.wait(60)
        self.send_completion("ok")


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    _Upstream.gate.set()
    with serve(_Upstream) as url:
        yield url
        _Upstream.gate.set()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "short": make_clip(folder / "short.mp4", seconds=2),
        "other": make_clip(folder / "other.mp4", seconds=2, size="128x72"),
        "long": make_clip(folder / "long.mp4", seconds=6),
    }


def quick_key(database: str, name: str, **limits: float) -> dict[str, str]:
    """A key made in process (what `keys create` does, without a Python start per key):
    its Authorization header."""
    from server.db import Database
    from server.keys.records import KeyLimits
    from server.keys.records import create_key as create

    db = Database(database)
    try:
        db.migrate()
        _, secret = db.call(create, name, KeyLimits(**limits))
    finally:
        db.close()
    return {"Authorization": f"Bearer {secret}"}


@dataclass
class Deployment:
    """One gateway (or more) on one database, with its keys."""

    database: str
    base: str
    folder: Path
    keys: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[key]}"}


def _database(backend: str, folder: Path, postgres_server: object | None) -> str:
    if backend == "sqlite":
        return f"sqlite:///{folder / 'gateway.db'}"
    return postgres_server.new_database()  # type: ignore[union-attr]


def start(deployment: Deployment, upstream: str, port: int) -> subprocess.Popen:
    proc = start_gateway(
        upstream,
        port,
        deployment.folder / "files",
        deployment.folder / f"gateway-{port}.log",
        [
            "--database-url", deployment.database, "--lease-ttl-s", str(LEASE_TTL_S),
            "--decode-workers", "1",
        ],
    )  # fmt: skip
    deployment.procs.append(proc)
    return proc


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def deployment(
    request: pytest.FixtureRequest, upstream: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp(f"keys-{request.param}")
    server = request.getfixturevalue("postgres") if request.param == "postgres" else None
    database = _database(request.param, folder, server)
    keys = {"a": create_key(database, "team-a"), "admin": create_key(database, "ops", "--admin")}
    for name in ("b", "revoked"):
        keys[name] = quick_key(database, f"team-{name}")["Authorization"].split()[1]
    assert keys_command(database, "revoke", "team-revoked").returncode == 0
    port = free_port()
    deployment = Deployment(database, f"http://127.0.0.1:{port}", folder, keys)
    start(deployment, upstream, port)
    yield deployment
    for proc in deployment.procs:
        stop(proc)


def ask(
    base: str,
    headers: dict[str, str],
    url: str | None = None,
    timeout: float = 120,
    **extra: object,
) -> httpx.Response:
    content: list[dict] = [{"type": "text", "text": "what happens?"}]
    if url is not None:
        content.insert(0, {"type": "video_url", "video_url": {"url": url}})
    return httpx.post(
        base + "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": content}], "max_tokens": 2, **extra},
        headers=headers,
        timeout=timeout,
    )


def upload(base: str, headers: dict[str, str], path: Path) -> httpx.Response:
    return upload_video(base, path, headers=headers)


def decodes(base: str) -> float:
    """Videos the gateway has decoded (its decode-time histogram's count)."""
    text = httpx.get(base + "/metrics", timeout=10).text
    found = re.search(r"^arc_gateway_decode_seconds_count ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def assert_openai_error(reply: httpx.Response, status: int, code: str) -> dict:
    """`assert_error`, and the error holds the four keys of OpenAI's and no other."""
    error = assert_error(reply, status, code)
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


# -- who may ask -------------------------------------------------------------------------------


def v1_routes() -> list[tuple[str, str]]:
    """Every /v1 route of the app, with a stand-in for its path parameters."""
    app = create_app(Settings(files_dir=str(Path(os.environ.get("TMPDIR", "/tmp")) / "routes")))
    found = []
    for route in app.routes:
        path = getattr(route, "path", "")
        if not path.startswith("/v1"):
            continue
        path = path.replace("{file_id}", "file-" + "0" * 24).replace("{model_id}", "arc")
        found += [(method, path) for method in sorted(route.methods - {"HEAD"})]
    assert len(found) >= 6, found
    return found


def test_every_v1_route_wants_a_valid_key(deployment: Deployment) -> None:
    wrong = {"Authorization": "Bearer sk-arc-" + "x" * 43}
    for method, path in v1_routes():
        for headers in ({}, wrong, deployment.auth("revoked"), {"Authorization": "Basic eDp4"}):
            reply = httpx.request(method, deployment.base + path, headers=headers, timeout=30)
            error = assert_openai_error(reply, 401, "invalid_api_key")
            assert error["type"] == "authentication_error", (method, path)
            assert reply.headers["www-authenticate"].startswith("Bearer")
    # The probes and the metrics stay open; a good key passes.
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(deployment.base + path, timeout=30).status_code == 200
    assert (
        httpx.get(deployment.base + "/v1/models", headers=deployment.auth("a")).status_code == 200
    )
    # The request log names the key, never a secret.
    log = "".join(p.read_text() for p in deployment.folder.glob("gateway-*.log"))
    assert not any(secret in log for secret in deployment.keys.values())


def test_a_keys_files_are_its_own(deployment: Deployment, clips: dict[str, Path]) -> None:
    base, a, b = deployment.base, deployment.auth("a"), deployment.auth("b")
    reply = upload(base, a, clips["short"])
    assert reply.status_code == 200, reply.text
    file_id = reply.json()["id"]
    missing = "file-" + "f" * 24
    # B gets what it would get for an id that does not exist: same status, same words.
    for method in ("GET", "DELETE"):
        theirs = httpx.request(method, f"{base}/v1/files/{file_id}", headers=b, timeout=30)
        absent = httpx.request(method, f"{base}/v1/files/{missing}", headers=b, timeout=30)
        assert_openai_error(theirs, 404, "file_not_found")
        assert (
            theirs.json()["error"]["message"].replace(file_id, missing)
            == (absent.json()["error"]["message"])
        )
    assert file_id not in httpx.get(base + "/v1/files", headers=b, timeout=30).text
    # Asking about it: the same 404, before anything is decoded or sent upstream.
    before, sent = decodes(base), len(_Upstream.received)
    for part in ({"video_url": {"url": file_id}, "type": "video_url"},):
        reply = httpx.post(
            base + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": [part, {"type": "text", "text": "?"}]}]},
            headers=b,
            timeout=30,
        )
        assert_openai_error(reply, 404, "file_not_found")
    assert decodes(base) == before and len(_Upstream.received) == sent
    # Still A's, whole; the admin key sees it too (and everyone's in the list).
    assert httpx.get(f"{base}/v1/files/{file_id}", headers=a, timeout=30).status_code == 200
    assert ask(base, a, file_id).status_code == 200
    admin = deployment.auth("admin")
    assert file_id in httpx.get(base + "/v1/files", headers=admin, timeout=30).text
    assert httpx.get(f"{base}/v1/files/{file_id}", headers=admin, timeout=30).status_code == 200
    listed = httpx.get(base + "/v1/files", headers=a, timeout=30).json()["data"]
    assert [f["id"] for f in listed] == [file_id]
    # A's delete works; then it is gone for everyone.
    assert httpx.delete(f"{base}/v1/files/{file_id}", headers=a, timeout=30).status_code == 200
    assert httpx.get(f"{base}/v1/files/{file_id}", headers=admin, timeout=30).status_code == 404


def test_upstream_requests_carry_the_keys_salt_and_session(
    deployment: Deployment, clips: dict[str, Path]
) -> None:
    base = deployment.base
    salts, sessions = {}, {}
    for key in ("a", "b"):
        file_id = upload(base, deployment.auth(key), clips["other"]).json()["id"]
        for _ in range(2):
            assert ask(base, deployment.auth(key), file_id).status_code == 200
            got = _Upstream.received[-1]
            salts.setdefault(key, set()).add(got["body"]["cache_salt"])
            assert "mm_processor_kwargs" not in got["body"]  # unless --isolate-mm-cache
            sessions.setdefault(key, set()).add(got["headers"]["x-arc-session"])
            assert "x-arc-file-id" not in {h.lower() for h in got["headers"]}
    # One salt and one session per key, none shared; the salt is no function of the id.
    assert all(len(s) == 1 for s in (*salts.values(), *sessions.values()))
    assert salts["a"] != salts["b"] and sessions["a"] != sessions["b"]
    salt = next(iter(salts["a"]))
    assert len(salt) == 43 and not set(salt) & set("@/\\") and "key-" not in salt


# -- limits ------------------------------------------------------------------------------------


def test_requests_per_minute(deployment: Deployment) -> None:
    headers = quick_key(deployment.database, "rpm", rpm=30)
    # A burst of 30, then one every 2 s: admitted = 30 + what the time taken refilled.
    t0 = time.monotonic()
    replies = []
    while len(replies) < 80 and (not replies or replies[-1].status_code == 200):
        replies.append(ask(deployment.base, headers))
    refused = replies.pop()
    admitted = len(replies)
    assert 30 <= admitted <= 30 + (time.monotonic() - t0) / 2 + 1
    assert replies[0].headers["x-ratelimit-limit-requests"] == "30"
    assert replies[0].headers["x-ratelimit-remaining-requests"] == "29"
    assert_openai_error(refused, 429, "rate_limit_exceeded")
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-limit-requests"] == "30"
    assert re.fullmatch(r"\d+(ms|s)|\d+m\d+s", refused.headers["x-ratelimit-reset-requests"])
    wait = int(refused.headers["retry-after"])
    assert 1 <= wait <= 3  # one request every 2 s
    time.sleep(wait)
    assert ask(deployment.base, headers).status_code == 200  # freed up
    # Another key is not affected.
    assert ask(deployment.base, deployment.auth("b")).status_code == 200


def test_concurrent_requests_then_free(deployment: Deployment, clips: dict[str, Path]) -> None:
    headers = quick_key(deployment.database, "conc", concurrent=1)
    _Upstream.gate.clear()
    try:
        with ThreadPoolExecutor(1) as pool:
            seen = len(_Upstream.received)
            held = pool.submit(ask, deployment.base, headers)
            _wait_for(lambda: len(_Upstream.received) > seen and not held.done())
            time.sleep(0.5)
            before = decodes(deployment.base)
            refused = ask(deployment.base, headers, data_url(clips["short"]))
            error = assert_openai_error(refused, 429, "rate_limit_exceeded")
            assert "1" in error["message"] and refused.headers["retry-after"] == "1"
            assert upload(deployment.base, headers, clips["short"]).status_code == 429
            assert decodes(deployment.base) == before  # refused before any decode
            _Upstream.gate.set()
            assert held.result(60).status_code == 200
    finally:
        _Upstream.gate.set()
    _wait_for(lambda: ask(deployment.base, headers).status_code == 200)


def test_video_seconds_per_day(deployment: Deployment, clips: dict[str, Path]) -> None:
    headers = quick_key(deployment.database, "daily", video_seconds_per_day=3)
    assert ask(deployment.base, headers, data_url(clips["short"])).status_code == 200
    assert ask(deployment.base, headers, data_url(clips["short"])).status_code == 200
    # (usage is written as each answer is released: give it a moment)
    _wait_for(lambda: ask(deployment.base, headers, data_url(clips["short"])).status_code == 429)
    before = decodes(deployment.base)
    refused = ask(deployment.base, headers, data_url(clips["short"]))
    error = assert_openai_error(refused, 429, "rate_limit_exceeded")
    assert "today" in error["message"] and int(refused.headers["retry-after"]) <= 86400
    assert decodes(deployment.base) == before
    # The next UTC day (the day's row moved back a day): allowed again.
    _shift_usage_days(deployment.database, "daily")
    assert ask(deployment.base, headers, data_url(clips["short"])).status_code == 200


def test_storage_quota_never_evicts_another_keys_files(
    deployment: Deployment, clips: dict[str, Path]
) -> None:
    base = deployment.base
    size = clips["long"].stat().st_size
    tiny = quick_key(deployment.database, "tiny", storage_bytes=size // 2)
    headers = quick_key(deployment.database, "bounded", storage_bytes=3 * 2**19)
    other = upload(base, deployment.auth("b"), clips["short"]).json()["id"]
    before = decodes(base)
    reply = upload(base, tiny, clips["long"])
    assert_openai_error(reply, 413, "file_exceeds_quota")
    assert decodes(base) == before  # refused before decoding
    kept = []
    for _ in range(10):
        reply = upload(base, headers, clips["short"])
        if reply.status_code != 200:
            break
        kept.append(reply.json()["id"])
    assert_openai_error(reply, 507, "storage_quota_exceeded")
    assert kept and "Retry-After" not in reply.headers
    listed = [f["id"] for f in httpx.get(base + "/v1/files", headers=headers).json()["data"]]
    assert sorted(listed) == sorted(kept)  # none of its own evicted either: refused, said why
    assert httpx.get(f"{base}/v1/files/{other}", headers=deployment.auth("b")).status_code == 200
    assert httpx.delete(f"{base}/v1/files/{kept[0]}", headers=headers).status_code == 200
    assert upload(base, headers, clips["short"]).status_code == 200  # freed up


def test_longest_video(deployment: Deployment, clips: dict[str, Path]) -> None:
    headers = quick_key(deployment.database, "short-only", max_duration_s=4)
    reply = ask(deployment.base, headers, data_url(clips["long"]))
    error = assert_openai_error(reply, 422, "video_too_long")
    assert re.match(
        r"the video is 6(\.\d)? s long; this API key takes at most 4 s \(the key's "
        r"--max-duration-s limit\)",
        error["message"],
    ), error
    assert error["param"] == "messages[0].content[0].video_url.url", error
    refused = upload(deployment.base, headers, clips["long"])
    assert assert_openai_error(refused, 422, "video_too_long")["param"] == "file"
    assert ask(deployment.base, headers, data_url(clips["short"])).status_code == 200
    # A stored file longer than the key allows (an admin's, or a limit lowered later).
    long_file = upload(deployment.base, deployment.auth("a"), clips["long"]).json()["id"]
    assert (
        keys_command(deployment.database, "limits", "team-a", "--max-duration-s", "4").returncode
        == 0
    )
    before = decodes(deployment.base)
    reply = ask(deployment.base, deployment.auth("a"), long_file)
    error = assert_openai_error(reply, 422, "video_too_long")
    assert error["param"] == "messages[0].content[0].video_url.url", error
    assert "this API key takes at most 4 s" in error["message"], error
    reply = ask(deployment.base, deployment.auth("a"), long_file, video={"start": 0, "end": 5})
    error = assert_openai_error(reply, 422, "video_too_long")
    assert error["message"].startswith("the clip asked about is 5 s long"), error
    reply = ask(deployment.base, deployment.auth("a"), long_file, video={"start": 0, "end": 3})
    assert reply.status_code == 200, reply.text  # a clip within the limit is fine
    assert (
        keys_command(deployment.database, "limits", "team-a", "--max-duration-s", "0").returncode
        == 0
    )
    assert decodes(deployment.base) >= before


# -- state that survives -----------------------------------------------------------------------


def test_usage_is_accounted_and_survives_a_kill(
    deployment: Deployment, upstream: str, clips: dict[str, Path]
) -> None:
    base = deployment.base
    a, b = deployment.auth("a"), deployment.auth("b")
    file_id = upload(base, a, clips["short"]).json()["id"]
    assert ask(base, a, file_id).status_code == 200
    _wait_for(lambda: _usage(deployment.database).get("team-a", {}).get("uploads", 0) >= 1)
    usage = _usage(deployment.database)["team-a"]
    assert usage["requests"] >= 1 and usage["prompt_tokens"] >= 1 and usage["frames"] >= 1
    assert usage["video_seconds"] >= 2 and usage["decode_seconds"] > 0
    # SIGKILL, then a new gateway on the same database and folder.
    proc = deployment.procs.pop()
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    port = int(base.rsplit(":", 1)[1])
    start(deployment, upstream, port)
    assert httpx.get(f"{base}/v1/files/{file_id}", headers=a, timeout=30).status_code == 200
    assert httpx.get(f"{base}/v1/files/{file_id}", headers=b, timeout=30).status_code == 404
    assert ask(base, a, file_id).status_code == 200
    reply = httpx.get(base + "/v1/models", headers=deployment.auth("revoked"), timeout=30)
    assert reply.status_code == 401
    _wait_for(lambda: _usage(deployment.database)["team-a"]["requests"] > usage["requests"])


def test_keys_usage_prints_a_table(deployment: Deployment) -> None:
    done = keys_command(deployment.database, "usage", "--since", "2000-01-01")
    assert done.returncode == 0 and "team-a" in done.stdout and "PROMPT" in done.stdout
    listing = keys_command(deployment.database, "list")
    assert "team-a" in listing.stdout and "sk-arc-" in listing.stdout
    assert not any(secret in listing.stdout for secret in deployment.keys.values())


# -- helpers ------------------------------------------------------------------------------------


def _wait_for(condition: Callable[[], object], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def _usage(database: str) -> dict[str, dict]:
    done = keys_command(database, "usage", "--json")
    assert done.returncode == 0, done.stderr
    return {row["name"]: row for row in map(json.loads, done.stdout.splitlines())}


def _shift_usage_days(database: str, name: str) -> None:
    from sqlalchemy import select, update

    from server.db import Database
    from server.db.models import ApiKey, DailyUsage

    db = Database(database)
    with db.transaction() as session:
        key_id = session.execute(select(ApiKey.id).where(ApiKey.name == name)).scalar_one()
        session.execute(
            update(DailyUsage).where(DailyUsage.key_id == key_id).values(day="2000-01-01")
        )
    db.close()
