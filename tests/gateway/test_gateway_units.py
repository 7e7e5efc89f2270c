"""Gateway parts that need no server: settings, stored files, answer parsing, request checks,
errors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from server.chat.answers import parse_answer
from server.config import build_parser, load_settings
from server.errors import APIError
from server.files import FileStore


def test_settings_from_flags_and_environment() -> None:
    env = {"ARC_GATEWAY_MAX_UPLOAD_MB": "10", "ARC_GATEWAY_ALLOW_URL_HOST": "a:1, b"}
    settings = load_settings(["--port", "9000"], env)
    assert settings.port == 9000 and settings.max_upload_bytes == 10 * 1024 * 1024
    assert settings.allow_url_host == ["a:1", "b"]
    # A flag wins over the environment.
    assert load_settings(["--max-upload-mb", "3"], env).max_upload_mb == 3
    text = build_parser().format_help()
    assert "ARC_GATEWAY_UPSTREAM_URL" in text and "default http://127.0.0.1:8000" in text
    # --help reads by topic, with no empty defaults ("default None") and no option twice.
    assert "long videos (over five minutes: asked in segments):" in text
    assert "API keys and the database:" in text and "arc-gateway keys --help" in text
    assert "default None" not in text and "default False" not in text and "default []" not in text


def _container(store: FileStore, data: bytes) -> Path:
    path = store.incoming_path()
    path.write_bytes(data)
    return path


def _add(store: FileStore, tmp_path: Path, size: int) -> str:
    source = _container(store, b"v" * size)
    prepared = _container(store, b"p" * size)
    return store.add(source, "a.mp4", "user_data", size, prepared, {"frames": 1}).id


def test_file_store_expiry_and_budget(tmp_path: Path) -> None:
    store = FileStore(tmp_path, budget_bytes=10_000, ttl_s=3600)
    first = _add(store, tmp_path, 3000)
    time.sleep(1.1)  # created_at has a one-second resolution
    second = _add(store, tmp_path, 3000)  # 12 kB in all: the oldest goes
    assert [f.id for f in store.list()] == [second]
    with pytest.raises(APIError) as err:
        store.get(first)
    assert err.value.status_code == 404
    assert store.prepared(second, None, None)[0].read() == b"p" * 3000

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


WORKER_UNDER_A_TIGHT_LIMIT = """
import re, sys
from server.video import jobs, workers
from arc_media import pipeline  # loaded before the worker's heap is measured
from arc_media.limits import MediaError

