"""The load benchmark's statistics on known inputs (benchmarks/load/stats.py), the request
record's Server-Timing parsing and the SLOs (benchmarks/load/records.py)."""

from __future__ import annotations

import pytest

from benchmarks.load import stats
from benchmarks.load.records import Record, Slo


def record(path: str, index: int, **values: object) -> Record:
    """A successful request at concurrency 1 unless `values` say otherwise."""
    fields = {"concurrency": 1, "index": index, "video": "v.mp4", "ok": True, **values}
    return Record(path=path, **fields)


def test_distribution_interpolates_linearly() -> None:
    d = stats.distribution([4.0, 1.0, 3.0, 2.0])
    assert d == pytest.approx(
        {"mean": 2.5, "p50": 2.5, "p95": 3.85, "p99": 3.97, "min": 1.0, "max": 4.0}
    )
    assert stats.distribution([]) is None
    assert stats.distribution([7.0]) == {
        k: 7.0 for k in ("mean", "p50", "p95", "p99", "min", "max")
    }


def test_summarize_counts_errors_cancellations_and_goodput() -> None:
    slo = Slo(ttft_s=1.0, e2e_s=None, tpot_ms=None)
    ok = [
        record(
            "direct", 0, ttft_s=0.5, e2e_s=1.0, tpot_ms=10.0, output_tokens=4, prompt_tokens=100
        ),
        record(
            "direct", 1, ttft_s=2.0, e2e_s=3.0, tpot_ms=20.0, output_tokens=4, prompt_tokens=300
        ),
    ]
    for r in ok:
        r.meets_slo = slo.met(r)
    failed = [
        record("direct", 2, ok=False, error="HTTP 429 too_many_requests"),
        record("direct", 3, ok=False, error="timeout"),
        record("direct", 4, ok=False, error="timeout"),
    ]
    cancelled = [record("direct", 5, ok=False, error="cancelled")]
    s = stats.summarize("direct", 1, 8, [*ok, *failed, *cancelled], duration_s=4.0)
    assert (s["requests_planned"], s["requests_sent"]) == (8, 6)
    assert (s["completed"], s["failed"], s["cancelled"]) == (2, 3, 1)
    assert s["errors"] == {"HTTP 429 too_many_requests": 1, "timeout": 2}
    assert s["request_throughput"] == 0.5 and s["output_token_throughput"] == 2.0
    # Only the first request met TTFT ≤ 1 s; attainment counts the failed, not the cancelled.
    assert s["goodput"] == 0.25 and s["slo_attainment"] == pytest.approx(1 / 5)
    assert s["ttft_s"]["p50"] == 1.25 and s["e2e_s"]["max"] == 3.0
    assert s["upload_s"] is None
    assert s["output_tokens_mean"] == 4 and s["prompt_tokens_mean"] == 200
    empty = stats.summarize("direct", 2, 8, [], duration_s=0.0)
    assert empty["request_throughput"] == 0.0 and empty["slo_attainment"] is None
    assert empty["e2e_s"] is None and empty["output_tokens_mean"] is None


def _levels(records: list[Record]) -> list[dict]:
    paths = dict.fromkeys(r.path for r in records)
    return [
        stats.summarize(p, 1, 2, [r for r in records if r.path == p], duration_s=2.0) for p in paths
    ]


def test_overhead_pairs_each_gateway_path_with_its_reference() -> None:
    records = [
        record(
            "gateway-data-url", 0, e2e_s=1.2, ttft_s=1.0, queue_s=0.1, decode_s=0.3, encode_s=0.1
        ),
        record(
            "gateway-data-url", 1, e2e_s=1.6, ttft_s=1.4, queue_s=0.0, decode_s=0.3, encode_s=0.1
        ),
        record("direct-raw", 0, e2e_s=1.0, ttft_s=0.8),
        record("direct-raw", 1, e2e_s=1.0, ttft_s=0.8),
        # No `direct` level beside it: the second question has no row.
        record("gateway-second-question", 0, e2e_s=0.5, ttft_s=0.3),
    ]
    levels = _levels(records)
    levels[0]["request_throughput"] = 0.8  # as if the gateway batch took longer
    (row,) = stats.overhead(levels, records)
    assert (row["gateway_path"], row["reference"], row["concurrency"]) == (
        "gateway-data-url", "direct-raw", 1,
    )  # fmt: skip
    assert row["e2e_p50_ratio"] == pytest.approx(1.4)
    assert row["ttft_p50_ratio"] == pytest.approx(1.5)
    assert row["throughput_ratio"] == pytest.approx(0.8)
    assert row["added_p50_s"] == pytest.approx(0.4)
    assert row["share_p50"] == pytest.approx(0.4 / 1.4)
    assert row["gateway_decode_mean_s"] == pytest.approx(0.45)
    assert row["decode_share_mean"] == pytest.approx(0.45 / 1.4)
    assert row["paired_requests"] == 2
    assert row["paired_added_median_s"] == pytest.approx(0.4)


