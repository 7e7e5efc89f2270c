"""Reading the deployment files for the deploy tests: the repository's deployment paths,
Dockerfiles as instructions and stages, `.env` files, compose interpolation, durations and
flags, and the metric names the gateway, vLLM and the dashboard's queries use."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "arc-video-serve.json"

# when vLLM's source is not installed to read them from.
VLLM_METRICS_FALLBACK = {
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:generation_tokens": "counter",
    "vllm:prompt_tokens": "counter",
    "vllm:prompt_tokens_cached": "counter",
    "vllm:prefix_cache_queries": "counter",
    "vllm:prefix_cache_hits": "counter",
    "vllm:request_success": "counter",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
}

# The gateway's documented options (flags / ARC_GATEWAY_* variables), used when the
# gateway's settings module cannot be imported.
GATEWAY_OPTIONS_FALLBACK = {
    "host",
    "port",
    "upstream_url",
    "files_dir",
    "decode_workers",
    "max_upload_mb",
    "max_duration_s",
    "max_inflight",
    "max_queue",
    "allow_url_host",
    "files_budget_mb",
    "log_level",
}


def project_scripts() -> set[str]:
    text = (REPO / "pyproject.toml").read_text()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: read the one table by hand
        section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
        return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*=", section, re.MULTILINE))
    return set(tomllib.loads(text)["project"]["scripts"])


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuations joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DOCKER / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, f"{name}: dangling line continuation"
    return instructions


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for item in instructions:
        if item[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(item)
    return result


def build_args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    values = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            values[key.strip()] = value.strip().strip('"')
    return values


def expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), text)


def from_image(rest: str) -> str:
    words = [w for w in rest.split() if not w.startswith("--")]
    return words[0]


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def console_command(entrypoint: list[str]) -> str:
    """The console command an ENTRYPOINT runs, behind an init (`tini --`) if any."""
    if "--" in entrypoint and Path(entrypoint[0]).name in ("tini", "dumb-init"):
        return entrypoint[entrypoint.index("--") + 1]
    return entrypoint[0]


def image_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """ENV of the final stage (`ENV A=1 B=2` forms, as these Dockerfiles write them)."""
    values: dict[str, str] = {}
    for keyword, rest in stages(instructions)[-1]:
        if keyword == "ENV":
            for item in rest.split():
                key, sep, value = item.partition("=")
                assert sep, f"ENV {rest!r}: use the KEY=VALUE form"
                values[key] = value.strip('"')
    return values


def parse_env_file(path: Path) -> dict[str, str]:
    values = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
            values[key.strip()] = value.strip()
    return values


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def compose_variables(text: str) -> dict[str, str | None]:
    """Variables used by the compose file: name -> default (None: no default)."""
    found: dict[str, str | None] = {}
    for name, op, default in _VAR.findall(text):
        found[name] = default if op in (":-", "-") else None
    return found


def interpolate(value, env: dict[str, str]):
    if isinstance(value, str):

        def one(match: re.Match) -> str:
            name, op, default = match.groups()
            current = env.get(name)
            if op == ":-" and not current:
                return default
            if op == "-" and current is None:
                return default
            return current or ""

        return _VAR.sub(one, value).replace("$$", "$")
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def seconds(duration) -> float:
    if isinstance(duration, (int, float)):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(a + b for a, b in parts) == duration, duration
    return sum(float(amount) * units[unit] for amount, unit in parts)


def flag_value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag:
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def gateway_options() -> set[str]:
    try:
        from server import config
    except ImportError:  # the gateway is not importable here: its documented options
        return GATEWAY_OPTIONS_FALLBACK
    settings = getattr(config, "Settings", None)
    if settings is not None and dataclasses.is_dataclass(settings):
        return {f.name for f in dataclasses.fields(settings)}
    if settings is not None and hasattr(settings, "model_fields"):
        return set(settings.model_fields)
    return GATEWAY_OPTIONS_FALLBACK


def vllm_metrics() -> dict[str, str]:
    """vLLM's metric names and types, read from its source when it is installed."""
    spec = importlib.util.find_spec("vllm")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        loggers = Path(next(iter(spec.submodule_search_locations))) / "v1/metrics/loggers.py"
        if loggers.is_file():
            found = {
                name: kind
                for kind, name in re.findall(
                    r"_(counter|gauge|histogram)_cls\(\s*name=\"(vllm:[^\"]+)\"",
                    loggers.read_text(),
                )
            }
            if found:
                return found
    return VLLM_METRICS_FALLBACK


def exposed_names(metrics: dict[str, str]) -> set[str]:
    """The series names Prometheus sees for metrics of the given types."""
    names = set()
    for name, kind in metrics.items():
        if kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
        elif kind == "counter":
            names.add(name.removesuffix("_total") + "_total")
        else:
            names.add(name)
    return names


def gateway_source_metrics() -> set[str]:
    """Metric names the gateway's source registers (empty while there is no source)."""
    names = set()
    for path in (REPO / "server").glob("*.py"):
        names |= set(re.findall(r"[\"'](arc_gateway_[a-z0-9_]+)[\"']", path.read_text()))
    return names


def promql_metrics(expr: str) -> set[str]:
    return set(re.findall(r"(?<![\w:])((?:arc_|vllm:)[A-Za-z0-9_:]+)", expr))


def load_compose(env: dict[str, str]) -> dict:
    """deploy/docker-compose.yml with its variables filled from `env`."""
    import yaml

    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env)


def load_k8s() -> dict[tuple[str, str], dict]:
    """The Kubernetes objects the kustomization names, by (kind, name); the kustomization
    itself as ("Kustomization", "kustomization")."""
    import yaml

    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objects = {}
    for resource in kustomization["resources"]:
        path = K8S / resource
        assert path.is_file(), f"kustomization names a missing file: {resource}"
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            for key in ("apiVersion", "kind", "metadata"):
                assert key in doc, f"{resource}: an object without {key}"
            ident = (doc["kind"], doc["metadata"]["name"])
            assert ident not in objects, f"duplicate {ident}"
            objects[ident] = doc
    objects[("Kustomization", "kustomization")] = kustomization
    return objects
