"""The load benchmark's command line (benchmarks/load/cli.py), its run (benchmarks/load/run.py:
the sweep's order, a run cut short by Ctrl-C or by the duration limit) and its report files
(benchmarks/load/report.py, csvs.py, tables.py, plots.py), with a client that answers known
values instead of sending requests. The client itself is tested in test_load_client.py, the
whole benchmark on the real stack in test_benchmarks_load.py."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.load import cli, csvs, run
from benchmarks.load.client import ChatSettings, LoadClient, Target
from benchmarks.load.records import Record, Slo
from benchmarks.load.report import build_report, write_report
from benchmarks.load.run import RunState, Sweep
from benchmarks.load.videos import Video

REPORT_KEYS = [
    "benchmark", "format_version", "label", "started_at", "finished_at", "wall_s", "startup_s",
    "truncated", "interrupted", "command", "config", "slo", "environment", "stack", "paths",
    "videos", "gateway_overhead", "stages", "levels", "warmup", "requests", "warnings", "files",
]  # fmt: skip
ENVIRONMENT = {
    "cpu_model": "test CPU",
    "cpu_cores": 2,
    "cpu_cores_usable": 2,
    "memory_gib": 4.0,
    "load_average_at_start": [0.1, 0.1, 0.1],
    "gpu": {"nvidia_smi": None, "torch_cuda": None},
    "git": {"commit": "abc", "dirty": False},
}
VIDEOS = [Video("a.mp4", Path("a.mp4"), b"aa", 1.0), Video("b.mp4", Path("b.mp4"), b"bbb", 2.0)]


class KnownAnswers(LoadClient):
    """Answers every request at once with known times (the gateway paths a little slower,
    with a decode stage); Ctrl-C during the request numbered `stop_at`."""

    def __init__(self, stop_at: int | None = None):
        chat = ChatSettings("q", "qa", max_tokens=4, ignore_eos=True, request_timeout_s=30.0)
        target = Target("http://127.0.0.1:9", "http://127.0.0.1:9", "m", {})
        super().__init__(target, chat, VIDEOS, Slo(ttft_s=1.0, e2e_s=None, tpot_ms=None))
        self.sent = 0
        self.stop_at = stop_at
        self.deleted = 0

    async def request(self, client: object, path: str, record: Record) -> None:
        self.sent += 1
        if self.sent == self.stop_at:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C, as asyncio.run handles it
            await asyncio.sleep(30)
        gateway = path.startswith("gateway")
        record.headers_s = 0.3 if gateway else 0.2
        record.ttft_s, record.e2e_s = record.headers_s + 0.1, record.headers_s + 0.4
        record.decode_s = 0.1 if gateway else None
        record.engine_input_s = 0.1 if gateway else None
        record.output_tokens, record.prompt_tokens = 4, 100 if record.video == "a.mp4" else 200
        record.tpot_ms = 100.0
        record.ok, record.status = True, 200
        record.meets_slo = self.slo.met(record)

    async def upload_all(self) -> None:
        self.stored = {v.name: f"file-{v.name}" for v in self.videos}

    async def delete_uploads(self) -> None:
        self.deleted += 1


def arguments(tmp_path: Path, *extra: str) -> tuple[argparse.Namespace, list[str]]:
    argv = [
        "--paths", "direct,gateway-data-url,gateway-second-question", "--concurrency", "2,1",
        "--requests", "3", "--warmup", "1", "--videos", "a.mp4", "b.mp4", "--no-progress",
        "--out", str(tmp_path), *extra,
    ]  # fmt: skip
    return cli.parse_args(argv), argv


def state_for(args: argparse.Namespace) -> RunState:
    now = time.monotonic()
    return RunState(
        started_at="2026-01-01T00:00:00+00:00",
        t_start=now,
        deadline=now + args.duration_limit_s,
        environment=ENVIRONMENT,
        videos=VIDEOS,
        skipped=["c.mp4: 200 s > --max-video-s 30"],
        stack={"mode": "external", "gateway_url": "http://127.0.0.1:9"},
    )


def test_command_line_quick_defaults_and_checks() -> None:
    quick = cli.parse_args(["--quick"])
    assert (quick.concurrency, quick.requests, quick.max_tokens, quick.warmup) == ([1], 2, 2, 1)
    assert cli.parse_args(["--quick", "--requests", "5"]).requests == 5
    args = cli.parse_args(["--concurrency", "4,1,2,2", "--paths", "direct, gateway-upload"])
    assert args.concurrency == [1, 2, 4] and args.paths == ["gateway-upload", "direct"]
    assert cli.external_urls(args) == (None, None)
    for bad in (["--concurrency", "0,1"], ["--paths", "direct,elsewhere"], ["--requests", "0"]):
        with pytest.raises(SystemExit):
            cli.parse_args(bad)


def test_external_urls_are_loopback_and_narrow_the_paths() -> None:
    args = cli.parse_args(["--engine-url", "http://127.0.0.1:8000/"])
    assert cli.external_urls(args) == (None, "http://127.0.0.1:8000")
    assert args.paths == ["direct-raw", "direct"]
    with pytest.raises(SystemExit, match="not a loopback address"):
        cli.external_urls(cli.parse_args(["--gateway-url", "http://10.1.2.3:8080"]))
    remote = cli.parse_args(["--gateway-url", "http://10.1.2.3:8080", "--allow-remote"])
    assert cli.external_urls(remote) == ("http://10.1.2.3:8080", None)
    only_gateway_paths = ["--engine-url", "http://[::1]:8000", "--paths", "gateway-upload"]
    with pytest.raises(SystemExit, match="no path can run"):
        cli.external_urls(cli.parse_args(only_gateway_paths))


def test_a_sweep_measures_every_path_at_every_level_and_reports_it(tmp_path: Path) -> None:
    args, argv = arguments(tmp_path)
    state = state_for(args)
    client = KnownAnswers()
    Sweep(args, state, client).run()
    assert not state.truncated and not state.interrupted and state.partial is None
    assert len(state.warmup) == 3 and len(state.records) == 2 * 3 * 3
    # The paths' order rotates from level to level.
    assert [(s["path"], s["concurrency"]) for s in state.levels] == [
        ("gateway-data-url", 1), ("gateway-second-question", 1), ("direct", 1),
        ("gateway-second-question", 2), ("direct", 2), ("gateway-data-url", 2),
    ]  # fmt: skip
    asked = {r.path: r for r in state.records}["gateway-second-question"]
    assert asked.ok and asked.video in client.stored

    report = build_report(args, argv, state, client.slo)
    files = write_report(tmp_path, report)
    assert list(report) == REPORT_KEYS
    assert report["command"].startswith("python -m benchmarks.load_bench --paths")
    assert "api_key" not in report["config"] and report["config"]["videos"] == ["a.mp4", "b.mp4"]
    assert report["warnings"] == ["skipped c.mp4: 200 s > --max-video-s 30"]
    assert {(r["gateway_path"], r["concurrency"]) for r in report["gateway_overhead"]} == {
        ("gateway-second-question", 1), ("gateway-second-question", 2),
    }  # fmt: skip
    assert report["gateway_overhead"][0]["e2e_p50_ratio"] == pytest.approx(0.7 / 0.6)
    assert [v["prompt_tokens_direct"] for v in report["videos"]] == [100, 200]
    assert [v["prompt_tokens_gateway"] for v in report["videos"]] == [100, 200]

    assert [f.name for f in files] == report["files"]
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["files"] == report["files"] and len(written["requests"]) == 18
    for name, columns, rows in (
        ("report.csv", csvs.LEVEL_COLUMNS, 6),
        ("requests.csv", Record.columns(), 18),
        ("stages.csv", list(report["stages"][0]), 6),
        ("gateway_overhead.csv", list(report["gateway_overhead"][0]), 2),
    ):
        with (tmp_path / name).open() as handle:
            table = list(csv.reader(handle))
        assert table[0] == columns and len(table) == 1 + rows, name
    markdown = (tmp_path / "report.md").read_text()
    for section in ("## Gateway cost", "## Where the time goes", "## Serving metrics", "## Videos"):
        assert section in markdown
    assert "## Warnings" in markdown
    pytest.importorskip("matplotlib")
    plots = ["latency.png", "throughput.png", "overhead.png", "stages.png"]
    assert [n for n in report["files"] if n.endswith(".png")] == plots
    for name in plots:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(f"![{name}]({name})" in markdown for name in plots)


@pytest.fixture
def default_sigint() -> Iterator[None]:
    """Python's own Ctrl-C handler for the test, which asyncio.run replaces only when it is
    the one in place (a test run may leave another behind)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.usefixtures("default_sigint")
