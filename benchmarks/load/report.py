"""The load benchmark's report: report.json (everything: options, machine, stack, per-level
metrics, the gateway's cost, stages, every request) assembled from the run's state, written
with the CSV files, report.md and the plots beside it; and the summary printed at the end."""

from __future__ import annotations

import argparse
import datetime
import shlex
import time
from pathlib import Path

from .. import _load_stack as stk
from . import csvs, plots, stats, tables
from .paths import DIRECT_PATHS, PATH_HELP
from .records import Record, Slo
from .run import RunState
from .videos import Video


def build_report(args: argparse.Namespace, argv: list[str], state: RunState, slo: Slo) -> dict:
    warnings = list(state.warnings) + [f"skipped {s}" for s in state.skipped]
    videos = video_rows(state.videos, [*state.warmup, *state.records], warnings)
    for s in state.levels:
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
        "started_at": state.started_at,
        "finished_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "wall_s": time.monotonic() - state.t_start,
        "startup_s": state.startup_s,
        "truncated": state.truncated,
        "interrupted": state.interrupted,
        "command": shlex.join(["python", "-m", "benchmarks.load_bench", *argv]),
        "config": config,
        "slo": slo.as_dict(),
        "environment": state.environment,
        "stack": state.stack,
        "paths": {p: PATH_HELP[p] for p in args.paths},
        "videos": videos,
        "gateway_overhead": stats.overhead(state.levels, state.records),
        "stages": stats.stages(state.levels, state.records),
        "levels": state.levels,
        "warmup": [r.as_dict() for r in state.warmup],
        "requests": [r.as_dict() for r in state.records],
        "warnings": warnings,
    }


def video_rows(videos: list[Video], records: list[Record], warnings: list[str]) -> list[dict]:
    """Each video's summary with the prompt tokens the engine counted for it on the direct
    paths and through the gateway: equal when both gave the model the same input (a warning
    in `warnings` otherwise)."""
    tokens: dict[str, dict[str, set]] = {}
    for r in records:
        if r.ok and r.prompt_tokens is not None:
            side = "direct" if r.path in DIRECT_PATHS else "gateway"
            tokens.setdefault(r.video, {}).setdefault(side, set()).add(r.prompt_tokens)
    rows = []
    for v in videos:
        row = v.summary()
        seen = tokens.get(v.name, {})
        for side in ("direct", "gateway"):
            values = sorted(seen.get(side, ()))
            row[f"prompt_tokens_{side}"] = values[0] if len(values) == 1 else (values or None)
        direct, gateway = row["prompt_tokens_direct"], row["prompt_tokens_gateway"]
        if direct and gateway and direct != gateway:
            warnings.append(
                f"{v.name}: prompt tokens differ between the direct path ({direct}) and the "
                f"gateway ({gateway}): the paths do not send the same input"
            )
        rows.append(row)
    return rows


def write_report(out: Path, report: dict) -> list[Path]:
    """report.json and every file beside it (its "files" lists them); the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    files = csvs.write_csvs(out, report)
    drawn = plots.write_plots(out, report)
    if drawn is None:
        report["warnings"].append("matplotlib is not importable: no PNG plots")
        drawn = []
    files.append(tables.write_markdown(out, report, drawn))
    files += [out / p for p in drawn]
    report["files"] = [f.name for f in files] + ["report.json"]
    (out / "report.json").write_text(stk.dumps(report) + "\n")
    return [*files, out / "report.json"]


def print_summary(report: dict, files: list[Path], out: Path) -> None:
    print("\n## Gateway cost (gateway / reference)\n")
    print("\n".join(tables.overhead_markdown(report["gateway_overhead"])))
    print("\n## Where the time goes (mean s)\n")
    print("\n".join(tables.stages_markdown(report["stages"])))
    print("\n## Serving metrics\n")
    print("\n".join(tables.levels_markdown(report["levels"])))
    print(f"\nreports in {out}: {', '.join(f.name for f in files)}")
    if report["warnings"]:
        print("warnings:\n  " + "\n  ".join(report["warnings"]))
