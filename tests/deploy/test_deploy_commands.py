"""The CPU compose stack's commands, run exactly as the images run them but outside Docker:
the engine image's entrypoint (`arc-serve`) and ENV with the `vllm-cpu` service's arguments
and environment, no C++ compiler on PATH; the gateway image's entrypoint (`arc-gateway`),
installed as the gateway image installs it (a venv without vLLM,
tests/deploy/test_deploy_dependencies.py), with the `gateway-cpu` service's environment. Only
addresses, ports and directories are changed to this machine's.

The engine, reached directly, must refuse media it would have to fetch (an http URL on
loopback, a file:// URL): behind the gateway it takes data: URLs only (issue 13)."""

from __future__ import annotations

import base64
import http.server
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from manifests import dockerfile, exec_form, image_env, stages
from servers import free_port, stop, wait_until
from test_deploy_dependencies import build_gateway_venv
from test_images_cpu_engine import path_without_compilers

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


def defaults(value: str) -> str:
    """`${NAME:-default}` -> default (what compose uses with no .env)."""
    return _VAR.sub(lambda m: m.group(2) or "", str(value))


def entrypoint(name: str) -> str:
    """The console command of docker/NAME's ENTRYPOINT (behind `tini --`, if there)."""
    final = stages(dockerfile(name))[-1]
    words = [exec_form(rest) for keyword, rest in final if keyword == "ENTRYPOINT"][-1]
    return words[words.index("--") + 1] if "--" in words else words[0]


@pytest.fixture
def media_server(media_dir: Path) -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that would serve a real video: (its URL, the paths asked)."""
    asked: list[str] = []
    video = (media_dir / "w33698kgs05.mp4").read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(video)))
            self.end_headers()
            self.wfile.write(video)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/clip.mp4", asked
    server.shutdown()
    server.server_close()


def ask_engine(base: str, model: str, video_url: str) -> httpx.Response:
    body = {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": video_url}},
                    {"type": "text", "text": "What is happening?"},
                ],
            }
        ],
        "max_tokens": 2,
    }
    return httpx.post(base + "/v1/chat/completions", json=body, timeout=120)


def console(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed next to {sys.executable}"
    return found


def test_cpu_stack_commands_answer_through_the_gateway(
    tmp_path: Path, media_dir: Path, media_server: tuple[str, list[str]]
) -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    gateway_bin = build_gateway_venv(tmp_path / "build-context") / "bin"
    engine_port, gateway_port = free_port(), free_port()

    args = [defaults(a) for a in services["vllm-cpu"]["command"]]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(engine_port)
    # The `forward` volume both mount (shared forward mode): a folder here.
    forward = tmp_path / "forward"
    forward.mkdir()
    args[args.index("--allowed-local-media-path") + 1] = str(forward)
    engine_cmd = [console(entrypoint("cpu-engine.Dockerfile")), *args]
    # The image's ENV (its HOME moved here), then the service's environment; PATH has no
    # compiler, as in the image.
    engine_env = image_env(dockerfile("cpu-engine.Dockerfile"))
    home = engine_env["HOME"]
    for name, value in engine_env.items():
        if value.startswith(home):
            engine_env[name] = str(tmp_path / "home") + value[len(home) :]
    engine_env.update(
        {k: defaults(v) for k, v in (services["vllm-cpu"].get("environment") or {}).items()}
    )
    engine_env.update(PATH=path_without_compilers(tmp_path), VLLM_LOGGING_LEVEL="WARNING")
    engine_log = tmp_path / "engine.log"
    engine = subprocess.Popen(
        engine_cmd, env=engine_env, stdout=engine_log.open("w"), stderr=subprocess.STDOUT
    )
    gateway = None
    try:
        engine_base = f"http://127.0.0.1:{engine_port}"
        wait_until(engine_base + "/health", engine, engine_log, 300)
        # Straight to the engine: media it would have to fetch or read is refused.
        url, asked = media_server
        refused = ask_engine(engine_base, "arc-tiny", url)
        assert 400 <= refused.status_code < 500, refused.text
        assert asked == [], "the engine fetched an http URL"
        local_file = (media_dir / "w33698kgs05.mp4").resolve().as_uri()
        refused = ask_engine(engine_base, "arc-tiny", local_file)
        assert refused.status_code != 200, "the engine read a local file"
        assert httpx.get(engine_base + "/health").status_code == 200
        # A data: URL (what the gateway sends) still works.
        video = base64.b64encode((media_dir / "w33698kgs05.mp4").read_bytes()).decode()
        answered = ask_engine(engine_base, "arc-tiny", "data:video/mp4;base64," + video)
        assert answered.status_code == 200, answered.text
        # The image's ENV, then the service's environment; the image's PATH (its venv first).
        gateway_env = image_env(dockerfile("gateway.Dockerfile"))
        gateway_env.update(
            {k: defaults(v) for k, v in services["gateway-cpu"]["environment"].items()}
        )
        gateway_env.update(
            PATH=f"{gateway_bin}:/usr/local/bin:/usr/bin:/bin",
            HOME=str(tmp_path),
            ARC_GATEWAY_HOST="127.0.0.1",
            ARC_GATEWAY_PORT=str(gateway_port),
            ARC_GATEWAY_FILES_DIR=str(tmp_path / "files"),
            ARC_GATEWAY_UPSTREAM_URL=f"http://127.0.0.1:{engine_port}",
            ARC_GATEWAY_DECODE_WORKERS="1",  # this machine has 2 cores
            ARC_GATEWAY_FORWARD_DIR=str(forward),
        )
        # The compose secret arc_admin_key, mounted where the service's environment says.
        assert gateway_env["ARC_GATEWAY_ADMIN_KEY_FILE"] == "/run/secrets/arc_admin_key"
        admin_key = "sk-arc-admin-" + "k" * 32
        (tmp_path / "admin_key").write_text(admin_key + "\n")
        gateway_env["ARC_GATEWAY_ADMIN_KEY_FILE"] = str(tmp_path / "admin_key")
        gateway_log = tmp_path / "gateway.log"
        gateway = subprocess.Popen(
            [str(gateway_bin / entrypoint("gateway.Dockerfile"))],
            env=gateway_env,
            cwd=tmp_path,
            stdout=gateway_log.open("w"),
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{gateway_port}"
        wait_until(base + "/ready", gateway, gateway_log, 120)

        from openai import OpenAI

        assert httpx.get(base + "/v1/models").status_code == 401  # keys are on
        client = OpenAI(base_url=base + "/v1", api_key=admin_key, max_retries=0, timeout=300)
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
        # Forwarded through the shared folder (the compose default), and removed after.
        assert '"forward_mode": "shared"' in gateway_log.read_text()
        assert not [p for p in forward.iterdir() if not p.name.startswith(".")]
    finally:
        if gateway is not None:
            stop(gateway)
        stop(engine)
