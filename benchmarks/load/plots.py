"""The load benchmark's PNG plots (when matplotlib is importable): latency.png,
throughput.png, overhead.png (gateway / reference ratios) and stages.png (where the time
goes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._plot import pyplot
from .paths import GATEWAY_PATHS, PATHS
from .tables import STAGE_COLUMNS

COLOR = {path: f"C{i}" for i, path in enumerate(PATHS)}
# The stages the gateway reports for an upload, which happen during its transfer.
INSIDE_UPLOAD = ("receive_s", "queue_s", "decode_s", "encode_s", "store_s")

Getter = Callable[[dict], Any]


def write_plots(out: Path, report: dict) -> list[str] | None:
    """latency.png, throughput.png, overhead.png, stages.png; None when matplotlib is not
    importable."""
    if pyplot() is None:  # each plot imports matplotlib.pyplot itself
        return None
    levels = report["levels"]
    paths = [p for p in PATHS if any(s["path"] == p for s in levels)]
    if not paths:
        return []
    written = [
        _latency(out / "latency.png", levels, paths),
        _throughput(out / "throughput.png", levels, paths),
    ]
    if report["gateway_overhead"]:
        written.append(_overhead(out / "overhead.png", levels, report["gateway_overhead"]))
    if report.get("stages"):
        written.append(_stages(out / "stages.png", report["stages"]))
    return written


def _series(levels: list[dict], path: str, getter: Getter) -> tuple[list[int], list[float]]:
    points = [
        (s["concurrency"], getter(s)) for s in levels if s["path"] == path and getter(s) is not None
    ]
    return [p[0] for p in points], [p[1] for p in points]


def _stat(metric: str, q: str) -> Getter:
    return lambda s: (s.get(metric) or {}).get(q)


def _axis(ax: Any, levels: list[dict], title: str, ylabel: str) -> None:
    from matplotlib.ticker import ScalarFormatter

    ax.set_title(title)
    ax.set_xlabel("concurrency")
    ax.set_ylabel(ylabel)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({s["concurrency"] for s in levels}))
    ax.get_xaxis().set_major_formatter(ScalarFormatter())
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _save(fig: Any, path: Path, **layout: Any) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout(**layout)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _latency(path: Path, levels: list[dict], paths: list[str]) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name in paths:
        c = COLOR[name]
        for q, style in (("p50", "-o"), ("p95", "--x")):
            axes[0].plot(*_series(levels, name, _stat("e2e_s", q)), style, c=c, label=f"{name} {q}")
            axes[1].plot(
                *_series(levels, name, _stat("ttft_s", q)), style, c=c, label=f"{name} {q}"
            )
        axes[2].plot(
            *_series(levels, name, _stat("tpot_ms", "p50")), "-o", c=c, label=f"{name} p50"
        )
    _axis(axes[0], levels, "end-to-end latency", "seconds")
    _axis(axes[1], levels, "time to first token", "seconds")
    _axis(axes[2], levels, "time per output token", "ms")
    return _save(fig, path)


def _throughput(path: Path, levels: list[dict], paths: list[str]) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in paths:
        c = COLOR[name]
        axes[0].plot(
            *_series(levels, name, lambda s: s["request_throughput"]), "-o", c=c, label=name
        )
        axes[0].plot(
            *_series(levels, name, lambda s: s["goodput"]), ":^", c=c, label=f"{name} goodput"
        )
        axes[1].plot(
            *_series(levels, name, lambda s: s["output_token_throughput"]), "-o", c=c, label=name
        )
    _axis(axes[0], levels, "request throughput and goodput", "requests / s")
    _axis(axes[1], levels, "output token throughput", "tokens / s")
    return _save(fig, path)


def _overhead(path: Path, levels: list[dict], rows: list[dict]) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in GATEWAY_PATHS:
        mine = [r for r in rows if r["gateway_path"] == name]
        if not mine:
            continue
        x = [r["concurrency"] for r in mine]
        c = COLOR[name]
        label = f"{name} / {mine[0]['reference']}"
        for key, style in (("e2e_p50_ratio", "-o"), ("e2e_p95_ratio", "--x")):
            axes[0].plot(x, [r[key] for r in mine], style, c=c, label=f"{label} {key[4:7]}")
        axes[1].plot(x, [r["throughput_ratio"] for r in mine], "-o", c=c, label=label)
    for ax in axes:
        ax.axhline(1.0, color="grey", lw=0.8)
    _axis(axes[0], levels, "e2e latency, gateway / reference (<1: gateway faster)", "ratio")
    _axis(axes[1], levels, "throughput, gateway / reference (>1: gateway faster)", "ratio")
    return _save(fig, path)


def _stage_value(row: dict, key: str) -> float:
    value = row.get(key) or 0.0
    if key == "upload_s" and value:
        # the upload's own gateway stages are drawn as themselves
        value -= sum(row.get(k) or 0.0 for k in INSIDE_UPLOAD)
    return max(0.0, value)


def _stages(path: Path, rows: list[dict]) -> str:
    """One horizontal stacked bar per path, one panel per concurrency level."""
    import matplotlib.pyplot as plt

    shown = [key for key, _ in STAGE_COLUMNS if key != "rest_s"]
    labels = {**dict(STAGE_COLUMNS), "upload_s": "upload transfer (client)"}
    levels_seen = sorted({r["concurrency"] for r in rows})
    fig, axes = plt.subplots(
        1, len(levels_seen), figsize=(5.5 * len(levels_seen), 4.2), squeeze=False
    )
    for ax, level in zip(axes[0], levels_seen):
        mine = sorted(
            (r for r in rows if r["concurrency"] == level), key=lambda r: PATHS.index(r["path"])
        )
        names = [r["path"] for r in mine]
        bottom = np.zeros(len(mine))
        for i, key in enumerate(shown):
            values = np.array([_stage_value(r, key) for r in mine])
            if values.any():
                ax.barh(names, values, left=bottom, color=f"C{i}", label=labels[key])
            bottom += values
        ax.set_title(f"where the time goes, concurrency {level} (mean s)")
        ax.set_xlabel("seconds")
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
    handles, legend_names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, legend_names, loc="lower center", ncol=len(legend_names), fontsize=8)
    return _save(fig, path, rect=(0, 0.08, 1, 1))
