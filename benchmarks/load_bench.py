"""Load benchmark of the whole service: concurrent clients sending real videos through the
gateway and, in the same run, the same requests sent straight to vLLM, so that the
gateway's cost is a measured ratio against vLLM alone.

Paths (all measured in one run, the same requests: same videos, question, max_tokens):

    gateway-upload           POST /v1/files (multipart) then a streaming chat naming the file
    gateway-data-url         one streaming chat with the video as data:video/mp4;base64,...
    gateway-second-question  a chat about a file uploaded before the batch (no decode)
    direct-raw               the chat sent to vLLM itself with the raw video as a data URL:
                             the engine's arc loader decodes it (vLLM without the gateway)
    direct                   the chat sent to vLLM itself, the video prepared beforehand
                             (arc_media.pipeline + arc_media.prepared, untimed)

The headline is gateway / direct-raw for the paths that decode (latency p50 and p95 at each
concurrency, and throughput) and gateway-second-question / direct for the one that does
not. Per request it also records the time to the response headers and the gateway's
Server-Timing stages (receive, queue, decode, encode, store, engine input), hence where the
time goes per path. Per level and path: TTFT, TPOT and end-to-end latency (p50/p95/p99),
request and output-token throughput, goodput against the SLOs given, errors by kind.
Output: report.json, report.csv, gateway_overhead.csv, stages.csv, requests.csv, report.md
and PNG plots (when matplotlib is importable).

    python -m benchmarks.load_bench                 # own loopback stack, tiny checkpoint
    python -m benchmarks.load_bench --quick         # smoke run (about a minute, mostly startup)
    python -m benchmarks.load_bench --gateway-url http://127.0.0.1:8080 \\
        --engine-url http://127.0.0.1:8000          # the docker compose stack; starts nothing
    python -m benchmarks.load_bench --help

The parts live in benchmarks/load/ (one module per job, listed in its __init__) and the
stack it starts in benchmarks/_load_stack.py.
"""

from __future__ import annotations

import signal
import sys
import time

from .load import cli, run
from .load.records import Slo
from .load.report import build_report, print_summary, write_report


def _on_sigterm(signum: int, frame: object) -> None:
    del signum, frame
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = cli.parse_args(argv)
    t_start = time.monotonic()
    # A stop from outside ends the run as Ctrl-C does: the stack stopped, a partial report.
    signal.signal(signal.SIGTERM, _on_sigterm)
    urls = cli.external_urls(args)
    slo = Slo(args.slo_ttft_s or None, args.slo_e2e_s or None, args.slo_tpot_ms or None)
    state = run.new_state(args, t_start, external=urls != (None, None))
    failed = run.measure(args, state, slo, urls)
    if failed:
        return failed
    report = build_report(args, argv, state, slo)
    files = write_report(args.out, report)
    print_summary(report, files, args.out)
    return 130 if state.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
