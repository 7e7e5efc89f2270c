"""Shared test fixtures: where ../shared lives, and skips when it is absent.

Tests are grouped by wing (media/, plugin/, gateway/, deploy/, benchmarks/, docs/); the
helpers they share live here, importable from every group: servers.py (the real servers),
helpers.py (requests, uploads, error checks, data URLs, stand-in upstreams), media_factory.py
(videos made with ffmpeg), prepared_containers.py (prepared containers built by hand),
stand_in_engine.py (the long-video stand-in), logprobs.py, postgres.py."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers above
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
def engine_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one folder the session engine reads file:// URLs from (vLLM takes one)."""
    return tmp_path_factory.mktemp("engine-files").resolve()


@pytest.fixture(scope="session")
def engine_media(engine_files: Path, media_dir: Path) -> Path:
    """Copies of the small shared clips inside the engine's folder, for file:// URLs."""
    folder = engine_files / "media"
    folder.mkdir(exist_ok=True)
    for name in ("syn_short.mp4", "w33698kgs05.mp4", "c3522vbgwaw.mp4"):
        if not (folder / name).exists():
            shutil.copyfile(media_dir / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def forward_root(engine_files: Path) -> Path:
    """A folder the session engine reads file:// URLs from, for gateways in
    `--forward-mode shared` (each test's gateway uses a folder of its own inside)."""
    folder = engine_files / "forward"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def engine(
    tmp_path_factory: pytest.TempPathFactory, engine_files: Path
) -> Iterator[tuple[str, Path]]:
    """One `arc-serve` (vLLM + plugin, float32) on a generated tiny checkpoint for the whole
    session: (base URL, checkpoint). It reads file:// URLs from `engine_files` only
    (`engine_media`, `forward_root`)."""
    from servers import free_port, start_engine, stop

    from vllm_plugin.tiny_checkpoint import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "engine.log"
    # prompt_tokens_details.cached_tokens in the usage: what the prefix cache served
    # (tests/gateway/test_gateway_tenancy.py)
    extra = ["--allowed-local-media-path", str(engine_files), "--enable-prompt-tokens-details"]
    proc = start_engine(checkpoint, port, log, extra)
    yield f"http://127.0.0.1:{port}", checkpoint
    stop(proc)


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """One real PostgreSQL server for the session (tests/postgres.py); each test that needs
    a database takes a fresh one from it (`postgres.new_database()`)."""
    from postgres import remove, start_postgres
    from servers import free_port

    server = start_postgres(free_port())
    yield server
    remove(server)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database URL, once per store: SQLite in a file, then PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.db'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture(scope="session")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 7-minute synthetic video (a colour card and a tone per minute, 160x90, 2 fps), made
    once per session (~2 s): long enough to be cut into segments (`video.segments`)."""
    from media_factory import make_long_video

    return make_long_video(tmp_path_factory.mktemp("long") / "cards-420s.mp4", seconds=420)
