"""`arc-serve` (vllm serve + plugin) on a tiny checkpoint, called with the openai client."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import data_url, serve_folder

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def server(engine):
    return engine


def video_message(url: str, text: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "video_url", "video_url": {"url": url}},
                {"type": "text", "text": text},
            ],
        }
    ]


def client(base: str):
    from openai import OpenAI

    return OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=300)


def test_completion_counts_video_tokens(server, media_dir: Path) -> None:
    base, ckpt = server
    from transformers import AutoTokenizer

    video = media_dir / "w33698kgs05.mp4"
    question = "What is happening?"
    reply = client(base).chat.completions.create(
        model="arc-tiny",
        messages=video_message(data_url(video), question),
        max_tokens=8,
        temperature=0,
        extra_body={"chat_template_kwargs": {"task": "qa"}},
    )
    assert reply.choices[0].message.content is not None
    assert reply.usage.completion_tokens == 8 or reply.choices[0].finish_reason == "stop"
    # 8 frames x 114 tokens + <|startoftext|> + text + <sep>.
    from vllm_plugin.prompts import user_text

    tok = AutoTokenizer.from_pretrained(ckpt)
    text_tokens = len(tok.encode(user_text(question, "qa"), add_special_tokens=False))
    assert reply.usage.prompt_tokens == 8 * 114 + 2 + text_tokens


def test_streaming(server, media_dir: Path) -> None:
    base, _ = server
    stream = client(base).chat.completions.create(
        model="arc-tiny",
        messages=video_message(data_url(media_dir / "syn_short.mp4"), "Hi"),
        max_tokens=4,
        temperature=0,
        stream=True,
    )
    chunks = [c for c in stream]
    assert chunks and chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_a_text_only_message_is_answered(server) -> None:
    """What the gateway's integration pass sends: one user message and no video, with the
    template's task `none` (the prompt holds its own instruction) or a task's instruction."""
    base, ckpt = server
    from transformers import AutoTokenizer

    from vllm_plugin.prompts import INSTRUCTIONS

    tok = AutoTokenizer.from_pretrained(ckpt)
    text = "[Segment 1 of 2, 00:00:00-00:05:00]\nA red card.\n\nWhich colours?"
    for task, tail in (("none", ""), ("qa", "\n" + INSTRUCTIONS["qa"])):
        reply = client(base).chat.completions.create(
            model="arc-tiny",
            messages=[{"role": "user", "content": text}],
            max_tokens=2,
            extra_body={"chat_template_kwargs": {"task": task}},
        )
        assert reply.choices[0].message.content is not None
        # <|startoftext|> + the text (+ the instruction) + <sep>
        expected = 2 + len(tok.encode(text + tail, add_special_tokens=False))
        assert reply.usage.prompt_tokens == expected, task


def bad_videos(media: Path, tmp: Path) -> dict[str, bytes]:
    audio_only = tmp / "audio_only.m4a"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=2",
            "-c:a",
            "aac",
            str(audio_only),
        ],
        check=True,
    )
    frame = media.parent / "golden" / "preprocess" / "syn_short" / "frame_000.png"
    return {
        "corrupt bytes": b"\x00garbage" * 100,
        "truncated mp4": (media / "w33698kgs05.mp4").read_bytes()[:3000],
        "no video stream": audio_only.read_bytes(),
        "image as video": frame.read_bytes(),
    }


def test_bad_videos_are_400_and_server_keeps_serving(server, media_dir, tmp_path) -> None:
    base, _ = server
    import openai

    for label, payload in bad_videos(media_dir, tmp_path).items():
        url = "data:video/mp4;base64," + base64.b64encode(payload).decode()
        with pytest.raises(openai.BadRequestError) as err:
            client(base).chat.completions.create(
                model="arc-tiny", messages=video_message(url, "Hi"), max_tokens=2
            )
        message = str(err.value).lower()
        assert "video" in message or "stream" in message, (label, message)
    ok = client(base).chat.completions.create(
        model="arc-tiny",
        messages=video_message(data_url(media_dir / "syn_short.mp4"), "Hi"),
        max_tokens=2,
    )
    assert ok.choices


def test_second_video_and_system_prompt_are_400(server, media_dir: Path) -> None:
    base, _ = server
    import openai

    url = data_url(media_dir / "syn_short.mp4")
    two = [
        {
            "role": "user",
            "content": [
                {"type": "video_url", "video_url": {"url": url}},
                {"type": "video_url", "video_url": {"url": url}},
                {"type": "text", "text": "Hi"},
            ],
        }
    ]
    with pytest.raises(openai.BadRequestError):
        client(base).chat.completions.create(model="arc-tiny", messages=two, max_tokens=2)
    system = [{"role": "system", "content": "Be brief."}] + video_message(url, "Hi")
    with pytest.raises(openai.BadRequestError) as err:
        client(base).chat.completions.create(model="arc-tiny", messages=system, max_tokens=2)
    assert "single user message" in str(err.value)


def test_file_and_http_urls(server, engine_media: Path, media_dir: Path) -> None:
    """A local file (inside --allowed-local-media-path) and an http URL on loopback."""

    base, _ = server
    file_url = (engine_media / "syn_short.mp4").as_uri()
    reply = client(base).chat.completions.create(
        model="arc-tiny", messages=video_message(file_url, "Hi"), max_tokens=2
    )
    assert reply.usage.prompt_tokens > 114
    # The same clip outside the allowed folder is not read.
    outside = httpx.post(
        base + "/v1/chat/completions",
        json={
            "model": "arc-tiny",
            "messages": video_message((media_dir / "syn_short.mp4").resolve().as_uri(), "Hi"),
            "max_tokens": 2,
        },
        timeout=60,
    )
    assert 400 <= outside.status_code < 500, outside.text

    with serve_folder(media_dir) as files:
        url = files + "/syn_noaudio_8s.mp4"
        reply = client(base).chat.completions.create(
            model="arc-tiny", messages=video_message(url, "Hi"), max_tokens=2
        )
        assert reply.usage.prompt_tokens > 8 * 114


def test_audio_item_is_400(server, tmp_path: Path) -> None:
    """The audio comes from the video itself; a separate audio item is refused clearly."""
    import io
    import wave

    import openai

    base, _ = server
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0" * 16000)
    audio = base64.b64encode(buffer.getvalue()).decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
                {"type": "text", "text": "What do you hear?"},
            ],
        }
    ]
    with pytest.raises(openai.BadRequestError) as err:
        client(base).chat.completions.create(model="arc-tiny", messages=messages, max_tokens=2)
    assert "audio" in str(err.value).lower()


# ---------------------------------------------------------------------------------------
# how arc-serve starts vLLM


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vllm_plugin.cli.serve", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_help_explains_the_defaults() -> None:
    proc = run_serve("--help")
    assert proc.returncode == 0
    for expected in (
        "usage: arc-serve CHECKPOINT|tiny [vllm serve options]",
        "--chat-template", "--media-io-kwargs", "--max-model-len 20480",
        "--enforce-eager", "--kv-cache-memory-bytes", "$ARC_KV_CACHE_MEMORY_BYTES",
        "arc-serve CHECKPOINT --help",
    ):  # fmt: skip
        assert expected in proc.stdout, expected


def test_vllm_options_come_from_vllm_serve() -> None:
    """vLLM's `serve` subcommand parses the options (its help is `vllm serve`'s), and the
    deprecated `vllm.entrypoints.openai.api_server` module is not used."""
    script = (
        "import sys\n"
        "from vllm_plugin.cli import serve\n"
        "try:\n"
        "    serve.main(['tiny', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('deprecated module loaded:', 'vllm.entrypoints.openai.api_server' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage: vllm serve [model_tag] [options]" in proc.stdout
    assert "deprecated module loaded: False" in proc.stdout


def test_cpu_engine_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm_plugin import engine_args
    from vllm_plugin.cli import serve
    from vllm_plugin.tiny_checkpoint import write_tiny_checkpoint

    if not engine_args.cpu_build():
        pytest.skip("a CUDA build keeps vLLM's defaults")
    ckpt = str(write_tiny_checkpoint(tmp_path / "ckpt"))

    def added(*extra: str) -> list[str]:
        return serve.build_args(ckpt, list(extra))

    def kv(args: list[str]) -> int:
        return int(args[args.index("--kv-cache-memory-bytes") + 1])

    args = added()
    assert args[0] == ckpt and "--enforce-eager" in args
    assert "--gpu-memory-utilization" not in args
    # 4 requests of 20480 tokens in 16 bits (vLLM's "auto" for this float32 checkpoint).
    assert kv(args) == engine_args.kv_cache_bytes_for(Path(ckpt), 20480, 4, "auto")
    args = added("--dtype", "float32", "--max-model-len=4096")
    assert kv(args) == engine_args.kv_cache_bytes_for(Path(ckpt), 4096, 4, "float32")
    # Given options win: one --kv-cache-memory-bytes, no cache flag next to a fraction.
    assert added("--kv-cache-memory-bytes", "1G").count("--kv-cache-memory-bytes") == 1
    args = added("--gpu-memory-utilization", "0.5")
    assert "--kv-cache-memory-bytes" not in args and "--enforce-eager" in args
    assert "--enforce-eager" not in added("--no-enforce-eager")
    # Tensor parallel: each worker's cache holds its share of the 2 KV heads, and the
    # workers' threads get a share of the cores each (vLLM's automatic binding wants a
    # NUMA node per worker).
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    args = added("--tensor-parallel-size", "2")
    assert kv(args) == engine_args.kv_cache_bytes_for(Path(ckpt), 20480, 4, "auto", tp=2)
    assert kv(args) * 2 == engine_args.kv_cache_bytes_for(Path(ckpt), 20480, 4, "auto")
    assert "|" in os.environ["VLLM_CPU_OMP_THREADS_BIND"]


def test_memory_short_is_refused_before_starting(tmp_path: Path) -> None:
    from vllm_plugin.engine_args import cpu_build
    from vllm_plugin.tiny_checkpoint import write_tiny_checkpoint

    if not cpu_build():
        pytest.skip("the KV cache size is the CPU engine's setting")
    ckpt = str(write_tiny_checkpoint(tmp_path / "ckpt"))
    proc = run_serve(ckpt, "--kv-cache-memory-bytes", "1000T")
    assert proc.returncode == 1
    assert "arc-serve: the engine needs about" in proc.stderr
    assert "Lower --kv-cache-memory-bytes or $ARC_KV_CACHE_MEMORY_BYTES" in proc.stderr
    proc = run_serve(ckpt, "--kv-cache-memory-bytes", "1M")
    assert proc.returncode == 1
    assert "Raise --kv-cache-memory-bytes" in proc.stderr and "lower --max-model-len" in proc.stderr


def test_engine_holds_the_sized_kv_cache(server) -> None:
    """The session's engine (float32) has the KV cache arc-serve sized: 4 requests of
    20480 tokens in whole 128-token blocks, plus vLLM's null block."""
    import re

    import httpx

    from vllm_plugin.engine_args import cpu_build

    if not cpu_build():
        pytest.skip("a CUDA build keeps vLLM's defaults")
    base, _ = server
    metrics = httpx.get(base + "/metrics", timeout=10).text
    info = next(line for line in metrics.splitlines() if line.startswith("vllm:cache_config_info"))
    blocks = int(re.search(r'num_gpu_blocks="(\d+)"', info).group(1))
    assert blocks == 4 * 20480 // 128 + 1


