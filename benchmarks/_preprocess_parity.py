"""Parity of `benchmarks.preprocess_bench`: our pipeline's outputs (frames, Whisper
features, frame indices) against the reference run's, and, for the shared clips, both against
the authors' golden output, within the issue's tolerances."""

from __future__ import annotations

import json
from pathlib import Path

TOL_FRAME_MAD = 1.0  # mean |Δ| of uint8 frame pixels, i.e. 1/255 in [0, 1] units
TOL_FEATURE_MAD = 0.12  # mean |Δ| of log-mel features


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
