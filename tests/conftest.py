"""Shared test fixtures: where ../shared lives, and skips when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
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
