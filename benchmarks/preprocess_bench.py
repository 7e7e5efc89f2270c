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
import csv
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "preprocess"
DEFAULT_SHARED = Path(os.environ.get("ARC_SHARED", REPO_ROOT.parent / "shared"))
DEFAULT_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    / "arc-video-serve"
    / "bench-media"
)

# acceptance (the benchmarks issue)
TARGET_SHARED_RATIO = 5.0  # median reference/ours wall time over the shared clips
TARGET_1080P_RATIO = 1.5  # reference/ours wall time on 1080p clips
TOL_FRAME_MAD = 1.0  # mean |Δ| of uint8 frame pixels, i.e. 1/255 in [0, 1] units
TOL_FEATURE_MAD = 0.12  # mean |Δ| of log-mel features

SYNTHETIC_SIZES = {
    "tiny": (320, 180),
    "360p": (640, 360),
    "480p": (854, 480),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
}
SYNTHETIC_FPS = 30
SYNTHETIC_PIECE_S = 30  # longer clips repeat an encoded 30 s piece (stream copy)
DEFAULT_SYNTHETIC = ("720p:30", "1080p:30", "1080p:120", "720p:600")
QUICK_SHARED = ("w33698kgs05",)
QUICK_SYNTHETIC = ("tiny:3",)
# clips up to this many megapixel-seconds (720p x 30 s = 27.6) run --repeat times per process
REPEAT_MAX_MPX_SECONDS = 30.0

KINDS = ("ours", "reference")
PROBE_ENTRIES = (
    "stream=codec_type,codec_name,width,height,avg_frame_rate,nb_frames,profile:format=duration"
)
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


# ------------------------------------------------------------------------------------------
# small helpers


def _ffmpeg(*args: str, timeout: float = 900) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _probe(path: Path) -> dict:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            PROBE_ENTRIES,
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    info = json.loads(out)
    video = next(s for s in info["streams"] if s.get("codec_type") == "video")
    audio = next((s for s in info["streams"] if s.get("codec_type") == "audio"), None)
    num, _, den = str(video.get("avg_frame_rate", "0/1")).partition("/")
    fps = float(num) / float(den or 1) if float(den or 1) else 0.0
    return {
        "width": int(video["width"]),
        "height": int(video["height"]),
        "fps": round(fps, 3),
        "duration_s": round(float(info["format"].get("duration", 0.0)), 3),
        "video_codec": video.get("codec_name"),
        "audio_codec": (
            f"{audio.get('codec_name')} {audio.get('profile') or ''}".strip() if audio else "none"
        ),
        "size_mb": round(path.stat().st_size / 2**20, 2),
    }


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


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


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


# ------------------------------------------------------------------------------------------
# media


@dataclass
class MediaItem:
    name: str
    path: Path
    group: str  # "shared" | "synthetic"
    label: str  # resolution label (synthetic) or WxH
    golden: Path | None = None
    info: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return float(self.info.get("duration_s", 0.0))

    @property
    def megapixel_seconds(self) -> float:
        return self.duration * self.info.get("width", 0) * self.info.get("height", 0) / 1e6

    @property
    def is_1080p(self) -> bool:
        return min(self.info.get("width", 0), self.info.get("height", 0)) >= 1080


def _parse_synthetic(spec: str) -> tuple[str, float]:
    label, _, seconds = spec.partition(":")
    if label not in SYNTHETIC_SIZES or not seconds:
        raise argparse.ArgumentTypeError(
            f"bad synthetic clip {spec!r}: use LABEL:SECONDS with LABEL in "
            f"{', '.join(SYNTHETIC_SIZES)} (e.g. 1080p:120)"
        )
    return label, float(seconds)


def _encode_piece(path: Path, size: tuple[int, int], seconds: float, fps: int) -> None:
    width, height = size
    # testsrc2 picture, a 440 Hz tone upmixed to stereo; H.264 High (CABAC, B-frames,
    # x264's default GOP of 250) + AAC-LC 48 kHz, like a camera or phone file.
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "23",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-ac",
        "2",
        "-shortest",
        "-movflags",
        "+faststart",
        str(path),
    )


