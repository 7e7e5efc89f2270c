"""The gateway's database on both backends: the migrations build what the models say, two
gateways starting at once on one fresh database both come up, two gateways on one
PostgreSQL hold one key's concurrency limit between them (and a SIGKILLed one's requests
free up), authentication turns on with the first key, and an open gateway is refused a
public address."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from servers import free_port, start_gateway, stop, wait_until
from test_gateway_keys import (
    LEASE_TTL_S,
    Deployment,
    _Upstream,
    _wait_for,
    ask,
    assert_openai_error,
    create_key,
    quick_key,
    upstream,  # noqa: F401 (the fixture)
)

from server.db import Base, Database
from server.files import FileStore
from server.keys.auth import check_bind


def test_migrations_build_what_the_models_describe(database: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    db = Database(database)
    try:
        assert db.migrate()[0] is None and db.migrate()[0] == db.revision()
        with db.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        # A model changed without its migration shows here.
        assert differences == []
    finally:
        db.close()


def test_two_processes_migrating_at_once(database: str) -> None:
    code = (
        "import sys; from server.db import Database; "
        "db = Database(sys.argv[1]); print(db.migrate()[1])"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, database], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    results = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), results
    assert len({out for out, _ in results}) == 1


def test_two_gateways_on_one_postgres_hold_one_keys_concurrency(
    upstream: str,  # noqa: F811
    postgres: object,
    tmp_path: Path,
) -> None:
    database = postgres.new_database()  # type: ignore[attr-defined]
    ports = [free_port(), free_port()]
    deployment = Deployment(database, "", tmp_path, {})
    # Both start at once on the fresh database: one migrates, the other waits for it.
    with ThreadPoolExecutor(2) as pool:
        procs = list(
            pool.map(
                lambda port: start_gateway(
                    upstream,
                    port,
                    tmp_path / "files",
                    tmp_path / f"gateway-{port}.log",
                    ["--database-url", database, "--lease-ttl-s", str(LEASE_TTL_S)],
                ),
                ports,
            )
        )
    deployment.procs = procs
    headers = quick_key(database, "shared", concurrent=2)
    first, second = (f"http://127.0.0.1:{port}" for port in ports)
    _Upstream.gate.clear()
    try:
        with ThreadPoolExecutor(2) as pool:
            seen = len(_Upstream.received)
            held = [pool.submit(ask, base, headers) for base in (first, second)]
            _wait_for(lambda: len(_Upstream.received) >= seen + 2)
            for base in (first, second):  # one in flight on each: the key's two
                assert_openai_error(ask(base, headers), 429, "rate_limit_exceeded")
            # The first gateway dies with its request: its lease outlives it a little
            # (the key's two places: the dead one's, and the one held on the second)...
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(30)
            killed_at = time.monotonic()
            assert_openai_error(ask(second, headers), 429, "rate_limit_exceeded")

            def gets_in() -> bool:  # admitted: then held upstream (the read times out)
                try:
                    return ask(second, headers, timeout=2).status_code != 429
                except httpx.ReadTimeout:
                    return True

            # ...then expires, and its place is free again.
            _wait_for(gets_in, 30)
            assert time.monotonic() - killed_at < LEASE_TTL_S + 6
            _Upstream.gate.set()
            assert held[1].result(60).status_code == 200
    finally:
        _Upstream.gate.set()
        for proc in procs:
            if proc.poll() is None:
                stop(proc)


def test_authentication_turns_on_with_the_first_key(upstream: str, tmp_path: Path) -> None:  # noqa: F811
    """The quick start is open on loopback; the first key (even revoked) closes it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_gateway(upstream, port, tmp_path / "files", tmp_path / "gateway.log")
    try:
        open_mode = {"Authorization": "Bearer none"}  # what the README's clients send
        assert httpx.get(base + "/v1/files", headers=open_mode, timeout=30).status_code == 200
        assert ask(base, {}).status_code == 200
        database = f"sqlite:///{tmp_path / 'files' / 'gateway.db'}"
        secret = create_key(database, "first")
        reply = httpx.get(base + "/v1/files", headers=open_mode, timeout=30)
        assert_openai_error(reply, 401, "invalid_api_key")
        assert_openai_error(ask(base, {}), 401, "invalid_api_key")
        key = {"Authorization": f"Bearer {secret}"}
        assert httpx.get(base + "/v1/files", headers=key, timeout=30).status_code == 200
    finally:
        stop(proc)


def test_an_open_gateway_is_refused_a_public_address(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "server.cli", "--host", "0.0.0.0", "--files-dir"]
    done = subprocess.run(
        [*command, str(tmp_path / "files")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--insecure-no-auth" in done.stderr
    assert "arc-gateway keys create" in done.stderr
    for allowed in ((True, False), (False, True)):
        check_bind("0.0.0.0", *allowed)
    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_bind(loopback, False, False)
    with pytest.raises(RuntimeError):
        check_bind("::", False, False)
    # An admin key from a secret file is a key.
    secret_file = tmp_path / "admin-key"
    secret_file.write_text("sk-admin-from-a-secret\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            *command, str(tmp_path / "files"), "--host", "127.0.0.1", "--port", str(port),
            "--admin-key-file", str(secret_file), "--upstream-url", "http://127.0.0.1:9",
        ],
        stdout=(tmp_path / "admin.log").open("w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(f"http://127.0.0.1:{port}/health", proc, tmp_path / "admin.log", 120)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/v1/files", timeout=30).status_code == 401
        admin = {"Authorization": "Bearer sk-admin-from-a-secret"}
        assert httpx.get(base + "/v1/files", headers=admin, timeout=30).status_code == 200
    finally:
        stop(proc)


def test_a_store_from_before_the_database_is_taken_in(tmp_path: Path) -> None:
    folder = tmp_path / ("file-" + "a" * 24)
    folder.mkdir()
    (folder / "source").write_bytes(b"v" * 100)
    meta = {
        "id": folder.name, "filename": "old.mp4", "purpose": "user_data", "bytes": 100,
        "created_at": int(time.time()), "expires_at": int(time.time()) + 3600,
        "video": {"frames": 2},
    }  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(meta))
    store = FileStore(tmp_path, budget_bytes=10**9, ttl_s=3600)
    store.sweep()
    stored = store.get(folder.name)
    assert stored.owner == "anonymous" and stored.filename == "old.mp4"
    assert [f.id for f in store.list("anonymous")] == [folder.name]
    assert store.list("key-0000") == []
    with pytest.raises(Exception) as err:
        store.get(folder.name, "key-0000")
    assert getattr(err.value, "status_code", None) == 404
