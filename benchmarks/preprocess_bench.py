"""Preprocessing benchmark: our ingestion (arc_media + vllm_plugin.features) against the model
authors' pipeline rebuilt from the spec (benchmarks/reference_pipeline.py).

For every file (the clips of ../shared/media and synthetic 720p/1080p clips made here with
ffmpeg) each pipeline runs in a fresh Python process, so that wall time, CPU seconds and peak
memory belong to that run alone. The parent then compares the two outputs (frame count and
indices, frame pixels, Whisper features) with each other and, for the shared clips, with the
authors' golden output, and writes report.json, report.csv, report.md and chart.png.

    python -m benchmarks.preprocess_bench             # full run (< 10 min on 2 cores)
    python -m benchmarks.preprocess_bench --quick     # smoke run (seconds)
    python -m benchmarks.preprocess_bench --help
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._preprocess_media import (
    DEFAULT_SYNTHETIC,
    SYNTHETIC_FPS,
    SYNTHETIC_SIZES,
    MediaItem,
    collect_media,
    make_synthetic,
    warmup_clip,
)
from ._preprocess_parity import TOL_FEATURE_MAD, TOL_FRAME_MAD, parity
from ._preprocess_report import (
    TARGET_1080P_RATIO,
    TARGET_SHARED_RATIO,
    draw_chart,
    fmt,
    golden_recorded,
    summarise,
    write_csv,
    write_markdown,
)
from ._preprocess_runner import (
    KINDS,
    REPEAT_MAX_MPX_SECONDS,
    REPO_ROOT,
    loadavg,
    run_worker,
    worker_main,
)

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "preprocess"
DEFAULT_SHARED = Path(os.environ.get("ARC_SHARED", REPO_ROOT.parent / "shared"))
DEFAULT_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    / "arc-video-serve"
    / "bench-media"
)


def _cpu_model() -> str:
    try:
        out = subprocess.run(
            ["lscpu"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def _versions() -> dict[str, str]:
    from importlib import metadata

    names = [
        "numpy",
        "torch",
        "pillow",
        "transformers",
        "decord",
        "moviepy",
        "librosa",
        "soundfile",
        "soxr",
        "imageio-ffmpeg",
    ]
    found = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        first = subprocess.run(
            ["ffmpeg", "-version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.splitlines()[0]
        found["ffmpeg"] = first.split()[2]
    return found


class _Progress:
    """tqdm when installed, else one line per step."""

    def __init__(self, total: int, desc: str, quiet: bool = False):
        self.total, self.done, self.quiet = total, 0, quiet
        self._bar = None
        if not quiet:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=desc, unit="run", file=sys.stderr)
            except ImportError:
                print(f"{desc}: {total} runs", file=sys.stderr, flush=True)

    def step(self, label: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(label, refresh=True)

    def advance(self, note: str) -> None:
        self.done += 1
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(1)
            self._bar.write(note, file=sys.stderr)
        else:
            print(f"[{self.done}/{self.total}] {note}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.preprocess_bench",
        description=(
            "Benchmark our video preprocessing (arc_media.pipeline.prepare_video with "
            "features, then pixel_values) against the authors' pipeline rebuilt from the spec "
            "(decord, moviepy mp3 export, librosa, PIL, torch transforms, transformers "
            "WhisperFeatureExtractor). Each pipeline runs every file in a fresh process "
            "(imports and one warm-up run on a tiny clip are not timed). Per file: wall time, "
            "CPU seconds (the process and its ffmpeg children), peak memory, ratio = "
            "reference / ours wall time, and parity of the outputs (frame count and indices, "
            "mean |Δ| of frames and features, against each other and against the authors' "
            "golden output). Writes report.json, report.csv, report.md and chart.png to --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="directory for the reports")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: one short shared clip and one tiny synthetic clip, one repeat",
    )
    parser.add_argument(
        "--shared", default=str(DEFAULT_SHARED), help="the shared/ folder (media/, golden/)"
    )
    parser.add_argument(
        "--shared-files",
        nargs="*",
        metavar="STEM",
        help="shared clips to run (file stems); default: all of shared/media/*.mp4",
    )
    parser.add_argument("--no-shared", action="store_true", help="skip the shared clips")
    parser.add_argument(
        "--synthetic",
        nargs="*",
        metavar="LABEL:SECONDS",
        help=(
            f"synthetic clips (labels: {', '.join(SYNTHETIC_SIZES)}; {SYNTHETIC_FPS} fps, "
            f"H.264 + AAC); default {' '.join(DEFAULT_SYNTHETIC)}; give none to skip them"
        ),
    )
    parser.add_argument(
        "--cache", default=str(DEFAULT_CACHE), help="where the synthetic clips are kept"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help=(
            "runs per process for clips of up to "
            f"{REPEAT_MAX_MPX_SECONDS:g} megapixel-seconds (720p x 30 s; the median run is "
            "reported); larger clips run once [default: 3, --quick: 1]"
        ),
    )
    parser.add_argument(
        "--no-warmup",
        action="store_true",
        help="time the first run of a fresh process (lazy imports, caches) instead",
    )
    parser.add_argument(
        "--reference-frame-access",
        choices=("batch", "single"),
        default="batch",
        help="reference decord access: one get_batch call, or vr[i] per frame as the authors",
    )
    parser.add_argument(
        "--ours-audio-mode",
        choices=("mp3", "direct"),
        default="mp3",
        help="audio_mode of our prepare_video (mp3 = the authors' mp3 round trip, the default)",
    )
    parser.add_argument(
        "--ours-decoder",
        choices=("pyav", "ffmpeg"),
        default="pyav",
        help="frame decoder of our prepare_video: pyav (in process, leaves out unneeded "
        "non-reference frames; the default) or ffmpeg (an ffmpeg process with select)",
    )
    parser.add_argument("--font", default=None, help="overlay font for both pipelines")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds before a worker is killed"
    )
    parser.add_argument("--keep-dumps", action="store_true", help="keep the outputs of each run")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    # internal: the worker process
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--video", help=argparse.SUPPRESS)
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick or args.worker else 3
    if args.worker:
        return worker_main(args)

    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    meta = _run_meta(args, argv)
    items = collect_media(args, say)
    if not items:
        raise SystemExit("nothing to benchmark (no shared media and no synthetic clips)")
    warmup = None if args.no_warmup else warmup_clip(Path(args.cache))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = _run_all(items, args, warmup, out)
    meta["loadavg_end"] = loadavg()
    meta["total_s"] = round(time.perf_counter() - t_start, 1)
    summary = summarise(rows)
    (out / "report.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1, default=str)
    )
    write_csv(out / "report.csv", rows)
    write_markdown(out / "report.md", rows, summary, meta)
    draw_chart(out / "chart.png", rows, summary)
    say(
        f"median ratio shared {fmt(summary['median_ratio_shared'])}x, 1080p "
        f"{fmt(summary['median_ratio_1080p'])}x, parity {summary['parity_pass']}/"
        f"{summary['files']}; {meta['total_s']} s; reports in {out}"
    )
    return 0


def _run_meta(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """The run's setting as the report gives it (its end is added when it ends)."""
    return {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": "python -m benchmarks.preprocess_bench "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": _versions(),
        "reference_frame_access": args.reference_frame_access,
        "ours_audio_mode": args.ours_audio_mode,
        "ours_decoder": args.ours_decoder,
        "loadavg_start": loadavg(),
        "tolerances": {"frame_mad": TOL_FRAME_MAD, "feature_mad": TOL_FEATURE_MAD},
        "targets": {"shared_median": TARGET_SHARED_RATIO, "p1080": TARGET_1080P_RATIO},
    }


