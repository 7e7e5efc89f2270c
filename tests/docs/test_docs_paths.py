"""The paths the docs name in backticks exist: every tracked Markdown file, each `path`
that starts at the repository's root (`server/chat/service.py`, `tests/docs/`, a glob such
as `server/chat/prompts/*.txt`) must be there, and a source file named from inside a
folder (`chat/service.py` in the architecture's server table, `pipeline.py` in arc_media's
row) must be the end of some tracked path. Names of what the reader or a run makes
(a checkpoint's `config.json`, a benchmark's `report.json`) are not source files and are
not checked."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What a reader makes by following the docs, named before it exists.
MADE_BY_THE_READER = {"deploy/secrets/admin_key"}
SOURCE = re.compile(r"\.(py|js|css|html|txt|sh|ya?ml|toml|mako|svg)$")
TOKEN = re.compile(r"`([\w.*/-]+)`")


def tracked() -> list[str]:
    return subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()


def test_paths_named_in_the_docs_exist() -> None:
    files = tracked()
    folders = {"/".join(f.split("/")[:k]) + "/" for f in files for k in range(1, f.count("/") + 1)}
    everything = set(files) | folders
    top = {f.split("/")[0] for f in files}
    missing = []
    for doc in (f for f in files if f.endswith(".md")):
        for token in TOKEN.findall((ROOT / doc).read_text()):
            token = token.rstrip(".:,")
            if "/" in token and token.split("/")[0] in top:  # from the repository's root
                found = list(ROOT.glob(token)) if "*" in token else (ROOT / token).exists()
                if not found and token not in MADE_BY_THE_READER:
                    missing.append(f"{doc}: `{token}`")
            elif SOURCE.search(token) and "*" not in token:  # named from inside a folder
                near = (ROOT / doc).parent / token
                if not near.exists() and not any(
                    p == token or p.endswith("/" + token) for p in everything
                ):
                    missing.append(f"{doc}: `{token}`")
    assert not missing, "paths the docs name that do not exist:\n" + "\n".join(missing)
