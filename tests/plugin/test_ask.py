"""`arc-ask`, the README's main command: a real engine, the real clip, a fresh tiny
checkpoint; what the user sees (progress lines, the random-weights note, the answer, no
engine noise) and what it refuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import environment_without_compilers

pytestmark = pytest.mark.engine

QUESTION = "What is happening in the video?"


def arc_ask(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`arc-ask ARGS` with these variables added to this environment."""
    # `python -m` calls main() with no arguments, as the console command does.
    return subprocess.run(
        [sys.executable, "-m", "vllm_plugin.cli.ask", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_main_command_answers_quietly(media_dir: Path, tmp_path: Path) -> None:
    """Also on a machine without a C++ compiler (vLLM runs lscpu through sh)."""
    temp = tmp_path / "temp"
    temp.mkdir()
    # PATH without compilers; this environment has no TORCH_COMPILE_DISABLE either.
    env = environment_without_compilers(tmp_path / "tools", ("ffmpeg", "lscpu", "sh"))
    assert "TORCH_COMPILE_DISABLE" not in os.environ
    env = {"PATH": env["PATH"], "ARC_TINY_DIR": str(tmp_path / "tiny"), "TMPDIR": str(temp)}
    proc = arc_ask(str(media_dir / "w33698kgs05.mp4"), QUESTION, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip(), "no answer"
    lines = proc.stderr.splitlines()
    # Only the command's own lines: vLLM, transformers, torch and oneDNN stay in the log.
    assert all(line.startswith("[arc-ask ") for line in lines), "\n".join(lines)
    text = "\n".join(lines)
    for expected in (
        "writing the tiny random-weight checkpoint",
        "the embedded tiny model has random weights",
        "video prepared: 8 frames, 8 s of audio",
        "starting the vLLM engine",
        "answering",
        "answer (",
    ):
        assert expected in text, (expected, text)
    assert "CPU, eager, KV cache" in text or "(GPU)" in text
    # The run's folder (engine log, vLLM's rendezvous file) is gone.
    assert list(temp.iterdir()) == []


def test_verbose_shows_the_engine_log(media_dir: Path, tmp_path: Path) -> None:
    from vllm_plugin.tiny_checkpoint import write_tiny_checkpoint

    model = write_tiny_checkpoint(tmp_path / "ckpt")
    proc = arc_ask(
        str(media_dir / "syn_short.mp4"), "Hi", "--model", str(model), "--max-tokens", "2",
        "--verbose", env={},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Initializing a V1 LLM engine" in proc.stdout + proc.stderr  # vLLM's log


def test_too_small_a_cache_is_refused_before_starting(media_dir: Path, tmp_path: Path) -> None:
    from vllm_plugin.engine_args import cpu_build
    from vllm_plugin.tiny_checkpoint import write_tiny_checkpoint

    if not cpu_build():
        pytest.skip("the KV cache size is the CPU engine's setting")

    model = write_tiny_checkpoint(tmp_path / "ckpt")
    video = str(media_dir / "w33698kgs05.mp4")
    for args, env in (
        (["--kv-cache-memory-bytes", "1M"], {}),
        ([], {"ARC_KV_CACHE_MEMORY_BYTES": "1M"}),
    ):
        proc = arc_ask(video, QUESTION, "--model", str(model), *args, env=env)
        assert proc.returncode == 1
        assert "arc-ask: a KV cache of 1 MiB holds" in proc.stderr
        assert "Raise --kv-cache-memory-bytes or $ARC_KV_CACHE_MEMORY_BYTES" in proc.stderr
        assert "starting the vLLM engine" not in proc.stderr


def test_a_file_that_is_no_video_is_one_line(media_dir: Path, tmp_path: Path) -> None:
    from vllm_plugin.tiny_checkpoint import write_tiny_checkpoint

    model = write_tiny_checkpoint(tmp_path / "ckpt")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes((media_dir / "w33698kgs05.mp4").read_bytes()[:3000])
    proc = arc_ask(str(truncated), QUESTION, "--model", str(model), env={"TMPDIR": str(tmp_path)})
    assert proc.returncode == 1
    assert f"arc-ask: {truncated}: " in proc.stderr and "Traceback" not in proc.stderr
    assert "loading vLLM" not in proc.stderr, "the video is checked first"
    assert not list(tmp_path.glob("arc-ask-*")), "the run's folder is removed"


def test_missing_video_is_a_usage_error(tmp_path: Path) -> None:
    proc = arc_ask(str(tmp_path / "nothing.mp4"), QUESTION, env={})
    assert proc.returncode == 2
    assert "no such video file" in proc.stderr


def test_answer_is_the_servers_greedy_answer(engine, engine_media: Path, tmp_path: Path) -> None:
    """arc-ask (offline, its own engine) and arc-serve (no sampling parameter in the request)
    give the same greedy answer for the same checkpoint, video and question."""
    import httpx

    base, checkpoint = engine
    video = engine_media / "w33698kgs05.mp4"
    proc = arc_ask(
        str(video), QUESTION, "--model", str(checkpoint), "--dtype", "float32",
        "--max-tokens", "16", env={"TMPDIR": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip(), "no answer"
    content = [{"type": "video_url", "video_url": {"url": video.as_uri()}}]
    content.append({"type": "text", "text": QUESTION})
    served = httpx.post(
        base + "/v1/chat/completions",
        json={"model": "arc-tiny", "messages": [{"role": "user", "content": content}],
              "max_tokens": 16},
        timeout=300,
    )  # fmt: skip
    assert served.status_code == 200, served.text
    assert proc.stdout.removesuffix("\n") == served.json()["choices"][0]["message"]["content"]
