"""Long-video benchmark: one question about a synthetic 10-, 30- and 60-minute video, asked
through the gateway in segments (`video.segments`), against the same segments asked as
clip requests one after another (a) and all at once by a client (b), in the same run; a
second question about the same stored file; the gateway's peak memory per video length.

Goals (issue 20): the segmented request at most 0.6x of (a), at most 1.15x of (b) plus its
integration pass; a second question at most 0.5x of the first; the gateway's memory flat
in the video's length (segments in flight only).

    python -m benchmarks.long_bench                    # own loopback stack, tiny checkpoint
    python -m benchmarks.long_bench --minutes 10,30    # lengths of your choice
    python -m benchmarks.long_bench --quick            # smoke run: a 2-minute video in
                                                       # segments of 60 s (about 2 minutes)

Each path asks about a video of its own (same length and content structure, other cards),
so the engine's caches, on as in production, serve no path with another's
work; the second question finds what the first left in them and in the gateway's file store.
The parts live in benchmarks/long/ (one module per job, listed in its __init__) and the
stack it starts (arc-serve, arc-gateway on loopback) in benchmarks/_load_stack.py; it
writes report.json, report.csv, report.md and long.png.
"""

from __future__ import annotations

import sys

from .long import cli, run


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run.measure(cli.parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