def test_default_arguments_refuse_local_files_and_bound_jpeg_lists(tmp_path: Path) -> None:
    """arc-serve's defaults: file:// URLs point outside an empty folder of its own (vLLM
    answers a ValueError, a 400, where with no folder at all it answered a 500), and
    vLLM's own JPEG frame-list decoding stops at one frame (the plugin refuses the list)."""
    import json

    from vllm.multimodal.media.connector import MediaConnector

    from vllm_plugin.cli import serve

    args = serve.build_args(str(tmp_path), ["--gpu-memory-utilization", "0.5"])  # no KV check
    folder = Path(serve.option_value(args, "--allowed-local-media-path"))
    assert folder.is_dir() and not any(folder.iterdir())
    media = json.loads(serve.option_value(args, "--media-io-kwargs"))
    assert media["video"] == {"video_backend": "arc", "num_frames": 1}
    connector = MediaConnector(allowed_local_media_path=str(folder))
    with pytest.raises(ValueError, match="allowed-local-media-path"):
        connector.fetch_video("file:///etc/passwd")
    given = serve.build_args(
        str(tmp_path), ["--gpu-memory-utilization", "0.5", "--allowed-local-media-path", "/srv/v"]
    )
    assert serve.option_value(given, "--allowed-local-media-path") == "/srv/v"


