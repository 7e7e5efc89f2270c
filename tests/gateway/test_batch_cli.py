"""`arc-gateway batch ...` (server/batches/cli.py) as a user runs it: the real command in a
process of its own, against a real `arc-gateway` with API keys on (made by `arc-gateway keys
create`) in front of the session's real engine (tiny model).

submit (with --wait and --download), watch, show, list, cancel and make; the errors a user
meets (no key, a refused key, another key's batch, a gateway that is not there, a file that
is not JSONL) are one line on stderr and exit status 2; a batch that ends failed is 1.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from servers import create_key, free_port, start_gateway, stop

from server.batches import cli

pytestmark = pytest.mark.engine

CLIPS = ("syn_short.mp4", "w33698kgs05.mp4")


@dataclass
class Gateway:
    url: str
    key: str
    other_key: str
    folder: Path

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


@pytest.fixture(scope="module")
def gateway(
    engine: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("batch-cli")
    files = folder / "files"
    key = create_key(str(files), "batch-user")
    other = create_key(str(files), "someone-else")
    port = free_port()
    proc = start_gateway(engine[0], port, files, folder / "gateway.log", ["--decode-workers", "1"])
    yield Gateway(f"http://127.0.0.1:{port}", key, other, folder)
    stop(proc)


@pytest.fixture(scope="module")
def videos(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two short clips and a file that only claims to be a video."""
    folder = tmp_path_factory.mktemp("videos")
    for name in CLIPS:
        shutil.copyfile(media_dir / name, folder / name)
    (folder / "notes.txt").write_text("not a video, not looked at")
    return folder


def run(
    gateway: Gateway, *args: str, key: str | None = "default", timeout: float = 300
) -> subprocess.CompletedProcess:
    """`arc-gateway batch ARGS` with ARC_BASE_URL and ARC_API_KEY set as a user would."""
    env = {k: v for k, v in os.environ.items() if k not in (cli.KEY_ENV, cli.URL_ENV)}
    env[cli.URL_ENV] = gateway.url + "/v1"  # as the openai client takes it
    if key is not None:
        env[cli.KEY_ENV] = gateway.key if key == "default" else key
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "batch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """A failure is one line on stderr and status 2, no traceback."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def upload(gateway: Gateway, path: Path) -> str:
    with path.open("rb") as handle:
        reply = httpx.post(
            gateway.url + "/v1/files",
            files={"file": (path.name, handle, "video/mp4")},
            data={"purpose": "user_data"},
            headers=gateway.headers(),
            timeout=120,
        )
    reply.raise_for_status()
    return reply.json()["id"]


def line(custom_id: str, file_id: str, **extra: object) -> str:
    body = {
        "model": "arc",
        "max_tokens": 2,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": file_id}},
                    {"type": "text", "text": "What is happening?"},
                ],
            }
        ],
        **extra,
    }
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    )


@pytest.fixture(scope="module")
def file_id(gateway: Gateway, media_dir: Path) -> str:
    return upload(gateway, media_dir / "syn_short.mp4")


# ---------------------------------------------------------------------------------------
# without batches: help, and the errors met before any batch route


def test_help_explains_every_command(gateway: Gateway) -> None:
    done = run(gateway, "--help")
    assert done.returncode == 0, done.stderr
    for command in ("submit", "watch", "show", "list", "cancel", "make", "exit status"):
        assert command in done.stdout
    done = run(gateway, "submit", "--help")
    assert done.returncode == 0
    for option in ("--wait", "--download", "--url", "ARC_BASE_URL", "ARC_API_KEY"):
        assert option in done.stdout


