"""Shared test fixtures: where ../shared lives, and skips when it is absent.

Tests are grouped by wing (media/, plugin/, gateway/, deploy/, benchmarks/); the helpers
they share (servers.py, media_factory.py) live here, importable from every group."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # servers, media_factory
SHARED = Path(os.environ.get("ARC_SHARED", REPO_ROOT.parent / "shared"))
MEDIA = SHARED / "media"
GOLDEN = SHARED / "golden"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set ARC_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def media_dir(shared_dir: Path) -> Path:
    return shared_dir / "media"


@pytest.fixture(scope="session")
def golden_dir(shared_dir: Path) -> Path:
    return shared_dir / "golden"


@pytest.fixture(scope="session")
def forward_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder the session engine reads file:// URLs from, for gateways in
    `--forward-mode shared` (each test's gateway uses a folder of its own inside)."""
    return tmp_path_factory.mktemp("forward").resolve()


@pytest.fixture(scope="session")
def engine(
    tmp_path_factory: pytest.TempPathFactory, media_dir: Path, forward_root: Path
) -> Iterator[tuple[str, Path]]:
    """One `arc-serve` (vLLM + plugin, float32) on a generated tiny checkpoint for the whole
    session: (base URL, checkpoint). Local media and `forward_root` may be sent as file://
    URLs: vLLM takes one allowed folder, so it is the folder the two have in common."""
    from servers import free_port, start_engine, stop

    from vllm_plugin.tiny_checkpoint import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "engine.log"
    allowed = os.path.commonpath([media_dir.resolve(), forward_root])
    proc = start_engine(checkpoint, port, log, ["--allowed-local-media-path", allowed])
    yield f"http://127.0.0.1:{port}", checkpoint
    stop(proc)