def test_greedy_unless_the_user_sets_the_generation_config(tmp_path: Path) -> None:
    """arc-serve makes temperature 0 the default of any checkpoint, unless the command line
    has generation-config options of its own."""
    import json

    from vllm_plugin.cli import serve

    def args(*extra: str) -> list[str]:
        return serve.build_args(str(tmp_path), ["--gpu-memory-utilization", "0.5", *extra])

    greedy = serve.option_value(args(), "--override-generation-config")
    assert json.loads(greedy) == {"temperature": 0.0}
    assert "--override-generation-config" not in args("--generation-config", "vllm")
    own = args("--override_generation_config", '{"top_k": 5}')
    assert own.count("--override-generation-config") == 0 and own[-1] == '{"top_k": 5}'
    assert "--override-generation-config" not in args("--generation-config=/srv/gen")
    assert "--override-generation-config" in run_serve("--help").stdout


def test_answers_are_greedy_unless_the_request_sets_a_temperature(
    server, engine_media: Path
) -> None:
    """The same request twice gives the same tokens; a temperature still samples."""
    base, _ = server

    def token_ids(**extra: object) -> list[int]:
        body = {
            "model": "arc-tiny",
            "messages": video_message((engine_media / "syn_short.mp4").as_uri(), "What is it?"),
            "max_tokens": 6,
            "ignore_eos": True,
            "return_token_ids": True,
            **extra,
        }
        reply = httpx.post(base + "/v1/chat/completions", json=body, timeout=300)
        assert reply.status_code == 200, reply.text
        return reply.json()["choices"][0]["token_ids"]

    first, second = token_ids(), token_ids()
    assert first == second and len(first) == 6
    assert token_ids(temperature=1.0, seed=1) != token_ids(temperature=1.0, seed=2)


