"""The batch benchmark's report: the goals as ratios of the same run, the load client per
level, the batches (alone, and beside interactive requests), the interactive latency idle
and beside a batch; report.json, report.csv, report.md and batch.png (when matplotlib is
importable)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .._plot import pyplot

# The goals: the batch's lines/s against the load client's best requests/s (at
# least), interactive p50 beside a batch against idle (at most).
GOALS = {"batch_vs_best_load": 0.9, "interactive_p50_beside_vs_idle": 1.3}


def _p50(summary: dict | None, key: str = "e2e_s") -> float | None:
    return ((summary or {}).get(key) or {}).get("p50")


def best_load(report: dict) -> dict | None:
    levels = [s for s in report["load"] if s["completed"]]
    return max(levels, key=lambda s: s["request_throughput"]) if levels else None


def ratios(report: dict) -> dict:
    best = best_load(report)
    alone = report["batches"].get("alone") or {}
    idle = _p50(report["interactive"].get("idle"))
    beside = _p50(report["interactive"].get("beside_batch"))
    batch_rate = alone.get("lines_per_s")
    matched = report.get("load_matched") or {}
    matched_rate = matched.get("request_throughput") or None
    return {
        "matched_load_req_per_s": matched_rate,
        "batch_vs_matched_load": round(batch_rate / matched_rate, 3)
        if matched_rate and batch_rate
        else None,
        "best_load_req_per_s": best["request_throughput"] if best else None,
        "best_load_concurrency": best["concurrency"] if best else None,
        "batch_lines_per_s": batch_rate,
        "batch_vs_best_load": round(batch_rate / best["request_throughput"], 3)
        if best and batch_rate
        else None,
        "interactive_p50_idle_s": idle,
        "interactive_p50_beside_s": beside,
        "interactive_p50_beside_vs_idle": round(beside / idle, 3) if idle and beside else None,
    }


def failures(report: dict) -> list[str]:
    found = [f"load c={s['concurrency']}: {s['errors']}" for s in report["load"] if s["failed"]]
    matched = report.get("load_matched")
    if matched and matched["failed"]:
        found.append(f"load client, as many requests as lines: {matched['errors']}")
    for name, summary in report["interactive"].items():
        if summary["failed"]:
            found.append(f"interactive {name}: {summary['errors']}")
    for name, run in report["batches"].items():
        if run["failed"] or run["errors"] or (run["output"] or {}).get("duplicates"):
            found.append(f"batch {name}: {run['failed']} failed lines, {run['errors'][:2]}")
    alone = report["batches"].get("alone")
    if alone and alone["status"] != "completed":
        found.append(f"batch alone ended {alone['status']}")
    return found


def _met(name: str, value: float | None) -> str:
    if value is None:
        return "–"
    ok = value >= GOALS[name] if name == "batch_vs_best_load" else value <= GOALS[name]
    return f"**{value:.2f}x** {'✓' if ok else '✗'}"


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _client_row(what: str, concurrency: int, s: dict) -> dict:
    """A CSV row of one client's run (a level of the load client, the interactive requests)."""
    return {
        "what": what, "concurrency": concurrency,
        "requests": s["requests_sent"], "ok": s["completed"],
        "seconds": round(s["duration_s"], 3),
        "per_s": round(s["request_throughput"], 4),
        "e2e_p50_s": _p50(s), "e2e_p95_s": (s["e2e_s"] or {}).get("p95"),
        "ttft_p50_s": _p50(s, "ttft_s"),
    }  # fmt: skip


def rows(report: dict) -> list[dict]:
    """One CSV row per measurement."""
    found = [_client_row("load client", s["concurrency"], s) for s in report["load"]]
    matched = report.get("load_matched")
    if matched:
        what = "load client, as many requests as lines"
        found.append(_client_row(what, matched["concurrency"], matched))
    for name, s in report["interactive"].items():
        found.append(_client_row(f"interactive {name}", 1, s))
    for name, run in report["batches"].items():
        found.append(
            {
                "what": f"batch {name} ({run['status']})", "concurrency": None,
                "requests": run["lines"], "ok": run["completed"],
                "seconds": run["ended_s"] and round(run["ended_s"], 3),
                "per_s": run["lines_per_s"] and round(run["lines_per_s"], 4),
                "e2e_p50_s": None, "e2e_p95_s": None, "ttft_p50_s": None,
            }
        )  # fmt: skip
    return found


