"""Reports of `benchmarks.preprocess_bench`: the summary against the targets and the report
files (CSV, Markdown, a PNG chart of the stages). Parity of the outputs is in
_preprocess_parity.py."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

from ._preprocess_parity import TOL_FEATURE_MAD, TOL_FRAME_MAD

# acceptance (the benchmarks issue)
TARGET_SHARED_RATIO = 5.0  # median reference/ours wall time over the shared clips
TARGET_1080P_RATIO = 1.5  # reference/ours wall time on 1080p clips

# common stage names for tables and the chart (reference audio = export + load)
CHART_STAGES = ("probe", "decode", "overlay", "resize", "normalise", "audio", "features")
STAGE_COLOURS = {
    "probe": "#8c8c8c",
    "decode": "#1f77b4",
    "overlay": "#17becf",
    "resize": "#2ca02c",
    "normalise": "#bcbd22",
    "audio": "#ff7f0e",
    "features": "#d62728",
    "other": "#dddddd",
}


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


def _chart_stages(run: dict) -> dict[str, float]:
    stages = run["stages"]
    return {name: float(stages.get(name, 0.0)) for name in CHART_STAGES}


def golden_recorded(golden: Path | None) -> float | None:
    """The authors' own pipeline time recorded in the golden meta.json (decode + overlay +
    resize, audio export + load + features; measured on another 2-core machine)."""
    if golden is None:
        return None
    meta = json.loads((golden / "meta.json").read_text())
    if meta.get("seconds_frames") is None or meta.get("seconds_audio") is None:
        return None
    return float(meta["seconds_frames"]) + float(meta["seconds_audio"])


def summarise(rows: list[dict]) -> dict:
    shared = [r["ratio"] for r in rows if r["group"] == "shared"]
    hd = [r["ratio"] for r in rows if r["is_1080p"]]
    summary = {
        "median_ratio_shared": _median(shared),
        "median_ratio_1080p": _median(hd),
        "min_ratio_1080p": min(hd) if hd else None,
        "median_cpu_ratio_shared": _median(
            [r["reference"]["cpu_s"] / r["ours"]["cpu_s"] for r in rows if r["group"] == "shared"]
        ),
        "median_cpu_ratio_1080p": _median([r["cpu_ratio"] for r in rows if r["is_1080p"]]),
        "median_ratio_golden_recorded_shared": _median(
            [
                r["golden_recorded_s"] / r["ours"]["wall_s"]
                for r in rows
                if r["group"] == "shared" and r.get("golden_recorded_s")
            ]
        ),
        "median_memory_ratio": _median(
            [r["reference"]["peak_mb"] / r["ours"]["peak_mb"] for r in rows]
        ),
        "parity_pass": sum(1 for r in rows if r["parity"]["pass"]),
        "files": len(rows),
    }
    summary["target_shared_met"] = (
        summary["median_ratio_shared"] is not None
        and summary["median_ratio_shared"] >= TARGET_SHARED_RATIO
    )
    summary["target_1080p_met"] = (
        summary["min_ratio_1080p"] is not None and summary["min_ratio_1080p"] >= TARGET_1080P_RATIO
    )
    summary["parity_met"] = summary["parity_pass"] == summary["files"]
    return summary


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


# report.csv: one row per file, these columns then each pipeline's stages
CSV_COLUMNS = [
    "file",
    "group",
    "resolution",
    "duration_s",
    "frames",
    "ours_wall_s",
    "ref_wall_s",
    "ratio",
    "ours_cpu_s",
    "ref_cpu_s",
    "cpu_ratio",
    "ours_peak_mb",
    "ref_peak_mb",
    "ours_repeats",
    "frame_mad",
    "feature_mad",
    "count_equal",
    "indices_equal",
    "golden_ours_frame_mad",
    "golden_reference_frame_mad",
    "golden_ours_feature_mad",
    "golden_reference_feature_mad",
    "parity_pass",
    "golden_recorded_s",
]


def write_csv(path: Path, rows: list[dict]) -> None:
    stage_cols = [f"{k}_{s}_s" for k in ("ours", "ref") for s in CHART_STAGES]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS + stage_cols)
        for r in rows:
            p = r["parity"]
            values = [
                r["file"],
                r["group"],
                r["resolution"],
                r["duration_s"],
                r["ours"]["num_frames"],
                round(r["ours"]["wall_s"], 4),
                round(r["reference"]["wall_s"], 4),
                round(r["ratio"], 3),
                round(r["ours"]["cpu_s"], 3),
                round(r["reference"]["cpu_s"], 3),
                round(r["cpu_ratio"], 3),
                round(r["ours"]["peak_mb"], 1),
                round(r["reference"]["peak_mb"], 1),
                r["ours"]["repeats"],
                p["frame_mad"],
                p["feature_mad"],
                p["count_equal"],
                p["indices_equal"],
                p.get("golden_ours_frame_mad"),
                p.get("golden_reference_frame_mad"),
                p.get("golden_ours_feature_mad"),
                p.get("golden_reference_feature_mad"),
                p["pass"],
                r.get("golden_recorded_s"),
            ]
            stages = [
                round(_chart_stages(r[k]).get(s, 0.0), 4)
                for k in ("ours", "reference")
                for s in CHART_STAGES
            ]
            writer.writerow(values + stages)


def _where_time_goes(rows: list[dict]) -> list[str]:
    lines = []
    for kind, title in (("ours", "ours"), ("reference", "reference")):
        totals = {s: 0.0 for s in CHART_STAGES}
        wall = 0.0
        for r in rows:
            wall += r[kind]["wall_s"]
            for s, v in _chart_stages(r[kind]).items():
                totals[s] += v
        parts = ", ".join(
            f"{s} {v:.1f} s ({100 * v / wall:.0f}%)"
            for s, v in sorted(totals.items(), key=lambda kv: -kv[1])
            if v > 0
        )
        lines.append(f"- **{title}**, all files, {wall:.1f} s of wall time: {parts}")
    lines.append(
        "- ours runs audio + features on a second thread and overlay + resize on stamping "
        "threads while the frames decode, so its stage "
        "times add up to more than its wall time; its critical path is "
        "probe + max(frames path, audio path) + normalise."
    )
    return lines


RATIO_TEXT = (
    "ratio = reference wall time / ours (higher is better for ours). Wall and CPU times are "
    "per run of the whole pipeline inside a warm process (imports and a warm-up run "
    "excluded; median of the repeats); peak memory is the largest summed RSS of the "
    "worker process and its ffmpeg children, imports included."
)
DELTA_TEXT = (
    "frame Δ and feat Δ: ours against the reference run here (mean |Δ| of the uint8 frames, "
    "in 1/255 units, and of the log-mel features); gold Δ: each pipeline against the authors' "
    "golden output in ../shared/golden/preprocess (its PNG frames, its features). Frames use "
    "Liberation Sans in both pipelines here; the golden frames were stamped with Arial."
)
STAGES_TEXT = (
    "Stages. ours (prepare_video's timings hook): probe = probe_video (PyAV) + clip frame "
    "count + frame plan; decode = time inside the frame decoder "
    "(pyav: in-process PyAV decode of the needed packets + RGB conversion; ffmpeg: the "
    "ffmpeg process with select); overlay, resize = PIL on the full-size frame, on "
    "stamping threads that overlap the decode; audio = ffmpeg mp3 round trip to 16 kHz; "
    "features = torch STFT log-mel; normalise = pixel_values(). reference: probe = decord "
    "VideoReader open + plan; decode = decord get_batch; normalise = ToTensor + Normalize "
    "+ stack + bf16; audio = moviepy mp3 export + librosa.load; features = "
    "WhisperFeatureExtractor per 30 s piece."
)


def write_markdown(path: Path, rows: list[dict], summary: dict, meta: dict) -> None:
    lines = [
        "# Preprocessing benchmark: our ingestion vs the authors' pipeline",
        "",
        (
            f"Run {meta['started']} on {meta['cpu_model']} ({meta['cpus']} CPUs), "
            f"{meta['command']}; load average {meta['loadavg_start']} at the start, "
            f"{meta['loadavg_end']} at the end (other work on the machine makes times noisy)."
        ),
        "",
        RATIO_TEXT,
        "",
        "## Summary",
        "",
        *_summary_lines(summary),
        "",
        "## Per file",
        "",
        *_per_file_lines(rows),
        "",
        DELTA_TEXT,
        "",
        "## Where the time goes (per stage, seconds)",
        "",
        *_where_time_goes(rows),
        "",
        *_stages_lines(rows),
        "",
        STAGES_TEXT,
        "",
        "## Setup and process totals",
        "",
        *_setup_lines(rows),
        "",
        "## Environment",
        "",
        "- " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        (
            f"- python {meta['python']}, reference frame access: "
            f"{meta['reference_frame_access']}, our audio mode: {meta['ours_audio_mode']}, "
            f"our decoder: {meta.get('ours_decoder', 'ffmpeg')}, "
            f"total run time {meta['total_s']} s"
        ),
        "",
    ]
    path.write_text("\n".join(lines))


def _summary_lines(s: dict) -> list[str]:
    return [
        (
            f"- median ratio over the shared clips: **{fmt(s['median_ratio_shared'])}x** "
            f"(target ≥ {TARGET_SHARED_RATIO:g}x: {fmt(s['target_shared_met'])})"
        ),
        (
            f"- 1080p clips: median ratio **{fmt(s['median_ratio_1080p'])}x**, lowest "
            f"{fmt(s['min_ratio_1080p'])}x (target ≥ {TARGET_1080P_RATIO:g}x on each: "
            f"{fmt(s['target_1080p_met'])})"
        ),
        (
            f"- CPU seconds, reference / ours: median {fmt(s['median_cpu_ratio_shared'])}x over "
            f"the shared clips, {fmt(s['median_cpu_ratio_1080p'])}x over the 1080p clips; "
            f"peak memory, reference / ours: median {fmt(s['median_memory_ratio'])}x"
        ),
        (
            "- for context: the authors' own times recorded in the golden meta.json (their "
            "script, another 2-core machine) over our wall time here: median "
            f"{fmt(s['median_ratio_golden_recorded_shared'])}x over the shared clips"
        ),
        (
            f"- parity within tolerances (frames ≤ {TOL_FRAME_MAD:g}/255 mean |Δ|, features ≤ "
            f"{TOL_FEATURE_MAD:g} mean |Δ|, frame count and indices exact): "
            f"{s['parity_pass']}/{s['files']} files"
        ),
    ]


def _per_file_lines(rows: list[dict]) -> list[str]:
    lines = [
        (
            "| file | res | dur s | frames | ours s | ref s | ratio | ours CPU s | ref CPU s "
            "| ours MB | ref MB | frame Δ/255 | feat Δ | idx | gold Δ ours/ref (frames) "
            "| gold Δ ours/ref (feat) | parity |"
        ),
        (
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
            "| ---: | --- | --- | --- | --- |"
        ),
    ]
    for r in rows:
        p = r["parity"]
        gold_f = _pair(p, "golden_ours_frame_mad", "golden_reference_frame_mad", 3)
        gold_a = _pair(p, "golden_ours_feature_mad", "golden_reference_feature_mad", 4)
        idx = p["count_equal"] and p["indices_equal"]
        if "golden_ours_indices_equal" in p:
            idx = idx and p["golden_ours_indices_equal"] and p["golden_reference_indices_equal"]
        lines.append(
            f"| {r['file']} | {r['resolution']} | {r['duration_s']:g} | {r['ours']['num_frames']} "
            f"| {r['ours']['wall_s']:.2f} | {r['reference']['wall_s']:.2f} | {r['ratio']:.2f} "
            f"| {r['ours']['cpu_s']:.2f} | {r['reference']['cpu_s']:.2f} "
            f"| {r['ours']['peak_mb']:.0f} | {r['reference']['peak_mb']:.0f} "
            f"| {fmt(p['frame_mad'], 3)} | {fmt(p['feature_mad'], 4)} | {fmt(idx)} "
            f"| {gold_f} | {gold_a} | {'pass' if p['pass'] else '**FAIL**'} |"
        )
    return lines


def _pair(parity: dict, ours: str, reference: str, digits: int) -> str:
    """ "ours / reference" of a golden comparison; "–" for a clip without golden output."""
    if ours not in parity:
        return "–"
    return f"{fmt(parity.get(ours), digits)} / {fmt(parity.get(reference), digits)}"


def _stages_lines(rows: list[dict]) -> list[str]:
    lines = [
        "| file | pipeline | wall | " + " | ".join(CHART_STAGES) + " |",
        "| --- | --- | ---: | " + " | ".join("---:" for _ in CHART_STAGES) + " |",
    ]
    for r in rows:
        for kind in ("ours", "reference"):
            stages = _chart_stages(r[kind])
            cells = " | ".join(f"{stages[s]:.2f}" for s in CHART_STAGES)
            lines.append(f"| {r['file']} | {kind} | {r[kind]['wall_s']:.2f} | {cells} |")
    return lines


def _setup_lines(rows: list[dict]) -> list[str]:
    lines = [
        (
            "| file | pipeline | setup s | warm-up s | process wall s | process CPU s | "
            "base RSS MB | maxrss MB (python) | repeats | load avg |"
        ),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        for kind in ("ours", "reference"):
            k = r[kind]
            lines.append(
                f"| {r['file']} | {kind} | {k['setup_s']:.2f} | {k['warmup_s']:.2f} "
                f"| {k['process_wall_s']:.2f} | {k['process_cpu_s']:.2f} "
                f"| {k['base_rss_mb']:.0f} | {k['maxrss_mb']:.0f} | {k['repeats']} "
                f"| {fmt(k['loadavg_before'])} |"
            )
    return lines


def draw_chart(path: Path, rows: list[dict], summary: dict) -> None:
    """chart.png: wall time per file above, each pipeline's stage shares below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(max(8.0, 1.3 * n + 3), 9), gridspec_kw={"height_ratios": [1, 1.2]}
    )
    _wall_panel(top, rows, summary)
    _stages_panel(bottom, rows)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


