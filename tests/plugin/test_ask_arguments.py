"""`arc-ask`'s argument checks, run as the console command runs: every wrong argument is one
line on stderr and exit status 2 before anything heavy is imported (torch, vLLM,
transformers, the media stack), so it comes at once instead of after the engine's start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "vllm", "transformers", "numpy", "av", "PIL")
# What one refused run may cost: Python's start and argparse take about 0.1 s of CPU; any
# heavy import alone takes more than a second (torch ~1 s, vLLM several).
CPU_SECONDS = 1.0


def run_ask(
    args: list[str], env: dict[str, str], folder: Path
) -> tuple[int, list[str], set, float]:
    """arc-ask ARGS with `-X importtime`: (exit status, stderr lines other than the import
    report, the modules imported, CPU seconds of the child)."""
    err = folder / "stderr"
    with err.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "vllm_plugin.cli.ask", *args],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env={**os.environ, **env},
        )
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # waited above, not by Popen
    lines = err.read_text().splitlines()
    report = [line for line in lines if line.startswith("import time:")]
    modules = {line.rsplit("|", 1)[1].strip() for line in report if "|" in line}
    others = [line for line in lines if not line.startswith("import time:")]
    return proc.returncode, others, modules, usage.ru_utime + usage.ru_stime


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """A video file (its content is probed later, before the engine: any bytes do here),
    an empty one, a folder, and a path that does not exist."""
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 64)
    empty = tmp_path / "empty.mp4"
    empty.touch()
    return {
        "VIDEO": str(video),
        "EMPTY": str(empty),
        "DIR": str(tmp_path),
        "NONE": str(tmp_path / "missing.mp4"),
    }


CASES = [
    (["VIDEO", "Q", "--task", "summarize"], {}, "unknown task 'summarize'"),
    (["VIDEO", "--task", "grounding"], {}, "task grounding needs a question"),
    (["VIDEO", "   ", "--task", "mcq"], {}, "task mcq needs a question"),
    (["VIDEO"], {}, "task qa needs a question"),
    (["NONE", "Q"], {}, "no such video file"),
    (["DIR", "Q"], {}, "is not a file"),
    (["EMPTY", "Q"], {}, "is empty"),
    (["VIDEO", "Q", "--max-tokens", "0"], {}, "--max-tokens: '0' is not a whole number"),
    (["VIDEO", "Q", "--max-tokens", "many"], {}, "--max-tokens: 'many'"),
    (["VIDEO", "Q", "--max-tokens", "20481"], {}, "from 1 to 20480"),
    (["VIDEO", "Q", "--dtype", "fp8"], {}, "--dtype: invalid choice: 'fp8'"),
    (["VIDEO", "Q", "--kv-cache-memory-bytes", "5X"], {}, "not a byte count: '5X'"),
    (["VIDEO", "Q", "--kv-cache-memory-bytes", "0"], {}, "'0' is not a positive size"),
    (["VIDEO", "Q"], {"ARC_KV_CACHE_MEMORY_BYTES": "lots"}, "$ARC_KV_CACHE_MEMORY_BYTES"),
    (["VIDEO", "Q", "--model", "DIR"], {}, "not a checkpoint directory (no config.json"),
    (["VIDEO", "Q", "--font", "NONE"], {}, "no such font file"),
    (["VIDEO", "Q", "--no-such-option"], {}, "unrecognized arguments: --no-such-option"),
]


@pytest.mark.parametrize(("args", "env", "expected"), CASES, ids=[c[2][:32] for c in CASES])
def test_a_wrong_argument_is_one_line_at_once(
    args: list[str], env: dict[str, str], expected: str, files: dict[str, str], tmp_path: Path
) -> None:
    status, lines, modules, cpu = run_ask([files.get(a, a) for a in args], env, tmp_path)
    assert status == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("arc-ask: error: ") and expected in lines[0], lines[0]
    imported = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not imported, imported[:10]
    assert cpu < CPU_SECONDS, cpu


def test_good_arguments_pass_the_checks(files: dict[str, str]) -> None:
    from vllm_plugin.cli.ask import parse_arguments

    args = parse_arguments([files["VIDEO"], "--task", "SUMMARY", "--max-tokens", "20480"])
    assert (args.task, args.question, args.max_tokens) == ("summary", None, 20480)
    args = parse_arguments([files["VIDEO"], "When?", "--task", "grounding", "--dtype", "float32"])
    assert (args.task, args.question, args.dtype) == ("grounding", "When?", "float32")
    assert parse_arguments([files["VIDEO"], "--task", "chapters"]).task == "chapters"
