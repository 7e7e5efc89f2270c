"""Runners of `benchmarks.preprocess_bench`: one pipeline on one file in a fresh worker process
(ours: arc_media's prepare_video with Whisper features, then pixel values, its stages timed by
the pipeline's `timings=` hook; the reference: benchmarks/reference_pipeline.py), measured
from inside (wall and CPU seconds per run, the median of --repeat runs) and from outside
(the process tree's peak memory, sampled, and its rusage)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from ._preprocess_media import MediaItem

REPO_ROOT = Path(__file__).resolve().parents[1]
KINDS = ("ours", "reference")

# clips up to this many megapixel-seconds (720p x 30 s = 27.6) run --repeat times per process
REPEAT_MAX_MPX_SECONDS = 30.0


def loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


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
    load_before = loadavg()
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
