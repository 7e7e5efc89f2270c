"""Smoke test of the quick-start benchmark (benchmarks/quickstart_bench.py): one run of the
README's main command on an empty tiny-checkpoint cache, timed, with its stages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_one_run_is_timed_with_its_stages(media_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "quickstart.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.quickstart_bench", "--runs", "1",
            "--video", str(media_dir / "w33698kgs05.mp4"), "--json", str(out),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    assert report["all_ok"] and run["ok"] and run["cache"] == "empty"
    assert run["answer"]
    assert run["other_stderr_lines"] == 0, "engine output leaked past arc-ask"
    stages = run["stages"]
    assert list(stages) == ["video_prepared_s", "engine_starting_s", "answering_s", "answered_s"]
    assert list(stages.values()) == sorted(stages.values())
    assert 0 < stages["answered_s"] <= run["seconds"] == report["first_run_s"]
    assert run["cpu_s"] > 1  # the command's own CPU time (imports, engine, answer)
    assert "run 1:" in proc.stdout and "first run" in proc.stdout
