"""Load benchmark of the whole service: concurrent clients sending real videos through the
gateway and, in the same run, the same requests sent straight to vLLM, so that the
gateway's cost is a measured ratio against vLLM alone.

Paths (all measured in one run, the same requests: same videos, question, max_tokens):

    gateway-upload           POST /v1/files (multipart) then a streaming chat naming the file
    gateway-data-url         one streaming chat with the video as data:video/mp4;base64,...
    gateway-second-question  a chat about a file uploaded before the batch (no decode)
    direct-raw               the chat sent to vLLM itself with the raw video as a data URL:
                             the engine's arc loader decodes it (vLLM without the gateway)
    direct                   the chat sent to vLLM itself, the video prepared beforehand
                             (arc_media.pipeline + arc_media.prepared, untimed)

The headline is gateway / direct-raw for the paths that decode (latency p50 and p95 at each
concurrency, and throughput) and gateway-second-question / direct for the one that does
not. Per request it also records the time to the response headers and the gateway's
Server-Timing stages (receive, queue, decode, encode, store, engine input), hence where the
time goes per path. Per level and path: TTFT, TPOT and end-to-end latency (p50/p95/p99),
request and output-token throughput, goodput against the SLOs given, errors by kind.
Output: report.json, report.csv, gateway_overhead.csv, stages.csv, requests.csv, report.md
and PNG plots (when matplotlib is importable).

    python -m benchmarks.load_bench                 # own loopback stack, tiny checkpoint
    python -m benchmarks.load_bench --quick         # smoke run (about a minute, mostly startup)
    python -m benchmarks.load_bench --gateway-url http://127.0.0.1:8080 \\
        --engine-url http://127.0.0.1:8000          # the docker compose stack; starts nothing
    python -m benchmarks.load_bench --help

Over 600 lines: the request paths, the concurrent clients and the run loop share the
requests' records and read best together; the stack it starts is in _load_stack.py and
the report in _load_report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from server import sse

from . import _load_report as rep
from . import _load_stack as stk

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "load"
DEFAULT_MEDIA = Path(os.environ.get("ARC_SHARED", REPO_ROOT.parent / "shared")) / "media"
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".ts", ".mpg"}
QUICK = {"concurrency": [1], "requests": 2, "max_tokens": 2, "warmup": 1}


def log(message: str) -> None:
    print(f"[load-bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# options


def _levels(text: str) -> list[int]:
    try:
        levels = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError("concurrency levels are integers >= 1")
    return levels


def _paths(text: str) -> list[str]:
    paths = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in paths if p not in rep.PATHS]
    if unknown or not paths:
        raise argparse.ArgumentTypeError(f"paths are a comma list of {', '.join(rep.PATHS)}")
    return [p for p in rep.PATHS if p in paths]


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where it says something (not for flags, None or '')."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, "", True, False) or action.nargs == 0:
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load_bench",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        epilog="Paths: "
        + "; ".join(f"{k}: {v}" for k, v in rep.PATH_HELP.items())
        + ". Without --gateway-url/--engine-url the benchmark starts its own stack on "
        "loopback (a tiny random-weight checkpoint unless --checkpoint is given) and stops "
        "it at the end, also on Ctrl-C and errors.",
        formatter_class=_Help,
    )
    target = parser.add_argument_group("what to measure")
    target.add_argument(
        "--gateway-url",
        help="base URL of a running gateway (e.g. http://127.0.0.1:8080 of the compose "
        "stack); with it or --engine-url the benchmark starts nothing",
    )
    target.add_argument(
        "--engine-url",
        help="base URL of the running vLLM server behind that gateway (e.g. "
        "http://127.0.0.1:8000), for the direct path",
    )
    target.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow URLs that are not loopback (by default load goes to this machine only)",
    )
    target.add_argument(
        "--api-key",
        default=os.environ.get("ARC_BENCH_API_KEY"),
        help="sent as 'Authorization: Bearer KEY' to both URLs (env ARC_BENCH_API_KEY)",
    )
    target.add_argument(
        "--engine-settings",
        help="how the external engine was started (free text recorded in the report, e.g. "
        "'compose GPU stack: TP 2, bfloat16, gpu-memory-utilization 0.90')",
    )
    target.add_argument(
        "--paths",
        type=_paths,
        default=",".join(rep.PATHS),
        help="comma list of paths to measure",
    )
    own = parser.add_argument_group("the stack started on loopback (when no URL is given)")
    own.add_argument(
        "--checkpoint",
        default="tiny",
        help="checkpoint directory or hub id for arc-serve; 'tiny' writes a tiny "
        "random-weight checkpoint (vllm_plugin.tiny_checkpoint) into a temporary directory",
    )
    own.add_argument(
        "--engine-args",
        help="arc-serve (vLLM) options, one shell-quoted string; default on CPU: "
        f"'{shlex.join(stk.CPU_ENGINE_ARGS)}', with a CUDA GPU: "
        f"'{shlex.join(stk.GPU_ENGINE_ARGS)}' (caches off: both paths do the full work)",
    )
    own.add_argument(
        "--forward-mode",
        choices=("container", "shared"),
        default="container",
        help="how the gateway hands prepared videos to the engine: 'container' (a "
        "compressed data URL, for an engine anywhere) or 'shared' (raw frames and audio in a "
        "directory both read, by file://; same host)",
    )
    own.add_argument(
        "--gateway-args",
        default="",
        help="arc-gateway options, one shell-quoted string (e.g. '--decode-workers 4')",
    )
    own.add_argument(
        "--startup-timeout-s",
        type=float,
        default=300.0,
        help="limit for the engine and gateway to answer /health",
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--videos",
        nargs="+",
        type=Path,
        help="video files or directories of videos; requests take them in turn (default: "
        f"{DEFAULT_MEDIA}, or $ARC_SHARED/media)",
    )
    load.add_argument(
        "--max-video-s",
        type=float,
        default=30.0,
        help="skip videos longer than this (0: no limit); a 150-frame video takes about "
        "30 s per request on the CPU engine",
    )
    load.add_argument(
        "--concurrency",
        type=_levels,
        default="1,2,4",
        help="comma list of concurrency levels (clients sending back to back)",
    )
    load.add_argument("--requests", type=int, default=8, help="requests per level and path")
    load.add_argument("--max-tokens", type=int, default=16, help="max_tokens of each request")
    load.add_argument(
        "--no-ignore-eos",
        dest="ignore_eos",
        action="store_false",
        help="let generation stop at EOS (by default ignore_eos makes every answer "
        "max_tokens long, so runs compare)",
    )
    load.add_argument(
        "--question", default="What is happening in the video?", help="the text of each request"
    )
    load.add_argument(
        "--task",
        default="qa",
        help="chat_template_kwargs.task (qa, summary, grounding, mcq, chapters, none)",
    )
    load.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="unmeasured requests per path before the sweep (sent at once, first videos)",
    )
    load.add_argument(
        "--request-timeout-s", type=float, default=300.0, help="limit for one request"
    )
    load.add_argument(
        "--duration-limit-s",
        type=float,
        default=500.0,
        help="hard bound on the whole run (startup included): at the limit requests in "
        "flight are cancelled, no more are sent, and the report holds what was measured",
    )
    slo = parser.add_argument_group("SLOs for goodput (0 disables one)")
    slo.add_argument("--slo-ttft-s", type=float, default=5.0, help="time to first token")
    slo.add_argument("--slo-tpot-ms", type=float, default=100.0, help="time per output token")
    slo.add_argument("--slo-e2e-s", type=float, default=10.0, help="end-to-end latency")
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for reports")
    output.add_argument("--label", default="", help="a name for this run, kept in the report")
    output.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: concurrency 1, 2 requests per path, max_tokens 2, 1 warmup, the "
        "shortest video",
    )
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


# ---------------------------------------------------------------------------------------
# videos and their prepared form


@dataclass
class Video:
    name: str
    path: Path
    data: bytes
    duration_s: float
    mp4_data_url: str = ""
    prepared_data_url: str = ""
    frames: int = 0
    prepared_bytes: int = 0
    prepare_s: float = 0.0
    container_encode_s: float = 0.0
    container_decode_s: float = 0.0

    def summary(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "bytes": len(self.data),
            "duration_s": self.duration_s,
            "frames": self.frames,
            "prepared_bytes": self.prepared_bytes,
            "prepare_s": self.prepare_s,
            "container_encode_s": self.container_encode_s,
            "container_decode_s": self.container_decode_s,
        }


def find_videos(sources: list[Path], max_s: float, quick: bool) -> tuple[list[Video], list[str]]:
    from arc_media.limits import MediaError
    from arc_media.probe import probe_video

    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files += sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        elif source.is_file():
            files.append(source)
        else:
            raise SystemExit(f"no such video or directory: {source}")
    videos, skipped = [], []
    for path in files:
        try:
            duration = probe_video(path, timeout_s=60).duration
        except MediaError as e:
            skipped.append(f"{path.name}: not a usable video ({e})")
            continue
        if max_s and duration > max_s:
            skipped.append(f"{path.name}: {duration:.0f} s > --max-video-s {max_s:g}")
            continue
        videos.append(Video(path.name, path, path.read_bytes(), duration))
    if quick and videos:
        videos = [min(videos, key=lambda v: (v.duration_s, len(v.data)))]
    return videos, skipped


def prepare(video: Video) -> None:
    """The direct path's input: the project's pipeline and container, once per video
    (what the gateway does per request and forwards); and, timed apart, the container's
    encode and decode (the forward form's cost on each side)."""
    from arc_media import prepared as prepared_media
    from arc_media.pipeline import prepare_video

    t0 = time.perf_counter()
    prepared = prepare_video(video.path)
    video.prepare_s = time.perf_counter() - t0
    info = {
        "intervals": [list(i) for i in prepared.intervals],
        "frame_indices": prepared.frame_indices,
    }
    encodes, decodes = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        container = prepared_media.encode(prepared.frames, prepared.audio, prepared.duration, info)
        t1 = time.perf_counter()
        prepared_media.decode(container)
        encodes.append(t1 - t0)
        decodes.append(time.perf_counter() - t1)
    video.container_encode_s = sorted(encodes)[1]
    video.container_decode_s = sorted(decodes)[1]
    video.frames = prepared.num_frames
    video.prepared_bytes = len(container)
    video.prepared_data_url = (
        f"data:{prepared_media.PREPARED_MIME};base64," + base64.b64encode(container).decode()
    )
    video.mp4_data_url = "data:video/mp4;base64," + base64.b64encode(video.data).decode()


# ---------------------------------------------------------------------------------------
# requests


@dataclass
class Target:
    gateway_url: str | None
    engine_url: str | None
    model: str | None
    headers: dict[str, str]


class Bench:
    def __init__(self, args: argparse.Namespace, target: Target, videos: list[Video], slo):
        self.args = args
        self.target = target
        self.videos = videos
        self.slo = slo
        self.bodies: dict[tuple[str, str], bytes] = {}
        self.uploaded: list[str] = []
        self.stored: dict[str, str] = {}  # video name -> file id, for the second question

    def body(self, url: str, model: str | None) -> dict:
        a = self.args
        body = {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": url}},
                        {"type": "text", "text": a.question},
                    ],
                }
            ],
            "max_tokens": a.max_tokens,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "chat_template_kwargs": {"task": a.task},
        }
        if a.ignore_eos:
            body["ignore_eos"] = True
        if model:
            body["model"] = model
        return body

    def prebuilt(self, path: str, video: Video) -> bytes:
        """Request bodies are built once per (path, video): the client's JSON cost is no
        part of the measurement."""
        key = (path, video.name)
        if key not in self.bodies:
            if path == rep.DIRECT:
                body = self.body(video.prepared_data_url, self.target.model)
            elif path == rep.DIRECT_RAW:
                body = self.body(video.mp4_data_url, self.target.model)
            elif path == "gateway-second-question":
                body = self.body(self.stored[video.name], None)
            else:
                body = self.body(video.mp4_data_url, None)
            self.bodies[key] = json.dumps(body).encode()
        return self.bodies[key]

    async def _stream(
        self, client: httpx.AsyncClient, url: str, content: bytes, t0: float, record: rep.Record
    ) -> None:
        headers = {**self.target.headers, "Content-Type": "application/json"}
        chunks = 0
        usage = None
        done = False
        async with client.stream("POST", url, content=content, headers=headers) as response:
            record.headers_s = time.perf_counter() - t0
            record.add_timing(response.headers.get("server-timing"))
            record.status = response.status_code
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                try:
                    code = json.loads(text)["error"].get("code") or ""
                except (ValueError, KeyError, TypeError, AttributeError):
                    code = ""
                record.error = f"HTTP {response.status_code}" + (f" {code}" if code else "")
                return
            async for data in sse.data_payloads(response.aiter_lines()):
                if data == sse.DONE:
                    done = True
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    continue
                if chunk.get("error"):
                    error = chunk["error"]
                    code = error.get("code") if isinstance(error, dict) else None
                    record.error = f"stream error {code or ''}".strip()
                    return
                if chunk.get("choices"):
                    if record.ttft_s is None:
                        record.ttft_s = time.perf_counter() - t0
                    if any((c.get("delta") or {}).get("content") for c in chunk["choices"]):
                        chunks += 1
                if chunk.get("usage"):
                    usage = chunk["usage"]
        record.e2e_s = time.perf_counter() - t0
        if not done:
            record.error = "stream ended without [DONE]"
            return
        record.output_tokens = int(usage["completion_tokens"]) if usage else chunks
        record.prompt_tokens = int(usage["prompt_tokens"]) if usage else None
        if record.ttft_s is None:
            record.error = "no token"
            return
        if record.output_tokens > 1:
            record.tpot_ms = 1000 * (record.e2e_s - record.ttft_s) / (record.output_tokens - 1)
        record.ok = True
        record.meets_slo = self.slo.met(record)

    async def request(self, client: httpx.AsyncClient, path: str, record: rep.Record) -> None:
        video = next(v for v in self.videos if v.name == record.video)
        t0 = time.perf_counter()
        try:
            if path in rep.DIRECT_PATHS:
                url = self.target.engine_url + "/v1/chat/completions"
                await self._stream(client, url, self.prebuilt(path, video), t0, record)
            elif path in ("gateway-data-url", "gateway-second-question"):
                url = self.target.gateway_url + "/v1/chat/completions"
                await self._stream(client, url, self.prebuilt(path, video), t0, record)
            else:
                response = await client.post(
                    self.target.gateway_url + "/v1/files",
                    files={"file": (video.name, video.data, "application/octet-stream")},
                    data={"purpose": "user_data"},
                    headers=self.target.headers,
                )
                record.upload_s = time.perf_counter() - t0
                record.add_timing(response.headers.get("server-timing"))
                if response.status_code != 200:
                    record.status = response.status_code
                    record.error = f"upload HTTP {response.status_code}"
                    return
                file_id = response.json()["id"]
                self.uploaded.append(file_id)
                content = json.dumps(self.body(file_id, None)).encode()
                url = self.target.gateway_url + "/v1/chat/completions"
                await self._stream(client, url, content, t0, record)
        except httpx.TimeoutException:
            record.error = "timeout"
        except httpx.HTTPError as e:
            record.error = f"connection error ({type(e).__name__})"

    async def batch(
        self,
        path: str,
        concurrency: int,
        count: int,
        deadline: float,
        on_done: Callable[[rep.Record], None],
        first_index: int = 0,
        records: list[rep.Record] | None = None,
    ) -> tuple[list[rep.Record], float]:
        """`count` requests, `concurrency` clients sending back to back; the requests take
        the videos in turn. Returns the records (also appended to `records` as they finish,
        so an interrupted batch keeps what it measured) and the batch's wall time."""
        records = [] if records is None else records
        pending = iter(range(first_index, first_index + count))
        limits = httpx.Limits(max_connections=concurrency + 2)
        timeout = httpx.Timeout(self.args.request_timeout_s, connect=10.0)
        t_batch = time.perf_counter()
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

            async def client_loop() -> None:
                for index in pending:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    video = self.videos[index % len(self.videos)]
                    record = rep.Record(path, concurrency, index, video.name)
                    record.start_s = time.perf_counter() - t_batch
                    limit = min(self.args.request_timeout_s, remaining)
                    try:
                        await asyncio.wait_for(self.request(client, path, record), limit)
                    except (asyncio.TimeoutError, TimeoutError):
                        record.ok = False
                        record.error = (
                            "timeout" if limit == self.args.request_timeout_s else ("cancelled")
                        )
                    records.append(record)
                    on_done(record)

            await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        duration = time.perf_counter() - t_batch
        return sorted(records, key=lambda r: r.index), duration

    async def upload_all(self) -> None:
        """Uploads every video once, untimed: the files the second question is about."""
        self.stored.clear()
        self.bodies = {k: v for k, v in self.bodies.items() if k[0] != "gateway-second-question"}
        async with httpx.AsyncClient(timeout=self.args.request_timeout_s) as client:
            for video in self.videos:
                response = await client.post(
                    self.target.gateway_url + "/v1/files",
                    files={"file": (video.name, video.data, "application/octet-stream")},
                    data={"purpose": "user_data"},
                    headers=self.target.headers,
                )
                if response.status_code != 200:
                    raise RuntimeError(
                        f"uploading {video.name} for the second question: HTTP "
                        f"{response.status_code} {response.text[:300]}"
                    )
                file_id = response.json()["id"]
                self.uploaded.append(file_id)
                self.stored[video.name] = file_id

    async def delete_uploads(self) -> None:
        if not self.uploaded or not self.target.gateway_url:
            return
        async with httpx.AsyncClient(timeout=30) as client:
            for file_id in self.uploaded:
                try:
                    await client.delete(
                        f"{self.target.gateway_url}/v1/files/{file_id}",
                        headers=self.target.headers,
                    )
                except httpx.HTTPError:
                    pass
        self.uploaded.clear()