def data_mb():
    return int(re.search(r"VmData:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024

workers.WORKER_BASE_MB = data_mb() + 40  # room for the pipeline's small arrays, not a 4K DPB
workers.limit_worker_memory(1)
try:
    job = jobs.PrepareJob(sys.argv[1], sys.argv[1] + ".arcz", max_pixels=10**9, timeout_s=120.0)
    jobs.run_job(job)
except (MemoryError, MediaError) as exc:
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
        cwd=Path(__file__).resolve().parents[2],
    )
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    assert "refused" in run.stdout


# -- the file store keeps what it accepted ---------------------------------------------------


def test_file_store_refuses_what_cannot_fit_before_acknowledging(tmp_path: Path) -> None:
    store = FileStore(tmp_path, budget_bytes=100_000, ttl_s=3600)
    kept = _add(store, tmp_path, 20_000)
    with pytest.raises(APIError) as err:  # bigger than the whole budget: refused, not swept
        _add(store, tmp_path, 60_000)
    assert err.value.status_code == 413 and err.value.code == "file_exceeds_storage"
    assert [f.id for f in store.list()] == [kept]
    # Bytes still arriving are no stored file: they make nothing go.
    store.incoming_path().write_bytes(b"x" * 500_000)
    store.sweep()
    assert store.usage_bytes() < 100_000 and [f.id for f in store.list()] == [kept]


def test_file_store_pins_files_in_use(tmp_path: Path) -> None:
    store = FileStore(tmp_path, budget_bytes=100_000, ttl_s=3600)
    first = _add(store, tmp_path, 20_000)
    with store.using(first):
        # Room only by evicting the pinned file: 507, and the pinned file stays.
        with pytest.raises(APIError) as err:
            _add(store, tmp_path, 30_000)
        assert err.value.status_code == 507 and err.value.code == "storage_full"
        # Deleted while a question uses it: gone for clients, its bytes kept until done.
        assert store.delete(first)
        with pytest.raises(APIError) as err:
            store.get(first)
        assert err.value.status_code == 404 and first in err.value.message
        assert store.source_path(first).exists()
    assert not (tmp_path / first).exists()


def test_file_store_evicts_clip_caches_first_then_least_recently_used(tmp_path: Path) -> None:
    store = FileStore(tmp_path, budget_bytes=100_000, ttl_s=3600)
    old = _add(store, tmp_path, 10_000)
    recent = _add(store, tmp_path, 10_000)
    with store.using(old):  # a question about `old`: now it is the recently used one
        pass
    store.keep_prepared(recent, 0, 1, _container(store, b"c" * 30_000), {"frames": 1})
    assert store.prepared(recent, 0, 1) is not None
    assert store.usage_bytes() > 70_000  # caches count toward the budget
    # A cache that does not fit is not kept (it evicts other caches, never files).
    store.keep_prepared(old, 0, 2, _container(store, b"c" * 40_000), {"frames": 1})
    assert store.prepared(old, 0, 2) is None or store.prepared(recent, 0, 1) is None
    assert {f.id for f in store.list()} == {old, recent}
    # A new file: caches go first, then the least recently used file (`recent`).
    new = _add(store, tmp_path, 20_000)
    assert store.prepared(recent, 0, 1) is None and store.prepared(old, 0, 2) is None
    assert {f.id for f in store.list()} == {old, recent, new}
    _add(store, tmp_path, 10_000)  # needs one file's room: the least recently used goes
    assert recent not in {f.id for f in store.list()}
    assert old in {f.id for f in store.list()}
    assert store.usage_bytes() <= 100_000


def test_file_id_pattern_rejects_a_trailing_newline(tmp_path: Path) -> None:
    store = FileStore(tmp_path, budget_bytes=10**9, ttl_s=60)
    good = _add(store, tmp_path, 10)
    with pytest.raises(APIError) as err:
        store.get(good + "\n")
    assert err.value.status_code == 404 and str(tmp_path) not in err.value.message


# -- the request schema is closed ------------------------------------------------------------


def _request(**extra: object) -> dict:
    part = {"type": "video_url", "video_url": {"url": "file-" + "0" * 24}}
    return {"messages": [{"role": "user", "content": [part]}], **extra}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"messages": [{"role": "user", "content": [
                {"type": "text", "text": "x", "uuid": "u", "video_url": {"url": "http://a/x"}}
            ]}]},
            "messages[0].content[0].uuid",
        ),
        (
            {"messages": [{"role": "user", "content": "x", "tool_calls": []}]},
            "messages[0].tool_calls",
        ),
        (_request(mm_processor_kwargs={"arc_layout": "B"}), "mm_processor_kwargs"),
        (_request(chat_template="{{ 1 }}"), "chat_template"),
        (_request(truncate_prompt_tokens=10), "truncate_prompt_tokens"),
        (_request(chat_template_kwargs={"task": "qa", "x": 1}), "chat_template_kwargs.x"),
        (_request(stream_options={"include_usage": True, "x": 1}), "stream_options.x"),
    ],
)  # fmt: skip
def test_unknown_keys_are_refused_by_name(body: dict, param: str) -> None:
    from pydantic import ValidationError

    from server.errors import invalid_request
    from server.schemas import ChatCompletionRequest

    with pytest.raises(ValidationError) as err:
        ChatCompletionRequest.model_validate(body)
    error = invalid_request(err.value.errors())
    assert error.status_code == 400 and error.code == "unknown_parameter"
    assert error.param == param and param in error.message


