"""Quick-start benchmark: the README's main command, timed as a new user runs it.

Runs `arc-ask VIDEO QUESTION` (the console command of this environment) `--runs` times: the
first run with empty caches, as right after `scripts/setup.sh` (ARC_TINY_DIR: it writes the
tiny checkpoint; VLLM_CACHE_ROOT: vLLM's records), the others with what the first one left.
Each run is a fresh process, timed from start to exit; its progress lines give where the time
went (video prepared, engine started, answer). The load average is recorded with each run:
other jobs on the machine slow it.

    python -m benchmarks.quickstart_bench                   # 3 runs, the README's clip
    python -m benchmarks.quickstart_bench --runs 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ARC_SHARED", REPO_ROOT.parent / "shared"))
DEFAULT_VIDEO = SHARED / "media" / "w33698kgs05.mp4"
DEFAULT_QUESTION = "What is happening in the video?"
TARGET_S = 30.0  # the README's promise for the first run after setup, on 2 cores
# "[arc-ask  12.3 s] message": the command's progress lines and their times.
PROGRESS = re.compile(r"^\[arc-ask\s+([\d.]+) s\] (.*)$")
STAGES = {
    "video_prepared_s": "video prepared",
    "engine_starting_s": "starting the vLLM engine",
    "answering_s": "answering",
    "answered_s": "answer (",
}


def arc_ask_command() -> list[str]:
    """The console command next to this interpreter (as the README runs it), else the module."""
    script = Path(sys.executable).parent / "arc-ask"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "vllm_plugin.cli.ask"]


def stage_times(stderr: str) -> dict[str, float]:
    times = {}
    for line in stderr.splitlines():
        match = PROGRESS.match(line)
        if not match:
            continue
        for key, prefix in STAGES.items():
            if match.group(2).startswith(prefix) and key not in times:
                times[key] = float(match.group(1))
    return times


def run_once(command: list[str], caches: Path, timeout: float) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        command,
        env=dict(
            os.environ, ARC_TINY_DIR=str(caches / "tiny"), VLLM_CACHE_ROOT=str(caches / "vllm")
        ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    lines = proc.stderr.splitlines()
    return {
        "seconds": round(seconds, 2),
        # CPU seconds of the command and its children: what other jobs on the machine do
        # not change much (on an idle machine the wall time is close to it).
        "cpu_s": round(cpu, 2),
        "ok": proc.returncode == 0 and bool(proc.stdout.strip()),
        "returncode": proc.returncode,
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "stages": stage_times(proc.stderr),
        # Lines that are not the command's own progress lines: engine noise leaking out.
        "other_stderr_lines": sum(1 for line in lines if not PROGRESS.match(line)),
        "answer": proc.stdout.strip()[:200],
        "stderr_tail": lines[-20:] if proc.returncode else [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quickstart_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs (the first on an empty cache)")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)
    if not args.video.is_file():
        parser.error(f"no video at {args.video} (set ARC_SHARED or --video)")

    command = [*arc_ask_command(), str(args.video), args.question]
    # The caches a first run fills: the tiny checkpoint and vLLM's (~/.cache/vllm).
    caches = Path(tempfile.mkdtemp(prefix="arc-quickstart-"))
    runs = []
    try:
        for i in range(args.runs):
            result = run_once(command, caches, args.timeout)
            result["cache"] = "empty" if i == 0 else "filled by the first run"
            runs.append(result)
            stages = " ".join(
                f"{k.removesuffix('_s')} {v:.1f}" for k, v in result["stages"].items()
            )
            print(
                f"run {i + 1}: {result['seconds']:.1f} s, {result['cpu_s']:.1f} CPU s "
                f"({result['cache']}; load "
                f"{result['load_before']:.1f}->{result['load_after']:.1f}) "
                f"{'ok' if result['ok'] else 'FAILED rc=' + str(result['returncode'])}; {stages}",
                flush=True,
            )
            if not result["ok"]:
                print("\n".join(result["stderr_tail"]), file=sys.stderr)
    finally:
        shutil.rmtree(caches, ignore_errors=True)

    seconds = [r["seconds"] for r in runs]
    report = {
        "command": " ".join(["arc-ask", args.video.name, repr(args.question)]),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "runs": runs,
        "first_run_s": seconds[0] if seconds else None,
        "median_s": statistics.median(seconds) if seconds else None,
        "median_cpu_s": statistics.median(r["cpu_s"] for r in runs) if runs else None,
        "target_s": TARGET_S,
        "all_ok": all(r["ok"] for r in runs),
    }
    print(
        f"first run {report['first_run_s']} s, median {report['median_s']} s "
        f"({report['median_cpu_s']} CPU s) over {len(runs)} runs (target {TARGET_S:g} s on "
        "2 cores)"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if report["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
