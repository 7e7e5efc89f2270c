"""What the model hears, and that no request can kill it, through each real entry point:
`arc-serve` (video_url), the gateway (upload) and offline `LLM.generate`.

The same pictures with two soundtracks must give different first-step log-probabilities
(the audio reaches the model); the same video twice must give identical ones. Every bad
item a client can send gets a 4xx, memory stays bounded and the engine keeps answering.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import data_url
from logprobs import distance, first_step
from media_factory import ffmpeg
from prepared_containers import bad_containers, good_members, jpeg, manifest, zip_of
from servers import free_port, start_gateway, stop

pytestmark = pytest.mark.engine

QUESTION = "What do you hear?"


@pytest.fixture(scope="module")
def soundtrack_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 4 s of pictures with a tone and with noise."""
    folder = tmp_path_factory.mktemp("soundtracks")
    picture = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10:duration=4"]
    codec = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"]
    sounds = {
        "tone": "sine=frequency=440:sample_rate=16000:duration=4",
        "noise": "anoisesrc=color=white:amplitude=0.8:sample_rate=16000:duration=4:seed=3",
    }
    paths = {}
    for name, source in sounds.items():
        paths[name] = folder / f"{name}.mp4"
        ffmpeg(*picture, "-f", "lavfi", "-i", source, *codec, "-shortest", str(paths[name]))
    return paths


def chat_body(url: str, model: str, **extra: Any) -> dict[str, Any]:
    content = [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": QUESTION}]
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 5,
        **extra,
    }


def assert_hears(logprobs: dict[str, dict[str, float]]) -> None:
    # The same video twice: equal up to float32 rounding (the second request reuses the
    # prefix cache, so fewer tokens are computed in another order: ~1e-6).
    assert distance(logprobs["tone"], logprobs["tone again"]) < 1e-4, logprobs
    # The same pictures with another soundtrack: another input.
    assert distance(logprobs["tone"], logprobs["noise"]) > 1e-3, logprobs


# ---------------------------------------------------------------------------------------
# arc-serve


def test_arc_serve_hears_the_soundtrack(
    engine: tuple[str, Path], soundtrack_videos: dict[str, Path]
) -> None:
    base, _ = engine
    order = {"tone": "tone", "noise": "noise", "tone again": "tone"}
    with httpx.Client(base_url=base, timeout=300) as client:
        logprobs = {
            label: first_step(
                client.post(
                    "/v1/chat/completions",
                    json=chat_body(data_url(soundtrack_videos[name].read_bytes()), "arc-tiny"),
                )
            )
            for label, name in order.items()
        }
    assert_hears(logprobs)


def test_arc_serve_ignores_client_uuids(
    engine: tuple[str, Path], soundtrack_videos: dict[str, Path]
) -> None:
    """A client's uuid never stands for the content: another soundtrack under the same
    uuid is heard, and a uuid alone is a 400, not another client's video."""
    base, _ = engine

    def body(url: str | None) -> dict[str, Any]:
        out = chat_body(url or "", "arc-tiny")
        part = out["messages"][0]["content"][0]
        part["uuid"] = "shared-key"
        if url is None:
            part["video_url"] = None
        return out

    with httpx.Client(base_url=base, timeout=300) as client:
        urls = {name: data_url(path.read_bytes()) for name, path in soundtrack_videos.items()}
        tone = first_step(client.post("/v1/chat/completions", json=body(urls["tone"])))
        noise = first_step(client.post("/v1/chat/completions", json=body(urls["noise"])))
        alone = client.post("/v1/chat/completions", json=body(None))
    assert distance(tone, noise) > 1e-3
    assert alone.status_code == 400, alone.text


def engine_memory(port: int) -> int:
    """RSS of the process listening on `port` (vLLM's API server; it renames itself,
    so it is found by its socket) and all its children, the engine core (bytes)."""
    import psutil

    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            proc = psutil.Process(conn.pid)
            tree = [proc, *proc.children(recursive=True)]
            return sum(p.memory_info().rss for p in tree if p.is_running())
    raise AssertionError(f"no process listens on port {port}")


def tiny_video(tmp: Path) -> str:
    tiny = tmp / "tiny_2x2.mp4"
    if not tiny.exists():
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=2x2:rate=5:duration=2", "-c:v", "libx264",
               "-pix_fmt", "yuv444p", str(tiny))  # fmt: skip
    return data_url(tiny.read_bytes())