@pytest.mark.parametrize(
    "part",
    [
        {"type": "text", "text": "x", "video_url": {"url": "data:,"}},
        {"type": "video_url", "text": "x", "video_url": {"url": "file-x"}},
        {"type": "text"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
    ],
)
def test_content_parts_carry_only_their_own_key(part: dict) -> None:
    from pydantic import ValidationError

    from server.errors import invalid_request
    from server.schemas import ChatCompletionRequest

    with pytest.raises(ValidationError) as err:
        ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": [part]}]})
    error = invalid_request(err.value.errors())
    assert error.status_code == 400 and error.param.startswith("messages[0].content[0]")


# -- data URLs go to disk as they arrive -----------------------------------------------------


def _chat_body(tmp_path: Path, max_video: int = 10**7):
    from server.uploads import ChatBody

    names = iter(range(10**6))
    return ChatBody(lambda: tmp_path / f"spool-{next(names)}", max_video, 1 << 20)


@pytest.mark.parametrize("escape_slashes", [False, True])
def test_data_url_is_decoded_to_disk_in_any_chunking(tmp_path: Path, escape_slashes: bool) -> None:
    import base64
    import json
    import random

    video = np.random.default_rng(1).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    text = 'data:not a video "url": x'
    url = "data:video/mp4;base64," + base64.b64encode(video).decode()
    body = {
        "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": text}
        ]}]
    }  # fmt: skip
    raw = json.dumps(body).encode()
    if escape_slashes:  # a JSON encoder may write "/" as "\/"
        raw = raw.replace(b"/", b"\\/")
    rng = random.Random(0)
    for _ in range(10):
        spool = _chat_body(tmp_path)
        pos = 0
        while pos < len(raw):
            step = rng.randint(1, 4000)
            spool.write(raw[pos : pos + step])
            pos += step
        left = spool.finish()
        assert len(left) < 1000  # the base64 was never kept
        parsed = json.loads(left)
        placeholder = parsed["messages"][0]["content"][0]["video_url"]["url"]
        assert spool.files[placeholder].path.read_bytes() == video
        assert parsed["messages"][0]["content"][1]["text"] == text
        spool.cleanup()
        assert not spool.files[placeholder].path.exists()


@pytest.mark.parametrize(
    "url",
    ["data:video/mp4;base64,AAA=AAAA", "data:video/mp4;base64,AA!A", "data:video/mp4,AAAA",
     "data:video/mp4;base64,AAAAA"],
)  # fmt: skip
def test_bad_data_urls_are_refused_while_streaming(tmp_path: Path, url: str) -> None:
    import json

    spool = _chat_body(tmp_path)
    with pytest.raises(APIError) as err:
        spool.write(json.dumps({"video_url": {"url": url}}).encode())
        spool.finish()
    assert err.value.status_code == 400 and err.value.code == "bad_data_url"
    spool.cleanup()


def test_data_url_over_the_cap_stops_being_written(tmp_path: Path) -> None:
    import base64

    spool = _chat_body(tmp_path, max_video=1000)
    spool.write(b'{"url": "data:video/mp4;base64,' + base64.b64encode(b"v" * 3000))
    assert spool.over
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 1000
    spool.cleanup()


# -- metrics, error codes, the model name ------------------------------------------------------