def _run_all(
    items: list[MediaItem], args: argparse.Namespace, warmup: Path | None, out: Path
) -> list[dict]:
    """Every file through both pipelines, each in a fresh worker: one report row per file."""
    rows: list[dict] = []
    progress = _Progress(2 * len(items), "preprocess bench", args.quiet)
    with tempfile.TemporaryDirectory(prefix="arc-bench-") as scratch:
        for item in items:
            dumps = Path(scratch) / item.name
            runs = {}
            for kind in KINDS:
                progress.step(f"{kind} {item.name}")
                runs[kind] = run_worker(kind, item, dumps / kind, args, warmup)
                progress.advance(
                    f"{item.name:<24} {kind:<9} {runs[kind]['wall_s']:7.2f} s wall "
                    f"{runs[kind]['cpu_s']:7.2f} s CPU {runs[kind]['peak_mb']:6.0f} MB"
                )
            par = parity(
                runs["ours"], runs["reference"], dumps / "ours", dumps / "reference", item.golden
            )
            if args.keep_dumps:
                shutil.copytree(dumps, out / "dumps" / item.name, dirs_exist_ok=True)
            shutil.rmtree(dumps, ignore_errors=True)
            rows.append(_row(item, runs, par))
    progress.close()
    return rows


def _row(item: MediaItem, runs: dict[str, dict], par: dict) -> dict:
    ours, reference = runs["ours"], runs["reference"]
    return {
        "file": item.name,
        "path": str(item.path),
        "group": item.group,
        "resolution": item.label,
        "is_1080p": item.is_1080p,
        "duration_s": item.duration,
        "media": item.info,
        "ratio": reference["wall_s"] / max(ours["wall_s"], 1e-9),
        "cpu_ratio": reference["cpu_s"] / max(ours["cpu_s"], 1e-9),
        "golden_recorded_s": golden_recorded(item.golden),
        "ours": ours,
        "reference": reference,
        "parity": par,
    }


__all__ = ["MediaItem", "build_parser", "main", "make_synthetic", "parity", "summarise"]

if __name__ == "__main__":
    sys.exit(main())