def make_synthetic(cache: Path, label: str, seconds: float, fps: int = SYNTHETIC_FPS) -> Path:
    """The clip `label` (e.g. 1080p) of `seconds`, made once and kept in `cache`. Clips longer
    than 30 s repeat an encoded 30 s piece by stream copy (decoding cost is the same as for
    one long encode, making it takes seconds instead of minutes)."""
    cache.mkdir(parents=True, exist_ok=True)
    size = SYNTHETIC_SIZES[label]
    name = f"syn_{label}_{seconds:g}s_{fps}fps_v1.mp4"
    path = cache / name
    if path.is_file():
        return path
    with tempfile.TemporaryDirectory(dir=cache, prefix=".make-") as tmp:
        piece_s = min(seconds, SYNTHETIC_PIECE_S)
        piece = cache / f"piece_{label}_{piece_s:g}s_{fps}fps_v1.mp4"
        if not piece.is_file():
            part = Path(tmp) / "piece.mp4"
            _encode_piece(part, size, piece_s, fps)
            os.replace(part, piece)
        if seconds <= piece_s:
            return piece if piece == path else _link(piece, path)
        listing = Path(tmp) / "list.txt"
        copies = math.ceil(seconds / piece_s)
        listing.write_text(f"file '{piece.resolve()}'\n" * copies)
        part = Path(tmp) / "clip.mp4"
        _ffmpeg(
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(listing),
            "-c",
            "copy",
            "-t",
            f"{seconds:g}",
            "-movflags",
            "+faststart",
            str(part),
        )
        os.replace(part, path)
    return path


def _link(source: Path, target: Path) -> Path:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target


def collect_media(args: argparse.Namespace, say) -> list[MediaItem]:
    items: list[MediaItem] = []
    shared = Path(args.shared)
    media_dir, golden_dir = shared / "media", shared / "golden" / "preprocess"
    if not args.no_shared:
        if media_dir.is_dir():
            names = args.shared_files or (
                QUICK_SHARED if args.quick else sorted(p.stem for p in media_dir.glob("*.mp4"))
            )
            for stem in names:
                path = media_dir / f"{stem}.mp4"
                if not path.is_file():
                    raise SystemExit(f"no shared clip {path}")
                golden = golden_dir / stem
                items.append(
                    MediaItem(
                        stem,
                        path,
                        "shared",
                        "",
                        golden if (golden / "meta.json").is_file() else None,
                    )
                )
        else:
            say(f"no shared media at {media_dir}: synthetic clips only")
    specs = args.synthetic
    if specs is None:
        specs = list(QUICK_SYNTHETIC if args.quick else DEFAULT_SYNTHETIC)
    for spec in specs:
        label, seconds = _parse_synthetic(spec)
        t0 = time.perf_counter()
        path = make_synthetic(Path(args.cache), label, seconds)
        made = time.perf_counter() - t0
        if made > 1.0:
            say(f"made {path.name} in {made:.1f} s")
        items.append(MediaItem(f"syn_{label}_{seconds:g}s", path, "synthetic", label))
    for item in items:
        item.info = _probe(item.path)
        if not item.label:
            item.label = f"{item.info['width']}x{item.info['height']}"
    return items


# ------------------------------------------------------------------------------------------
# the worker: one pipeline, one file, in its own process


class _OursRunner:
    """prepare_video(path, features=whisper_features) + pixel_values(frames): what the model
    gets. The stages are timed by the pipeline's own hook (`timings=`). Audio + features run
    on a second thread while the frames decode, and the overlay and resize on stamping
    threads, so these stage times overlap."""

    def __init__(self, font: str, audio_mode: str = "mp3", decoder: str = "pyav"):
        # imported here: the import time counts as the worker's setup, not as a run
        from arc_media.pipeline import prepare_video
        from vllm_plugin.features import pixel_values, whisper_features

        self.prepare, self.pixel_values, self.features = (
            prepare_video,
            pixel_values,
            whisper_features,
        )
        self.font, self.audio_mode, self.decoder = font, audio_mode, decoder

    def __call__(self, path: Path) -> dict:
        stages: dict[str, float] = {}
        prepared = self.prepare(
            path,
            font_path=self.font,
            features=self.features,
            audio_mode=self.audio_mode,
            decoder=self.decoder,
            timings=stages,
        )
        t0 = time.perf_counter()
        self.pixel_values(prepared.frames)
        stages["normalise"] = time.perf_counter() - t0
        stages["frames_path"] = stages.pop("frames", 0.0)
        stages["audio_path"] = stages.get("audio", 0.0) + stages.get("features", 0.0)
        return {
            "frames": prepared.frames,
            "features": prepared.audio_features,
            "frame_indices": [int(i) for i in prepared.frame_indices],
            "intervals": [list(map(int, i)) for i in prepared.intervals],
            "duration": int(prepared.duration),
            "audio_duration": int(prepared.audio_duration),
            "vlen": int(prepared.vlen),
            "fps": float(prepared.fps),
            "stages": stages,
        }


