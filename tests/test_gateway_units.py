"""Gateway parts that need no server: settings, stored files, answer parsing, the container."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from server.answers import parse_answer
from server.config import build_parser, load_settings
from server.errors import APIError
from server.files import FileStore
from vllm_plugin import prepared_media


def test_settings_from_flags_and_environment() -> None:
    env = {"ARC_GATEWAY_MAX_UPLOAD_MB": "10", "ARC_GATEWAY_ALLOW_URL_HOST": "a:1, b"}
    settings = load_settings(["--port", "9000"], env)
    assert settings.port == 9000 and settings.max_upload_bytes == 10 * 1024 * 1024
    assert settings.allow_url_host == ["a:1", "b"]
    # A flag wins over the environment.
    assert load_settings(["--max-upload-mb", "3"], env).max_upload_mb == 3
    text = build_parser().format_help()
    assert "ARC_GATEWAY_UPSTREAM_URL" in text and "default http://127.0.0.1:8000" in text


def _add(store: FileStore, tmp_path: Path, size: int) -> str:
    source = store.incoming_path()
    source.write_bytes(b"v" * size)
    return store.add(source, "a.mp4", "user_data", size, b"p" * size, {"frames": 1}).id


def test_file_store_expiry_and_budget(tmp_path: Path) -> None:
    store = FileStore(tmp_path, budget_bytes=10_000, ttl_s=3600)
    first = _add(store, tmp_path, 3000)
    time.sleep(1.1)  # created_at has a one-second resolution
    second = _add(store, tmp_path, 3000)  # 12 kB in all: the oldest goes
    assert [f.id for f in store.list()] == [second]
    with pytest.raises(APIError) as err:
        store.get(first)
    assert err.value.status_code == 404
    assert store.prepared(second, None, None)[0] == b"p" * 3000

    expiring = FileStore(tmp_path / "ttl", budget_bytes=10**9, ttl_s=0)
    gone = _add(expiring, tmp_path, 10)
    with pytest.raises(APIError):  # expired: gone at the next sweep or lookup
        expiring.get(gone)


def test_file_ids_cannot_name_paths(tmp_path: Path) -> None:
    store = FileStore(tmp_path, budget_bytes=10**9, ttl_s=60)
    for bad in ("../etc/passwd", "file-../../x", "file-ABC", ".incoming"):
        with pytest.raises(APIError):
            store.get(bad)


@pytest.mark.parametrize(
    ("text", "task", "answer", "segments"),
    [
        ("<think>a</think><answer>B</answer>", "mcq", "B", None),
        ("<think>a</think><answer>00:00:12-00:00:20</answer>", "grounding", "00:00:12-00:00:20",
         [(12.0, 20.0)]),
        ("<answer>00:00:00-00:00:15 intro\n00:00:15 - 00:01:02: cook</answer>", "chapters", None,
         [(0.0, 15.0), (15.0, 62.0)]),
        ("12.5 to 20 seconds", "grounding", "12.5 to 20 seconds", [(12.5, 20.0)]),
        ("<think>unfinished", "qa", None, None),
    ],
)  # fmt: skip
def test_parse_answer(text: str, task: str, answer: str | None, segments: list | None) -> None:
    parsed = parse_answer(text, task)
    if answer is not None:
        assert parsed.answer == answer
    if segments is None:
        assert parsed.segments is None
    else:
        assert [(s.start, s.end) for s in parsed.segments] == segments
    assert parse_answer("<think>unfinished", "qa").thinking == "unfinished"


def test_prepared_container_round_trip_and_refusals() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    audio = (rng.standard_normal(16000) * 0.1).astype(np.float32)
    data = prepared_media.encode(frames, audio, 3, {"intervals": [[0, 1]]})
    assert data == prepared_media.encode(frames, audio, 3, {"intervals": [[0, 1]]})
    assert prepared_media.is_prepared(data)
    media = prepared_media.decode(data, frame_size=64)
    assert media.frames.shape == frames.shape and media.duration == 3
    assert np.abs(media.audio - audio).max() < 1e-4
    with pytest.raises(prepared_media.PreparedMediaError):
        prepared_media.decode(data[: len(data) // 2], frame_size=64)
    with pytest.raises(prepared_media.PreparedMediaError, match="from 1 to 2"):
        prepared_media.decode(data, max_frames=2, frame_size=64)
    assert not prepared_media.is_prepared(b"\x00\x00\x00\x18ftypmp42")


WORKER_UNDER_A_TIGHT_LIMIT = """
import re, sys
from server import ingest
from vllm_plugin import preprocess

def data_mb():
    return int(re.search(r"VmData:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024

ingest.WORKER_BASE_MB = data_mb() + 40  # room for the pipeline's small arrays, not a 4K DPB
ingest.limit_worker_memory(1)
try:
    ingest.prepare_job(sys.argv[1], None, None, 600.0, 10**9, 120.0, None)
except (MemoryError, preprocess.MediaError) as exc:
    print("refused:", type(exc).__name__, exc)
    sys.exit(0)
print("decoded")
sys.exit(1)
"""


def test_decode_worker_memory_limit(tmp_path: Path) -> None:
    # Frames decode inside the worker (PyAV): a decoder that needs more memory than the
    # limit fails there with an error the gateway maps (MemoryError -> 422), no OOM kill.
    import subprocess
    import sys

    from media_factory import make_clip

    video = make_clip(tmp_path / "big.mp4", seconds=1, size="3840x2160", fps=5, audio=False)
    run = subprocess.run(
        [sys.executable, "-c", WORKER_UNDER_A_TIGHT_LIMIT, str(video)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    assert "refused" in run.stdout
