"""Where arc-ask and `arc-serve tiny` keep the embedded tiny random-weight checkpoint.

Light on purpose (no torch until the checkpoint is written): arc-ask checks its arguments,
and shows this folder in its help, before anything heavy is imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

DEFAULT_TINY_DIR = Path(os.environ.get("ARC_TINY_DIR", Path.home() / ".cache/arc-video-serve/tiny"))


def ensure_tiny_checkpoint(path: Path, say: Callable[[str], None] = lambda message: None) -> Path:
    """The tiny checkpoint at `path`, written once (seed 0) if it is not there."""
    if (path / "config.json").exists():
        return path
    from .tiny_checkpoint import write_tiny_checkpoint

    say(f"writing the tiny random-weight checkpoint to {path} (once)")
    return write_tiny_checkpoint(path)