# ---------------------------------------------------------------------------------------
# progress


class Progress:
    """tqdm when importable; otherwise one line per finished batch."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        # A bar on a terminal; in a log file (not a TTY) one line per batch reads better.
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=total, unit="req", file=sys.stderr, dynamic_ncols=True, mininterval=0.5
                )
            except ImportError:
                pass

    def step(self, record: rep.Record) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{record.path} c={record.concurrency}", refresh=False)
            self.bar.update(1)

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(f"[load-bench] {text}", file=sys.stderr)
        else:
            log(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------
# the run


async def sweep(bench: Bench, state: dict, deadline: float, progress: Progress) -> None:
    args = bench.args
    paths = args.paths

    # Warm-up: workers, imports and first-call costs on every path, unmeasured.
    for path in paths:
        if args.warmup <= 0 or time.monotonic() >= deadline:
            break
        if path == "gateway-second-question":
            await bench.upload_all()
        records, seconds = await bench.batch(
            path, args.warmup, args.warmup, deadline, lambda r: None, first_index=0
        )
        state["warmup"] += records
        errors = [r.error for r in records if not r.ok]
        progress.line(
            f"warm-up {path}: {len(records) - len(errors)}/{len(records)} ok in {seconds:.1f} s"
            + (f" ({errors[0]})" if errors else "")
        )
    await bench.delete_uploads()

    for k, level in enumerate(args.concurrency):
        # Paths in a rotated order per level, so that drift on a shared machine does not
        # always favour the same path.
        order = paths[k % len(paths) :] + paths[: k % len(paths)]
        for path in order:
            if time.monotonic() >= deadline:
                state["truncated"] = True
                return
            if path == "gateway-second-question":
                await bench.upload_all()
            partial: list[rep.Record] = []
            state["partial"] = (path, level, partial, time.perf_counter())
            records, seconds = await bench.batch(
                path, level, args.requests, deadline, progress.step, records=partial
            )
            state["partial"] = None
            state["records"] += records
            summary = rep.summarize(path, level, args.requests, records, seconds)
            state["levels"].append(summary)
            if summary["cancelled"] or summary["requests_sent"] < args.requests:
                state["truncated"] = True
            e2e = summary["e2e_s"]
            progress.line(
                f"{path} c={level}: {summary['completed']}/{args.requests} ok, "
                f"e2e p50 {e2e['p50'] if e2e else float('nan'):.3f} s, "
                f"{summary['request_throughput']:.2f} req/s, {seconds:.1f} s"
            )
            if path in ("gateway-upload", "gateway-second-question"):
                await bench.delete_uploads()


def engine_args_default() -> list[str]:
    return list(stk.GPU_ENGINE_ARGS if stk.gpu_present() else stk.CPU_ENGINE_ARGS)


def build_report(args, argv, state, env, stack_info, videos, skipped, slo, t_wall) -> dict:
    records: list[rep.Record] = state["records"]
    levels = state["levels"]
    tokens: dict[str, dict[str, set]] = {}
    for r in [*state["warmup"], *records]:
        if r.ok and r.prompt_tokens is not None:
            side = "direct" if r.path in rep.DIRECT_PATHS else "gateway"
            tokens.setdefault(r.video, {}).setdefault(side, set()).add(r.prompt_tokens)
    warnings = list(state["warnings"]) + [f"skipped {s}" for s in skipped]
    video_rows = []
    for v in videos:
        row = v.summary()
        seen = tokens.get(v.name, {})
        for side in ("direct", "gateway"):
            values = sorted(seen.get(side, ()))
            row[f"prompt_tokens_{side}"] = values[0] if len(values) == 1 else (values or None)
        if (
            row["prompt_tokens_direct"]
            and row["prompt_tokens_gateway"]
            and (row["prompt_tokens_direct"] != row["prompt_tokens_gateway"])
        ):
            warnings.append(
                f"{v.name}: prompt tokens differ between the direct path "
                f"({row['prompt_tokens_direct']}) and the gateway "
                f"({row['prompt_tokens_gateway']}): the paths do not send the same input"
            )
        video_rows.append(row)
    for s in levels:
        if s["failed"]:
            warnings.append(f"{s['path']} c={s['concurrency']}: errors {s['errors']}")
    config = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k not in ("api_key",)
    }
    config["videos"] = [str(v) for v in args.videos]
    return {
        "benchmark": "load",
        "format_version": 2,
        "label": args.label,
        "started_at": state["started_at"],
        "finished_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "wall_s": time.monotonic() - t_wall,
        "startup_s": state.get("startup_s"),
        "truncated": state["truncated"],
        "interrupted": state["interrupted"],
        "command": shlex.join(["python", "-m", "benchmarks.load_bench", *argv]),
        "config": config,
        "slo": {
            "ttft_s": slo.ttft_s,
            "tpot_ms": slo.tpot_ms,
            "e2e_s": slo.e2e_s,
            "text": slo.describe(),
        },
        "environment": env,
        "stack": stack_info,
        "paths": {p: rep.PATH_HELP[p] for p in args.paths},
        "videos": video_rows,
        "gateway_overhead": rep.overhead(levels, records),
        "stages": rep.stages(levels, records),
        "levels": levels,
        "warmup": [r.as_dict() for r in state["warmup"]],
        "requests": [r.as_dict() for r in records],
        "warnings": warnings,
    }


def write_report(out: Path, report: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = rep.write_csvs(out, report)
    plots = rep.write_plots(out, report)
    if plots is None:
        report["warnings"].append("matplotlib is not importable: no PNG plots")
        plots = []
    files.append(rep.write_markdown(out, report, plots))
    files += [out / p for p in plots]
    report["files"] = [f.name for f in files] + ["report.json"]
    (out / "report.json").write_text(stk.dumps(report) + "\n")
    return [*files, out / "report.json"]


def _on_sigterm(signum: int, frame: object) -> None:
    del signum, frame
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if "--quick" in argv:
        # The smoke run's values are defaults: options given beside --quick still win.
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.max_tokens < 1:
        raise SystemExit("--requests and --max-tokens must be >= 1")
    t_wall = time.monotonic()
    deadline = t_wall + args.duration_limit_s
    signal.signal(signal.SIGTERM, _on_sigterm)
    external = bool(args.gateway_url or args.engine_url)
    if external:
        gateway_url = (
            stk.check_url(args.gateway_url, "--gateway-url", args.allow_remote)
            if args.gateway_url
            else None
        )
        engine_url = (
            stk.check_url(args.engine_url, "--engine-url", args.allow_remote)
            if args.engine_url
            else None
        )
        usable = [
            p
            for p in args.paths
            if (engine_url if p in rep.DIRECT_PATHS else gateway_url) is not None
        ]
        if not usable:
            raise SystemExit("no path can run with the URLs given")
        if usable != args.paths:
            log(f"measuring only {', '.join(usable)} (a URL is missing for the others)")
        args.paths = usable

    state: dict = {
        "records": [],
        "levels": [],
        "warmup": [],
        "warnings": [],
        "truncated": False,
        "interrupted": False,
        "started_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    slo = rep.Slo(args.slo_ttft_s or None, args.slo_e2e_s or None, args.slo_tpot_ms or None)
    env = stk.environment()
    args.videos = args.videos or [DEFAULT_MEDIA]
    videos, skipped = find_videos(args.videos, args.max_video_s, args.quick)
    if not videos:
        raise SystemExit("no usable video: " + "; ".join(skipped or ["none given"]))
    for line in skipped:
        log(f"skipped {line}")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}

    stack: stk.Stack | None = None
    workdir: Path | None = None
    stack_info: dict = {"mode": "external" if external else "own (loopback)"}
    progress: Progress | None = None
    try:
        if external:
            stack_info.update(
                gateway_url=gateway_url,
                engine_url=engine_url,
                engine_settings=args.engine_settings or "(not given: pass --engine-settings)",
            )
        else:
            engine_args = (
                shlex.split(args.engine_args)
                if args.engine_args is not None
                else engine_args_default()
            )
            workdir = Path(tempfile.mkdtemp(prefix="arc-load-bench-"))
            log(f"starting arc-serve and arc-gateway on loopback (logs in {args.out / 'logs'})")
            stack = stk.launch_stack(
                workdir,
                args.checkpoint,
                engine_args,
                shlex.split(args.gateway_args),
                args.out / "logs",
                forward_mode=args.forward_mode,
                say=log,
            )
        # Prepared inputs for the direct path (and data URLs), while the servers start.
        for video in videos:
            prepare(video)
            log(
                f"prepared {video.name}: {video.frames} frames, {video.prepared_bytes} bytes "
                f"in {video.prepare_s:.2f} s"
            )
        if stack is not None:
            t0 = time.monotonic()
            stack.wait_healthy(min(args.startup_timeout_s, max(1.0, deadline - t0)))
            state["startup_s"] = time.monotonic() - t_wall
            log(f"stack healthy after {state['startup_s']:.0f} s")
            gateway_url, engine_url = stack.url("gateway"), stack.url("engine")
            commands = stack.commands()
            stack_info.update(
                gateway_url=gateway_url,
                engine_url=engine_url,
                engine_command=commands["engine"],
                gateway_command=commands["gateway"],
                engine_settings=shlex.join(engine_args) + f" (checkpoint {args.checkpoint})",
                gateway_settings=args.gateway_args or "(defaults)",
                forward_mode=args.forward_mode,
            )
        model = None
        if engine_url:
            stack_info["engine"] = stk.engine_info(engine_url, headers)
            models = stack_info["engine"].get("models") or []
            if not models:
                raise SystemExit(f"the engine at {engine_url} lists no model")
            model = models[0]["id"]
        target = Target(gateway_url, engine_url, model, headers)
        bench = Bench(args, target, videos, slo)
        total = args.requests * len(args.concurrency) * len(args.paths)
        progress = Progress(total, not args.no_progress)
        try:
            asyncio.run(sweep(bench, state, deadline, progress))
        except KeyboardInterrupt:
            state["interrupted"] = True
            if state.get("partial") and state["partial"][2]:
                path, level, records, t0 = state["partial"]
                state["records"] += records
                summary = rep.summarize(
                    path, level, args.requests, records, time.perf_counter() - t0
                )
                summary["interrupted"] = True
                state["levels"].append(summary)
            state["warnings"].append("interrupted (Ctrl-C / SIGTERM): partial results")
            log("interrupted: writing what was measured")
        finally:
            progress.close()
            try:
                asyncio.run(bench.delete_uploads())
            except (KeyboardInterrupt, httpx.HTTPError, OSError) as e:
                log(f"could not delete the uploaded files: {e!r}")
        if state["truncated"]:
            state["warnings"].append(
                f"--duration-limit-s {args.duration_limit_s:g} reached: partial results"
            )
    except stk.StackError as e:
        log(f"the stack did not start: {e}")
        return 2
    finally:
        if stack is not None:
            log("stopping the stack")
            stack.stop()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    report = build_report(args, argv, state, env, stack_info, videos, skipped, slo, t_wall)
    files = write_report(args.out, report)
    print("\n## Gateway cost (gateway / reference)\n")
    print("\n".join(rep.overhead_markdown(report["gateway_overhead"])))
    print("\n## Where the time goes (mean s)\n")
    print("\n".join(rep.stages_markdown(report["stages"])))
    print("\n## Serving metrics\n")
    print("\n".join(rep.levels_markdown(report["levels"])))
    print(f"\nreports in {args.out}: {', '.join(f.name for f in files)}")
    if report["warnings"]:
        print("warnings:\n  " + "\n  ".join(report["warnings"]))
    return 130 if state["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