def test_known_metric_series_exist_from_start_up(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from server.app import create_app
    from server.config import Settings

    app = create_app(Settings(files_dir=str(tmp_path)))
    text = generate_latest(app.state.gateway.metrics.registry).decode()
    for reason in ("invalid_video", "file_not_found", "upstream_unavailable", "storage_full"):
        assert f'arc_gateway_rejections_total{{reason="{reason}"}} 0.0' in text
    for route in ("/v1/chat/completions", "/v1/files", "/v1/files/{file_id}", "/ready"):
        assert f'arc_gateway_request_seconds_count{{route="{route}"}} 0.0' in text


def test_every_error_code_is_a_known_metric_reason() -> None:
    """Each code the gateway's code can answer with is among the series made at start-up,
    and each, with those of bodies written directly (`/ready`'s not_ready), is listed in the
    README's error table."""
    import ast

    from server.metrics import REJECTION_REASONS

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    table = readme[readme.index("| status | `code` |") :].split("\n\n")[0]
    found, bodies = set(), set()
    for source in (root / "server").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            position = {"APIError": 2, "FetchError": 1, "_refused": 0, "error_body": 2}.get(name)
            if position is None or len(node.args) <= position:
                continue
            code = node.args[position]
            if isinstance(code, ast.Constant) and isinstance(code.value, str):
                (bodies if name == "error_body" else found).add(code.value)
    assert len(found) > 30 and "not_ready" in bodies
    assert found <= set(REJECTION_REASONS), found - set(REJECTION_REASONS)
    missing = [code for code in {*REJECTION_REASONS, *bodies} if f"`{code}`" not in table]
    assert not missing, missing


def test_public_model_name_is_never_a_path() -> None:
    from server.app import public_model_name
    from server.config import Settings

    assert public_model_name(Settings(), "/tmp/pytest-1/tiny0/ckpt") == "arc"
    assert public_model_name(Settings(), "../ckpt") == "arc"
    assert public_model_name(Settings(), "arc-tiny") == "arc-tiny"
    assert public_model_name(Settings(served_model_name="video"), "/x/y") == "video"


def test_upstream_body_writes_the_video_piece_by_piece(tmp_path: Path) -> None:
    import asyncio
    import base64
    import json

    from server.upstream import Body

    video = np.random.default_rng(2).integers(0, 256, 7_000_001, dtype=np.uint8).tobytes()
    (tmp_path / "v").write_bytes(video)
    content = [{"type": "video_url", "video_url": {"url": ""}}, {"type": "text", "text": "hi"}]
    payload = {"model": "m", "messages": [{"role": "user", "content": content}]}
    with (tmp_path / "v").open("rb") as handle:
        body = Body(payload, handle, len(video), "v/x")

        async def collect() -> list[bytes]:
            return [piece async for piece in body.pieces()]

        pieces = asyncio.run(collect())
    assert max(len(p) for p in pieces) <= 4 * 1024 * 1024  # never the whole base64 at once
    raw = b"".join(pieces)
    assert len(raw) == body.length
    sent = json.loads(raw)
    url = sent["messages"][0]["content"][0]["video_url"]["url"]
    assert url.startswith("data:v/x;base64,") and base64.b64decode(url[16:]) == video
    assert sent["messages"][0]["content"][1] == {"type": "text", "text": "hi"}


def test_stream_error_chunks_are_in_the_gateways_words() -> None:
    import json

    from server.chat.stream import annotate_chunk

    dump = json.dumps(
        {"error": {"message": "1 validation error\n input_value={'x': 1}", "code": 400}}
    )
    chunk = json.loads(annotate_chunk(dump, {}, "qa", "arc", None))
    assert chunk["error"]["code"] == "upstream_error" and "input_value" not in json.dumps(chunk)
    normal = json.dumps(
        {"model": "/tmp/ckpt", "choices": [{"index": 0, "delta": {"content": "a"}}]}
    )
    assert json.loads(annotate_chunk(normal, {}, "qa", "arc", None))["model"] == "arc"


def test_in_flight_admissions_are_counted_and_released_once() -> None:
    import asyncio

    from prometheus_client import CollectorRegistry, Gauge

    from server.inflight import InFlight

    gauge = Gauge("inflight_test", "", registry=CollectorRegistry())
    inflight = InFlight(2, gauge)
    closed: list[str] = []

    async def scenario() -> None:
        first = inflight.admit()
        first.cleanup.callback(closed.append, "pin")

        async def close_upstream() -> None:
            closed.append("upstream")

        first.close_later(close_upstream)
        async with inflight.admit():
            assert inflight.count == 2 and gauge._value.get() == 2
            with pytest.raises(APIError) as refused:
                inflight.admit()
            assert refused.value.status_code == 429 and refused.value.code == "too_many_requests"
        assert inflight.count == 1
        await first.release()
        await first.release()  # a second release gives nothing back twice
        assert inflight.count == 0 and gauge._value.get() == 0
        assert closed == ["pin", "upstream"]

        # Handed over to a stream: leaving the block keeps it for the stream to release...
        async with inflight.admit() as held:
            held.hand_over()
        assert inflight.count == 1
        await held.release()
        assert inflight.count == 0
        # ...unless the block fails: then nothing will stream, and it is released.
        with pytest.raises(RuntimeError):
            async with inflight.admit() as held:
                held.hand_over()
                raise RuntimeError("after the stream was made")
        assert inflight.count == 0

    asyncio.run(scenario())


# -- what a request must hold, what its errors say --------------------------------------------


def _request(content: object, **extra: object):
    from server.schemas import ChatCompletionRequest

    body = {"messages": [{"role": "user", "content": content}], **extra}
    return ChatCompletionRequest.model_validate(body)


def test_sampling_parameters_default_to_greedy() -> None:
    assert _request("hi").sampling_parameters() == {"temperature": 0.0}
    sent = _request("hi", temperature=0.7, top_p=0.9, max_tokens=3).sampling_parameters()
    assert sent == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 3}
    # top_p alone changes nothing at temperature 0: vLLM's rule, the same as arc-serve's.
    assert _request("hi", top_p=0.5).sampling_parameters() == {"top_p": 0.5, "temperature": 0.0}
    assert _request("hi", n=2, temperature=0.5).sampling_parameters()["n"] == 2


