"""Batches are durable and exactly once, on SQLite and a real PostgreSQL: a gateway
SIGKILLed mid-batch and started again finishes the batch with every custom_id once in the
output (its lines in flight when it died run again: their claims expire), and two gateway
processes on one PostgreSQL share one batch's lines, each line written once, both
answering for the batch. A stand-in engine that takes its time answers the lines."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
from batch_helpers import (
    chat_line,
    create_batch,
    echo_engine,
    file_lines,
    get_batch,
    jsonl,
    upload_batch,
    wait_batch,
    wait_completed,
)
from servers import free_port, start_gateway, stop

from server.db import Database

LINES = 16
QUICK = ["--batch-lease-s", "2", "--batch-retry-backoff-s", "0.1", "--decode-workers", "1"]


def test_a_line_run_twice_is_written_once(database: str) -> None:
    """Claims at the rows: a claim that expired (its gateway stalled or died) is taken
    over; the first claim's late result is then refused, the second's written and counted
    once."""
    import time

    from server.batches import objects as o
    from server.batches import store
    from server.batches.validate import Line
    from server.db.models import Batch

    db = Database(database)
    db.migrate()
    now = time.time()
    row = Batch(id="batch_t", owner="anonymous", endpoint=o.ENDPOINT, input_file_id="file-x",
                completion_window="24h", status=o.VALIDATING, created_at=now,
                expires_at=now + 60, total=0, completed=0, failed=0)  # fmt: skip
    db.call(store.add, row)
    assert db.call(store.claim_batch, "batch_t", "h1", 30, o.VALIDATING, o.VALIDATING)
    assert not db.call(store.claim_batch, "batch_t", "h2", 30, o.VALIDATING, o.VALIDATING)
    lines = [Line(1, "a", "{}"), Line(2, "b", "{}")]
    assert db.call(store.start, "batch_t", "h1", lines, []) == o.IN_PROGRESS
    first = db.call(store.claim_lines, "batch_t", "h1", 0.2, 1)
    assert [x[1] for x in first] == ["a"]
    assert [x[1] for x in db.call(store.claim_lines, "batch_t", "h2", 0.2, 5)] == ["b"]
    time.sleep(0.3)  # both claims expire (neither gateway renewed them)
    second = db.call(store.claim_lines, "batch_t", "h2", 30, 5)
    assert [x[1] for x in second] == ["a", "b"]
    assert db.call(store.claim_lines, "batch_t", "h1", 30, 5) == []  # live claims stay
    result = {"response": {"status_code": 200}}
    assert not db.call(store.finish_line, "batch_t", 1, first[0][3], o.DONE, result)
    assert db.call(store.finish_line, "batch_t", 1, second[0][3], o.DONE, result)
    assert not db.call(store.finish_line, "batch_t", 1, second[0][3], o.DONE, result)
    assert db.call(store.get, "batch_t", None).completed == 1
    assert db.call(store.unfinished, "batch_t") == 1  # "b", still running
    # the results read a page at a time (as a batch's files are written): each line once
    pages, after = [], -1
    while page := db.call(store.results, "batch_t", after, 1):
        pages.append([row[1] for row in page])
        after = page[-1][0]
    assert pages == [["a"], ["b"]]
    db.close()


def _output_ids(base: str, batch: dict) -> list[str]:
    return [x["custom_id"] for x in file_lines(base, batch["output_file_id"])]


def test_a_gateway_killed_mid_batch_resumes_it_exactly_once(database: str, tmp_path: Path) -> None:
    files = tmp_path / "files"
    extra = [*QUICK, "--database-url", database, "--batch-concurrency", "3"]
    with echo_engine(delay_s=0.4) as (upstream, echo):
        port = free_port()
        first = start_gateway(upstream, port, files, tmp_path / "first.log", extra)
        base = f"http://127.0.0.1:{port}"
        try:
            file_id = upload_batch(base, jsonl([chat_line(f"l{k}") for k in range(LINES)]))
            batch_id = create_batch(base, file_id.json()["id"])["id"]
            before = wait_completed(base, batch_id, 4, seconds=60)
            assert before["status"] == "in_progress", before
            # kill it just after a line reached the engine: that line is in flight (0.4 s)
            asked, deadline = len(echo.seen), time.monotonic() + 30
            while len(echo.seen) == asked and time.monotonic() < deadline:
                time.sleep(0.005)
        finally:
            first.kill()  # SIGKILL: no clean-up, its claims stay until they expire
            first.wait()
        asked_before = len(echo.seen)
        port = free_port()
        second = start_gateway(upstream, port, files, tmp_path / "second.log", extra)
        base = f"http://127.0.0.1:{port}"
        try:
            batch = wait_batch(base, batch_id, seconds=120)
            assert batch["status"] == "completed", batch
            assert batch["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
            ids = _output_ids(base, batch)
            assert sorted(ids) == sorted(f"l{k}" for k in range(LINES))  # each exactly once
            assert batch["error_file_id"] is None
        finally:
            stop(second)
    # the lines in flight when the first one died were asked again
    asked = Counter(text.split()[-1] for text in echo.seen)
    assert asked_before < len(echo.seen) and max(asked.values()) >= 2


def test_two_gateways_on_one_postgres_share_a_batch(postgres: object, tmp_path: Path) -> None:
    database = postgres.new_database()  # type: ignore[attr-defined]
    files = tmp_path / "files"  # one volume and one database, as replicas share them
    extra = [*QUICK, "--database-url", database, "--batch-concurrency", "2"]
    with echo_engine(delay_s=0.3) as (upstream, echo):
        bases, procs = [], []
        try:
            for name in ("a", "b"):
                port = free_port()
                log = tmp_path / f"{name}.log"
                procs.append(start_gateway(upstream, port, files, log, extra))
                bases.append(f"http://127.0.0.1:{port}")
            lines = [chat_line(f"l{k}") for k in range(24)]
            file_id = upload_batch(bases[0], jsonl(lines)).json()["id"]
            batch_id = create_batch(bases[1], file_id)["id"]
            batch = wait_batch(bases[0], batch_id, seconds=120)
            assert batch["status"] == "completed", batch
            assert get_batch(bases[1], batch_id) == batch
            ids = _output_ids(bases[1], batch)
            assert sorted(ids) == sorted(f"l{k}" for k in range(24))
            # both ran lines: each replica's own count
            done = [_completed_here(base) for base in bases]
            assert all(count > 0 for count in done) and sum(done) == 24, done
            assert len(echo.seen) == 24  # no line asked twice while both lived
        finally:
            for proc in procs:
                stop(proc)


def _completed_here(base: str) -> float:
    text = httpx.get(base + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('arc_gateway_batch_lines_total{outcome="completed"}'):
            return float(line.split()[-1])
    raise AssertionError("no batch metric")