def write(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report["ratios"] = ratios(report)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    found = rows(report)
    if found:
        with (out / "report.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(found[0]))
            writer.writeheader()
            writer.writerows(found)
    (out / "report.md").write_text(markdown(report))
    plot(out / "batch.png", report)


def markdown(report: dict) -> str:
    env, r = report["environment"], report["ratios"]
    stack = report["stack"]
    videos = ", ".join(f"{v['name']} ({v['duration_s']:.1f} s)" for v in report["videos"])
    config = report["config"]
    lines = [
        "# Batch benchmark: the Batch API against the load client, and interactive latency",
        "",
        (
            f"- run: {report['started_at']} ({report['wall_s']:.0f} s wall), command "
            f"`{report['command']}`"
        ),
        f"- machine: {env['cpu_model']}, {env['cpu_cores']} cores ({env['cpu_cores_usable']} "
        f"usable), {env['memory_gib']} GiB; load average at start {env['load_average_at_start']}; "
        f"commit {env['git']['commit']}" + (" (dirty)" if env["git"]["dirty"] else ""),
        (
            f"- stack: {stack.get('engine_settings', stack.get('mode'))}; gateway "
            f"{stack.get('gateway_settings', '')}, forward mode {stack.get('forward_mode', '–')}"
        ),
        (
            f"- requests: stored files of {videos} (uploaded once, untimed), taken in turn; "
            f"{config['max_tokens']} tokens each (ignore_eos), question {config['question']!r}, "
            f"task {config['task']}"
        ),
        "",
        "## Against the goals (ratios of the same run)",
        "",
        "| measure | value | goal |",
        "| --- | ---: | --- |",
        (
            f"| batch lines/s ÷ best load-client requests/s (c = {r['best_load_concurrency']}) | "
            f"{_met('batch_vs_best_load', r['batch_vs_best_load'])} | ≥ 0.9x |"
        ),
        (
            f"| batch lines/s ÷ the load client at c = {r['best_load_concurrency']} "
            "with as many requests as lines, right after | "
            f"{_met('batch_vs_best_load', r['batch_vs_matched_load'])} | ≥ 0.9x |"
        ),
        (
            "| interactive e2e p50 at c = 1 beside a batch ÷ idle | "
            f"{_met('interactive_p50_beside_vs_idle', r['interactive_p50_beside_vs_idle'])} "
            "| ≤ 1.3x |"
        ),
        "",
        (
            f"Batch {_f(r['batch_lines_per_s'])} lines/s, load client at best "
            f"{_f(r['best_load_req_per_s'])} requests/s; interactive p50 "
            f"{_f(r['interactive_p50_idle_s'])} s idle, "
            f"{_f(r['interactive_p50_beside_s'])} s beside a batch."
        ),
        "",
        "## Throughput",
        "",
        (
            "Load client: `--requests` streaming chats about the stored files per level, "
            "that many clients sending back to back (benchmarks/load/client.py, path "
            "gateway-second-question). Batch: the same request bodies as JSONL lines (no "
            "stream), timed from its create request until a poll (every `--poll-s`) sees it "
            "ended; its output file read back."
        ),
        "",
        "| what | concurrency | ok / sent | seconds | per second | e2e p50 (s) | e2e p95 (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows(report):
        lines.append(
            f"| {row['what']} | {row['concurrency'] or '–'} | {row['ok']}/{row['requests']} | "
            f"{_f(row['seconds'], 1)} | {_f(row['per_s'], 2)} | {_f(row['e2e_p50_s'])} | "
            f"{_f(row['e2e_p95_s'])} |"
        )
    for name, run in report["batches"].items():
        out = run["output"] or {}
        times = run["server_times"]
        lines.append(
            f"\nBatch {name} `{run['id']}`: {run['status']}, {run['completed']} done, "
            f"{run['failed']} failed of {run['lines']}; output: {out.get('custom_ids', 0)} "
            f"custom_ids, {out.get('duplicates', 0)} twice, status codes "
            f"{out.get('status_codes', {})}, {out.get('completion_tokens', 0)} completion tokens; "
            f"its own timestamps: {times}."
        )
    beside = report["interactive"].get("beside_batch") or {}
    if beside.get("batch_lines_per_s") is not None:
        lines.append(
            f"\nBeside the interactive requests the batch ran {beside['batch_lines_per_s']:.2f} "
            "lines/s"
            + (
                " (it was cancelled after them)."
                if (report["batches"].get("beside") or {}).get("status") == "cancelled"
                else "."
            )
        )
    found = failures(report) + report["warnings"]
    if found:
        lines += ["", "## Errors and warnings", "", *[f"- {f}" for f in found]]
    return "\n".join(lines) + "\n"


def plot(path: Path, report: dict) -> None:
    plt = pyplot()
    if plt is None:
        return
    if not report["load"] and not report["batches"]:
        return
    figure, (rates, progress, latency) = plt.subplots(1, 3, figsize=(15, 4.5))
    labels = [f"client c={s['concurrency']}" for s in report["load"]]
    values = [s["request_throughput"] for s in report["load"]]
    colors = ["C0"] * len(report["load"])
    matched = report.get("load_matched")
    if matched:
        labels.append(f"client c={matched['concurrency']}\n{matched['requests_planned']} req")
        values.append(matched["request_throughput"])
        colors.append("C2")
    alone = report["batches"].get("alone")
    if alone and alone.get("lines_per_s"):
        labels.append(f"batch\n{alone['lines']} lines")
        values.append(alone["lines_per_s"])
        colors.append("C1")
    bars = rates.bar(labels, values, color=colors)
    rates.bar_label(bars, fmt="%.2f", fontsize=8)
    best = report["ratios"].get("best_load_req_per_s")
    if best:
        rates.axhline(0.9 * best, color="grey", linestyle="--", label="0.9x best client")
        rates.legend(fontsize=8)
    rates.set_ylabel("requests (lines) per second")
    rates.set_title("Throughput, same requests, same engine")
    rates.tick_params(axis="x", labelsize=8)
    for name, run in report["batches"].items():
        polls = run["polls"]
        if polls:
            progress.plot(
                [p[0] for p in polls], [p[1] + p[2] for p in polls], label=f"batch {name}"
            )
    progress.set_xlabel("seconds since create")
    progress.set_ylabel("lines finished")
    progress.set_title("Batch progress (polls)")
    progress.legend(fontsize=8)
    data = [
        (name.replace("_", " "), s.get("e2e_values_s") or [])
        for name, s in report["interactive"].items()
    ]
    data = [(n, v) for n, v in data if v]
    if data:
        latency.boxplot([v for _, v in data], tick_labels=[n for n, _ in data])
    latency.set_ylabel("e2e (s)")
    latency.set_ylim(bottom=0)
    latency.set_title("Interactive chat at c = 1")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
