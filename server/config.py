"""Gateway settings: one dataclass, set by CLI flags or ARC_GATEWAY_* environment variables.

Every field is a flag (`upstream_url` -> `--upstream-url`) and an environment variable
(`ARC_GATEWAY_UPSTREAM_URL`); a flag wins over the environment, which wins over the
default. List fields take a comma-separated environment value.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "ARC_GATEWAY_"
MB = 1024 * 1024


def _default_files_dir() -> str:
    return str(Path.home() / ".cache" / "arc-video-serve" / "files")


@dataclass
class Settings:
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8080, metadata={"help": "port to listen on"})
    upstream_url: str = field(
        default="http://127.0.0.1:8000",
        metadata={"help": "base URL of the vLLM OpenAI server (arc-serve) or its router"},
    )
    upstream_api_key: str | None = field(
        default=None, metadata={"help": "API key sent to the upstream, if it wants one"}
    )
    model: str | None = field(
        default=None,
        metadata={"help": "model name sent upstream (default: the first model it lists)"},
    )
    served_model_name: str | None = field(
        default=None,
        metadata={
            "help": "model name shown to clients (default: vLLM's served name when it is "
            "not a path, else arc)"
        },
    )
    files_dir: str = field(
        default_factory=_default_files_dir,
        metadata={"help": "where uploaded videos and their prepared forms are kept"},
    )
    files_budget_mb: int = field(
        default=20480, metadata={"help": "disk budget for stored files; oldest go first"}
    )
    files_ttl_s: int = field(
        default=86400, metadata={"help": "stored files expire this many seconds after upload"}
    )
    decode_workers: int = field(
        default=2, metadata={"help": "worker processes that probe and decode videos"}
    )
    max_queue: int = field(
        default=64,
        metadata={"help": "videos waiting for a decode worker; beyond it answers are 429"},
    )
    max_inflight: int = field(
        default=64,
        metadata={"help": "chat requests in progress at once; beyond it answers are 429"},
    )
    max_upload_mb: float = field(
        default=512, metadata={"help": "largest video accepted (upload, data URL or URL)"}
    )
    max_duration_s: float = field(
        default=1800.0, metadata={"help": "longest video accepted, in seconds"}
    )
    max_pixels: int = field(
        default=3840 * 2160, metadata={"help": "largest frame accepted (width x height)"}
    )
    decode_timeout_s: float = field(
        default=300.0, metadata={"help": "wall-clock limit for preparing one video"}
    )
    ffmpeg_memory_mb: int = field(
        default=4096,
        metadata={
            "help": "memory limit of each decoding: address space of each ffmpeg process, and "
            "the decode worker's heap over its own ~2 GB (frames decode in the worker)"
        },
    )
    ffmpeg_cpu_s: int = field(
        default=600, metadata={"help": "CPU-seconds limit of each ffmpeg process"}
    )
    upload_read_timeout_s: float = field(
        default=30.0,
        metadata={"help": "an upload that sends nothing for this long is dropped (slow loris)"},
    )
    upload_total_timeout_s: float = field(
        default=900.0, metadata={"help": "wall-clock limit for receiving one upload"}
    )
    upstream_timeout_s: float = field(
        default=600.0, metadata={"help": "limit for one upstream answer (504 beyond it)"}
    )
    url_timeout_s: float = field(
        default=300.0, metadata={"help": "wall-clock limit for downloading a video URL"}
    )
    allow_url_host: list[str] = field(
        default_factory=list,
        metadata={
            "help": "host (or host:port) whose URLs may be fetched even if it is private or "
            "loopback, over http too (repeatable; for internal stores and tests)"
        },
    )
    video_tokens_per_frame: int = field(
        default=114, metadata={"help": "prompt tokens per frame, for usage.video_tokens"}
    )
    font: str | None = field(default=None, metadata={"help": "TTF font for the timestamp overlay"})
    graceful_timeout_s: int = field(
        default=60, metadata={"help": "on SIGTERM, time given to accepted requests to finish"}
    )
    log_level: str = field(default="info", metadata={"help": "debug, info, warning, error"})

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arc-gateway",
        description="The arc-video-serve gateway: accepts videos (upload, data URL, https "
        "URL), prepares them with ffmpeg in worker processes and forwards compact "
        "model-ready requests to vLLM behind an OpenAI-compatible API. Every option can "
        f"also be set by an environment variable {ENV_PREFIX}<OPTION> (shown below).",
    )
    for item in dataclasses.fields(Settings):
        default = (
            item.default_factory()  # type: ignore[misc]
            if item.default is dataclasses.MISSING
            else item.default
        )
        help_text = f"{item.metadata.get('help', '')} (default {default}; env {_env(item.name)})"
        if item.type in ("list[str]",):
            parser.add_argument(_flag(item.name), action="append", help=help_text)
        else:
            parser.add_argument(_flag(item.name), help=help_text, default=None)
    return parser


def _convert(item: dataclasses.Field, raw: object) -> object:
    kind = item.type
    if kind == "list[str]":
        if isinstance(raw, str):
            return [part.strip() for part in raw.split(",") if part.strip()]
        return list(raw)  # type: ignore[arg-type]
    if kind == "int":
        return int(raw)  # type: ignore[arg-type]
    if kind == "float":
        return float(raw)  # type: ignore[arg-type]
    return raw


def load_settings(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    args = vars(build_parser().parse_args(argv))
    values: dict[str, object] = {}
    for item in dataclasses.fields(Settings):
        raw = args.get(item.name)
        if raw is None:
            raw = env.get(_env(item.name))
        if raw is not None and raw != "":
            values[item.name] = _convert(item, raw)
    return Settings(**values)