def test_several_answers_need_a_temperature() -> None:
    from pydantic import ValidationError

    from server.errors import invalid_request

    for extra in ({"n": 2}, {"n": 3, "temperature": 0}):
        with pytest.raises(ValidationError) as refused:
            _request("hi", **extra)
        error = invalid_request(refused.value.errors())
        assert error.param == "n" and error.code == "invalid_request"
        assert error.message.startswith(f"n: asks for {extra['n']} answers"), error.message


def test_validation_messages_have_no_pydantic_prefix() -> None:
    from pydantic import ValidationError

    from server.errors import invalid_request

    for content, extra, param in (
        ("hi", {"video": {"start": 5, "end": 1}}, "video.end"),
        ([{"type": "text"}], {}, "messages[0].content[0]"),
    ):
        with pytest.raises(ValidationError) as refused:
            _request(content, **extra)
        error = invalid_request(refused.value.errors())
        assert error.param == param and "Value error" not in error.message, error.message
    assert invalid_request(refused.value.errors()).message == (
        "messages[0].content[0]: a 'text' part needs 'text'"
    )


@pytest.mark.parametrize(
    ("content", "extra", "refused"),
    [
        ([{"type": "video_url", "video_url": {"url": "file-x"}}], {}, True),
        ([{"type": "video_url", "video_url": {"url": "file-x"}}, {"type": "text", "text": " \n"}],
         {"video": {"task": "grounding"}}, True),
        ([{"type": "video_url", "video_url": {"url": "file-x"}}],
         {"chat_template_kwargs": {"task": "mcq"}}, True),
        ([{"type": "video_url", "video_url": {"url": "file-x"}}], {"video": {"task": "summary"}},
         False),
        ([{"type": "video_url", "video_url": {"url": "file-x"}}],
         {"chat_template_kwargs": {"task": "chapters"}}, False),
        ([{"type": "video_url", "video_url": {"url": "file-x"}}], {"video": {"task": "none"}},
         False),
        ("When?", {"video": {"task": "grounding"}}, False),
    ],
)  # fmt: skip
def test_tasks_that_need_a_question(content: object, extra: dict, refused: bool) -> None:
    request = _request(content, **extra)
    if not refused:
        request.check_question()
        return
    with pytest.raises(APIError) as error:
        request.check_question()
    assert error.value.code == "missing_question" and error.value.status_code == 400
    assert error.value.param == "messages[0].content"


def _vllm_error(message: str, param: str | None = None, status: int = 400):
    import httpx

    body = {
        "error": {"message": message, "type": "BadRequestError", "param": param, "code": status}
    }
    return httpx.Response(status, json=body)


@pytest.mark.parametrize(
    ("message", "param", "code", "named", "said"),
    [
        # vLLM 0.32's words (vllm/renderers/params.py), as a real engine answers them
        (("max_tokens=100000 cannot be greater than max_model_len=20480. Please request fewer "
         "output tokens. (parameter=max_tokens, value=100000)"), "max_tokens",
         "context_length_exceeded", "max_tokens", ["max_tokens = 100000", "20480 tokens"]),
        (("max_completion_tokens=30000 cannot be greater than max_model_len=20480. Please request "
         "fewer output tokens."), "max_completion_tokens", "context_length_exceeded",
         "max_completion_tokens", ["30000", "20480 tokens"]),
        (("This model's maximum context length is 20480 tokens. However, your prompt contains at "
         "least 20481 input tokens, which exceeds this limit even without any output tokens. "
         "(parameter=input_tokens, value=20481)"), "input_tokens", "context_length_exceeded",
         "messages", ["at least 20481 tokens", "20480 tokens"]),
        (("This model's maximum context length is 20480 tokens. However, your prompt contains "
         "2000190 characters (more than 307200 characters, which is the upper bound for 20480 "
         "input tokens)."), "input_text", "context_length_exceeded", "messages",
         ["2000190 characters", "307200", "20480 tokens"]),
        # older vLLM
        (("'max_tokens' or 'max_completion_tokens' is too large: 50000. This model's maximum "
         "context length is 32768 tokens and your request has 900 input tokens"), None,
         "context_length_exceeded", "max_tokens", ["50000", "32768 tokens"]),
        ("min_tokens must be less than or equal to max_tokens=2, got 5.", None,
         "upstream_rejected", "min_tokens", ["min_tokens: min_tokens must be less", "got 5."]),
        (("Requested sample logprobs of 50, which is greater than max allowed: 20 "
         "(parameter=logprobs, value=50)"), "logprobs", "upstream_rejected", "logprobs",
         ["max allowed: 20"]),
        # a dump of vLLM's internal validation: its text is not passed on
        ("1 validation error for ChatCompletionRequest\n  top_k input_value={'secret': 1}", None,
         "upstream_rejected", "top_k", ["outside what this model accepts"]),
        ("something about the video", None, "upstream_rejected", None,
         ["one of the request's parameters"]),
    ],
)  # fmt: skip
def test_upstream_refusals_name_the_parameter_and_the_limit(
    message: str, param: str | None, code: str, named: str | None, said: list[str]
) -> None:
    from server.upstream import raise_for_upstream

    fields: dict = {}
    with pytest.raises(APIError) as refused:
        raise_for_upstream(_vllm_error(message, param), fields)
    error = refused.value
    assert (error.status_code, error.code, error.param) == (400, code, named)
    for text in said:
        assert text in error.message, error.message
    assert "input_value" not in error.message and "parameter=" not in error.message
    assert fields["upstream_error"] == message[:500]  # vLLM's own text: in the log line


