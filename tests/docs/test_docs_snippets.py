"""The Python snippets of the docs (README.md, deploy/README.md, docs/*.md) run as written
against a real `arc-gateway` (API keys on, its key made with `arc-gateway keys create`) in
front of the real engine (the session's tiny model), and against that engine as arc-serve.

Only what a reader would change is substituted: the base URLs, the files' paths (a shared
clip, a synthetic six-minute video for the long-video examples), the API key, and the
checkpoint path arc-serve serves under. A snippet that stops matching the API (a field
renamed, an attribute gone, an option refused) fails here. Each document's snippets run in
order in one namespace, as a reader pastes them one after the other; the comments' claims
are checked after them (`CLAIMS`).
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import create_key, free_port, start_gateway, stop

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
CLIP = "w33698kgs05.mp4"  # 7.5 s, with audio
BATCH_CLIPS = ("syn_short.mp4", CLIP)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """Each ```python block of a Markdown file: (its first line's number, its code)."""
    text = path.read_text()
    return [
        (text[: m.start()].count("\n") + 2, m.group(1))
        for m in re.finditer(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    ]


def documents_with_snippets() -> list[str]:
    """Every tracked Markdown file with a Python snippet."""
    tracked = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [name for name in tracked if python_blocks(ROOT / name)]


DOCUMENTS = documents_with_snippets()


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Over five minutes, so that it is asked about in segments; tiny and quick to decode."""
    from media_factory import make_long_video

    folder = tmp_path_factory.mktemp("docs-long")
    return make_long_video(folder / "lecture.mp4", seconds=320, size="96x54", fps=1)


@pytest.fixture(scope="module")
def video_folder(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of videos the batch example runs over: two short shared clips."""
    folder = tmp_path_factory.mktemp("docs-videos")
    for name in BATCH_CLIPS:
        shutil.copyfile(media_dir / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def docs_gateway(
    engine: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """A gateway with API keys on (a key made by the real command): (base URL, the key)."""
    folder = tmp_path_factory.mktemp("docs-gateway")
    files = folder / "files"
    key = create_key(str(files), "docs")
    port = free_port()
    proc = start_gateway(engine[0], port, files, folder / "gateway.log", ["--decode-workers", "1"])
    yield f"http://127.0.0.1:{port}", key
    stop(proc)


def substitutions(
    engine_url: str, gateway: str, key: str, clip: Path, long_clip: Path, videos: Path
) -> dict[str, str]:
    data_url = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
    return {
        '"http://127.0.0.1:8000/v1"': repr(engine_url + "/v1"),
        '"http://127.0.0.1:8080/v1"': repr(gateway + "/v1"),
        '"http://localhost:8080/v1"': repr(gateway + "/v1"),
        'api_key="none"': f"api_key={key!r}",
        'api_key="sk-arc-..."': f"api_key={key!r}",
        # arc-serve serves a checkpoint under its path; the session's engine under arc-tiny
        'model="/tmp/arc-tiny"': 'model="arc-tiny"',
        '"data:video/mp4;base64,..."': repr(data_url),
        '"clip.mp4"': repr(str(clip)),
        '"lecture.mp4"': repr(str(long_clip)),
        '"lecture-1h.mp4"': repr(str(long_clip)),
        '"videos/"': repr(str(videos)),
    }


def _gateway_example(ns: dict[str, Any]) -> None:
    structured = ns["reply"].choices[0].structured
    assert set(structured) == {"thinking", "answer", "segments"}, structured
    video = ns["reply"].usage.video
    assert set(video) == {"frames", "has_audio", "video_tokens", "duration_s", "clip"}, video
    assert video["clip"] == [0.0, video["duration_s"]]  # end 60 cut to the clip's 7.5 s
    assert type(ns["tagged"].choices[0].message.parsed).__name__ == "Tags"


def _long_video_example(ns: dict[str, Any]) -> None:
    stored = ns.get("lecture") or ns["video"]
    assert stored.video["segments"] == 2 and stored.video["frames"] is None, stored.video
    assert stored.video["video_duration_s"] == pytest.approx(320, abs=1)
    segments = ns["reply"].usage.video["segments"]
    assert [(s["start"], s["end"]) for s in segments] == [(0.0, 300.0), (300.0, 320.0)]
    assert set(segments[0]) == {"start", "end", "frames", "video_tokens", "has_audio", "answer"}
    assert set(ns["reply"].choices[0].structured) == {"thinking", "answer", "segments"}


def _batch_example(ns: dict[str, Any]) -> None:
    batch = ns["batch"]
    assert batch.status == "completed", batch
    assert batch.request_counts.completed == len(BATCH_CLIPS) and not batch.request_counts.failed
    assert sorted(ns["answers"]) == sorted(BATCH_CLIPS)
    assert all(isinstance(text, str) and text for text in ns["answers"].values())


# What the snippets' comments say, checked after each snippet that holds the marker.
CLAIMS: dict[str, Callable[[dict[str, Any]], None]] = {
    "class Tags(BaseModel)": _gateway_example,
    'extra_body={"video": {"task": "grounding"}}': _long_video_example,
    "client.batches.create(": _batch_example,
}


@pytest.mark.parametrize("name", DOCUMENTS)
def test_python_snippets_run_as_written(
    name: str,
    engine: tuple[str, Path],
    docs_gateway: tuple[str, str],
    media_dir: Path,
    long_clip: Path,
    video_folder: Path,
) -> None:
    blocks = python_blocks(ROOT / name)
    gateway, key = docs_gateway
    replace = substitutions(engine[0], gateway, key, media_dir / CLIP, long_clip, video_folder)
    namespace: dict[str, Any] = {"__name__": f"snippets of {name}"}
    for line, code in blocks:
        for written, used in replace.items():
            code = code.replace(written, used)
        try:
            exec(compile(code, f"{name}:{line}", "exec", dont_inherit=True), namespace)  # noqa: S102
        except Exception as e:
            raise AssertionError(f"the snippet at {name}:{line} fails: {e!r}") from e
        for marker, check in CLAIMS.items():
            if marker in code:
                check(namespace)


def test_the_readmes_snippets_are_found() -> None:
    assert {"README.md", "deploy/README.md", "docs/long-videos.md"} <= set(DOCUMENTS)
    assert len(python_blocks(ROOT / "README.md")) >= 4
