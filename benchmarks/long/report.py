"""The long-video benchmark's report: per video length, each path's end-to-end time, the
goals as ratios measured in the same run, and the gateway's peak memory; report.json,
report.csv, report.md and long.png (when matplotlib is importable)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .._plot import pyplot
from .paths import PATHS

# The goals: the segmented request against (a) the segments asked one after
# another, against (b) the same clips sent at once by a client plus the integration pass,
# and a second question about the same stored file against the first.
GOALS = {"vs_sequential": 0.6, "vs_concurrent": 1.15, "second_vs_first": 0.5}


def ratios(runs: dict[str, dict]) -> dict[str, float | None]:
    seg, a, b, second = (runs.get(p) for p in PATHS)
    if not seg or not seg["ok"]:
        return {name: None for name in GOALS}
    integration = seg.get("integration_s") or 0.0
    return {
        "vs_sequential": round(seg["seconds"] / a["seconds"], 3) if a and a["ok"] else None,
        # T_segmented <= 1.15 T_concurrent + T_integration, as a ratio
        "vs_concurrent": round((seg["seconds"] - integration) / b["seconds"], 3)
        if b and b["ok"]
        else None,
        "second_vs_first": round(second["seconds"] / seg["seconds"], 3)
        if second and second["ok"]
        else None,
    }


def _met(name: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}x {'✓' if value <= GOALS[name] else '✗'}"


def write(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    rows = []
    for video in report["videos"]:
        for path, run in video["runs"].items():
            rows.append(
                {
                    "minutes": video["minutes"],
                    "segments": video["segments"],
                    "path": path,
                    "seconds": round(run["seconds"], 3),
                    "requests": run["requests"],
                    "ok": run["ok"],
                    "decode_s": round(run["decode_s"], 3),
                    "integration_s": run["integration_s"],
                    "prompt_tokens": run["prompt_tokens"],
                    "completion_tokens": run["completion_tokens"],
                    "peak_gateway_mb": run["peak_gateway_mb"],
                    "peak_workers_mb": run["peak_workers_mb"],
                }
            )
    if rows:
        with (out / "report.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    (out / "report.md").write_text(markdown(report))
    plot(out / "long.png", report)


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# Long-video benchmark: segments asked in parallel and integrated",
        "",
        (
            f"- run: {report['started_at']} ({report['wall_s']:.0f} s wall), command "
            f"`{report['command']}`"
        ),
        (
            f"- machine: {env['cpu_model']}, {env['cpu_cores']} cores "
            f"({env['cpu_cores_usable']} usable), {env['memory_gib']} GiB; load average at "
            f"start {env['load_average_at_start']}"
        ),
        (
            f"- stack: {report['stack']['engine_settings']}; gateway "
            f"{report['stack']['gateway_settings']}"
        ),
        (
            f"- videos: synthetic, {report['video_size']} at {report['video_fps']:g} fps, a "
            "colour card and a tone per minute (H.264/AAC); every request "
            f"{report['max_tokens']} tokens (ignore_eos), segments `{report['segments']}`"
        ),
        "",
        "## Against the goals (ratios of the same run)",
        "",
        (
            "| video | segments | segmented / (a) sequential (≤ 0.6) | (segmented − "
            "integration) / (b) concurrent (≤ 1.15) | second question / first (≤ 0.5) | "
            "integration pass |"
        ),
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for video in report["videos"]:
        r = video["ratios"]
        integration = video["runs"].get("segmented", {}).get("integration_s")
        lines.append(
            f"| {video['minutes']:g} min | {video['segments']} | "
            f"{_met('vs_sequential', r['vs_sequential'])} | "
            f"{_met('vs_concurrent', r['vs_concurrent'])} | "
            f"{_met('second_vs_first', r['second_vs_first'])} | "
            + (f"{integration:.2f} s |" if integration is not None else "– |")
        )
    lines += [
        "",
        "## End to end and memory per path",
        "",
        (
            "Seconds from the first byte sent to the last answer received (all of a path's "
            "requests); decode = the gateway's decode stage summed over the path's requests "
            "(CPU work in the decode workers, overlapping); peak RSS sampled every 0.1 s: the "
            "gateway's own process, and its decode workers together."
        ),
        "",
        (
            "| video | path | seconds | requests ok | decode (s) | prompt / completion tokens "
            "| gateway peak (MB) | workers peak (MB) |"
        ),
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for video in report["videos"]:
        for path in PATHS:
            run = video["runs"].get(path)
            if run is None:
                continue
            lines.append(
                f"| {video['minutes']:g} min | {path} | {run['seconds']:.1f} | "
                f"{run['ok']}/{run['requests']} | {run['decode_s']:.1f} | "
                f"{run['prompt_tokens']} / {run['completion_tokens']} | "
                f"{run['peak_gateway_mb']:.0f} | {run['peak_workers_mb']:.0f} |"
            )
    errors = [
        f"- {video['minutes']:g} min, {path}: {error}"
        for video in report["videos"]
        for path, run in video["runs"].items()
        for error in run["errors"][:3]
    ]
    if errors:
        lines += ["", "## Errors", "", *errors]
    return "\n".join(lines) + "\n"


def plot(path: Path, report: dict) -> None:
    plt = pyplot()
    if plt is None:
        return
    videos = report["videos"]
    if not videos:
        return
    figure, (times, memory) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.2
    labels = [f"{v['minutes']:g} min\n({v['segments']} segments)" for v in videos]
    for k, name in enumerate(PATHS):
        values = [v["runs"].get(name, {}).get("seconds", 0.0) for v in videos]
        positions = [i + (k - 1.5) * width for i in range(len(videos))]
        bars = times.bar(positions, values, width, label=name)
        if name == "segmented":
            integration = [v["runs"].get(name, {}).get("integration_s") or 0.0 for v in videos]
            times.bar(
                positions, integration, width, color="none", hatch="//", edgecolor="black",
                label="of which the integration pass",
            )  # fmt: skip
        times.bar_label(bars, fmt="%.0f", fontsize=7)
    times.set_xticks(range(len(videos)), labels)
    times.set_ylabel("end to end (s)")
    times.set_title("One question about a long video")
    times.legend(fontsize=8)
    minutes = [v["minutes"] for v in videos]
    for key, label in (
        ("peak_gateway_mb", "gateway process"),
        ("peak_workers_mb", "decode workers"),
    ):
        peaks = [max(r[key] for r in v["runs"].values()) for v in videos]
        memory.plot(minutes, peaks, marker="o", label=label)
    memory.set_xlabel("video length (min)")
    memory.set_ylabel("peak RSS (MB)")
    memory.set_ylim(bottom=0)
    memory.set_title("Gateway memory against the video's length")
    memory.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