def test_structured_answer_has_every_key() -> None:
    import json

    from server.chat.stream import annotate_chunk
    from server.schemas import Choice, ChoiceMessage

    keys = ["thinking", "answer", "segments"]
    for text, task in (("", "qa"), ("plain", "qa"), ("<think>x</think>", "grounding")):
        dumped = parse_answer(text, task).model_dump(mode="json", exclude_none=True)
        assert list(dumped) == keys, dumped
    ranges = parse_answer("<answer>00:01-00:03</answer>", "grounding")
    choice = Choice(index=0, message=ChoiceMessage(content="x"), structured=ranges)
    dumped = choice.model_dump(mode="json", exclude_none=True)["structured"]
    assert dumped == {
        "thinking": None,
        "answer": "00:01-00:03",
        "segments": [{"start": 1.0, "end": 3.0, "text": None}],
    }
    last = {
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}],
    }
    chunk = json.loads(annotate_chunk(json.dumps(last), {}, "qa", "arc", None))
    assert chunk["choices"][0]["structured"] == {"thinking": None, "answer": "hi", "segments": None}


def test_video_errors_name_the_parameter_and_the_limit(tmp_path: Path) -> None:
    """What a decode job's failure reads as (server/video/errors.py), with the library's
    errors rebuilt from a worker's pipe (pickled) as the gateway receives them."""
    import pickle

    from arc_media.limits import ClipError, MediaError, OverLimitError
    from server.config import Settings
    from server.video.errors import job_error

    settings = Settings(files_dir=str(tmp_path), max_duration_s=3600)
    where = "messages[0].content[1].video_url.url"

    def answer(error: Exception, clipped: bool = False):
        received = pickle.loads(pickle.dumps(error))
        return job_error(received, settings, tmp_path / "v.mp4", clipped, where)

    too_long = answer(OverLimitError("over", "max_duration_s", 7260.0, 3600.0))
    assert (too_long.status_code, too_long.code, too_long.param) == (422, "video_too_long", where)
    assert too_long.message == (
        "the video is 7260 s long; this gateway takes at most 3600 s (--max-duration-s): "
        "ask about a clip of it (video.start/end)"
    )
    by_key = answer(OverLimitError("over", "max_duration_s", 700.0, 600.0), clipped=True)
    assert by_key.message.startswith(
        "the clip asked about is 700 s long; this API key takes at most 600 s (the key's "
        "--max-duration-s limit)"
    )
    pixels = answer(OverLimitError("over", "max_pixels", 7680 * 4320, 3840 * 2160))
    assert (pixels.status_code, pixels.code, pixels.param) == (422, "video_too_large", where)
    assert "33,177,600 pixels" in pixels.message and "(--max-pixels)" in pixels.message
    clip = answer(ClipError("bad clip: the clip ends at 3 s, not after its start (5 s)", "end"))
    assert (clip.status_code, clip.code, clip.param) == (400, "invalid_clip", "video.end")
    assert clip.message == "video.end: the clip ends at 3 s, not after its start (5 s)"
    unreadable = answer(MediaError(f"could not read {tmp_path / 'v.mp4'}"))
    assert (unreadable.code, unreadable.param) == ("invalid_video", where)
    assert str(tmp_path) not in unreadable.message
    crashed = answer(MemoryError())
    assert crashed.code == "video_too_large" and "--ffmpeg-memory-mb" in crashed.message
