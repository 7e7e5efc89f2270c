"""Batch benchmark: a batch of a few hundred lines over the shared clips (OpenAI's Batch API
on the gateway), set against the load benchmark's client on the same engine in the same run.

Goals (issue 22): the batch's throughput (lines/s) at least 0.9x the best throughput of the
load client (`gateway-second-question`: streaming chats about stored files, the same
requests) at any of its concurrency levels; interactive chat p50 at concurrency 1 while a
batch runs at most 1.3x its value on the idle stack.

    python -m benchmarks.batch_bench                 # own loopback stack, tiny checkpoint
    python -m benchmarks.batch_bench --lines 500     # a larger batch
    python -m benchmarks.batch_bench --quick         # smoke run (about a minute once started)

The parts live in benchmarks/batch/ (one module per job, listed in its __init__), the stack
it starts in benchmarks/_load_stack.py and the load client in benchmarks/load/; it writes
report.json, report.csv, report.md and batch.png.
"""

from __future__ import annotations

import sys

from .batch import cli, run


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run.measure(cli.parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