def test_priority_scheduling_and_compact_json_by_default(tmp_path: Path) -> None:
    """arc-serve orders waiting requests by `priority` and answers response_format without
    free whitespace (llguidance where the tokenizer is a fast one, else xgrammar), unless
    the command line chooses otherwise."""
    import json

    from vllm_plugin.cli import serve

    def args(*extra: str) -> list[str]:
        return serve.build_args(str(tmp_path), ["--gpu-memory-utilization", "0.5", *extra])

    def backend(arguments: list[str]) -> dict:
        return json.loads(serve.option_value(arguments, "--structured-outputs-config"))

    # A checkpoint without a fast tokenizer (the published one ships a tiktoken tokenizer,
    # which llguidance refuses): xgrammar; with a tokenizer.json (here, or --tokenizer's):
    # guidance.
    default = args()
    assert serve.option_value(default, "--scheduling-policy") == "priority"
    assert backend(default) == {"backend": "xgrammar", "disable_any_whitespace": True}
    fast = tmp_path / "fast"
    fast.mkdir()
    (fast / "tokenizer.json").write_text("{}")
    assert backend(args("--tokenizer", str(fast)))["backend"] == "guidance"
    (tmp_path / "tokenizer.json").write_text("{}")
    assert backend(args()) == {"backend": "guidance", "disable_any_whitespace": True}
    own = args("--scheduling-policy", "fcfs")
    assert own.count("--scheduling-policy") == 1 and own[-1] == "fcfs"
    for given in (
        ["--structured-outputs-config", '{"backend": "xgrammar"}'],
        ["--structured-outputs-config.backend", "outlines"],
        ["--structured_outputs_config.backend=outlines"],
    ):
        mine = args(*given)
        assert [a for a in mine if a.startswith("--structured")] == given[:1], given
    assert "--scheduling-policy priority" in run_serve("--help").stdout


def test_json_answers_through_the_chat_template(server, engine_media: Path) -> None:
    """response_format straight to arc-serve, under the ARC chat template's default task
    (qa: its instruction asks for tags) and another (summary): the tiny model's greedy
    answer parses and follows the schema."""
    import json

    import jsonschema

    base, _ = server
    schema = {
        "type": "object",
        "properties": {
            "label": {"enum": ["cat", "dog"]},
            "score": {"type": "integer", "minimum": 0, "maximum": 9},
            "words": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 2},
        },
        "required": ["label", "score", "words"],
        "additionalProperties": False,
    }
    url = (engine_media / "syn_short.mp4").as_uri()
    reply = client(base).chat.completions.create(
        model="arc-tiny",
        messages=video_message(url, "What is it?"),
        max_tokens=100,
        response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}},
    )
    assert reply.choices[0].finish_reason == "stop"
    content = reply.choices[0].message.content
    jsonschema.validate(json.loads(content), schema)
    assert not content.startswith("{ ") and "\n" not in content  # compact JSON
    reply = client(base).chat.completions.create(
        model="arc-tiny",
        messages=video_message(url, ""),
        max_tokens=60,
        response_format={"type": "json_object"},
        extra_body={"chat_template_kwargs": {"task": "summary"}},
    )
    assert isinstance(json.loads(reply.choices[0].message.content), dict)