class _ReferenceRunner:
    def __init__(self, font: str, frame_access: str):
        from benchmarks.reference_pipeline import ReferencePipeline

        self.pipeline = ReferencePipeline(font, frame_access=frame_access)

    def __call__(self, path: Path) -> dict:
        result = self.pipeline.prepare(path)
        stages = dict(result.stages)
        stages["probe"] = stages.pop("open", 0.0)
        stages["audio"] = stages.get("audio_export", 0.0) + stages.get("audio_load", 0.0)
        return {
            "frames": result.frames,
            "features": result.features,
            "frame_indices": [int(i) for i in result.frame_indices],
            "intervals": [list(map(int, i)) for i in result.intervals],
            "duration": int(result.duration),
            "audio_duration": int(result.audio_duration),
            "vlen": int(result.vlen),
            "fps": float(result.fps),
            "stages": stages,
        }


def _cpu_seconds() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


def worker_main(args: argparse.Namespace) -> int:
    import resource

    import numpy as np

    t_start = time.perf_counter()
    font = args.font
    if font is None:
        from arc_media.overlay import default_font_path

        font = default_font_path()
    if args.worker == "ours":
        runner = _OursRunner(font, args.ours_audio_mode, args.ours_decoder)
    else:
        runner = _ReferenceRunner(font, args.reference_frame_access)
    setup_s = time.perf_counter() - t_start
    warmup_s = 0.0
    if args.warmup:
        t0 = time.perf_counter()
        runner(Path(args.warmup))
        warmup_s = time.perf_counter() - t0
    base_rss = _rss_mb()

    walls, cpus, stage_runs, result = [], [], [], None
    for _ in range(max(1, args.repeat)):
        result = None  # let the previous output go before the next run
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        result = runner(Path(args.video))
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu_seconds() - cpu0)
        stage_runs.append(result["stages"])
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    middle = sorted(range(len(walls)), key=walls.__getitem__)[len(walls) // 2]

    dump = Path(args.dump)
    dump.mkdir(parents=True, exist_ok=True)
    np.save(dump / "frames.npy", result["frames"])
    if result["features"] is not None:
        np.save(dump / "features.npy", np.asarray(result["features"], dtype=np.float32))
    summary = {
        "kind": args.worker,
        "video": str(args.video),
        "repeats": len(walls),
        "walls_s": walls,
        "wall_s": walls[middle],
        "cpu_s": cpus[middle],
        "stages": stage_runs[middle],
        "setup_s": setup_s,
        "warmup_s": warmup_s,
        "base_rss_mb": base_rss,
        "maxrss_mb": own.ru_maxrss / 1024,
        "children_maxrss_mb": kids.ru_maxrss / 1024,
        "num_frames": int(result["frames"].shape[0]),
        "feature_shape": list(np.shape(result["features"])),
        **{
            key: result[key]
            for key in ("frame_indices", "intervals", "duration", "audio_duration", "vlen", "fps")
        },
    }
    (dump / "result.json").write_text(json.dumps(summary))
    return 0


# ------------------------------------------------------------------------------------------
# the parent: run a worker, measure it from outside


class _TreeSampler:
    """Peak of the summed RSS of a process and its descendants (ffmpeg), sampled at 20 Hz
    with psutil. `peak_mb` is None when psutil is not installed."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        try:
            import psutil
        except ImportError:
            self._thread = None
            return
        self._psutil = psutil
        self._pid, self._interval = pid, interval
        self.peak_mb = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        psutil = self._psutil
        try:
            root = psutil.Process(self._pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            self.peak_mb = max(self.peak_mb or 0.0, total / 2**20)
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def run_worker(
    kind: str, item: MediaItem, dump: Path, args: argparse.Namespace, warmup: Path | None
) -> dict:
    repeat = args.repeat if item.megapixel_seconds <= REPEAT_MAX_MPX_SECONDS else 1
    command = [
        sys.executable,
        "-m",
        "benchmarks.preprocess_bench",
        "--worker",
        kind,
        "--video",
        str(item.path),
        "--dump",
        str(dump),
        "--repeat",
        str(repeat),
        "--reference-frame-access",
        args.reference_frame_access,
        "--ours-audio-mode",
        args.ours_audio_mode,
        "--ours-decoder",
        args.ours_decoder,
    ]
    if args.font:
        command += ["--font", args.font]
    if warmup is not None:
        command += ["--warmup", str(warmup)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONWARNINGS", "ignore")
    load_before = _loadavg()
    t0 = time.perf_counter()
    log = dump / "worker.log"
    dump.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
        )
        sampler = _TreeSampler(proc.pid)
        timer = threading.Timer(args.timeout, proc.kill)
        timer.start()
        try:
            if hasattr(os, "wait4"):
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                process_cpu = usage.ru_utime + usage.ru_stime
                process_maxrss = usage.ru_maxrss / 1024
            else:  # pragma: no cover - not Linux
                proc.wait()
                process_cpu = process_maxrss = float("nan")
        finally:
            timer.cancel()
            sampler.stop()
    process_wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{kind} worker failed on {item.name} (exit {proc.returncode}):\n{tail}")
    result = json.loads((dump / "result.json").read_text())
    result.update(
        process_wall_s=process_wall,
        process_cpu_s=process_cpu,
        process_maxrss_mb=process_maxrss,
        peak_mb=sampler.peak_mb if sampler.peak_mb else process_maxrss,
        loadavg_before=load_before,
    )
    return result


# ------------------------------------------------------------------------------------------
# parity


def _frame_mad(a, b) -> float | None:
    import numpy as np

    n = min(len(a), len(b))
    if n == 0 or a.shape[1:] != b.shape[1:]:
        return None
    total = 0.0
    for k in range(n):  # frame by frame: no int16 copy of a whole 150-frame stack
        total += float(np.abs(a[k].astype(np.int16) - b[k].astype(np.int16)).mean())
    return total / n


def _feature_mad(a, b) -> float | None:
    import numpy as np

    if a is None or b is None or a.shape != b.shape:
        return None
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def _load(dump: Path):
    import numpy as np

    frames = np.load(dump / "frames.npy", mmap_mode="r")
    features = np.load(dump / "features.npy") if (dump / "features.npy").is_file() else None
    return frames, features


def _within(value: float | None, tolerance: float) -> bool:
    return value is not None and value <= tolerance


def parity(ours: dict, ref: dict, ours_dump: Path, ref_dump: Path, golden: Path | None) -> dict:
    import numpy as np

    ours_frames, ours_features = _load(ours_dump)
    ref_frames, ref_features = _load(ref_dump)
    out = {
        "count_equal": ours["num_frames"] == ref["num_frames"],
        "indices_equal": ours["frame_indices"] == ref["frame_indices"],
        "intervals_equal": ours["intervals"] == ref["intervals"],
        "duration_equal": ours["duration"] == ref["duration"],
        "frame_mad": _frame_mad(ours_frames, ref_frames),
        "feature_mad": _feature_mad(ours_features, ref_features),
    }
    if golden is not None:
        from PIL import Image

        meta = json.loads((golden / "meta.json").read_text())
        gold_features = np.load(golden / "audio_features.npy")
        pngs = sorted(golden.glob("frame_*.png"))
        for kind, frames, features, result in (
            ("ours", ours_frames, ours_features, ours),
            ("reference", ref_frames, ref_features, ref),
        ):
            diffs = []
            for png in pngs:
                k = int(png.stem.split("_")[1])
                if k < len(frames):
                    gold = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
                    if gold.shape == frames[k].shape:
                        diffs.append(float(np.abs(gold - frames[k].astype(np.int16)).mean()))
            out[f"golden_{kind}_frame_mad"] = (
                sum(diffs) / len(diffs) if diffs and len(diffs) == len(pngs) else None
            )
            out[f"golden_{kind}_feature_mad"] = _feature_mad(features, gold_features)
            out[f"golden_{kind}_indices_equal"] = (
                result["frame_indices"] == meta["frame_indices"][: meta["num_frames_used"]]
            )
            out[f"golden_{kind}_count_equal"] = result["num_frames"] == meta["num_frames_used"]
    checks = [
        out["count_equal"],
        out["indices_equal"],
        _within(out["frame_mad"], TOL_FRAME_MAD),
        _within(out["feature_mad"], TOL_FEATURE_MAD),
    ]
    if golden is not None:
        checks += [
            out["golden_ours_count_equal"],
            out["golden_ours_indices_equal"],
            _within(out["golden_ours_frame_mad"], TOL_FRAME_MAD),
            _within(out["golden_ours_feature_mad"], TOL_FEATURE_MAD),
        ]
    out["pass"] = bool(all(checks))
    return out


# ------------------------------------------------------------------------------------------
# reports


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


def _chart_stages(run: dict) -> dict[str, float]:
    stages = run["stages"]
    return {name: float(stages.get(name, 0.0)) for name in CHART_STAGES}


def _golden_recorded(golden: Path | None) -> float | None:
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


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = [
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
    stage_cols = [f"{k}_{s}_s" for k in ("ours", "ref") for s in CHART_STAGES]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns + stage_cols)
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


def write_markdown(path: Path, rows: list[dict], summary: dict, meta: dict) -> None:
    s = summary
    lines = [
        "# Preprocessing benchmark: our ingestion vs the authors' pipeline",
        "",
        (
            f"Run {meta['started']} on {meta['cpu_model']} ({meta['cpus']} CPUs), "
            f"{meta['command']}; load average {meta['loadavg_start']} at the start, "
            f"{meta['loadavg_end']} at the end (other work on the machine makes times noisy)."
        ),
        "",
        (
            "ratio = reference wall time / ours (higher is better for ours). Wall and CPU times are "
            "per run of the whole pipeline inside a warm process (imports and a warm-up run "
            "excluded; median of the repeats); peak memory is the largest summed RSS of the "
            "worker process and its ffmpeg children, imports included."
        ),
        "",
        "## Summary",
        "",
        (
            f"- median ratio over the shared clips: **{_fmt(s['median_ratio_shared'])}x** "
            f"(target ≥ {TARGET_SHARED_RATIO:g}x: {_fmt(s['target_shared_met'])})"
        ),
        (
            f"- 1080p clips: median ratio **{_fmt(s['median_ratio_1080p'])}x**, lowest "
            f"{_fmt(s['min_ratio_1080p'])}x (target ≥ {TARGET_1080P_RATIO:g}x on each: "
            f"{_fmt(s['target_1080p_met'])})"
        ),
        (
            f"- CPU seconds, reference / ours: median {_fmt(s['median_cpu_ratio_shared'])}x over "
            f"the shared clips, {_fmt(s['median_cpu_ratio_1080p'])}x over the 1080p clips; "
            f"peak memory, reference / ours: median {_fmt(s['median_memory_ratio'])}x"
        ),
        (
            "- for context: the authors' own times recorded in the golden meta.json (their "
            "script, another 2-core machine) over our wall time here: median "
            f"{_fmt(s['median_ratio_golden_recorded_shared'])}x over the shared clips"
        ),
        (
            f"- parity within tolerances (frames ≤ {TOL_FRAME_MAD:g}/255 mean |Δ|, features ≤ "
            f"{TOL_FEATURE_MAD:g} mean |Δ|, frame count and indices exact): "
            f"{s['parity_pass']}/{s['files']} files"
        ),
        "",
        "## Per file",
        "",
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
        gold_f = (
            f"{_fmt(p.get('golden_ours_frame_mad'), 3)} / "
            f"{_fmt(p.get('golden_reference_frame_mad'), 3)}"
            if "golden_ours_frame_mad" in p
            else "–"
        )
        gold_a = (
            f"{_fmt(p.get('golden_ours_feature_mad'), 4)} / "
            f"{_fmt(p.get('golden_reference_feature_mad'), 4)}"
            if "golden_ours_feature_mad" in p
            else "–"
        )
        idx = p["count_equal"] and p["indices_equal"]
        if "golden_ours_indices_equal" in p:
            idx = idx and p["golden_ours_indices_equal"] and p["golden_reference_indices_equal"]
        lines.append(
            f"| {r['file']} | {r['resolution']} | {r['duration_s']:g} | {r['ours']['num_frames']} "
            f"| {r['ours']['wall_s']:.2f} | {r['reference']['wall_s']:.2f} | {r['ratio']:.2f} "
            f"| {r['ours']['cpu_s']:.2f} | {r['reference']['cpu_s']:.2f} "
            f"| {r['ours']['peak_mb']:.0f} | {r['reference']['peak_mb']:.0f} "
            f"| {_fmt(p['frame_mad'], 3)} | {_fmt(p['feature_mad'], 4)} | {_fmt(idx)} "
            f"| {gold_f} | {gold_a} | {'pass' if p['pass'] else '**FAIL**'} |"
        )
    lines += [
        "",
        (
            "frame Δ and feat Δ: ours against the reference run here (mean |Δ| of the uint8 frames, "
            "in 1/255 units, and of the log-mel features); gold Δ: each pipeline against the authors' "
            "golden output in ../shared/golden/preprocess (its PNG frames, its features). Frames use "
            "Liberation Sans in both pipelines here; the golden frames were stamped with Arial."
        ),
        "",
        "## Where the time goes (per stage, seconds)",
        "",
        *_where_time_goes(rows),
        "",
        "| file | pipeline | wall | " + " | ".join(CHART_STAGES) + " |",
        "| --- | --- | ---: | " + " | ".join("---:" for _ in CHART_STAGES) + " |",
    ]
    for r in rows:
        for kind in ("ours", "reference"):
            stages = _chart_stages(r[kind])
            cells = " | ".join(f"{stages[s]:.2f}" for s in CHART_STAGES)
            lines.append(f"| {r['file']} | {kind} | {r[kind]['wall_s']:.2f} | {cells} |")
    lines += [
        "",
        (
            "Stages. ours: probe = probe_video (PyAV) + frame plan; decode = time inside the frame decoder "
            "(pyav: in-process PyAV decode of the needed packets + RGB conversion; ffmpeg: the "
            "ffmpeg process with select); overlay, resize = PIL on the full-size frame, on "
            "stamping threads that overlap the decode; audio = ffmpeg mp3 round trip to 16 kHz; features "
            "= torch STFT log-mel; normalise = pixel_values(). reference: probe = decord "
            "VideoReader open + plan; decode = decord get_batch; normalise = ToTensor + Normalize "
            "+ stack + bf16; audio = moviepy mp3 export + librosa.load; features = "
            "WhisperFeatureExtractor per 30 s piece."
        ),
        "",
        "## Setup and process totals",
        "",
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
                f"| {_fmt(k['loadavg_before'])} |"
            )
    lines += [
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


def draw_chart(path: Path, rows: list[dict], summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["file"] for r in rows]
    n = len(rows)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(max(8.0, 1.3 * n + 3), 9), gridspec_kw={"height_ratios": [1, 1.2]}
    )
    x = list(range(n))
    width = 0.38
    ours = [r["ours"]["wall_s"] for r in rows]
    ref = [r["reference"]["wall_s"] for r in rows]
    top.bar([i - width / 2 for i in x], ours, width, label="ours", color="#1f77b4")
    top.bar([i + width / 2 for i in x], ref, width, label="reference (authors)", color="#ff7f0e")
    top.scatter(
        [i - width / 2 for i in x] + [i + width / 2 for i in x],
        [r["ours"]["cpu_s"] for r in rows] + [r["reference"]["cpu_s"] for r in rows],
        marker="_",
        s=260,
        color="black",
        zorder=3,
        label="CPU seconds (process + ffmpeg)",
    )
    for i, r in enumerate(rows):
        top.annotate(
            f"{r['ratio']:.1f}x" + ("" if r["parity"]["pass"] else " (parity!)"),
            (i, max(ours[i], ref[i])),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    top.set_yscale("log")
    top.set_ylabel("wall time per file, s (log)")
    top.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(
        "Preprocessing wall time; ratio = reference / ours "
        f"(median shared {_fmt(summary['median_ratio_shared'])}x, "
        f"1080p {_fmt(summary['median_ratio_1080p'])}x)",
        fontsize=10,
    )

    # stacked stage shares, ours (left) and reference (right) per file, as % of wall time
    for offset, kind, hatch in ((-width / 2, "ours", ""), (width / 2, "reference", "//")):
        bottoms = [0.0] * n
        for stage in CHART_STAGES:
            heights = [
                100 * _chart_stages(r[kind])[stage] / max(r[kind]["wall_s"], 1e-9) for r in rows
            ]
            bottom.bar(
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
    bottom.axhline(100, color="black", linewidth=0.6)
    bottom.set_ylabel("stage time, % of the pipeline's wall time")
    bottom.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
    bottom.set_title(
        "Where the time goes: left bar ours (audio runs beside the frames: can pass 100%), "
        "right bar (hatched) reference",
        fontsize=9,
    )
    bottom.legend(
        ncol=len(CHART_STAGES), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25)
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------
# main


def _warmup_clip(cache: Path) -> Path:
    path = cache / "warmup_2s_v1.mp4"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        part = cache / f".warmup-{os.getpid()}.mp4"
        _encode_piece(part, (160, 90), 2, 10)
        os.replace(part, path)
    return path


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

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    t_start = time.perf_counter()
    meta = {
        "started": started,
        "command": "python -m benchmarks.preprocess_bench "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": _versions(),
        "reference_frame_access": args.reference_frame_access,
        "ours_audio_mode": args.ours_audio_mode,
        "ours_decoder": args.ours_decoder,
        "loadavg_start": _loadavg(),
        "tolerances": {"frame_mad": TOL_FRAME_MAD, "feature_mad": TOL_FEATURE_MAD},
        "targets": {"shared_median": TARGET_SHARED_RATIO, "p1080": TARGET_1080P_RATIO},
    }
    items = collect_media(args, say)
    if not items:
        raise SystemExit("nothing to benchmark (no shared media and no synthetic clips)")
    warmup = None if args.no_warmup else _warmup_clip(Path(args.cache))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows: list[dict] = []
    progress = _Progress(2 * len(items), "preprocess bench", args.quiet)
    with tempfile.TemporaryDirectory(prefix="arc-bench-") as scratch:
        for item in items:
            runs, dumps = {}, {}
            for kind in KINDS:
                progress.step(f"{kind} {item.name}")
                dumps[kind] = Path(scratch) / item.name / kind
                runs[kind] = run_worker(kind, item, dumps[kind], args, warmup)
                progress.advance(
                    f"{item.name:<24} {kind:<9} {runs[kind]['wall_s']:7.2f} s wall "
                    f"{runs[kind]['cpu_s']:7.2f} s CPU {runs[kind]['peak_mb']:6.0f} MB"
                )
            par = parity(
                runs["ours"], runs["reference"], dumps["ours"], dumps["reference"], item.golden
            )
            if args.keep_dumps:
                shutil.copytree(
                    Path(scratch) / item.name, out / "dumps" / item.name, dirs_exist_ok=True
                )
            shutil.rmtree(Path(scratch) / item.name, ignore_errors=True)
            rows.append(
                {
                    "file": item.name,
                    "path": str(item.path),
                    "group": item.group,
                    "resolution": item.label,
                    "is_1080p": item.is_1080p,
                    "duration_s": item.duration,
                    "media": item.info,
                    "ratio": runs["reference"]["wall_s"] / max(runs["ours"]["wall_s"], 1e-9),
                    "cpu_ratio": runs["reference"]["cpu_s"] / max(runs["ours"]["cpu_s"], 1e-9),
                    "golden_recorded_s": _golden_recorded(item.golden),
                    "ours": runs["ours"],
                    "reference": runs["reference"],
                    "parity": par,
                }
            )
    progress.close()
    meta["loadavg_end"] = _loadavg()
    meta["total_s"] = round(time.perf_counter() - t_start, 1)
    summary = summarise(rows)
    (out / "report.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1, default=str)
    )
    write_csv(out / "report.csv", rows)
    write_markdown(out / "report.md", rows, summary, meta)
    draw_chart(out / "chart.png", rows, summary)
    say(
        f"median ratio shared {_fmt(summary['median_ratio_shared'])}x, 1080p "
        f"{_fmt(summary['median_ratio_1080p'])}x, parity {summary['parity_pass']}/"
        f"{summary['files']}; {meta['total_s']} s; reports in {out}"
    )
    return 0


__all__ = ["MediaItem", "build_parser", "main", "make_synthetic", "parity", "summarise"]

if __name__ == "__main__":
    sys.exit(main())
