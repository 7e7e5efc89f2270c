"""The Batch API on a real gateway in front of a stand-in engine (answers that echo the
question, failures on cue): validation, the lines' outcomes in the output and error
files, retries, cancel, expiry, other keys, the input file's bounds, and interactive
requests answering while a batch runs. The state is SQLite here; PostgreSQL, a gateway
killed mid-batch and two replicas are in test_batches_durable.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from batch_helpers import (
    Echo,
    auth,
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
from servers import create_key, free_port, start_gateway, stop

from server.priority import BATCH

FAST = ["--batch-retries", "2", "--batch-retry-backoff-s", "0.1", "--decode-workers", "1"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Echo, str, str, str]]:
    """(gateway URL, the stand-in's record, the keys of alice, bob and carol: one request
    at a time)."""
    folder = tmp_path_factory.mktemp("batches")
    files = folder / "files"
    alice = create_key(str(files), "alice")
    bob = create_key(str(files), "bob")
    carol = create_key(str(files), "carol", "--concurrent", "1")
    with echo_engine(delay_s=0.05) as (upstream, echo):
        port = free_port()
        extra = [*FAST, "--batch-concurrency", "2", "--batch-max-lines", "20",
                 "--batch-max-line-mb", "0.01"]  # fmt: skip
        proc = start_gateway(upstream, port, files, folder / "gateway.log", extra)
        try:
            yield f"http://127.0.0.1:{port}", echo, alice, bob, carol
        finally:
            stop(proc)


def test_a_batch_answers_each_line_once_good_to_output_failures_to_errors(stack) -> None:
    base, echo, alice, *_ = stack
    lines = [
        chat_line("a"),
        chat_line("two-messages", messages=[{"role": "user", "content": "x"}] * 2),
        chat_line("b", "fail-twice b"),
        chat_line("down", "fail-always"),
        chat_line("c"),
    ]
    uploaded = upload_batch(base, jsonl(lines), alice)
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["purpose"] == "batch"
    created = create_batch(base, uploaded.json()["id"], alice, metadata={"job": "tags"})
    assert created["status"] == "validating" and created["object"] == "batch"
    assert created["metadata"] == {"job": "tags"} and created["expires_at"] > created["created_at"]
    batch = wait_batch(base, created["id"], key=alice)
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {"total": 5, "completed": 3, "failed": 2}
    for name in ("in_progress_at", "finalizing_at", "completed_at"):
        assert batch[name] >= batch["created_at"], name
    assert batch["failed_at"] is None and batch["cancelled_at"] is None

    out = file_lines(base, batch["output_file_id"], alice)
    assert [x["custom_id"] for x in out] == ["a", "b", "c"]
    for item in out:
        assert item["id"].startswith("batch_req_") and item["error"] is None
        assert item["response"]["status_code"] == 200
        assert item["response"]["request_id"]
        answer = item["response"]["body"]["choices"][0]["message"]["content"]
        assert item["custom_id"] in answer
    # the batch's usage sums its answers' (a line answered after retries counted once)
    usages = [x["response"]["body"]["usage"] for x in out]
    assert batch["usage"]["input_tokens"] == sum(u["prompt_tokens"] for u in usages) > 0
    assert batch["usage"]["output_tokens"] == sum(u["completion_tokens"] for u in usages) > 0
    assert batch["usage"]["total_tokens"] == sum(u["total_tokens"] for u in usages)
    errors = {x["custom_id"]: x for x in file_lines(base, batch["error_file_id"], alice)}
    assert set(errors) == {"two-messages", "down"}
    refused = errors["two-messages"]["response"]
    assert refused["status_code"] == 400
    assert refused["body"]["error"]["code"] == "single_user_message"
    assert errors["down"]["response"] is None
    assert "after 3 tries" in errors["down"]["error"]["message"]
    # retried: "b" failed twice then answered; "down" tried 1 + 2 retries
    assert sum("fail-twice b" in x for x in echo.seen) == 3
    assert sum("fail-always" in x for x in echo.seen) == 3
    # lines go to the engine behind interactive requests
    assert BATCH in echo.priorities

    info = httpx.get(f"{base}/v1/files/{batch['output_file_id']}", headers=auth(alice)).json()
    assert info["purpose"] == "batch_output"


def test_a_file_with_bad_lines_fails_with_openai_errors(stack) -> None:
    base, _, alice, *_ = stack
    lines = [
        chat_line("ok"),
        "{not json",
        chat_line("ok"),  # duplicate custom_id
        {**chat_line("x"), "url": "/v1/embeddings"},
        {**chat_line("y"), "method": "GET"},
        chat_line("z", temperature="hot"),
        chat_line("f", messages=[{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": "file-" + "0" * 24}},
            {"type": "text", "text": "what?"}]}]),
        {"method": "POST", "url": "/v1/chat/completions", "body": {}},
    ]  # fmt: skip
    file_id = upload_batch(base, jsonl(lines), alice).json()["id"]
    batch = wait_batch(base, create_batch(base, file_id, alice)["id"], key=alice)
    assert batch["status"] == "failed" and batch["failed_at"]
    assert batch["output_file_id"] is None and batch["in_progress_at"] is None
    errors = batch["errors"]
    assert errors["object"] == "list"
    found = {e["line"]: e["code"] for e in errors["data"]}
    assert found == {
        2: "invalid_json_line",
        3: "duplicate_custom_id",
        4: "invalid_url",
        5: "invalid_method",
        6: "invalid_request",
        7: "file_not_found",
        8: "missing_required_parameter",
    }
    assert next(e for e in errors["data"] if e["line"] == 6)["param"] == "body.temperature"


def test_the_create_request_is_checked(stack) -> None:
    base, _, alice, *_ = stack
    file_id = upload_batch(base, jsonl([chat_line("a")]), alice).json()["id"]
    for change, param in (
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
    ):
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                "completion_window": "24h", **change}  # fmt: skip
        response = httpx.post(base + "/v1/batches", json=body, headers=auth(alice))
        assert response.status_code == 400 and response.json()["error"]["param"] == param
    body = {"input_file_id": "file-" + "1" * 24, "endpoint": "/v1/chat/completions",
            "completion_window": "24h"}  # fmt: skip
    assert httpx.post(base + "/v1/batches", json=body, headers=auth(alice)).status_code == 404


def test_another_key_cannot_see_or_cancel_a_batch_or_its_files(stack) -> None:
    base, _, alice, bob, _ = stack
    file_id = upload_batch(base, jsonl([chat_line("a")]), alice).json()["id"]
    batch = wait_batch(base, create_batch(base, file_id, alice)["id"], key=alice)
    assert batch["status"] == "completed"
    for method, path in (
        ("GET", f"/v1/batches/{batch['id']}"),
        ("POST", f"/v1/batches/{batch['id']}/cancel"),
        ("GET", f"/v1/files/{batch['output_file_id']}/content"),
        ("GET", f"/v1/files/{file_id}/content"),
    ):
        assert httpx.request(method, base + path, headers=auth(bob)).status_code == 404, path
    listed = httpx.get(base + "/v1/batches", headers=auth(bob)).json()
    assert batch["id"] not in [b["id"] for b in listed["data"]]
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions",
            "completion_window": "24h"}  # fmt: skip
    assert httpx.post(base + "/v1/batches", json=body, headers=auth(bob)).status_code == 404
    assert httpx.get(f"{base}/v1/batches/{batch['id']}").status_code == 401


def test_list_pages_newest_first(stack) -> None:
    base, _, _, bob, _ = stack
    file_id = upload_batch(base, jsonl([chat_line("a")]), bob).json()["id"]
    ids = [create_batch(base, file_id, bob)["id"] for _ in range(3)]
    first = httpx.get(base + "/v1/batches", params={"limit": 2}, headers=auth(bob)).json()
    assert first["object"] == "list" and first["has_more"] is True
    assert [b["id"] for b in first["data"]] == ids[::-1][:2]
    assert first["first_id"] == ids[2] and first["last_id"] == ids[1]
    rest = httpx.get(
        base + "/v1/batches", params={"limit": 2, "after": first["last_id"]}, headers=auth(bob)
    ).json()
    assert [b["id"] for b in rest["data"]] == [ids[0]] and rest["has_more"] is False
    for batch_id in ids:
        assert wait_batch(base, batch_id, key=bob)["status"] == "completed"


def test_a_keys_limits_pace_its_lines_without_failing_them(stack) -> None:
    """carol may run one request at a time; the gateway runs two lines at once: the
    second waits its turn (429s waited out), none fails."""
    base, *_, carol = stack
    file_id = upload_batch(base, jsonl([chat_line(f"p{k}") for k in range(4)]), carol)
    batch = wait_batch(base, create_batch(base, file_id.json()["id"], carol)["id"], key=carol)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
    metrics = httpx.get(base + "/metrics").text
    assert 'arc_gateway_batch_lines_total{outcome="paced"} 0.0' not in metrics


def test_the_input_file_is_bounded(stack) -> None:
    base, _, alice, *_ = stack
    many = upload_batch(base, jsonl([chat_line(str(k)) for k in range(21)]), alice)
    assert many.status_code == 413 and many.json()["error"]["code"] == "batch_too_many_lines"
    long = upload_batch(base, jsonl([chat_line("a", "x" * 20000)]), alice)
    assert long.status_code == 413 and long.json()["error"]["code"] == "batch_line_too_long"


def test_cancel_stops_new_lines_and_keeps_the_finished(tmp_path: Path) -> None:
    with echo_engine(delay_s=0.5) as (upstream, echo):
        port = free_port()
        extra = [*FAST, "--batch-concurrency", "1"]
        proc = start_gateway(upstream, port, tmp_path / "files", tmp_path / "gw.log", extra)
        base = f"http://127.0.0.1:{port}"
        try:
            file_id = upload_batch(base, jsonl([chat_line(f"l{k}") for k in range(20)])).json()
            batch_id = create_batch(base, file_id["id"])["id"]
            assert wait_completed(base, batch_id, 1, 30)["status"] == "in_progress"
            # interactive requests answer while the batch runs
            chat = httpx.post(
                base + "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "live"}], "max_tokens": 4},
                timeout=30,
            )
            assert chat.status_code == 200, chat.text
            cancelled = httpx.post(f"{base}/v1/batches/{batch_id}/cancel", timeout=30).json()
            assert cancelled["status"] in ("cancelling", "cancelled")
            assert cancelled["cancelling_at"] is not None
            batch = wait_batch(base, batch_id, seconds=30)
            assert batch["status"] == "cancelled" and batch["cancelled_at"]
            done = batch["request_counts"]["completed"]
            assert 1 <= done < 20 and batch["request_counts"]["total"] == 20
            out = file_lines(base, batch["output_file_id"])
            assert len(out) == done and len({x["custom_id"] for x in out}) == done
            asked = len(echo.seen)
            time.sleep(1.5)  # nothing more is asked
            assert len(echo.seen) == asked
            again = httpx.post(f"{base}/v1/batches/{batch_id}/cancel", timeout=30)
            assert again.status_code == 200 and again.json()["status"] == "cancelled"
        finally:
            stop(proc)


def test_a_batch_waits_while_interactive_requests_come_back_to_back(tmp_path: Path) -> None:
    """--batch-busy-concurrency 0: no line starts while interactive requests are in flight
    or ended under --batch-yield-s ago; the batch runs once they pause."""
    with echo_engine(delay_s=0.2) as (upstream, echo):
        port = free_port()
        extra = [*FAST, "--batch-concurrency", "4", "--batch-busy-concurrency", "0",
                 "--batch-yield-s", "1.5"]  # fmt: skip
        proc = start_gateway(upstream, port, tmp_path / "files", tmp_path / "gw.log", extra)
        base = f"http://127.0.0.1:{port}"
        try:
            file_id = upload_batch(base, jsonl([chat_line(f"l{k}") for k in range(6)])).json()

            def ask(k: int) -> None:
                chat = httpx.post(
                    base + "/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": f"live {k}"}]},
                    timeout=30,
                )
                assert chat.status_code == 200, chat.text

            ask(0)
            batch_id = create_batch(base, file_id["id"])["id"]
            for k in range(1, 10):  # about 2 s of back-to-back interactive requests
                ask(k)
                metrics = httpx.get(base + "/metrics", timeout=30).text
                assert "arc_gateway_batch_yielding 1.0" in metrics
            batch = wait_batch(base, batch_id, seconds=60)
            assert batch["status"] == "completed", batch
            assert batch["request_counts"]["completed"] == 6
            live = [k for k, text in enumerate(echo.seen) if text.startswith("live")]
            assert live == list(range(10)), echo.seen  # every batch line after the live ones
        finally:
            stop(proc)


def test_steady_interactive_traffic_does_not_starve_a_batch(tmp_path: Path) -> None:
    """After --batch-max-yield-s of interactive traffic without a pause, one line at a
    time runs beside it."""
    with echo_engine(delay_s=0.2) as (upstream, echo):
        port = free_port()
        extra = [*FAST, "--batch-concurrency", "4", "--batch-max-yield-s", "1"]
        proc = start_gateway(upstream, port, tmp_path / "files", tmp_path / "gw.log", extra)
        base = f"http://127.0.0.1:{port}"
        try:
            file_id = upload_batch(base, jsonl([chat_line(f"l{k}") for k in range(3)])).json()
            live = {"messages": [{"role": "user", "content": "live"}]}
            assert httpx.post(base + "/v1/chat/completions", json=live, timeout=30).is_success
            batch_id = create_batch(base, file_id["id"])["id"]
            deadline = time.monotonic() + 30
            while get_batch(base, batch_id)["request_counts"]["completed"] < 3:
                assert time.monotonic() < deadline, "the batch starved"
                chat = httpx.post(base + "/v1/chat/completions", json=live, timeout=30)
                assert chat.status_code == 200, chat.text
            # the batch finished beside the traffic, but waited its first second out (the
            # interactive request before it and those of that second came first)
            first_line = next(k for k, text in enumerate(echo.seen) if text != "live")
            assert first_line >= 2, echo.seen
        finally:
            stop(proc)


def test_a_batch_past_its_window_expires_with_what_finished(tmp_path: Path) -> None:
    with echo_engine(delay_s=0.4) as (upstream, _):
        port = free_port()
        extra = [*FAST, "--batch-concurrency", "1", "--batch-window-s", "2"]
        proc = start_gateway(upstream, port, tmp_path / "files", tmp_path / "gw.log", extra)
        base = f"http://127.0.0.1:{port}"
        try:
            file_id = upload_batch(base, jsonl([chat_line(f"l{k}") for k in range(20)])).json()
            batch = wait_batch(base, create_batch(base, file_id["id"])["id"], seconds=30)
            assert batch["status"] == "expired" and batch["expired_at"] >= batch["expires_at"]
            done = batch["request_counts"]["completed"]
            assert 1 <= done < 20
            out = file_lines(base, batch["output_file_id"])
            errors = file_lines(base, batch["error_file_id"])
            assert len(out) == done
            assert {x["error"]["code"] for x in errors} == {"batch_expired"}
            ids = [x["custom_id"] for x in out + errors]
            assert sorted(ids) == sorted(f"l{k}" for k in range(20))
        finally:
            stop(proc)