def test_an_interrupted_sweep_keeps_what_it_measured(tmp_path: Path) -> None:
    args, argv = arguments(tmp_path)
    state = state_for(args)
    # 3 warm-up requests, 3 on the first path, then the second request of the second path.
    client = KnownAnswers(stop_at=3 + 3 + 2)
    Sweep(args, state, client).run()
    assert state.interrupted and not state.truncated
    first, cut = state.levels
    assert first["completed"] == 3 and "interrupted" not in first
    assert (cut["path"], cut["completed"], cut["interrupted"]) == (
        "gateway-second-question",
        1,
        True,
    )
    assert len(state.records) == 4 and client.deleted >= 1
    report = build_report(args, argv, state, client.slo)
    assert report["interrupted"] and report["warnings"][0].startswith("interrupted")


def test_the_duration_limit_stops_the_sweep(tmp_path: Path) -> None:
    args, _ = arguments(tmp_path, "--duration-limit-s", "1")
    state = state_for(args)
    state.deadline = time.monotonic()
    Sweep(args, state, KnownAnswers()).run()
    assert state.truncated and not state.levels and not state.warmup
    assert state.warnings == ["--duration-limit-s 1 reached: partial results"]


def test_differing_prompt_tokens_are_a_warning(tmp_path: Path) -> None:
    args, argv = arguments(tmp_path)
    state = state_for(args)
    state.records = [
        Record("direct", 1, 0, "a.mp4", ok=True, prompt_tokens=100),
        Record("gateway-data-url", 1, 0, "a.mp4", ok=True, prompt_tokens=101),
    ]
    report = build_report(args, argv, state, Slo(None, None, None))
    (video, _) = report["videos"]
    assert (video["prompt_tokens_direct"], video["prompt_tokens_gateway"]) == (100, 101)
    assert any("prompt tokens differ" in w for w in report["warnings"])


