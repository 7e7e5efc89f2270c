"""The CPU compose stack's commands, run exactly as the images run them but outside Docker:
the engine image's entrypoint (`arc-serve`) with the `vllm-cpu` service's arguments, the
gateway image's entrypoint (`arc-gateway`) with the `gateway-cpu` service's environment.
Only addresses, ports and directories are changed to this machine's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from servers import free_port, stop, wait_until

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


def defaults(value: str) -> str:
    """`${NAME:-default}` -> default (what compose uses with no .env)."""
    return _VAR.sub(lambda m: m.group(2) or "", str(value))


def entrypoint(dockerfile: str) -> str:
    text = (ROOT / "docker" / dockerfile).read_text()
    return re.search(r'^ENTRYPOINT \["([^"]+)"\]', text, re.MULTILINE).group(1)


def console(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed next to {sys.executable}"
    return found


def test_cpu_stack_commands_answer_through_the_gateway(tmp_path: Path, media_dir: Path) -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    engine_port, gateway_port = free_port(), free_port()

    args = [defaults(a) for a in services["vllm-cpu"]["command"]]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(engine_port)
    engine_cmd = [console(entrypoint("cpu-engine.Dockerfile")), *args]
    engine_env = dict(os.environ, ARC_TINY_DIR=str(tmp_path / "tiny"), VLLM_LOGGING_LEVEL="WARNING")
    engine_log = tmp_path / "engine.log"
    engine = subprocess.Popen(
        engine_cmd, env=engine_env, stdout=engine_log.open("w"), stderr=subprocess.STDOUT
    )
    gateway = None
    try:
        wait_until(f"http://127.0.0.1:{engine_port}/health", engine, engine_log, 300)
        gateway_env = {k: defaults(v) for k, v in services["gateway-cpu"]["environment"].items()}
        gateway_env.update(
            ARC_GATEWAY_HOST="127.0.0.1",
            ARC_GATEWAY_PORT=str(gateway_port),
            ARC_GATEWAY_FILES_DIR=str(tmp_path / "files"),
            ARC_GATEWAY_UPSTREAM_URL=f"http://127.0.0.1:{engine_port}",
            ARC_GATEWAY_DECODE_WORKERS="1",  # this machine has 2 cores
        )
        gateway_log = tmp_path / "gateway.log"
        gateway = subprocess.Popen(
            [console(entrypoint("gateway.Dockerfile"))],
            env={**os.environ, **gateway_env},
            stdout=gateway_log.open("w"),
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{gateway_port}"
        wait_until(base + "/ready", gateway, gateway_log, 120)

        from openai import OpenAI

        client = OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=300)
        video = client.files.create(
            file=(media_dir / "w33698kgs05.mp4").open("rb"), purpose="user_data"
        )
        reply = client.chat.completions.create(
            model="arc-tiny",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": video.id}},
                        {"type": "text", "text": "What is happening?"},
                    ],
                }
            ],
            max_tokens=4,
        )
        assert reply.choices[0].message.content is not None
        assert reply.usage.video["frames"] == 8
        assert "arc_gateway_request_seconds" in httpx.get(base + "/metrics").text
    finally:
        if gateway is not None:
            stop(gateway)
        stop(engine)
