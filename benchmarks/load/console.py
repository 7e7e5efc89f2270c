"""What the load benchmark says while it runs: log lines on stderr, and a progress bar (tqdm
on a terminal when importable; one line per finished batch otherwise)."""

from __future__ import annotations

import sys

from .records import Record


def log(message: str) -> None:
    print(f"[load-bench] {message}", file=sys.stderr, flush=True)


class Progress:
    """tqdm when importable; otherwise one line per finished batch."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        # A bar on a terminal; in a log file (not a TTY) one line per batch reads better.
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=total, unit="req", file=sys.stderr, dynamic_ncols=True, mininterval=0.5
                )
            except ImportError:
                pass

    def step(self, record: Record) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{record.path} c={record.concurrency}", refresh=False)
            self.bar.update(1)

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(f"[load-bench] {text}", file=sys.stderr)
        else:
            log(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
