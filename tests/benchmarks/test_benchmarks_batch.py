"""Smoke test of the batch benchmark: `python -m benchmarks.batch_bench --quick` starts its
own loopback stack (tiny checkpoint, arc-serve, arc-gateway), runs the load client at two
levels, interactive requests idle, a batch of 12 lines alone and one beside interactive
requests, and writes its report."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_batch_bench_quick(tmp_path: Path, media_dir: Path) -> None:
    out = tmp_path / "batch"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.batch_bench", "--quick", "--out", str(out),
         "--videos", str(media_dir)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert [level["concurrency"] for level in report["load"]] == [1, 2]
    for level in report["load"]:
        assert level["completed"] == 4 and level["request_throughput"] > 0
    for name in ("idle", "beside_batch"):
        summary = report["interactive"][name]
        assert summary["completed"] == 4 and summary["e2e_s"]["p50"] > 0
    alone = report["batches"]["alone"]
    assert alone["status"] == "completed" and alone["completed"] == alone["lines"] == 12
    # the output file read back: every custom_id once, each answered with 2 tokens
    assert alone["output"]["custom_ids"] == 12 and alone["output"]["duplicates"] == 0
    assert alone["output"]["status_codes"] == {"200": 12}
    assert alone["output"]["completion_tokens"] == 12 * 2
    assert report["batches"]["beside"]["output"]["duplicates"] == 0
    ratios = report["ratios"]
    assert ratios["batch_vs_best_load"] > 0 and ratios["interactive_p50_beside_vs_idle"] > 0
    with (out / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["what"] for row in rows} >= {"load client", "interactive idle"}
    assert (out / "batch.png").stat().st_size > 0
    assert "Against the goals" in (out / "report.md").read_text()
