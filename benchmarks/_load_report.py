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
GATEWAY_PATHS = ("gateway-upload", "gateway-data-url")
PATHS = (*GATEWAY_PATHS, DIRECT)
PATH_HELP = {
    "gateway-upload": "POST /v1/files (multipart upload) then a streaming chat naming the "
    "file id, through the gateway; timed from the start of the upload",
    "gateway-data-url": "one streaming chat with the video as a data:video/mp4 URL, "
    "through the gateway",
    DIRECT: "the same chat sent straight to vLLM with the video prepared beforehand "
    "(data:video/x-arc-prepared, the container the gateway forwards)",
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
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    tpot_ms: float | None = None
    meets_slo: bool | None = None

    def as_dict(self) -> dict:
        return asdict(self)


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


GATEWAY_HISTOGRAMS = {
    "decode": "arc_gateway_decode_seconds",
    "upstream_ttft": "arc_gateway_upstream_ttft_seconds",
    "upstream": "arc_gateway_upstream_seconds",
}


def parse_gateway_metrics(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        for key, metric in GATEWAY_HISTOGRAMS.items():
            for suffix in ("_sum", "_count"):
                if name == metric + suffix:
                    values[key + suffix] = float(value)
    return values


def gateway_side(before: dict[str, float], after: dict[str, float] | None) -> dict | None:
    """Means over one batch of what the gateway measured itself: video preparation (in
    its decode workers) and the upstream (vLLM) time to first token and total time. From
    one gateway replica: behind a load balancer with several, only that replica's share."""
    if not after:
        return None
    means = {}
    for key in GATEWAY_HISTOGRAMS:
        count = after.get(key + "_count", 0) - before.get(key + "_count", 0)
        total = after.get(key + "_sum", 0) - before.get(key + "_sum", 0)
        means[key + "_mean_s"] = total / count if count > 0 else None
        means[key + "_count"] = int(count)
    return means


def overhead(levels: list[dict], records: list[Record]) -> list[dict]:
    """For every gateway path and level that has the direct path beside it: the gateway's
    added latency (gateway e2e - direct e2e) and its share of the gateway's e2e latency."""
    by_key = {(s["path"], s["concurrency"]): s for s in levels}
    ok = {(r.path, r.concurrency, r.index): r for r in records if r.ok}
    rows = []
    for (path, level), gateway in sorted(by_key.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        direct = by_key.get((DIRECT, level))
        if path == DIRECT or direct is None or not gateway["e2e_s"] or not direct["e2e_s"]:
            continue
        g, d = gateway["e2e_s"], direct["e2e_s"]
        paired = [
            (ok[(path, level, i)].e2e_s, ok[(DIRECT, level, i)].e2e_s)
            for (p, c, i) in ok
            if p == path and c == level and (DIRECT, level, i) in ok
        ]
        added = [a - b for a, b in paired]
        shares = [(a - b) / a for a, b in paired if a > 0]
        row = {
            "gateway_path": path,
            "concurrency": level,
            "gateway_e2e_p50_s": g["p50"],
            "direct_e2e_p50_s": d["p50"],
            "added_p50_s": g["p50"] - d["p50"],
            "share_p50": (g["p50"] - d["p50"]) / g["p50"] if g["p50"] > 0 else None,
            "gateway_e2e_mean_s": g["mean"],
            "direct_e2e_mean_s": d["mean"],
            "added_mean_s": g["mean"] - d["mean"],
            "share_mean": (g["mean"] - d["mean"]) / g["mean"] if g["mean"] > 0 else None,
            "added_ttft_p50_s": (
                gateway["ttft_s"]["p50"] - direct["ttft_s"]["p50"]
                if gateway["ttft_s"] and direct["ttft_s"]
                else None
            ),
            "gateway_decode_mean_s": (gateway.get("gateway_side") or {}).get("decode_mean_s"),
            "gateway_upstream_ttft_mean_s": (gateway.get("gateway_side") or {}).get(
                "upstream_ttft_mean_s"
            ),
            "gateway_upstream_mean_s": (gateway.get("gateway_side") or {}).get("upstream_mean_s"),
            "paired_requests": len(paired),
            "paired_added_median_s": float(np.median(added)) if added else None,
            "paired_share_median": float(np.median(shares)) if shares else None,
        }
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
    files = [out / "report.csv", out / "gateway_overhead.csv", out / "requests.csv"]
    _write_csv(files[0], [_flat(level) for level in report["levels"]], LEVEL_COLUMNS)
    overhead_rows = report["gateway_overhead"]
    columns = list(overhead_rows[0]) if overhead_rows else ["gateway_path", "concurrency"]
    _write_csv(files[1], overhead_rows, columns)
    _write_csv(files[2], report["requests"], list(Record.__dataclass_fields__))
    return files


def _num(value: float | None, digits: int = 3, scale: float = 1.0) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _stat(level: dict, metric: str, stat: str, digits: int = 3) -> str:
    return _num((level.get(metric) or {}).get(stat), digits)


def overhead_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(no level has both a gateway path and the direct path)"]
    lines = [
        (
            "| gateway path | concurrency | gateway e2e p50 (s) | direct e2e p50 (s) "
            "| added p50 (s) | **share of e2e (p50)** | added mean (s) | share of e2e (mean) "
            "| per-request share (median) | added TTFT p50 (s) |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['gateway_path']} | {r['concurrency']} | {_num(r['gateway_e2e_p50_s'])} "
            f"| {_num(r['direct_e2e_p50_s'])} | {_num(r['added_p50_s'])} "
            f"| **{_pct(r['share_p50'])}** | {_num(r['added_mean_s'])} "
            f"| {_pct(r['share_mean'])} | {_pct(r['paired_share_median'])} "
            f"| {_num(r['added_ttft_p50_s'])} |"
        )
    return lines


def breakdown_markdown(rows: list[dict]) -> list[str]:
    """Where a gateway request's time goes, from the gateway's own /metrics."""
    if not any(r.get("gateway_decode_mean_s") is not None for r in rows):
        return ["(the gateway's /metrics could not be read)"]
    lines = [
        (
            "| gateway path | concurrency | gateway e2e mean (s) | decode in gateway mean (s) "
            "| upstream (vLLM) mean (s) | rest: upload, queues, transfer (s) "
            "| direct e2e mean (s) |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        decode, upstream = r.get("gateway_decode_mean_s"), r.get("gateway_upstream_mean_s")
        rest = (
            r["gateway_e2e_mean_s"] - decode - upstream
            if decode is not None and upstream is not None
            else None
        )
        lines.append(
            f"| {r['gateway_path']} | {r['concurrency']} | {_num(r['gateway_e2e_mean_s'])} "
            f"| {_num(decode)} | {_num(upstream)} | {_num(rest)} "
            f"| {_num(r['direct_e2e_mean_s'])} |"
        )
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
        "# Load benchmark: gateway vs direct-to-vLLM",
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
        "## Gateway overhead",
        "",
        (
            "Added latency = gateway-path end-to-end latency − direct-path end-to-end latency "
            "for the same requests (same videos, question and max_tokens) in the same run; the "
            "share is that difference over the gateway-path latency. The per-request share "
            "pairs request *i* of both paths."
        ),
        "",
        *overhead_markdown(report["gateway_overhead"]),
        "",
        (
            "Where the gateway path's time goes (means; decode and upstream as the gateway's "
            "/metrics measured them during the batch). An upstream time above the direct "
            "path's e2e is the engine slowed by the gateway's decoding on shared CPUs."
        ),
        "",
        *breakdown_markdown(report["gateway_overhead"]),
        "",
        "## Serving metrics per path and concurrency",
        "",
        *levels_markdown(report["levels"]),
        "",
        "## Videos",
        "",
        (
            "| video | bytes | duration (s) | frames | prepared bytes | prepare (s) "
            "| prompt tokens direct / gateway |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for v in report["videos"]:
        lines.append(
            f"| {v['name']} | {v['bytes']} | {v['duration_s']:.1f} | {v['frames']} "
            f"| {v['prepared_bytes']} | {v['prepare_s']:.2f} "
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
    """latency.png, throughput.png, overhead.png; None when matplotlib is not importable."""
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
            axes[0].plot(x, [r["added_p50_s"] for r in mine], "-o", c=c, label=f"{path} p50")
            axes[0].plot(x, [r["added_mean_s"] for r in mine], "--x", c=c, label=f"{path} mean")
            for key, style in (("share_p50", "-o"), ("share_mean", "--x")):
                share = [100 * (r[key] or 0) for r in mine]
                axes[1].plot(x, share, style, c=c, label=f"{path} {key[6:]}")
        axis(axes[0], "gateway added latency", "seconds")
        axis(axes[1], "gateway share of end-to-end latency", "%")
        fig.tight_layout()
        fig.savefig(out / "overhead.png", dpi=110)
        plt.close(fig)
        written.append("overhead.png")
    return written