CHART_BAR_WIDTH = 0.38


def _wall_panel(ax, rows: list[dict], summary: dict) -> None:
    """Wall time per file, ours beside the reference, CPU seconds marked, ratio on top."""
    names = [r["file"] for r in rows]
    x = list(range(len(rows)))
    width = CHART_BAR_WIDTH
    ours = [r["ours"]["wall_s"] for r in rows]
    ref = [r["reference"]["wall_s"] for r in rows]
    ax.bar([i - width / 2 for i in x], ours, width, label="ours", color="#1f77b4")
    ax.bar([i + width / 2 for i in x], ref, width, label="reference (authors)", color="#ff7f0e")
    ax.scatter(
        [i - width / 2 for i in x] + [i + width / 2 for i in x],
        [r["ours"]["cpu_s"] for r in rows] + [r["reference"]["cpu_s"] for r in rows],
        marker="_",
        s=260,
        color="black",
        zorder=3,
        label="CPU seconds (process + ffmpeg)",
    )
    for i, r in enumerate(rows):
        ax.annotate(
            f"{r['ratio']:.1f}x" + ("" if r["parity"]["pass"] else " (parity!)"),
            (i, max(ours[i], ref[i])),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax.set_yscale("log")
    ax.set_ylabel("wall time per file, s (log)")
    ax.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(
        "Preprocessing wall time; ratio = reference / ours "
        f"(median shared {fmt(summary['median_ratio_shared'])}x, "
        f"1080p {fmt(summary['median_ratio_1080p'])}x)",
        fontsize=10,
    )


def _stages_panel(ax, rows: list[dict]) -> None:
    """Stacked stage shares per file as % of wall time, ours (left) and reference (right)."""
    names = [r["file"] for r in rows]
    n = len(rows)
    x = list(range(n))
    width = CHART_BAR_WIDTH
    for offset, kind, hatch in ((-width / 2, "ours", ""), (width / 2, "reference", "//")):
        bottoms = [0.0] * n
        for stage in CHART_STAGES:
            heights = [
                100 * _chart_stages(r[kind])[stage] / max(r[kind]["wall_s"], 1e-9) for r in rows
            ]
            ax.bar(
                [i + offset for i in x],
                heights,
                width,
                bottom=bottoms,
                color=STAGE_COLOURS[stage],
                hatch=hatch,
                edgecolor="white",
                linewidth=0.3,
                label=stage if kind == "ours" else None,
            )
            bottoms = [b + h for b, h in zip(bottoms, heights)]
    ax.axhline(100, color="black", linewidth=0.6)
    ax.set_ylabel("stage time, % of the pipeline's wall time")
    ax.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
    ax.set_title(
        "Where the time goes: left bar ours (audio runs beside the frames: can pass 100%), "
        "right bar (hatched) reference",
        fontsize=9,
    )
    ax.legend(ncol=len(CHART_STAGES), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25))