def test_stages_split_each_request_into_its_parts() -> None:
    records = [
        # Straight to vLLM: the time to its headers is the engine's input work.
        record("direct", 0, e2e_s=1.0, ttft_s=0.6, headers_s=0.4),
        # Through the gateway: its Server-Timing stages, and its own engine-input stage.
        record(
            "gateway-data-url", 0, e2e_s=2.0, ttft_s=1.5, headers_s=1.2, receive_s=0.1,
            queue_s=0.2, decode_s=0.5, encode_s=0.1, engine_input_s=0.2,
        ),
        # An upload: the gateway's stages happen inside the client's upload time.
        record(
            "gateway-upload", 0, e2e_s=3.0, ttft_s=2.5, headers_s=2.2, upload_s=1.5,
            receive_s=0.3, decode_s=0.8, store_s=0.1, engine_input_s=0.4,
        ),
    ]  # fmt: skip
    rows = {r["path"]: r for r in stats.stages(_levels(records), records)}
    direct = rows["direct"]
    assert direct["engine_input_s"] == 0.4 and direct["decode_s"] is None
    assert direct["first_token_s"] == pytest.approx(0.2)
    assert direct["generation_s"] == pytest.approx(0.4)
    assert direct["rest_s"] == pytest.approx(0.0)
    gateway = rows["gateway-data-url"]
    assert gateway["engine_input_s"] == 0.2 and gateway["first_token_s"] == pytest.approx(0.3)
    assert gateway["rest_s"] == pytest.approx(2.0 - (0.2 + 0.3 + 0.5) - (0.1 + 0.2 + 0.5 + 0.1))
    upload = rows["gateway-upload"]
    assert upload["rest_s"] == pytest.approx(3.0 - (0.4 + 0.3 + 0.5) - 1.5)


def test_server_timing_stages_add_up_in_seconds() -> None:
    r = Record("gateway-upload", 1, 0, "v.mp4")
    r.add_timing("receive;dur=12.5, queue;dur=0, decode;dur=300,store;dur=4")
    r.add_timing("engine-input;dur=40, receive;dur=7.5, unknown;dur=9, decode;dur=oops, total")
    r.add_timing(None)
    assert r.receive_s == pytest.approx(0.020)
    assert (r.queue_s, r.decode_s, r.store_s) == (0.0, 0.3, 0.004)
    assert r.engine_input_s == pytest.approx(0.04) and r.encode_s is None
    assert Record.columns()[:4] == ["path", "concurrency", "index", "video"]
    assert list(r.as_dict()) == Record.columns()


def test_slo_needs_every_limit_given() -> None:
    slo = Slo(ttft_s=1.0, e2e_s=5.0, tpot_ms=50.0)
    good = record("direct", 0, ttft_s=0.5, e2e_s=2.0, tpot_ms=40.0)
    assert slo.met(good)
    assert not slo.met(record("direct", 1, ttft_s=0.5, e2e_s=2.0, tpot_ms=60.0))
    # One output token has no TPOT: a TPOT limit is not met.
    assert not slo.met(record("direct", 2, ttft_s=0.5, e2e_s=2.0))
    assert not slo.met(record("direct", 3, ok=False, ttft_s=0.5, e2e_s=2.0, tpot_ms=1.0))
    assert Slo(None, None, None).met(record("direct", 4))
    assert slo.describe() == "TTFT ≤ 1 s, TPOT ≤ 50 ms, e2e ≤ 5 s"
    assert Slo(None, None, None).describe().startswith("none")
    assert slo.as_dict() == {"ttft_s": 1.0, "tpot_ms": 50.0, "e2e_s": 5.0, "text": slo.describe()}
