"""Prometheus metrics of the gateway. Labels hold routes and reasons, never user data."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320)
_FRAMES = (1, 2, 4, 8, 16, 32, 64, 100, 150)

# Every `code` the gateway answers with (the `reason` label of the rejection counter).
# Created at start-up with the routes, so that rate() counts the first event of each.
REJECTION_REASONS = (
    # requests
    "invalid_json", "invalid_request", "unknown_parameter", "unsupported_content",
    "single_user_message", "too_many_videos", "no_video", "missing_question",
    "invalid_response_format",
    "request_too_large",
    "not_found", "model_not_found", "method_not_allowed", "http_error", "too_many_requests",
    "client_closed",
    # uploads and files
    "wrong_content_type", "bad_multipart", "missing_file", "multiple_files", "invalid_purpose",
    "fields_too_large", "field_too_long", "file_too_large", "upload_timeout", "empty_file",
    "file_not_found", "file_exceeds_storage", "storage_full",
    # videos
    "bad_video_url", "bad_data_url", "invalid_video", "invalid_clip", "video_timeout",
    "video_too_long", "video_too_large",
    "video_unprocessable", "decoder_crashed", "decode_queue_full", "font_missing",
    "segment_unprocessable",
    # URL fetches
    "url_invalid", "url_scheme", "url_userinfo", "url_unresolvable", "url_blocked_address",
    "url_connect", "url_content_encoding", "url_http_status", "url_redirects", "url_timeout",
    "url_tls", "url_too_large", "url_upstream",
    # keys and their limits
    "invalid_api_key", "rate_limit_exceeded", "file_exceeds_quota", "storage_quota_exceeded",
    # batches
    "batch_not_found", "batch_not_cancellable", "batch_file_too_large", "batch_line_too_long",
    "batch_too_many_lines", "invalid_batch",
    # the model server
    "upstream_rejected", "context_length_exceeded", "upstream_busy", "upstream_error",
    "upstream_unavailable", "upstream_timeout", "upstream_no_model",
    "internal",
)  # fmt: skip


SEGMENT_OUTCOMES = ("answered", "retried", "failed")
BATCH_OUTCOMES = ("completed", "failed", "retried", "paced")
INTEGRATION_TASKS = ("qa", "summary", "grounding", "mcq", "chapters", "none")


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

        self.segmented_requests = Counter(
            "arc_gateway_segmented_requests_total",
            "Chat requests about a long video answered in segments",
            registry=r,
        )
        self.segments = Counter(
            "arc_gateway_segments_total",
            "Segment requests of long videos, by outcome (a retried one also counts once "
            "answered or failed)",
            ["outcome"],
            registry=r,
        )
        self.integration_passes = Counter(
            "arc_gateway_integration_passes_total",
            "Integration passes that joined segment answers, by task",
            ["task"],
            registry=r,
        )
        self.integration_seconds = Histogram(
            "arc_gateway_integration_seconds",
            "One integration pass",
            buckets=_LATENCY,
            registry=r,
        )

        self.batch_lines = Counter(
            "arc_gateway_batch_lines_total",
            "Batch lines this gateway finished, by outcome (completed: a 200 answer; failed: "
            "any other answer, or none after the retries; retried: a retriable failure "
            "tried again; paced: a 429 waited out); rate() is lines per second",
            ["outcome"],
            registry=r,
        )
        self.batch_lines_running = Gauge(
            "arc_gateway_batch_lines_running", "Batch lines this gateway is running", registry=r
        )
        self.batch_lines_queued = Gauge(
            "arc_gateway_batch_lines_queued",
            "Batch lines waiting to run, in every batch in progress (all replicas)",
            registry=r,
        )
        self.batch_yielding = Gauge(
            "arc_gateway_batch_yielding",
            "1 while batch lines start fewer at once beside interactive traffic (--batch-yield-s)",
            registry=r,
        )
        self.batch_lines_per_second = Gauge(
            "arc_gateway_batch_lines_per_second",
            "Batch lines this gateway finished per second, over the last minute",
            registry=r,
        )

    def create_labels(self, routes: list[str]) -> None:
        """Creates every known series at zero (Prometheus' rate() misses a series' first
        event otherwise)."""
        for route in [*routes, "unmatched"]:
            self.request_seconds.labels(route)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)
        for outcome in SEGMENT_OUTCOMES:
            self.segments.labels(outcome)
        for task in INTEGRATION_TASKS:
            self.integration_passes.labels(task)
        for outcome in BATCH_OUTCOMES:
            self.batch_lines.labels(outcome)
