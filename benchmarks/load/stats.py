"""The load benchmark's statistics: per (path, concurrency) batch the serving metrics
(latency distributions, throughput, goodput, errors), the gateway's cost against its
reference path, and where each path's time goes."""

from __future__ import annotations

import statistics
from collections import Counter

import numpy as np

from .paths import DIRECT_PATHS, REFERENCE
from .records import Record


def distribution(values: list[float]) -> dict | None:
    """Mean, p50/p95/p99 (linear interpolation), min and max; None without values."""
    if not values:
        return None
    array = np.asarray(values, dtype=float)
    return {
        "mean": float(array.mean()),
        "p50": float(np.percentile(array, 50)),
        "p95": float(np.percentile(array, 95)),
        "p99": float(np.percentile(array, 99)),
        "min": float(array.min()),
        "max": float(array.max()),
    }


def summarize(
    path: str, concurrency: int, planned: int, records: list[Record], duration_s: float
) -> dict:
    """The serving metrics of one (path, concurrency) batch."""
    ok = [r for r in records if r.ok]
    cancelled = [r for r in records if r.error == "cancelled"]
    failed = [r for r in records if not r.ok and r.error != "cancelled"]
    errors = Counter(r.error or "unknown" for r in failed)
    good = [r for r in ok if r.meets_slo]
    tokens = sum(r.output_tokens or 0 for r in ok)
    finished = len(ok) + len(failed)
    per_s = (lambda n: n / duration_s) if duration_s > 0 else (lambda n: 0.0)
    return {
        "path": path,
        "concurrency": concurrency,
        "requests_planned": planned,
        "requests_sent": len(records),
        "completed": len(ok),
        "failed": len(failed),
        "cancelled": len(cancelled),
        "errors": dict(sorted(errors.items())),
        "duration_s": duration_s,
        "request_throughput": per_s(len(ok)),
        "output_token_throughput": per_s(tokens),
        "goodput": per_s(len(good)),
        "slo_attainment": len(good) / finished if finished else None,
        "ttft_s": distribution([r.ttft_s for r in ok if r.ttft_s is not None]),
        "tpot_ms": distribution([r.tpot_ms for r in ok if r.tpot_ms is not None]),
        "e2e_s": distribution([r.e2e_s for r in ok if r.e2e_s is not None]),
        "upload_s": distribution([r.upload_s for r in ok if r.upload_s is not None]),
        "output_tokens_mean": (tokens / len(ok)) if ok else None,
        "prompt_tokens_mean": (
            statistics.fmean(r.prompt_tokens for r in ok if r.prompt_tokens is not None)
            if any(r.prompt_tokens is not None for r in ok)
            else None
        ),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def overhead(levels: list[dict], records: list[Record]) -> list[dict]:
    """For every gateway path and level that has its reference path (REFERENCE) beside it:
    the latency ratios gateway / reference (p50, p95), the throughput ratio, the added
    latency and its share of the gateway's e2e latency, and the decode the gateway did."""
    by_key = {(s["path"], s["concurrency"]): s for s in levels}
    ok = {(r.path, r.concurrency, r.index): r for r in records if r.ok}
    rows = []
    for (path, level), gateway in sorted(by_key.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        reference = REFERENCE.get(path)
        ref = by_key.get((reference, level)) if reference else None
        if ref is None or not gateway["e2e_s"] or not ref["e2e_s"]:
            continue
        g, d = gateway["e2e_s"], ref["e2e_s"]
        paired = [
            (r.e2e_s, ok[(reference, level, i)].e2e_s)
            for (p, c, i), r in ok.items()
            if p == path and c == level and (reference, level, i) in ok
        ]
        added = [a - b for a, b in paired]
        shares = [(a - b) / a for a, b in paired if a > 0]
        mine = [r for r in records if r.ok and r.path == path and r.concurrency == level]
        decode = [
            (r.queue_s or 0) + (r.decode_s or 0) + (r.encode_s or 0)
            for r in mine
            if r.decode_s is not None
        ]
        decode_mean = float(np.mean(decode)) if decode else None
        rows.append(
            {
                "gateway_path": path,
                "reference": reference,
                "concurrency": level,
                "e2e_p50_ratio": _ratio(g["p50"], d["p50"]),
                "e2e_p95_ratio": _ratio(g["p95"], d["p95"]),
                "ttft_p50_ratio": _ratio(
                    (gateway["ttft_s"] or {}).get("p50"), (ref["ttft_s"] or {}).get("p50")
                ),
                "throughput_ratio": _ratio(
                    gateway["request_throughput"], ref["request_throughput"]
                ),
                "gateway_e2e_p50_s": g["p50"],
                "reference_e2e_p50_s": d["p50"],
                "gateway_e2e_p95_s": g["p95"],
                "reference_e2e_p95_s": d["p95"],
                "added_p50_s": g["p50"] - d["p50"],
                "share_p50": (g["p50"] - d["p50"]) / g["p50"] if g["p50"] > 0 else None,
                "gateway_e2e_mean_s": g["mean"],
                "reference_e2e_mean_s": d["mean"],
                "added_mean_s": g["mean"] - d["mean"],
                "share_mean": (g["mean"] - d["mean"]) / g["mean"] if g["mean"] > 0 else None,
                # queue + decode + container encode in the gateway, per request
                "gateway_decode_mean_s": decode_mean,
                "decode_share_mean": _ratio(decode_mean, g["mean"]),
                "paired_requests": len(paired),
                "paired_added_median_s": float(np.median(added)) if added else None,
                "paired_share_median": float(np.median(shares)) if shares else None,
            }
        )
    return rows


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def stages(levels: list[dict], records: list[Record]) -> list[dict]:
    """Where each path's time goes, per level (means over its successful requests, seconds):
    the gateway's own stages from its Server-Timing header; for every path the engine's
    input preparation (vLLM answers with headers once the media is loaded and processed),
    the first token after it (scheduling, encoders, prefill) and the generation."""
    rows = []
    for level in levels:
        mine = [
            r
            for r in records
            if r.ok and r.path == level["path"] and r.concurrency == level["concurrency"]
        ]
        if not mine:
            continue
        direct = level["path"] in DIRECT_PATHS

        def engine_input(r: Record, direct: bool = direct) -> float | None:
            # Straight to vLLM, the client's time to headers is the engine's input work
            # (and the body's transfer on loopback).
            return r.headers_s if direct else r.engine_input_s

        row = {
            "path": level["path"],
            "concurrency": level["concurrency"],
            "requests": len(mine),
            "e2e_s": _mean([r.e2e_s for r in mine if r.e2e_s is not None]),
            "upload_s": _mean([r.upload_s for r in mine if r.upload_s is not None]),
        }
        for name in ("receive_s", "queue_s", "decode_s", "encode_s", "store_s"):
            row[name] = _mean([getattr(r, name) for r in mine if getattr(r, name) is not None])
        row["engine_input_s"] = _mean([v for v in (engine_input(r) for r in mine) if v is not None])
        row["first_token_s"] = _mean(
            [r.ttft_s - r.headers_s for r in mine if r.ttft_s and r.headers_s is not None]
        )
        row["generation_s"] = _mean([r.e2e_s - r.ttft_s for r in mine if r.e2e_s and r.ttft_s])
        parts = ["engine_input_s", "first_token_s", "generation_s"]
        # An upload's gateway stages are inside its client-side upload time.
        if row["upload_s"] is None:
            parts += ["receive_s", "queue_s", "decode_s", "encode_s", "store_s"]
        else:
            parts.append("upload_s")
        known = sum(row[k] or 0.0 for k in parts)
        row["rest_s"] = row["e2e_s"] - known if row["e2e_s"] is not None else None
        rows.append(row)
    return rows