def test_a_gateway_that_refuses_connections_is_measured_as_errors(
    tmp_path: Path, media_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URLs given (no stack started): a gateway nobody listens on, every request an
    error of its kind, and the report says so."""
    monkeypatch.setattr(run.stk, "environment", lambda: ENVIRONMENT)  # no torch import
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens
    argv = ["--gateway-url", url, "--paths", "gateway-data-url", "--concurrency", "2",
            "--requests", "3", "--warmup", "0", "--videos", str(media_dir / "syn_short.mp4"),
            "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    args = cli.parse_args(argv)
    urls = cli.external_urls(args)
    state = run.new_state(args, time.monotonic(), external=True)
    slo = Slo(None, None, None)
    assert run.measure(args, state, slo, urls) == 0
    assert state.stack == {
        "mode": "external",
        "gateway_url": url,
        "engine_url": None,
        "engine_settings": "(not given: pass --engine-settings)",
    }
    (level,) = state.levels
    assert (level["completed"], level["failed"]) == (0, 3)
    assert level["errors"] == {"connection error (ConnectError)": 3}
    (video,) = state.videos
    assert video.frames > 0 and video.prepared_data_url.startswith("data:")
    report = build_report(args, argv, state, slo)
    assert report["warnings"][-1].startswith("gateway-data-url c=2: errors")
    assert report["gateway_overhead"] == [] and report["stages"] == []