def test_a_gateway_that_is_not_there(gateway: Gateway, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    message = one_error_line(run(gateway, "list", "--url", url))
    assert f"cannot reach the gateway at {url}" in message and "--url" in message


def test_a_file_that_is_not_jsonl_is_refused_before_upload(
    gateway: Gateway, tmp_path: Path
) -> None:
    bad = tmp_path / "lines.jsonl"
    bad.write_text('{"custom_id": "a"}\nnot json\n')
    message = one_error_line(run(gateway, "submit", str(bad)))
    assert f"{bad}:2: not JSON" in message
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert "no request in it" in one_error_line(run(gateway, "submit", str(empty)))
    missing = tmp_path / "missing.jsonl"
    assert "cannot read" in one_error_line(run(gateway, "submit", str(missing)))


def test_make_uploads_each_video_and_writes_a_line_each(
    gateway: Gateway, videos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lines.jsonl"
    done = run(
        gateway, "make", "--folder", str(videos), "--question", "Who speaks?",
        "--task", "qa", "--max-tokens", "4", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(text) for text in out.read_text().splitlines()]
    assert [entry["custom_id"] for entry in lines] == list(CLIPS)  # notes.txt left out
    for entry in lines:
        assert entry["method"] == "POST" and entry["url"] == "/v1/chat/completions"
        body = entry["body"]
        assert body["max_tokens"] == 4 and body["video"] == {"task": "qa"}
        video_part, text_part = body["messages"][0]["content"]
        assert text_part == {"type": "text", "text": "Who speaks?"}
        stored = httpx.get(
            f"{gateway.url}/v1/files/{video_part['video_url']['url']}",
            headers=gateway.headers(),
        )
        assert stored.status_code == 200 and stored.json()["filename"] == entry["custom_id"]
    assert "2 lines written" in done.stderr


def test_make_skips_a_file_the_gateway_refuses(gateway: Gateway, tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "broken.mp4").write_bytes(b"this is no video at all" * 10)
    done = run(gateway, "make", "--folder", str(folder), "--task", "summary")
    assert done.returncode == 1 and done.stdout == "", (done.stdout, done.stderr)
    assert "skipped" in done.stderr and "invalid_video" in done.stderr
    assert "0 lines written, 1 videos skipped" in done.stderr


def test_no_key_and_a_refused_key_say_what_to_do(gateway: Gateway, videos: Path) -> None:
    message = one_error_line(
        run(gateway, "make", "--folder", str(videos), "--question", "x", key=None)
    )
    assert "the gateway wants an API key: pass --api-key KEY or set ARC_API_KEY" in message
    message = one_error_line(
        run(gateway, "make", "--folder", str(videos), "--question", "x", key="sk-arc-wrong")
    )
    assert "refused the API key" in message


# ---------------------------------------------------------------------------------------
# with batches (the routes of server/batches/)


def test_submit_wait_download(gateway: Gateway, file_id: str, tmp_path: Path) -> None:
    lines = tmp_path / "lines.jsonl"
    lines.write_text(
        "\n".join(
            [
                line("first", file_id),
                line("second", file_id),
                # valid, and refused when it runs (400 single_user_message): the error file
                line("refused", file_id, messages=[{"role": "user", "content": "x"}] * 2),
            ]
        )
        + "\n"
    )
    results = tmp_path / "results"
    done = run(
        gateway, "submit", str(lines), "--wait", "--download", str(results), "--interval", "0.3",
        "--metadata", "project=cli-test",
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr)
    match = re.search(r"batch (batch_\w+): completed, 2 done, 1 failed of 3", done.stdout)
    assert match, done.stdout
    batch_id = match.group(1)
    # the progress bar on stderr (not a terminal: one line per status), then the files saved
    assert f"{batch_id} in_progress" in done.stderr or f"{batch_id} completed" in done.stderr
    assert re.search(r"\[[#-]+\] 3/3", done.stderr), done.stderr
    output = results / f"{batch_id}-output.jsonl"
    assert f"saved {output}" in done.stderr
    answers = [json.loads(text) for text in output.read_text().splitlines()]
    by_id = {answer["custom_id"]: answer for answer in answers}
    assert set(by_id) >= {"first", "second"} and len(answers) == len(by_id)
    for name in ("first", "second"):
        response = by_id[name]["response"]
        assert response["status_code"] == 200
        assert response["body"]["usage"]["completion_tokens"] == 2
    # the refused line is in the error file, with the chat endpoint's answer
    errors = results / f"{batch_id}-errors.jsonl"
    assert f"saved {errors}" in done.stderr
    (refused,) = [json.loads(text) for text in errors.read_text().splitlines()]
    assert refused["custom_id"] == "refused" and "refused" not in by_id
    assert refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"]["code"] == "single_user_message"
    # show, list: the same batch
    shown = run(gateway, "show", batch_id, "--json")
    assert shown.returncode == 0, shown.stderr
    batch = json.loads(shown.stdout)
    assert batch["status"] == "completed" and batch["metadata"] == {"project": "cli-test"}
    assert batch["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    for key in ("output_file_id", "error_file_id"):
        assert f"{key}: {batch[key]}" in done.stdout
    assert batch["usage"]["output_tokens"] == 4  # the two answers' tokens
    assert f"{batch['usage']['input_tokens']} in (" in done.stdout
    assert "4 out" in done.stdout
    listed = run(gateway, "list")
    assert listed.returncode == 0 and batch_id in listed.stdout, listed.stdout
    assert listed.stdout.splitlines()[0].split()[:2] == ["ID", "STATUS"]
    as_json = [json.loads(text) for text in run(gateway, "list", "--json").stdout.splitlines()]
    assert batch_id in {b["id"] for b in as_json}
    # watch of an ended batch: its summary at once
    watched = run(gateway, "watch", batch_id)
    assert watched.returncode == 0 and f"batch {batch_id}: completed" in watched.stdout


def test_submit_prints_the_id_then_cancel(gateway: Gateway, file_id: str, tmp_path: Path) -> None:
    lines = tmp_path / "many.jsonl"
    # enough work that it is still running when cancelled, a second later
    lines.write_text("\n".join(line(f"line-{i}", file_id, max_tokens=8) for i in range(300)) + "\n")
    done = run(gateway, "submit", str(lines))
    assert done.returncode == 0, done.stderr
    batch_id = done.stdout.strip()
    assert re.fullmatch(r"batch_\w+", batch_id), done.stdout
    assert f"arc-gateway batch watch {batch_id}" in done.stderr
    cancelled = run(gateway, "cancel", batch_id, "--wait", "--interval", "0.3")
    assert cancelled.returncode == 0, cancelled.stderr
    assert re.search(rf"batch {batch_id}: cancelled, \d+ done", cancelled.stdout), cancelled.stdout
    batch = json.loads(run(gateway, "show", batch_id, "--json").stdout)
    assert batch["status"] == "cancelled" and batch["cancelled_at"]
    assert batch["request_counts"]["completed"] < 300
    # another key sees no such batch, and cannot cancel it
    message = one_error_line(run(gateway, "cancel", batch_id, key=gateway.other_key))
    assert "HTTP 404" in message
    # watch exits 1 for a batch that did not complete
    assert run(gateway, "watch", batch_id).returncode == 1


def test_a_batch_that_fails_validation(gateway: Gateway, file_id: str, tmp_path: Path) -> None:
    lines = tmp_path / "dupes.jsonl"
    lines.write_text(line("same", file_id) + "\n" + line("same", file_id) + "\n")
    done = run(gateway, "submit", str(lines), "--wait", "--interval", "0.3")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert re.search(r"batch batch_\w+: failed", done.stdout), done.stdout
    assert "error line 2:" in done.stdout, done.stdout


def test_another_keys_batch_is_not_found(gateway: Gateway) -> None:
    message = one_error_line(run(gateway, "show", "batch_000000000000000000000000"))
    assert "HTTP 404" in message


# ---------------------------------------------------------------------------------------
# the progress display, fed batch objects (no gateway)


def test_progress_line_rate_and_eta() -> None:
    batch = {
        "id": "batch_x",
        "status": "in_progress",
        "in_progress_at": 1000,
        "request_counts": {"total": 100, "completed": 38, "failed": 2},
    }
    line_text = cli.progress_line(batch, 4.0, width=10)
    assert line_text.startswith("batch_x in_progress [####------] 40/100 (38 done, 2 failed)")
    assert line_text.endswith("4.00 lines/s  ETA 0:15")
    rate = cli.Rate(window_s=60)
    rate.add(0.0, 10)
    rate.add(5.0, 30)
    assert rate.per_s(batch, 1010.0) == pytest.approx(4.0)
    # one poll only: the batch's own average since it started
    assert cli.Rate().per_s(batch, 1010.0) == pytest.approx(4.0)


def test_display_in_a_log_writes_a_line_per_status() -> None:
    stream = io.StringIO()
    display = cli.Display(stream, log_every_s=3600)
    display.show("a 1/3", "in_progress")
    display.show("a 2/3", "in_progress")  # same status, too soon: not written
    display.show("a 3/3", "completed")
    assert stream.getvalue() == "a 1/3\na 3/3\n"
