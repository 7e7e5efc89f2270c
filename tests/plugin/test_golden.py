"""Golden parity inside the vLLM engine: `arc-golden` on the authors' tiny-a fixtures.

Each run starts its own engine (a subprocess, as a user would run it): eager, with a KV
cache sized for the fixtures' requests, no warm-up pass. Measured on 2 cores shared with
other jobs (load 6-8): float32 40 s, bfloat16 27 s (one process each), TP 2 120 s (an
engine process and two workers, each importing torch and vLLM).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from servers import environment_without_compilers

pytestmark = pytest.mark.engine


def run_golden(
    fixtures: Path, out: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, list[dict], str]:
    cmd = [
        sys.executable,
        "-m",
        "vllm_plugin.cli.golden",
        "--fixtures",
        str(fixtures),
        "--json",
        str(out),
        "--quiet",
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, env=env)
    records = json.loads(out.read_text()) if out.exists() else []
    return proc.returncode, records, proc.stdout + proc.stderr[-4000:]


@pytest.fixture(scope="module")
def tiny_a(golden_dir: Path) -> Path:
    path = golden_dir / "model" / "tiny-a"
    if not path.is_dir():
        pytest.skip("tiny-a fixtures not found")
    return path


def test_float32_every_case_and_path(tiny_a: Path, tmp_path: Path) -> None:
    rc, records, log = run_golden(tiny_a, tmp_path / "fp32.json", "--dtype", "float32")
    assert rc == 0, log
    cases = {d.name for d in (tiny_a / "cases").iterdir() if d.is_dir()}
    assert {(r["case"], r["path"]) for r in records} == {(c, p) for c in cases for p in "AB"}
    index = json.loads((tiny_a / "index.json").read_text())
    for r in records:
        assert r["pass"] and r["input_ids_equal"] and r["position_ids_equal"], r
        assert r["first_step_max_abs"] <= 1e-4 and r["teacher_forced_max_abs"] <= 1e-4, r
        assert len(r["top5"]) == 5 and all(len(pair) == 2 for pair in r["top5"])
        # The 16 greedy ids also equal the index.json summary of the fixtures.
        expected = json.dumps(index).find(json.dumps(r["greedy_ids"])[1:-1])
        assert expected >= 0, f"{r['case']} {r['path']}: greedy ids not in index.json"


def test_bfloat16_rule(tiny_a: Path, tmp_path: Path) -> None:
    """Also: the log-probabilities come without a C++ compiler on the machine."""
    # vLLM runs lscpu through sh.
    env = environment_without_compilers(tmp_path / "tools", ("lscpu", "sh"))
    rc, records, log = run_golden(tiny_a, tmp_path / "bf16.json", "--dtype", "bfloat16", env=env)
    assert rc == 0, log
    assert records and all(r["pass"] and r["teacher_forced_agree"] >= 12 for r in records)


def test_tensor_parallel_2_matches_tp1(tiny_a: Path, tmp_path: Path) -> None:
    rc, records, log = run_golden(
        tiny_a,
        tmp_path / "tp2.json",
        "--tensor-parallel-size",
        "2",
        "--case",
        "w33698kgs05",
        "--case",
        "syn_short",
    )
    assert rc == 0, log
    assert len(records) == 4 and all(r["pass"] and r["greedy_equal"] for r in records)
