"""The load benchmark's CSV files: report.csv (one row per path and level),
gateway_overhead.csv, stages.csv and requests.csv (one row per measured request)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .records import Record

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
    _write_csv(files[3], report["requests"], Record.columns())
    return files
