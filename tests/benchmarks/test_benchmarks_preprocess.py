"""Smoke test of the preprocessing benchmark (benchmarks/preprocess_bench.py --quick): one
short shared clip and one tiny synthetic clip through both pipelines, then the reports."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_writes_reports(tmp_path: Path, media_dir: Path) -> None:
    for module in ("decord", "librosa", "moviepy.editor", "matplotlib"):
        pytest.importorskip(module)
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg/ffprobe not installed")
    if not (media_dir / "w33698kgs05.mp4").is_file():
        pytest.skip(f"no w33698kgs05.mp4 in {media_dir}")
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.preprocess_bench",
            "--quick",
            "--quiet",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
            "--shared",
            str(media_dir.parent),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("report.json", "report.csv", "report.md", "chart.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads((out / "report.json").read_text())
    rows = {row["file"]: row for row in report["rows"]}
    assert set(rows) == {"w33698kgs05", "syn_tiny_3s"}
    for row in rows.values():
        assert row["ratio"] > 0 and math.isfinite(row["ratio"])
        for kind in ("ours", "reference"):
            run = row[kind]
            assert run["wall_s"] > 0 and run["cpu_s"] > 0 and run["peak_mb"] > 0
            assert {"decode", "resize", "audio", "features"} <= set(run["stages"])
        parity = row["parity"]
        # both pipelines sample the same frames and agree within the tolerances
        assert parity["count_equal"] and parity["indices_equal"]
        assert parity["frame_mad"] is not None and parity["frame_mad"] <= 1.0
        assert parity["feature_mad"] is not None and parity["feature_mad"] <= 0.12
        assert parity["pass"]
    golden = rows["w33698kgs05"]["parity"]
    assert golden["golden_ours_indices_equal"] and golden["golden_reference_indices_equal"]
    assert golden["golden_ours_feature_mad"] <= 0.12
    assert golden["golden_reference_feature_mad"] <= 0.12
    summary = report["summary"]
    assert summary["median_ratio_shared"] == pytest.approx(rows["w33698kgs05"]["ratio"])
    assert summary["parity_pass"] == 2

    with open(out / "report.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["file"] for r in table] == ["w33698kgs05", "syn_tiny_3s"]
    assert all(float(r["ratio"]) > 0 and r["frame_mad"] != "" for r in table)
    markdown = (out / "report.md").read_text()
    assert "median ratio over the shared clips" in markdown
    assert "Where the time goes" in markdown


def test_help_explains_the_options() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.preprocess_bench", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0
    for option in ("--quick", "--out", "--synthetic", "--repeat"):
        assert option in proc.stdout
    assert "--worker" not in proc.stdout