def hostile_items(tmp: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every bad item kind a client can send to arc-serve: (video URL, extra body)."""
    frame = base64.b64encode(jpeg(64)).decode()
    items = {
        "JPEG frame list (64x64)": (f"data:video/jpeg;base64,{frame},{frame}", {}),
        "container: duration 10 for 2 frames": (
            data_url(
                zip_of({**good_members(), "arc-prepared.json": manifest(duration=10)}),
                "video/x-arc-prepared",
            ),
            {},
        ),
        "another video loader by media_io_kwargs": (
            tiny_video(tmp),
            {"media_io_kwargs": {"video": {"video_backend": "opencv"}}},
        ),
        "not base64": ("data:video/mp4;base64,@@@@", {}),
    }
    for name, (data, _) in bad_containers().items():
        items[f"container: {name}"] = (data_url(data, "video/x-arc-prepared"), {})
    return items


def test_no_request_can_kill_arc_serve(
    engine: tuple[str, Path], media_dir: Path, tmp_path: Path
) -> None:
    base, _ = engine
    port = int(base.rsplit(":", 1)[1])
    good = data_url((media_dir / "syn_short.mp4").read_bytes())
    with httpx.Client(base_url=base, timeout=300) as client:
        # Warm: the first request loads lazily imported code and caches.
        assert (
            client.post("/v1/chat/completions", json=chat_body(good, "arc-tiny")).status_code == 200
        )
        for name, (url, extra) in hostile_items(tmp_path).items():
            before = engine_memory(port)
            reply = client.post("/v1/chat/completions", json=chat_body(url, "arc-tiny", **extra))
            grown = engine_memory(port) - before
            assert 400 <= reply.status_code < 500, (name, reply.status_code, reply.text[:300])
            assert reply.json()["error"]["message"], name
            assert grown < 100 << 20, f"{name}: +{grown / 2**20:.0f} MB"
            assert client.get("/health").status_code == 200, f"{name} killed the engine"
        # A 2x2 video: answered (the overlay is skipped or scaled) or refused, nothing else.
        tiny = client.post("/v1/chat/completions", json=chat_body(tiny_video(tmp_path), "arc-tiny"))
        assert tiny.status_code in (200, 400), tiny.text
        answer = client.post("/v1/chat/completions", json=chat_body(good, "arc-tiny"))
        assert answer.status_code == 200 and answer.json()["choices"], answer.text


def test_container_errors_say_what_is_wrong(engine: tuple[str, Path]) -> None:
    base, _ = engine
    lying = zip_of({**good_members(), "arc-prepared.json": manifest(frame_size=[64, 64]),
                    "frames/000.jpg": jpeg(64), "frames/001.jpg": jpeg(64)})  # fmt: skip
    with httpx.Client(base_url=base, timeout=300) as client:
        reply = client.post(
            "/v1/chat/completions",
            json=chat_body(data_url(lying, "video/x-arc-prepared"), "arc-tiny"),
        )
    assert reply.status_code == 400
    assert "640x640" in reply.json()["error"]["message"]


# ---------------------------------------------------------------------------------------
# the gateway


@pytest.fixture(scope="module")
def gateway(engine: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("hearing-gateway")
    port = free_port()
    proc = start_gateway(engine[0], port, folder / "files", folder / "gateway.log")
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def test_gateway_upload_hears_the_soundtrack(
    gateway: str, soundtrack_videos: dict[str, Path]
) -> None:
    with httpx.Client(base_url=gateway, timeout=300) as client:
        ids = {}
        for name, path in soundtrack_videos.items():
            with path.open("rb") as handle:
                reply = client.post(
                    "/v1/files",
                    files={"file": (path.name, handle, "video/mp4")},
                    data={"purpose": "user_data"},
                )
            assert reply.status_code == 200, reply.text
            ids[name] = reply.json()["id"]
        order = {"tone": "tone", "noise": "noise", "tone again": "tone"}
        logprobs = {
            label: first_step(client.post("/v1/chat/completions", json=chat_body(ids[name], "arc")))
            for label, name in order.items()
        }
    assert_hears(logprobs)


# ---------------------------------------------------------------------------------------
# offline (LLM.generate), in its own process: an engine of its own

OFFLINE_SCRIPT = r"""
import json, sys
import numpy as np

def main():
    from vllm import LLM, SamplingParams
    from arc_media.pipeline import prepare_video
    from vllm_plugin.prompts import prompt_ids

    checkpoint, tone, noise = sys.argv[1:4]
    llm = LLM(model=checkpoint, dtype="float32", max_model_len=20480, enforce_eager=True,
              kv_cache_memory_bytes=256 << 20, limit_mm_per_prompt={"video": 1})
    ids = prompt_ids(llm.get_tokenizer(), "What do you hear?", "qa")
    params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=5)

    def first_step(frames, metadata):
        prompt = {"prompt_token_ids": ids, "multi_modal_data": {"video": (frames, metadata)}}
        out = llm.generate(prompt, params, use_tqdm=False)[0]
        return {str(k): v.logprob for k, v in out.outputs[0].logprobs[0].items()}

    videos = {name: prepare_video(path) for name, path in (("tone", tone), ("noise", noise))}
    result = {}
    for label, name in (("tone", "tone"), ("noise", "noise"), ("tone again", "tone")):
        v = videos[name]
        result[label] = first_step(v.frames, {"arc_audio": v.audio, "arc_duration": v.duration})
    # Same pictures, the other soundtrack: the processor cache must not answer with the first.
    v = videos["tone"]
    result["tone pictures, noise audio"] = first_step(
        v.frames, {"arc_audio": videos["noise"].audio[: len(v.audio)], "arc_duration": v.duration})
    try:
        first_step(np.zeros((2, 64, 64, 3), np.uint8), {})
        result["refused"] = None
    except ValueError as e:
        result["refused"] = str(e)
    result["after"] = first_step(v.frames, {"arc_audio": v.audio, "arc_duration": v.duration})
    print("RESULT " + json.dumps(result))

if __name__ == "__main__":
    main()
"""


def test_offline_generate_hears_the_soundtrack(
    soundtrack_videos: dict[str, Path], tmp_path: Path
) -> None:
    from vllm_plugin.tiny_checkpoint import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "ckpt")
    script = tmp_path / "offline.py"
    script.write_text(OFFLINE_SCRIPT)
    env = dict(os.environ, TORCH_COMPILE_DISABLE="1", VLLM_LOGGING_LEVEL="WARNING")
    run = subprocess.run(
        [sys.executable, str(script), str(checkpoint),
         str(soundtrack_videos["tone"]), str(soundtrack_videos["noise"])],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert_hears(result)
    assert distance(result["tone pictures, noise audio"], result["tone"]) > 1e-3
    assert result["refused"] and "640" in result["refused"]
    assert distance(result["after"], result["tone"]) < 1e-4
