"""A batch's output and error files, assembled from its line rows when it ends.

Each line of either file is `{id, custom_id, response: {status_code, request_id, body},
error}`, in the input file's order: answers with status 200 in the output file; other
answers (a 4xx the chat endpoint gave the request), lines that failed after their
retries, and, for an expired batch, lines never run (`batch_expired`) in the error file.
"""

from __future__ import annotations

import json
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


def write_files(
    store: FileStore,
    batch_id: str,
    owner: str,
    rows: list[tuple[int, str, str, dict | None]],
    status: str,
) -> tuple[str | None, str | None]:
    """(output file id, error file id); None for a file with no lines."""
    good: list[dict] = []
    bad: list[dict] = []
    for _, custom_id, state, result in rows:
        if state in (o.DONE, o.LINE_FAILED) and result is not None:
            response = result.get("response") or {}
            (good if response.get("status_code") == 200 else bad).append(result)
        elif state == o.DROPPED and status == o.EXPIRED:
            bad.append(expired_line(custom_id))
    return (
        _store(store, good, f"{batch_id}_output.jsonl", owner),
        _store(store, bad, f"{batch_id}_error.jsonl", owner),
    )


def _store(store: FileStore, lines: list[dict], name: str, owner: str) -> str | None:
    if not lines:
        return None
    path: Path = store.incoming_path()
    try:
        with path.open("w", encoding="utf-8") as out:
            for item in lines:
                out.write(json.dumps(item, separators=(",", ":"), ensure_ascii=False) + "\n")
        size = path.stat().st_size
        stored = store.add(path, name, OUTPUT_PURPOSE, size, None, {}, owner=owner)
    finally:
        path.unlink(missing_ok=True)
    return stored.id
