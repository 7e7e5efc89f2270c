"""The CPU engine image's engine, run as the image runs it but outside Docker: its
ENTRYPOINT and CMD, its ENV, and no C++ compiler on PATH (the image carries none). A chat
completion with `logprobs` must be answered and leave the engine healthy.

Why it matters: vLLM 0.32 compiles its logprobs op with inductor even under
--enforce-eager (vllm/v1/sample/ops/logprobs.py). Without a compiler and without the
image's TORCH_COMPILE_DISABLE=1 that request gets a 500 and the engine core dies (seen with
this very test's command line). Only addresses, ports and the writable directories of the
image's ENV are changed to this machine's.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from manifests import dockerfile, exec_form, image_env, stages
from media_factory import make_clip
from servers import free_port, stop, wait_until

pytestmark = pytest.mark.engine

COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "clang++", "x86_64-linux-gnu-gcc")
# What the engine runs besides Python: ffmpeg/ffprobe (the arc video loader), lscpu
# (vLLM's CPU topology), sh (vLLM runs lscpu through a shell).
TOOLS = ("ffmpeg", "ffprobe", "lscpu", "sh")


def image_command(name: str) -> tuple[list[str], dict[str, str]]:
    """ENTRYPOINT + CMD and ENV of the final stage of docker/NAME."""
    final = stages(dockerfile(name))[-1]
    entrypoint = [exec_form(rest) for keyword, rest in final if keyword == "ENTRYPOINT"][-1]
    cmd = [exec_form(rest) for keyword, rest in final if keyword == "CMD"][-1]
    return entrypoint + cmd, image_env(dockerfile(name))


def path_without_compilers(tmp_path: Path) -> str:
    """The venv's bin (where the image's pip puts arc-serve) and a folder with links to
    the few system tools the engine needs: nothing else, so no compiler."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed on this machine"
        (tools / tool).symlink_to(found)
    path = f"{Path(sys.executable).parent}:{tools}"
    for compiler in COMPILERS:
        assert shutil.which(compiler, path=path) is None, f"{compiler} on {path}"
    return path


def replace_flag(args: list[str], flag: str, value: str) -> None:
    args[args.index(flag) + 1] = value


def test_cpu_engine_image_serves_logprobs_without_a_compiler(tmp_path: Path) -> None:
    command, env = image_command("cpu-engine.Dockerfile")
    assert env["TORCH_COMPILE_DISABLE"] == "1"
    port = free_port()
    replace_flag(command, "--host", "127.0.0.1")
    replace_flag(command, "--port", str(port))
    # The image's HOME and caches, moved under tmp_path; every other variable as the image
    # sets it, and nothing from this machine's environment (no CC/CXX either).
    home = tmp_path / "home"
    for name, value in env.items():
        if value.startswith(env["HOME"]):
            env[name] = str(home) + value[len(env["HOME"]) :]
    env["PATH"] = path_without_compilers(tmp_path)
    env["VLLM_LOGGING_LEVEL"] = "INFO"  # vLLM's default, named: the log is read below
    entry = shutil.which(command[0], path=env["PATH"])
    assert entry, f"{command[0]} is not installed next to {sys.executable}"

    log = tmp_path / "engine.log"
    engine = subprocess.Popen(
        [entry, *command[1:]], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(base + "/health", engine, log, 300)
        clip = make_clip(tmp_path / "clip.mp4", seconds=3, size="64x64", fps=5)
        url = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()

        from openai import OpenAI

        client = OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=300)
        model = client.models.list().data[0].id
        reply = client.chat.completions.create(
            model=model,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": url}},
                        {"type": "text", "text": "What is happening?"},
                    ],
                }
            ],
            max_tokens=3,
            temperature=0,
            logprobs=True,
            top_logprobs=2,
        )
        tokens = reply.choices[0].logprobs.content
        assert len(tokens) == reply.usage.completion_tokens > 0
        for token in tokens:
            assert token.logprob <= 0
            assert len(token.top_logprobs) == 2
        assert reply.usage.prompt_tokens > 3 * 114, "the video reached the model"
        assert httpx.get(base + "/health", timeout=10).status_code == 200, "engine alive"
    finally:
        stop(engine)
    # The KV cache has the size the command gives, not a share of the machine's memory
    # measured after a warm-up (that one took a minute here: "Auto set ... for KV cache").
    text = log.read_text()
    assert "Explicitly set" in text and "Auto set" not in text
