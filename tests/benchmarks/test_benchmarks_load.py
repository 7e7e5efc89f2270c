"""Smoke test of the load benchmark: `python -m benchmarks.load_bench --quick` starts its own
loopback stack (tiny checkpoint, arc-serve, arc-gateway), measures both gateway paths and the
direct path, and writes its reports."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

REPO_ROOT = Path(__file__).resolve().parents[2]
PATHS = {"gateway-upload", "gateway-data-url", "direct"}


def test_load_bench_quick(media_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "load"
    done = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.load_bench", "--quick", "--no-progress",
            "--videos", str(media_dir / "syn_short.mp4"), "--out", str(out),
            "--duration-limit-s", "300",
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=420, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    report = json.loads((out / "report.json").read_text())
    assert not report["truncated"] and not report["interrupted"]
    assert report["stack"]["mode"].startswith("own")
    assert report["environment"]["cpu_cores"] >= 1
    assert report["stack"]["engine"]["version"]
    levels = {(s["path"], s["concurrency"]): s for s in report["levels"]}
    assert set(levels) == {(p, 1) for p in PATHS}
    for summary in levels.values():
        assert summary["completed"] == 2 and summary["failed"] == 0, summary
        assert 0 < summary["ttft_s"]["p50"] <= summary["e2e_s"]["p50"]
        assert summary["output_tokens_mean"] == 2
        assert summary["request_throughput"] > 0
    # Both paths sent the model the same input.
    (video,) = report["videos"]
    assert video["prompt_tokens_direct"] == video["prompt_tokens_gateway"] > 0

    rows = {r["gateway_path"]: r for r in report["gateway_overhead"]}
    assert set(rows) == {"gateway-upload", "gateway-data-url"}
    for row in rows.values():
        assert row["added_p50_s"] == pytest.approx(
            row["gateway_e2e_p50_s"] - row["direct_e2e_p50_s"]
        )
        assert row["share_p50"] == pytest.approx(row["added_p50_s"] / row["gateway_e2e_p50_s"])
        assert row["paired_requests"] == 2
        assert row["gateway_decode_mean_s"] > 0

    with (out / "report.csv").open() as handle:
        assert {r["path"] for r in csv.DictReader(handle)} == PATHS
    with (out / "gateway_overhead.csv").open() as handle:
        assert {r["gateway_path"] for r in csv.DictReader(handle)} == set(rows)
    markdown = (out / "report.md").read_text()
    assert "## Gateway overhead" in markdown and "share of e2e" in markdown
    for name in report["files"]:
        assert (out / name).is_file(), name
