"""Smoke test of the long-video benchmark: `python -m benchmarks.long_bench --quick` starts
its own loopback stack (tiny checkpoint, arc-serve, arc-gateway), asks about a 2-minute
synthetic video in segments of 60 s four ways (segmented, the clips one after another, the
clips at once, a second question) and writes its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_long_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "long"
    done = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.long_bench", "--quick",
            "--out", str(out), "--cache", str(tmp_path / "videos"),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    (video,) = report["videos"]
    assert video["minutes"] == 2 and video["segments"] == 2
    runs = video["runs"]
    assert list(runs) == ["segmented", "sequential", "concurrent", "second-question"]
    for run in runs.values():
        assert run["ok"] == run["requests"] and not run["errors"], run
        assert run["seconds"] > 0 and run["peak_gateway_mb"] > 0 and run["peak_workers_mb"] > 0
    assert runs["sequential"]["requests"] == runs["concurrent"]["requests"] == 2
    # The segmented request: two segments and an integration pass, 2 tokens each.
    segmented = runs["segmented"]
    assert [(s["start"], s["end"]) for s in segmented["segments"]] == [(0, 60), (60, 120)]
    assert segmented["completion_tokens"] == 3 * 2 and segmented["integration_s"] > 0
    assert runs["sequential"]["completion_tokens"] == 2 * 2
    # The second question decodes nothing: its segments were kept.
    assert segmented["decode_s"] > 0 and runs["second-question"]["decode_s"] == 0
    assert set(video["ratios"]) == {"vs_sequential", "vs_concurrent", "second_vs_first"}
    assert all(value > 0 for value in video["ratios"].values())
    assert (out / "long.png").stat().st_size > 0
    assert "Against the goals" in (out / "report.md").read_text()
