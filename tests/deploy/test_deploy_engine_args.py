"""Every engine command line of the deployments parsed by vLLM's own server parser: the
compose services (as Docker Compose resolves them), the Kubernetes engine, the images' CMDs.
A misspelt or removed flag fails here instead of in a crash-looping container, and the
values that matter are read back as vLLM understands them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from manifests import dockerfile, exec_form, stages
from test_deploy_validate import COMPOSE_FILE, ENV_EXAMPLE, compose_binary

pytest.importorskip("vllm")

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
NO_MEDIA_DOMAINS = ["data-urls-only/"]


def parse(args: list[str]):
    """vLLM's engine arguments from `arc-serve CHECKPOINT [options]` (arc-serve passes the
    options on to vLLM's OpenAI server as they are)."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    try:
        namespace = parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"vLLM refuses {args} (its message is in the captured stderr)")
    assert namespace.model_tag == args[0]
    namespace.model = namespace.model_tag
    return namespace, AsyncEngineArgs.from_cli_args(namespace)


@pytest.fixture(scope="module")
def compose_services(tmp_path_factory: pytest.TempPathFactory) -> dict:
    result = subprocess.run(
        [
            str(compose_binary()),
            "-f",
            str(COMPOSE_FILE),
            "--env-file",
            str(ENV_EXAMPLE),
            "--profile",
            "cpu",
            "config",
            "--format",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path_factory.mktemp("compose"),
        timeout=60,
    )
    return json.loads(result.stdout)["services"]


def k8s_engine_args() -> list[str]:
    (engine,) = [
        doc
        for doc in yaml.safe_load_all((K8S / "engine.yaml").read_text())
        if doc and doc["kind"] == "Deployment"
    ]
    return [str(a) for a in engine["spec"]["template"]["spec"]["containers"][0]["args"]]


def image_cmd(name: str) -> list[str]:
    final = stages(dockerfile(name))[-1]
    return [exec_form(rest) for keyword, rest in final if keyword == "CMD"][-1]


def assert_behind_the_gateway(engine, forward_dir: str = "") -> None:
    assert engine.allowed_media_domains == NO_MEDIA_DOMAINS
    # No local file, or only the gateway's forward folder (compose: shared forward mode).
    assert engine.allowed_local_media_path == forward_dir
    assert engine.limit_mm_per_prompt == {"video": 1}
    assert engine.max_model_len == 20480


def test_gpu_engines(compose_services: dict) -> None:
    for where, args in (
        ("compose vllm", compose_services["vllm"]["command"]),
        ("k8s arc-engine", k8s_engine_args()),
    ):
        _, engine = parse(args)
        assert engine.tensor_parallel_size == 2, where
        assert engine.dtype == "bfloat16", where
        assert 0.5 <= engine.gpu_memory_utilization <= 0.95, where
        # Compose shares the gateway's forward folder (one host); Kubernetes does not.
        assert_behind_the_gateway(engine, "/data/forward" if where.startswith("compose") else "")
    _, engine = parse(image_cmd("engine.Dockerfile"))
    assert engine.model == "TencentARC/ARC-Hunyuan-Video-7B"


def test_cpu_engines(compose_services: dict) -> None:
    for where, args in (
        ("compose vllm-cpu", compose_services["vllm-cpu"]["command"]),
        ("cpu-engine.Dockerfile CMD", image_cmd("cpu-engine.Dockerfile")),
    ):
        namespace, engine = parse(args)
        assert namespace.model_tag == "tiny", where
        # An explicit KV cache and eager mode: vLLM's CPU worker skips its warm-up.
        assert engine.kv_cache_memory_bytes == 256 * 2**20, where
        assert engine.enforce_eager is True, where
        assert engine.dtype == "float32", where
        assert namespace.port == 8000 and namespace.host == "0.0.0.0", where
    _, engine = parse(compose_services["vllm-cpu"]["command"])
    assert_behind_the_gateway(engine, "/data/forward")


def test_engines_schedule_by_priority(compose_services: dict) -> None:
    """Every deployed engine orders waiting requests by their `priority` (interactive 0
    before the gateway's batch work); the images' own CMDs get it from arc-serve's defaults
    (tests/plugin/test_serve.py)."""
    for where, args in (
        ("compose vllm", compose_services["vllm"]["command"]),
        ("compose vllm-cpu", compose_services["vllm-cpu"]["command"]),
        ("k8s arc-engine", k8s_engine_args()),
    ):
        _, engine = parse(args)
        assert engine.scheduling_policy == "priority", where
