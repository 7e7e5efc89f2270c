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
from pathlib import Path, PurePosixPath

ENV_PREFIX = "ARC_GATEWAY_"
MB = 1024 * 1024


FORWARD_MODES = ("container", "shared")


def _default_files_dir() -> str:
    return str(Path.home() / ".cache" / "arc-video-serve" / "files")


def cgroup_cpu_quota(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> float | None:
    """CPUs this process's cgroup v2 `cpu.max` allows (the tightest of its cgroup and
    their parents'), or None without a quota (or without cgroup v2)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    paths = [line[3:] for line in lines if line.startswith("0::")]
    if not paths:
        return None
    folder = root / paths[0].lstrip("/")
    quotas = []
    while True:
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max":
                quotas.append(int(quota) / int(period))
        except (OSError, ValueError):
            pass
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
    return min(quotas) if quotas else None


def usable_cpus() -> int:
    """CPUs the gateway may use: its CPU affinity, bounded by a cgroup v2 quota (a
    container's `cpus:` limit) rounded down, at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        count = min(count, int(quota))
    return max(1, count)


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
        default_factory=usable_cpus,
        metadata={
            "help": "worker processes that probe and decode videos; by default one per CPU "
            "the gateway may use (its CPU affinity, bounded by a cgroup v2 cpu.max quota, "
            "e.g. a container's cpus: limit, rounded down; at least 1)"
        },
    )
    max_queue: int = field(
        default=64,
        metadata={"help": "videos waiting for a decode worker; beyond it answers are 429"},
    )
    max_inflight: int = field(
        default=64,
        metadata={"help": "chat requests in progress at once; beyond it answers are 429"},
    )
    max_schema_bytes: int = field(
        default=32768,
        metadata={"help": "largest JSON schema a response_format may carry (compact JSON bytes)"},
    )
    max_schema_depth: int = field(
        default=32,
        metadata={
            "help": "deepest nesting of objects and arrays in a response_format schema (a "
            "nested object property counts 2; vLLM itself refuses more than 64)"
        },
    )
    max_schema_properties: int = field(
        default=256,
        metadata={
            "help": "most properties a response_format schema may declare in all (optional "
            "ones cost the grammar backends most: xgrammar's compile takes ~20 s for 2000, "
            "llguidance gives up near 500)"
        },
    )
    max_upload_mb: float = field(
        default=4096,
        metadata={
            "help": "largest video accepted (upload, data URL or URL; streamed to disk, never "
            "held in memory): 4 GiB holds an hour of 1080p at 8 Mb/s"
        },
    )
    max_duration_s: float = field(
        default=14400.0,
        metadata={
            "help": "longest video (or clip) accepted, in seconds; one over five minutes is "
            "asked about in segments (video.segments)"
        },
    )
    max_pixels: int = field(
        default=3840 * 2160, metadata={"help": "largest frame accepted (width x height)"}
    )
    decode_timeout_s: float = field(
        default=300.0,
        metadata={
            "help": "wall-clock limit for preparing one video, clip or segment (a long "
            "video's segments have one each)"
        },
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
        default=3600.0,
        metadata={"help": "wall-clock limit for receiving one upload (4 GiB: 1.2 MB/s)"},
    )
    upstream_timeout_s: float = field(
        default=600.0, metadata={"help": "limit for one upstream answer (504 beyond it)"}
    )
    url_timeout_s: float = field(
        default=900.0, metadata={"help": "wall-clock limit for downloading a video URL"}
    )
    allow_url_host: list[str] = field(
        default_factory=list,
        metadata={
            "help": "host (or host:port) whose URLs may be fetched even if it is private or "
            "loopback, over http too (repeatable; for internal stores and tests)"
        },
    )
    forward_mode: str = field(
        default="container",
        metadata={
            "choices": FORWARD_MODES,
            "help": "how prepared videos reach the engine: container (a data: URL of the "
            "compact JPEG/FLAC container in the request; any engine, remote ones too) or "
            "shared (the raw container written to --forward-dir and sent as a file:// URL: "
            "no codec, no base64; only where the engine reads that folder, started with "
            "--allowed-local-media-path set to --engine-forward-dir)",
        },
    )
    forward_dir: str | None = field(
        default=None,
        metadata={
            "help": "shared mode: where the gateway writes forwarded videos, each removed when "
            "its answer is done (default <files-dir>/forward)"
        },
    )
    engine_forward_dir: str | None = field(
        default=None,
        metadata={
            "help": "shared mode: the same folder as the engine sees it, an absolute path "
            "(default: --forward-dir)"
        },
    )
    segments_in_flight: int = field(
        default=4,
        metadata={
            "help": "segments of one long video prepared or asked at once: each is sent to "
            "the engine as soon as it is prepared, and the next one starts decoding when "
            "one is answered; each holds one prepared container on disk (shared mode: in "
            "the forward folder, ~200 MB for five minutes)"
        },
    )
    integrator_url: str | None = field(
        default=None,
        metadata={
            "help": "OpenAI-compatible server (base URL) for the integration pass that joins "
            "a long video's segment answers into one answer (default: the engine itself); "
            "its key comes from the environment only, ARC_GATEWAY_INTEGRATOR_API_KEY"
        },
    )
    integrator_model: str | None = field(
        default=None,
        metadata={
            "help": "model asked for the integration pass (default: the engine's model; "
            "needed with --integrator-url)"
        },
    )
    integrator_api_key: str | None = field(
        default=None,
        metadata={"env_only": True, "help": "API key of --integrator-url"},
    )
    integrator_prompts: str | None = field(
        default=None,
        metadata={
            "help": "folder of integration prompt templates replacing the shipped ones "
            "(server/chat/prompts/<task>.txt; docs/long-videos.md)"
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
    database_url: str | None = field(
        default=None,
        metadata={
            "help": "the gateway's database (keys, files' owners, limits, usage): "
            "sqlite:////PATH or postgresql://USER:PASSWORD@HOST:PORT/DB (several replicas "
            "share one PostgreSQL); default SQLite in the files folder, "
            "<files-dir>/gateway.db"
        },
    )
    admin_key: str | None = field(
        default=None,
        metadata={
            "help": "an admin API key (sees every key's files; no limits); turns "
            "authentication on. Prefer the environment variable or --admin-key-file to a "
            "flag others can read in the process list",
            "secret": True,
        },
    )
    admin_key_file: str | None = field(
        default=None,
        metadata={"help": "a file holding the admin API key (a mounted secret)"},
    )
    insecure_no_auth: bool = field(
        default=False,
        metadata={
            "help": "serve without API keys on a non-loopback address (refused otherwise "
            "while no key exists)"
        },
    )
    isolate_mm_cache: bool = field(
        default=False,
        metadata={
            "help": "also salt vLLM's multimodal processor and encoder caches per key (sends "
            "mm_processor_kwargs.arc_cache_salt; the engines must run with "
            "--trust-request-mm-kwargs). Off: those caches stay keyed by the video's content "
            "alone, see README 'API keys and limits'"
        },
    )
    lease_ttl_s: float = field(
        default=60.0,
        metadata={
            "help": "a request's hold on its key's concurrency limit (and a question's pin "
            "on a file) outlives a gateway that died by at most this long"
        },
    )
    batch_concurrency: int = field(
        default=0,
        metadata={
            "help": "batch lines (POST /v1/batches) this gateway runs at once; 0 (default): "
            "twice the decode workers, so one line's video decodes while another's is "
            "with the engine. Lines run behind interactive requests (the decode queue and "
            "the engine's priority) whatever this is"
        },
    )
    batch_yield_s: float = field(
        default=2.0,
        metadata={
            "help": "while interactive chat requests are in flight on this gateway, and for "
            "this long after the last one ended, batch lines start only up to "
            "--batch-busy-concurrency at once (lines already running finish); 0: never yield"
        },
    )
    batch_busy_concurrency: int = field(
        default=0,
        metadata={
            "help": "batch lines run at once beside interactive traffic (see --batch-yield-s); "
            "0 (default): none, the batch waits for a pause (or --batch-max-yield-s)"
        },
    )
    batch_max_yield_s: float = field(
        default=60.0,
        metadata={
            "help": "longest the batch waits for interactive traffic to pause: after it, one "
            "line at a time runs beside the traffic, so steady traffic never starves a batch"
        },
    )
    batch_retries: int = field(
        default=3,
        metadata={
            "help": "retries of a batch line that met a retriable error (engine 5xx, "
            "timeout, unreachable) before it goes to the error file; a 429 (the key's "
            "limits, a busy engine) is waited out and uses none"
        },
    )
    batch_retry_backoff_s: float = field(
        default=2.0,
        metadata={"help": "wait before a line's first retry; doubled for each next one"},
    )
    batch_lease_s: float = field(
        default=120.0,
        metadata={
            "help": "a gateway's claim on the batch lines it runs (renewed while it lives): "
            "the lines of a gateway that died run again elsewhere after at most this long"
        },
    )
    batch_window_s: float = field(
        default=0,
        metadata={
            "help": "how long a batch may run before it expires; 0 (default): its "
            "completion_window (24h). For tests and trials"
        },
    )
    batch_max_lines: int = field(
        default=50000, metadata={"help": "most requests in one batch input file (413 past it)"}
    )
    batch_max_line_mb: float = field(
        default=10,
        metadata={"help": "longest line of a batch input file, data URLs included (413 past it)"},
    )
    batch_max_file_mb: float = field(
        default=200, metadata={"help": "largest batch input file (413 past it)"}
    )

    def __post_init__(self) -> None:
        if self.forward_mode not in FORWARD_MODES:
            raise ValueError(
                f"forward_mode must be one of {', '.join(FORWARD_MODES)}, not {self.forward_mode!r}"
            )
        if self.decode_workers < 1:
            raise ValueError("decode_workers must be at least 1")
        if self.segments_in_flight < 1:
            raise ValueError("segments_in_flight must be at least 1")
        if self.integrator_url and not self.integrator_model:
            raise ValueError("integrator_url needs integrator_model (the model to ask there)")
        for name in ("batch_concurrency", "batch_retries", "batch_busy_concurrency"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more")
        if self.batch_yield_s < 0 or self.batch_max_yield_s < 0:
            raise ValueError("batch_yield_s and batch_max_yield_s must be 0 or more")
        for name in ("batch_max_lines", "batch_max_line_mb", "batch_max_file_mb", "batch_lease_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("max_schema_bytes", "max_schema_depth", "max_schema_properties"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if (
            self.forward_mode == "shared"
            and not PurePosixPath(self.engine_forward_path).is_absolute()
        ):
            raise ValueError("engine_forward_dir must be an absolute path (the engine's view)")

    @property
    def database(self) -> str:
        """The database URL in use (the default: SQLite in the files folder)."""
        from .db import default_database_url

        return self.database_url or default_database_url(self.files_dir)

    def admin_secret(self) -> str | None:
        """The admin key, from --admin-key or --admin-key-file (its first line)."""
        if self.admin_key:
            return self.admin_key.strip()
        if self.admin_key_file:
            try:
                text = Path(self.admin_key_file).read_text().strip()
            except OSError as e:
                raise ValueError(f"cannot read --admin-key-file: {e}") from None
            if not text:
                raise ValueError(f"--admin-key-file {self.admin_key_file} is empty")
            return text.splitlines()[0].strip()
        return None

    @property
    def batch_workers(self) -> int:
        """Batch lines run at once (`batch_concurrency`, or twice the decode workers)."""
        return self.batch_concurrency or 2 * self.decode_workers

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def shared_forward(self) -> bool:
        return self.forward_mode == "shared"

    @property
    def forward_path(self) -> Path:
        """Where the gateway writes forwarded videos (shared mode)."""
        return Path(self.forward_dir or Path(self.files_dir) / "forward").absolute()

    @property
    def engine_forward_path(self) -> str:
        """That folder as the engine sees it."""
        return self.engine_forward_dir or str(self.forward_path)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper()


# The options by topic in --help: each group starts at the Settings field named (the
# fields are declared in this order; a field added after a group's first falls in it).
HELP_GROUPS = {
    "host": "where it listens and what it serves",
    "files_dir": "stored files (POST /v1/files)",
    "decode_workers": "capacity (past it: 429 with Retry-After)",
    "max_schema_bytes": "limits on requests and videos (past them: 4xx naming the limit)",
    "forward_mode": "how prepared videos reach the engine",
    "segments_in_flight": "long videos (over five minutes: asked in segments)",
    "video_tokens_per_frame": "other",
    "database_url": "API keys and the database",
    "batch_concurrency": "batches (POST /v1/batches)",
}


def _default_text(item: dataclasses.Field) -> str:
    """`default X; ` for --help, unless the default is unset (the help says what then)."""
    default = (
        item.default_factory()  # type: ignore[misc]
        if item.default is dataclasses.MISSING
        else item.default
    )
    if default in (None, False, []) or "default" in item.metadata.get("help", ""):
        return ""
    return f"default {default}; "


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arc-gateway",
        usage="arc-gateway [options]\n       arc-gateway {keys,db} ... (arc-gateway keys --help)"
        "\n       arc-gateway batch ... (arc-gateway batch --help)",
        description="The arc-video-serve gateway: accepts videos (upload, data URL, https "
        "URL), prepares them with ffmpeg in worker processes and forwards compact "
        "model-ready requests to vLLM behind an OpenAI-compatible API; a video over five "
        "minutes is asked about in segments, in parallel, and the answers integrated into "
        "one; a page to try the model in a browser at / (http://127.0.0.1:8080/ by "
        "default). Every option can also be set by an environment variable "
        f"{ENV_PREFIX}<OPTION> (shown below).",
        epilog="API keys and the database: `arc-gateway keys {create,list,revoke,limits,"
        "usage}` and `arc-gateway db {upgrade,status}` (each with --help). Batches on a "
        "running gateway: `arc-gateway batch {submit,watch,show,list,cancel,make}`. Set by the "
        "environment only (secrets never go on a command line): "
        + ", ".join(
            f"{_env(item.name)} ({item.metadata.get('help', '')})"
            for item in dataclasses.fields(Settings)
            if item.metadata.get("env_only")
        )
        + ".",
    )
    group: argparse._ArgumentGroup | argparse.ArgumentParser = parser
    for item in dataclasses.fields(Settings):
        if item.name in HELP_GROUPS:
            group = parser.add_argument_group(HELP_GROUPS[item.name])
        if item.metadata.get("env_only"):
            continue  # a secret: never on a command line (ps shows it)
        default = "" if item.metadata.get("secret") else _default_text(item)
        help_text = f"{item.metadata.get('help', '')} ({default}env {_env(item.name)})"
        if item.type == "bool":
            group.add_argument(_flag(item.name), help=help_text, action="store_true", default=None)
        elif item.type in ("list[str]",):
            group.add_argument(_flag(item.name), action="append", help=help_text)
        else:
            choices = item.metadata.get("choices")
            group.add_argument(_flag(item.name), help=help_text, default=None, choices=choices)
    return parser


def _convert(item: dataclasses.Field, raw: object) -> object:
    kind = item.type
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{_env(item.name)} must be true or false, not {raw!r}")
    if kind == "list[str]":
        if isinstance(raw, str):
            return [part.strip() for part in raw.split(",") if part.strip()]
        return list(raw)  # type: ignore[arg-type]
    if kind == "int":
        return int(raw)  # type: ignore[arg-type]
    if kind in ("float", "float | None"):
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
