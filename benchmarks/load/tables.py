"""The load benchmark's Markdown: the tables (gateway cost, where the time goes, serving
metrics, videos) printed at the end of a run and report.md, which holds them all."""

from __future__ import annotations

from pathlib import Path

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

OVERHEAD_TEXT = (
    "Each gateway path against its reference in the same run, the same requests "
    "(same videos, question and max_tokens): gateway-upload and gateway-data-url "
    "against **direct-raw** (the raw video sent straight to vLLM, whose arc loader "
    "decodes it: what any path must do), gateway-second-question against **direct** "
    "(an input prepared beforehand: neither decodes). Ratio = gateway / reference: "
    "latency below 1 and throughput above 1 mean the gateway path is faster. "
    "Added = gateway − reference; gateway decode = queue + decode + container "
    "encode in the gateway, mean per request and its share of the gateway's e2e."
)
STAGES_TEXT = (
    "Means per request, seconds. Gateway stages from its Server-Timing header: "
    "receive (the request body), queue (waiting for a decode worker), decode (the "
    "pipeline), encode (the forward form), store (an upload kept); engine input = "
    "until vLLM's response headers, which it sends once the request's media is "
    "loaded (container or raw decode) and processed; first token = after that "
    "until the first token (scheduling, encoders, prefill); generation = the rest "
    "of the tokens. For the direct paths engine input is the client's time to "
    "headers (body transfer on loopback included). For gateway-upload, receive to "
    "store happen during the upload (client), which rest does not count twice."
)
VIDEOS_TEXT = (
    "Prepare = the pipeline on the raw video in this process (what the engine's arc "
    "loader does for direct-raw); container encode / decode = the forward form "
    "written and read back in this process (median of 3; the read is what the "
    "engine does for direct and the gateway's container mode)."
)


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


def videos_markdown(videos: list[dict]) -> list[str]:
    lines = [
        (
            "| video | bytes | duration (s) | frames | prepared bytes | prepare (s) "
            "| container encode / decode (s) | prompt tokens direct / gateway |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for v in videos:
        lines.append(
            f"| {v['name']} | {v['bytes']} | {v['duration_s']:.1f} | {v['frames']} "
            f"| {v['prepared_bytes']} | {v['prepare_s']:.2f} "
            f"| {v['container_encode_s']:.3f} / {v['container_decode_s']:.3f} "
            f"| {v.get('prompt_tokens_direct')} / {v.get('prompt_tokens_gateway')} |"
        )
    return lines


def run_markdown(report: dict) -> list[str]:
    """The run in a few lines: when, the machine, the code, the stack, the load, the SLOs."""
    env = report["environment"]
    cfg = report["config"]
    stack = report["stack"]
    gpus = env["gpu"].get("nvidia_smi") or []
    gpu_text = ", ".join(f"{g['name']} ({g['memory_total']})" for g in gpus) or "none"
    engine = stack.get("engine") or {}
    return [
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
    ]


def write_markdown(out: Path, report: dict, plots: list[str]) -> Path:
    lines = [
        "# Load benchmark: the gateway against vLLM alone",
        "",
        *run_markdown(report),
        "",
        "## Gateway cost",
        "",
        OVERHEAD_TEXT,
        "",
        *overhead_markdown(report["gateway_overhead"]),
        "",
        "## Where the time goes",
        "",
        STAGES_TEXT,
        "",
        *stages_markdown(report.get("stages") or []),
        "",
        "## Serving metrics per path and concurrency",
        "",
        *levels_markdown(report["levels"]),
        "",
        "## Videos",
        "",
        VIDEOS_TEXT,
        "",
        *videos_markdown(report["videos"]),
    ]
    if report.get("warnings"):
        lines += ["", "## Warnings", "", *[f"- {w}" for w in report["warnings"]]]
    if plots:
        lines += ["", "## Plots", "", *[f"![{p}]({p})" for p in plots]]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
