"""Prometheus metrics of the gateway. Labels hold routes and reasons, never user data."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320)
_FRAMES = (1, 2, 4, 8, 16, 32, 64, 100, 150)


class Metrics:
    """One registry per app, so several gateways (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "arc_gateway_request_seconds",
            "End-to-end latency per route",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.upstream_ttft_seconds = Histogram(
            "arc_gateway_upstream_ttft_seconds",
            "Upstream time to first token (streaming) or to the answer",
            buckets=_LATENCY,
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "arc_gateway_upstream_seconds",
            "Upstream request time, total",
            buckets=_LATENCY,
            registry=r,
        )
        self.decode_seconds = Histogram(
            "arc_gateway_decode_seconds",
            "Preparing one video (decode, overlay, audio, encode)",
            buckets=_LATENCY,
            registry=r,
        )
        self.decode_wait_seconds = Histogram(
            "arc_gateway_decode_wait_seconds",
            "Time a video waited for a free decode worker",
            buckets=_LATENCY,
            registry=r,
        )
        self.probe_seconds = Histogram(
            "arc_gateway_probe_seconds",
            "Probing one video",
            buckets=_LATENCY,
            registry=r,
        )
        self.queue_depth = Gauge(
            "arc_gateway_queue_depth", "Videos waiting for or in a decode worker", registry=r
        )
        self.inflight = Gauge(
            "arc_gateway_inflight_requests", "Chat requests in progress", registry=r
        )
        self.rejections = Counter(
            "arc_gateway_rejections_total",
            "Requests answered with an error, by reason",
            ["reason"],
            registry=r,
        )
        self.upload_bytes = Counter(
            "arc_gateway_upload_bytes_total",
            "Video bytes received (uploads, data URLs, URL downloads)",
            registry=r,
        )
        self.forwarded_bytes = Counter(
            "arc_gateway_forwarded_bytes_total",
            "Prepared video bytes sent upstream",
            registry=r,
        )
        self.frames_sampled = Histogram(
            "arc_gateway_frames_sampled",
            "Frames sampled per prepared video",
            buckets=_FRAMES,
            registry=r,
        )
