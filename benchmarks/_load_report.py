"""Helpers of `benchmarks.load_bench`: per-level statistics, the gateway overhead table, and
the report files (JSON, CSV, Markdown, PNG plots when matplotlib is importable)."""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DIRECT = "direct"
DIRECT_RAW = "direct-raw"
GATEWAY_PATHS = ("gateway-upload", "gateway-data-url", "gateway-second-question")
DIRECT_PATHS = (DIRECT_RAW, DIRECT)
PATHS = (*GATEWAY_PATHS, *DIRECT_PATHS)
# What each gateway path is measured against: a video the engine must decode itself
# (direct-raw) for the paths that decode, the prepared input for the one that does not.
REFERENCE = {
    "gateway-upload": DIRECT_RAW,
    "gateway-data-url": DIRECT_RAW,
    "gateway-second-question": DIRECT,
}
PATH_HELP = {
    "gateway-upload": "POST /v1/files (multipart upload) then a streaming chat naming the "
    "file id, through the gateway; timed from the start of the upload",
    "gateway-data-url": "one streaming chat with the video as a data:video/mp4 URL, "
    "through the gateway",
    "gateway-second-question": "a streaming chat about a file uploaded before the batch "
    "(untimed): the upload-once benefit, no decode",
    DIRECT_RAW: "the chat sent straight to vLLM with the raw video as a data:video/mp4 URL "
    "(the engine's arc loader decodes it): what a user without the gateway does",
    DIRECT: "the chat sent straight to vLLM with the video prepared beforehand, untimed "
    "(data:video/x-arc-prepared, the container the gateway forwards in container mode)",
}
# Server-Timing stage names of the gateway (server/request_log.py) -> Record fields.
STAGES = {
    "receive": "receive_s",
    "queue": "queue_s",
    "decode": "decode_s",
    "encode": "encode_s",
    "store": "store_s",
    "engine-input": "engine_input_s",
}


@dataclass
class Record:
    """One measured request."""

    path: str
    concurrency: int
    index: int
    video: str
    start_s: float = 0.0  # from the start of its batch
    ok: bool = False
    status: int | None = None
    error: str | None = None  # None when ok
    ttft_s: float | None = None
    e2e_s: float | None = None
    upload_s: float | None = None
    headers_s: float | None = None  # the chat's response headers (vLLM: inputs ready)
    # The gateway's Server-Timing stages (upload and chat summed), seconds.
    receive_s: float | None = None
    queue_s: float | None = None
    decode_s: float | None = None
    encode_s: float | None = None
    store_s: float | None = None
    engine_input_s: float | None = None
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    tpot_ms: float | None = None
    meets_slo: bool | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def add_timing(self, header: str | None) -> None:
        """Adds a Server-Timing header's stages (milliseconds) to this record."""
        for item in (header or "").split(","):
            name, _, duration = item.strip().partition(";dur=")
            field_name = STAGES.get(name)
            try:
                seconds = float(duration) / 1000
            except ValueError:
                continue
            if field_name:
                setattr(self, field_name, (getattr(self, field_name) or 0.0) + seconds)


@dataclass
class Slo:
    ttft_s: float | None
    e2e_s: float | None
    tpot_ms: float | None

    def met(self, record: Record) -> bool:
        if not record.ok:
            return False
        checks = (
            (self.ttft_s, record.ttft_s),
            (self.e2e_s, record.e2e_s),
            (self.tpot_ms, record.tpot_ms),
        )
        return all(value is not None and value <= limit for limit, value in checks if limit)

    def describe(self) -> str:
        parts = [
            f"TTFT ≤ {self.ttft_s:g} s" if self.ttft_s else None,
            f"TPOT ≤ {self.tpot_ms:g} ms" if self.tpot_ms else None,
            f"e2e ≤ {self.e2e_s:g} s" if self.e2e_s else None,
        ]
        text = ", ".join(p for p in parts if p)
        return text or "none (goodput = throughput of successful requests)"


def distribution(values: list[float]) -> dict | None:
    if not values:
        return None
    array = np.asarray(values, dtype=float)
    return {
        "mean": float(array.mean()),
        "p50": float(np.percentile(array, 50)),
        "p95": float(np.percentile(array, 95)),
        "p99": float(np.percentile(array, 99)),
        "min": float(array.min()),
        "max": float(array.max()),
    }


