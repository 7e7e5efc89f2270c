"""A batch's output and error files, assembled from its line rows when it ends.

Each line of either file is `{id, custom_id, response: {status_code, request_id, body},
error}`, in the input file's order: answers with status 200 in the output file; other
answers (a 4xx the chat endpoint gave the request), lines that failed after their
retries, and, for an expired batch, lines never run (`batch_expired`) in the error file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..files import FileStore
from . import objects as o

OUTPUT_PURPOSE = "batch_output"


def expired_line(custom_id: str) -> dict:
    return {
        "id": o.new_line_id(),
        "custom_id": custom_id,
        "response": None,
        "error": {
            "code": "batch_expired",
            "message": "this request could not be executed before the completion window expired",
        },
    }


Row = tuple[int, str, str, dict | None]  # (line, custom_id, state, result)


def write_files(
    store: FileStore,
    batch_id: str,
    owner: str,
    pages: Iterable[Sequence[Row]],
    status: str,
) -> tuple[str | None, str | None]:
    """(output file id, error file id); None for a file with no lines. The rows come a
    page at a time and go straight to the files: a batch of any size is never in memory."""
    good, bad = _Spool(store), _Spool(store)
    try:
        for page in pages:
            for _, custom_id, state, result in page:
                if state in (o.DONE, o.LINE_FAILED) and result is not None:
                    response = result.get("response") or {}
                    (good if response.get("status_code") == 200 else bad).write(result)
                elif state == o.DROPPED and status == o.EXPIRED:
                    bad.write(expired_line(custom_id))
        return (
            good.keep(f"{batch_id}_output.jsonl", owner),
            bad.keep(f"{batch_id}_error.jsonl", owner),
        )
    finally:
        good.discard()
        bad.discard()


class _Spool:
    """A JSONL file being written in the store's incoming folder, stored if it has lines."""

    def __init__(self, store: FileStore):
        self.store = store
        self.path: Path = store.incoming_path()
        self.out = self.path.open("w", encoding="utf-8")
        self.lines = 0

    def write(self, item: dict) -> None:
        self.out.write(json.dumps(item, separators=(",", ":"), ensure_ascii=False) + "\n")
        self.lines += 1

    def keep(self, name: str, owner: str) -> str | None:
        self.out.close()
        if not self.lines:
            return None
        size = self.path.stat().st_size
        return self.store.add(self.path, name, OUTPUT_PURPOSE, size, None, {}, owner=owner).id

    def discard(self) -> None:
        self.out.close()
        self.path.unlink(missing_ok=True)
