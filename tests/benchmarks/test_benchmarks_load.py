"""Smoke test of the load benchmark: `python -m benchmarks.load_bench --quick` starts its own
loopback stack (tiny checkpoint, arc-serve, arc-gateway), measures the three gateway paths and
the two direct ones, and writes its reports."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

REPO_ROOT = Path(__file__).resolve().parents[2]
PATHS = {
    "gateway-upload",
    "gateway-data-url",
    "gateway-second-question",
    "direct-raw",
    "direct",
}
REFERENCE = {
    "gateway-upload": "direct-raw",
    "gateway-data-url": "direct-raw",
    "gateway-second-question": "direct",
}


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
    # Every path sent the model the same input.
    (video,) = report["videos"]
    assert video["prompt_tokens_direct"] == video["prompt_tokens_gateway"] > 0
    assert video["container_decode_s"] > 0 and video["container_encode_s"] > 0

    rows = {r["gateway_path"]: r for r in report["gateway_overhead"]}
    assert {p: r["reference"] for p, r in rows.items()} == REFERENCE
    for row in rows.values():
        assert row["added_p50_s"] == pytest.approx(
            row["gateway_e2e_p50_s"] - row["reference_e2e_p50_s"]
        )
        assert row["e2e_p50_ratio"] == pytest.approx(
            row["gateway_e2e_p50_s"] / row["reference_e2e_p50_s"]
        )
        assert row["throughput_ratio"] > 0 and row["paired_requests"] == 2
    # The gateway decodes on the paths that send a video, not on the second question.
    assert rows["gateway-data-url"]["gateway_decode_mean_s"] > 0
    assert rows["gateway-upload"]["gateway_decode_mean_s"] > 0
    assert rows["gateway-second-question"]["gateway_decode_mean_s"] == 0

    # Where the time goes: the gateway's Server-Timing stages reached every request.
    stages = {r["path"]: r for r in report["stages"]}
    assert set(stages) == PATHS
    for path in ("gateway-upload", "gateway-data-url"):
        assert stages[path]["decode_s"] > 0 and stages[path]["encode_s"] > 0
    assert stages["gateway-upload"]["store_s"] >= 0
    for path, row in stages.items():
        assert 0 < row["engine_input_s"] < row["e2e_s"], (path, row)
        assert row["first_token_s"] > 0 and row["generation_s"] >= 0
    for path in ("direct", "direct-raw"):
        assert stages[path]["decode_s"] is None

    with (out / "report.csv").open() as handle:
        assert {r["path"] for r in csv.DictReader(handle)} == PATHS
    with (out / "gateway_overhead.csv").open() as handle:
        assert {r["gateway_path"] for r in csv.DictReader(handle)} == set(rows)
    with (out / "stages.csv").open() as handle:
        assert {r["path"] for r in csv.DictReader(handle)} == PATHS
    markdown = (out / "report.md").read_text()
    assert "## Gateway cost" in markdown and "## Where the time goes" in markdown
    for name in report["files"]:
        assert (out / name).is_file(), name