def summarize(
    path: str, concurrency: int, planned: int, records: list[Record], duration_s: float
) -> dict:
    """The serving metrics of one (path, concurrency) batch."""
    ok = [r for r in records if r.ok]
    cancelled = [r for r in records if r.error == "cancelled"]
    failed = [r for r in records if not r.ok and r.error != "cancelled"]
    errors = Counter(r.error or "unknown" for r in failed)
    good = [r for r in ok if r.meets_slo]
    tokens = sum(r.output_tokens or 0 for r in ok)
    finished = len(ok) + len(failed)
    per_s = (lambda n: n / duration_s) if duration_s > 0 else (lambda n: 0.0)
    return {
        "path": path,
        "concurrency": concurrency,
        "requests_planned": planned,
        "requests_sent": len(records),
        "completed": len(ok),
        "failed": len(failed),
        "cancelled": len(cancelled),
        "errors": dict(sorted(errors.items())),
        "duration_s": duration_s,
        "request_throughput": per_s(len(ok)),
        "output_token_throughput": per_s(tokens),
        "goodput": per_s(len(good)),
        "slo_attainment": len(good) / finished if finished else None,
        "ttft_s": distribution([r.ttft_s for r in ok if r.ttft_s is not None]),
        "tpot_ms": distribution([r.tpot_ms for r in ok if r.tpot_ms is not None]),
        "e2e_s": distribution([r.e2e_s for r in ok if r.e2e_s is not None]),
        "upload_s": distribution([r.upload_s for r in ok if r.upload_s is not None]),
        "output_tokens_mean": (tokens / len(ok)) if ok else None,
        "prompt_tokens_mean": (
            statistics.fmean(r.prompt_tokens for r in ok if r.prompt_tokens is not None)
            if any(r.prompt_tokens is not None for r in ok)
            else None
        ),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def overhead(levels: list[dict], records: list[Record]) -> list[dict]:
    """For every gateway path and level that has its reference path (REFERENCE) beside it:
    the latency ratios gateway / reference (p50, p95), the throughput ratio, the added
    latency and its share of the gateway's e2e latency, and the decode the gateway did."""
    by_key = {(s["path"], s["concurrency"]): s for s in levels}
    ok = {(r.path, r.concurrency, r.index): r for r in records if r.ok}
    rows = []
    for (path, level), gateway in sorted(by_key.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        reference = REFERENCE.get(path)
        ref = by_key.get((reference, level)) if reference else None
        if ref is None or not gateway["e2e_s"] or not ref["e2e_s"]:
            continue
        g, d = gateway["e2e_s"], ref["e2e_s"]
        paired = [
            (r.e2e_s, ok[(reference, level, i)].e2e_s)
            for (p, c, i), r in ok.items()
            if p == path and c == level and (reference, level, i) in ok
        ]
        added = [a - b for a, b in paired]
        shares = [(a - b) / a for a, b in paired if a > 0]
        mine = [r for r in records if r.ok and r.path == path and r.concurrency == level]
        decode = [
            (r.queue_s or 0) + (r.decode_s or 0) + (r.encode_s or 0)
            for r in mine
            if r.decode_s is not None
        ]
        decode_mean = float(np.mean(decode)) if decode else None
        rows.append(
            {
                "gateway_path": path,
                "reference": reference,
                "concurrency": level,
                "e2e_p50_ratio": _ratio(g["p50"], d["p50"]),
                "e2e_p95_ratio": _ratio(g["p95"], d["p95"]),
                "ttft_p50_ratio": _ratio(
                    (gateway["ttft_s"] or {}).get("p50"), (ref["ttft_s"] or {}).get("p50")
                ),
                "throughput_ratio": _ratio(
                    gateway["request_throughput"], ref["request_throughput"]
                ),
                "gateway_e2e_p50_s": g["p50"],
                "reference_e2e_p50_s": d["p50"],
                "gateway_e2e_p95_s": g["p95"],
                "reference_e2e_p95_s": d["p95"],
                "added_p50_s": g["p50"] - d["p50"],
                "share_p50": (g["p50"] - d["p50"]) / g["p50"] if g["p50"] > 0 else None,
                "gateway_e2e_mean_s": g["mean"],
                "reference_e2e_mean_s": d["mean"],
                "added_mean_s": g["mean"] - d["mean"],
                "share_mean": (g["mean"] - d["mean"]) / g["mean"] if g["mean"] > 0 else None,
                # queue + decode + container encode in the gateway, per request
                "gateway_decode_mean_s": decode_mean,
                "decode_share_mean": _ratio(decode_mean, g["mean"]),
                "paired_requests": len(paired),
                "paired_added_median_s": float(np.median(added)) if added else None,
                "paired_share_median": float(np.median(shares)) if shares else None,
            }
        )
    return rows


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def stages(levels: list[dict], records: list[Record]) -> list[dict]:
    """Where each path's time goes, per level (means over its successful requests, seconds):
    the gateway's own stages from its Server-Timing header; for every path the engine's
    input preparation (vLLM answers with headers once the media is loaded and processed),
    the first token after it (scheduling, encoders, prefill) and the generation."""
    rows = []
    for level in levels:
        mine = [
            r
            for r in records
            if r.ok and r.path == level["path"] and r.concurrency == level["concurrency"]
        ]
        if not mine:
            continue
        direct = level["path"] in DIRECT_PATHS

        def engine_input(r: Record, direct: bool = direct) -> float | None:
            # Straight to vLLM, the client's time to headers is the engine's input work
            # (and the body's transfer on loopback).
            return r.headers_s if direct else r.engine_input_s

        row = {
            "path": level["path"],
            "concurrency": level["concurrency"],
            "requests": len(mine),
            "e2e_s": _mean([r.e2e_s for r in mine if r.e2e_s is not None]),
            "upload_s": _mean([r.upload_s for r in mine if r.upload_s is not None]),
        }
        for name in ("receive_s", "queue_s", "decode_s", "encode_s", "store_s"):
            row[name] = _mean([getattr(r, name) for r in mine if getattr(r, name) is not None])
        row["engine_input_s"] = _mean([v for v in (engine_input(r) for r in mine) if v is not None])
        row["first_token_s"] = _mean(
            [r.ttft_s - r.headers_s for r in mine if r.ttft_s and r.headers_s is not None]
        )
        row["generation_s"] = _mean([r.e2e_s - r.ttft_s for r in mine if r.e2e_s and r.ttft_s])
        parts = ["engine_input_s", "first_token_s", "generation_s"]
        # An upload's gateway stages are inside its client-side upload time.
        if row["upload_s"] is None:
            parts += ["receive_s", "queue_s", "decode_s", "encode_s", "store_s"]
        else:
            parts.append("upload_s")
        known = sum(row[k] or 0.0 for k in parts)
        row["rest_s"] = row["e2e_s"] - known if row["e2e_s"] is not None else None
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------
# files

LEVEL_COLUMNS = [
    "path", "concurrency", "requests_planned", "requests_sent", "completed", "failed",
    "cancelled", "errors", "duration_s", "request_throughput", "output_token_throughput",
    "goodput", "slo_attainment",
    "ttft_s_mean", "ttft_s_p50", "ttft_s_p95", "ttft_s_p99",
    "tpot_ms_mean", "tpot_ms_p50", "tpot_ms_p95", "tpot_ms_p99",
    "e2e_s_mean", "e2e_s_p50", "e2e_s_p95", "e2e_s_p99",
    "upload_s_p50", "output_tokens_mean", "prompt_tokens_mean",
]  # fmt: skip


def _flat(level: dict) -> dict:
    row = {}
    for column in LEVEL_COLUMNS:
        if column in level:
            value = level[column]
            row[column] = json.dumps(value) if isinstance(value, dict) else value
            continue
        metric, stat = column.rsplit("_", 1)
        row[column] = (level.get(metric) or {}).get(stat)
    return row


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
            )


def write_csvs(out: Path, report: dict) -> list[Path]:
    files = [
        out / "report.csv",
        out / "gateway_overhead.csv",
        out / "stages.csv",
        out / "requests.csv",
    ]
    _write_csv(files[0], [_flat(level) for level in report["levels"]], LEVEL_COLUMNS)
    for path, key, first in (
        (files[1], "gateway_overhead", ["gateway_path", "concurrency"]),
        (files[2], "stages", ["path", "concurrency"]),
    ):
        rows = report[key]
        _write_csv(path, rows, list(rows[0]) if rows else first)
    _write_csv(files[3], report["requests"], list(Record.__dataclass_fields__))
    return files


def _num(value: float | None, digits: int = 3, scale: float = 1.0) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _stat(level: dict, metric: str, stat: str, digits: int = 3) -> str:
    return _num((level.get(metric) or {}).get(stat), digits)


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def overhead_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(no level has both a gateway path and its reference path)"]
    lines = [
        (
            "| gateway path | vs | conc. | **e2e p50 ratio** | **e2e p95 ratio** "
            "| throughput ratio | TTFT p50 ratio | e2e p50 gateway / reference (s) "
            "| added p50 (s) | share of e2e (p50) | gateway decode (mean s, share) |"
        ),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for r in rows:
        decode = (
            f"{r['gateway_decode_mean_s']:.3f} ({_pct(r['decode_share_mean'])})"
            if r["gateway_decode_mean_s"] is not None
            else "–"
        )
        lines.append(
            f"| {r['gateway_path']} | {r['reference']} | {r['concurrency']} "
            f"| **{_times(r['e2e_p50_ratio'])}** | **{_times(r['e2e_p95_ratio'])}** "
            f"| {_times(r['throughput_ratio'])} | {_times(r['ttft_p50_ratio'])} "
            f"| {_num(r['gateway_e2e_p50_s'])} / {_num(r['reference_e2e_p50_s'])} "
            f"| {_num(r['added_p50_s'])} | {_pct(r['share_p50'])} | {decode} |"
        )
    return lines


STAGE_COLUMNS = (
    ("upload_s", "upload (client)"),
    ("receive_s", "receive"),
    ("queue_s", "queue"),
    ("decode_s", "decode"),
    ("encode_s", "encode"),
    ("store_s", "store"),
    ("engine_input_s", "engine input"),
    ("first_token_s", "first token"),
    ("generation_s", "generation"),
    ("rest_s", "rest"),
)


def stages_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(no successful request)"]
    names = " | ".join(label for _, label in STAGE_COLUMNS)
    lines = [
        f"| path | conc. | e2e | {names} |",
        "| --- | ---: | ---: |" + " ---: |" * len(STAGE_COLUMNS),
    ]
    for r in rows:
        cells = " | ".join(_num(r.get(key)) for key, _ in STAGE_COLUMNS)
        lines.append(f"| {r['path']} | {r['concurrency']} | {_num(r['e2e_s'])} | {cells} |")
    return lines


def levels_markdown(levels: list[dict]) -> list[str]:
    lines = [
        (
            "| path | conc. | ok/sent | errors | TTFT p50/p95/p99 (s) | TPOT p50/p95/p99 (ms) "
            "| e2e p50/p95/p99 (s) | req/s | out tok/s | goodput (req/s) |"
        ),
        "| --- | ---: | ---: | --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for s in levels:
        errors = ", ".join(f"{k}: {v}" for k, v in s["errors"].items()) or "0"
        if s["cancelled"]:
            errors += f" (+{s['cancelled']} cancelled)"

        def triple(metric: str, digits: int, s: dict = s) -> str:
            return " / ".join(_stat(s, metric, q, digits) for q in ("p50", "p95", "p99"))

        lines.append(
            f"| {s['path']} | {s['concurrency']} | {s['completed']}/{s['requests_sent']} "
            f"| {errors} | {triple('ttft_s', 3)} | {triple('tpot_ms', 1)} "
            f"| {triple('e2e_s', 3)} | {_num(s['request_throughput'], 3)} "
            f"| {_num(s['output_token_throughput'], 1)} | {_num(s['goodput'], 3)} |"
        )
    return lines


def write_markdown(out: Path, report: dict, plots: list[str]) -> Path:
    env = report["environment"]
    cfg = report["config"]
    stack = report["stack"]
    gpu = env["gpu"]
    gpus = gpu.get("nvidia_smi") or []
    gpu_text = ", ".join(f"{g['name']} ({g['memory_total']})" for g in gpus) or "none"
    engine = stack.get("engine") or {}
    lines = [
        "# Load benchmark: the gateway against vLLM alone",
        "",
        f"- run: {report['started_at']} ({report['wall_s']:.0f} s wall"
        + (", **stopped by --duration-limit-s**" if report["truncated"] else "")
        + f"), command `{report['command']}`",
        (
            f"- machine: {env['cpu_model']}, {env['cpu_cores']} cores "
            f"({env['cpu_cores_usable']} usable), {env['memory_gib']} GiB, GPU: {gpu_text}; "
            f"load average at start {env['load_average_at_start']}"
        ),
        f"- code: commit {env['git']['commit']}" + (" (dirty)" if env["git"]["dirty"] else ""),
        (
            f"- stack: {stack['mode']}; gateway {stack.get('gateway_url')}, "
            f"engine {stack.get('engine_url')} (vLLM {engine.get('version')}, model "
            f"{', '.join(m['id'] for m in engine.get('models') or [])})"
        ),
        f"- engine settings: `{stack.get('engine_settings')}`",
        f"- cache config reported by the engine: {engine.get('cache_config')}",
        (
            f"- requests: {cfg['requests']} per level and path, max_tokens {cfg['max_tokens']}"
            f"{' (ignore_eos)' if cfg['ignore_eos'] else ''}, concurrency "
            f"{cfg['concurrency']}, videos: {', '.join(v['name'] for v in report['videos'])}"
        ),
        f"- SLOs for goodput: {report['slo']['text']}",
        "",
        "## Gateway cost",
        "",
        (
            "Each gateway path against its reference in the same run, the same requests "
            "(same videos, question and max_tokens): gateway-upload and gateway-data-url "
            "against **direct-raw** (the raw video sent straight to vLLM, whose arc loader "
            "decodes it: what any path must do), gateway-second-question against **direct** "
            "(an input prepared beforehand: neither decodes). Ratio = gateway / reference: "
            "latency below 1 and throughput above 1 mean the gateway path is faster. "
            "Added = gateway − reference; gateway decode = queue + decode + container "
            "encode in the gateway, mean per request and its share of the gateway's e2e."
        ),
        "",
        *overhead_markdown(report["gateway_overhead"]),
        "",
        "## Where the time goes",
        "",
        (
            "Means per request, seconds. Gateway stages from its Server-Timing header: "
            "receive (the request body), queue (waiting for a decode worker), decode (the "
            "pipeline), encode (the forward form), store (an upload kept); engine input = "
            "until vLLM's response headers, which it sends once the request's media is "
            "loaded (container or raw decode) and processed; first token = after that "
            "until the first token (scheduling, encoders, prefill); generation = the rest "
            "of the tokens. For the direct paths engine input is the client's time to "
            "headers (body transfer on loopback included). For gateway-upload, receive to "
            "store happen during the upload (client), which rest does not count twice."
        ),
        "",
        *stages_markdown(report.get("stages") or []),
        "",
        "## Serving metrics per path and concurrency",
        "",
        *levels_markdown(report["levels"]),
        "",
        "## Videos",
        "",
        (
            "Prepare = the pipeline on the raw video in this process (what the engine's arc "
            "loader does for direct-raw); container encode / decode = the forward form "
            "written and read back in this process (median of 3; the read is what the "
            "engine does for direct and the gateway's container mode)."
        ),
        "",
        (
            "| video | bytes | duration (s) | frames | prepared bytes | prepare (s) "
            "| container encode / decode (s) | prompt tokens direct / gateway |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for v in report["videos"]:
        lines.append(
            f"| {v['name']} | {v['bytes']} | {v['duration_s']:.1f} | {v['frames']} "
            f"| {v['prepared_bytes']} | {v['prepare_s']:.2f} "
            f"| {v['container_encode_s']:.3f} / {v['container_decode_s']:.3f} "
            f"| {v.get('prompt_tokens_direct')} / {v.get('prompt_tokens_gateway')} |"
        )
    if report.get("warnings"):
        lines += ["", "## Warnings", "", *[f"- {w}" for w in report["warnings"]]]
    if plots:
        lines += ["", "## Plots", "", *[f"![{p}]({p})" for p in plots]]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_plots(out: Path, report: dict) -> list[str] | None:
    """latency.png, throughput.png, overhead.png, stages.png; None when matplotlib is not importable."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    levels = report["levels"]
    paths = [p for p in PATHS if any(s["path"] == p for s in levels)]
    if not paths:
        return []

    def series(path: str, getter) -> tuple[list[int], list[float]]:
        points = [
            (s["concurrency"], getter(s))
            for s in levels
            if s["path"] == path and getter(s) is not None
        ]
        return [p[0] for p in points], [p[1] for p in points]

    def axis(ax, title: str, ylabel: str) -> None:
        ax.set_title(title)
        ax.set_xlabel("concurrency")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({s["concurrency"] for s in levels}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    def stat(metric: str, q: str):
        return lambda s: (s.get(metric) or {}).get(q)

    color = {path: f"C{i}" for i, path in enumerate(PATHS)}
    written = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for path in paths:
        c = color[path]
        for q, style in (("p50", "-o"), ("p95", "--x")):
            axes[0].plot(*series(path, stat("e2e_s", q)), style, c=c, label=f"{path} {q}")
            axes[1].plot(*series(path, stat("ttft_s", q)), style, c=c, label=f"{path} {q}")
        axes[2].plot(*series(path, stat("tpot_ms", "p50")), "-o", c=c, label=f"{path} p50")
    axis(axes[0], "end-to-end latency", "seconds")
    axis(axes[1], "time to first token", "seconds")
    axis(axes[2], "time per output token", "ms")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)
    written.append("latency.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for path in paths:
        c = color[path]
        axes[0].plot(*series(path, lambda s: s["request_throughput"]), "-o", c=c, label=path)
        axes[0].plot(*series(path, lambda s: s["goodput"]), ":^", c=c, label=f"{path} goodput")
        axes[1].plot(*series(path, lambda s: s["output_token_throughput"]), "-o", c=c, label=path)
    axis(axes[0], "request throughput and goodput", "requests / s")
    axis(axes[1], "output token throughput", "tokens / s")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)
    written.append("throughput.png")

    rows = report["gateway_overhead"]
    if rows:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for path in GATEWAY_PATHS:
            mine = [r for r in rows if r["gateway_path"] == path]
            if not mine:
                continue
            x = [r["concurrency"] for r in mine]
            c = color[path]
            label = f"{path} / {mine[0]['reference']}"
            for key, style in (("e2e_p50_ratio", "-o"), ("e2e_p95_ratio", "--x")):
                axes[0].plot(x, [r[key] for r in mine], style, c=c, label=f"{label} {key[4:7]}")
            axes[1].plot(x, [r["throughput_ratio"] for r in mine], "-o", c=c, label=label)
        for ax in axes:
            ax.axhline(1.0, color="grey", lw=0.8)
        axis(axes[0], "e2e latency, gateway / reference (<1: gateway faster)", "ratio")
        axis(axes[1], "throughput, gateway / reference (>1: gateway faster)", "ratio")
        fig.tight_layout()
        fig.savefig(out / "overhead.png", dpi=110)
        plt.close(fig)
        written.append("overhead.png")

    stage_rows = report.get("stages") or []
    if stage_rows:
        shown = [key for key, _ in STAGE_COLUMNS if key != "rest_s"]
        labels = {**dict(STAGE_COLUMNS), "upload_s": "upload transfer (client)"}
        levels_seen = sorted({r["concurrency"] for r in stage_rows})
        fig, axes = plt.subplots(
            1, len(levels_seen), figsize=(5.5 * len(levels_seen), 4.2), squeeze=False
        )
        inside_upload = ("receive_s", "queue_s", "decode_s", "encode_s", "store_s")

        def value(row: dict, key: str) -> float:
            v = row.get(key) or 0.0
            if key == "upload_s" and v:
                # the upload's own gateway stages are drawn as themselves
                v -= sum(row.get(k) or 0.0 for k in inside_upload)
            return max(0.0, v)

        for ax, level in zip(axes[0], levels_seen):
            mine = sorted(
                (r for r in stage_rows if r["concurrency"] == level),
                key=lambda r: PATHS.index(r["path"]),
            )
            names = [r["path"] for r in mine]
            bottom = np.zeros(len(mine))
            for i, key in enumerate(shown):
                values = np.array([value(r, key) for r in mine])
                if values.any():
                    ax.barh(names, values, left=bottom, color=f"C{i}", label=labels[key])
                bottom += values
            ax.set_title(f"where the time goes, concurrency {level} (mean s)")
            ax.set_xlabel("seconds")
            ax.invert_yaxis()
            ax.grid(alpha=0.3, axis="x")
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        fig.savefig(out / "stages.png", dpi=110)
        plt.close(fig)
        written.append("stages.png")
    return written
