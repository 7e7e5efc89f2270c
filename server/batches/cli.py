"""`arc-gateway batch ...`: the Batch API from a terminal, as a client of a running gateway
(over HTTP, like the `openai` client; nothing here touches the gateway's database).

    arc-gateway batch submit LINES.jsonl [--wait] [--download DIR]   upload, create, (watch)
    arc-gateway batch watch BATCH_ID [--download DIR]                progress bar until it ends
    arc-gateway batch list | show BATCH_ID | cancel BATCH_ID
    arc-gateway batch make --folder DIR --question TEXT > lines.jsonl

The gateway is `--url` / ARC_BASE_URL (default http://127.0.0.1:8080), the key
`--api-key` / ARC_API_KEY. Progress goes to stderr, results (ids, tables, JSON) to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "ARC_BASE_URL"
KEY_ENV = "ARC_API_KEY"
ENDPOINT = "/v1/chat/completions"
# OpenAI's batch statuses; a batch in one of the last four has ended.
ENDED = ("completed", "failed", "expired", "cancelled")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".ts", ".mpg", ".mpeg")
# Waits for a 429 before an upload gives up (each as long as the gateway's Retry-After).
RATE_LIMIT_RETRIES = 30
TASKS = ("qa", "summary", "grounding", "mcq", "chapters", "none")


class CommandError(Exception):
    """A failure told to the user in one line (exit status 2); `status`: the gateway's HTTP
    status when it answered one, `retry_after_s` its Retry-After."""

    def __init__(self, message: str, status: int | None = None, retry_after_s: float = 0.0):
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


# ---------------------------------------------------------------------------------------
# the gateway, over HTTP


def base_url(url: str) -> str:
    """The gateway's root, whether given with /v1 (as the `openai` client takes it) or not."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CommandError(f"--url must be an http(s) URL, not {url!r}")
    return url.removesuffix("/v1")


class Gateway:
    """The few routes the commands use, with the gateway's errors turned into one clear line."""

    def __init__(self, url: str, api_key: str | None, timeout_s: float = 60.0):
        self.url = base_url(url)
        self.api_key = api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout_s, connect=10.0)
        )

    def close(self) -> None:
        self.client.close()

    def call(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TimeoutException as e:
            raise Unreachable(f"{what}: the gateway at {self.url} did not answer in time") from e
        except httpx.TransportError as e:
            raise Unreachable(
                f"{what}: cannot reach the gateway at {self.url} ({type(e).__name__}); is it "
                f"running? (--url or {URL_ENV})"
            ) from e
        if response.status_code >= 400:
            raise CommandError(
                self._explain(response, what), response.status_code, _retry_after(response)
            )
        return response

    def _explain(self, response: httpx.Response, what: str) -> str:
        status = response.status_code
        try:
            error = response.json()["error"]
            message, code = str(error.get("message") or ""), error.get("code")
        except (ValueError, KeyError, TypeError, AttributeError):
            message, code = response.text.strip()[:300], None
        if status == 401:
            if not self.api_key:
                return (
                    f"{what}: the gateway wants an API key: pass --api-key KEY or set {KEY_ENV} "
                    "(an operator makes one with `arc-gateway keys create`)"
                )
            return f"{what}: the gateway refused the API key (unknown or revoked): {message}"
        label = f"HTTP {status}" + (f" {code}" if code else "")
        return f"{what}: {label}: {message}" if message else f"{what}: {label}"

    def json(self, method: str, path: str, what: str, **kwargs: Any) -> dict:
        response = self.call(method, path, what, **kwargs)
        try:
            return response.json()
        except ValueError as e:
            raise CommandError(f"{what}: the gateway answered something that is not JSON") from e

    def upload(self, path: Path, purpose: str, what: str, content_type: str) -> dict:
        """POST /v1/files; a 429 (the key's rate or concurrency limit) is waited out."""
        try:
            handle = path.open("rb")
        except OSError as e:
            raise CommandError(f"cannot read {path}: {e.strerror or e}") from e
        with handle:
            for attempt in range(RATE_LIMIT_RETRIES + 1):
                handle.seek(0)
                try:
                    # Uploads may be large and slow: no read timeout beyond the gateway's own.
                    return self.json(
                        "POST",
                        "/v1/files",
                        what,
                        files={"file": (path.name, handle, content_type)},
                        data={"purpose": purpose},
                        timeout=httpx.Timeout(None, connect=10.0),
                    )
                except CommandError as e:
                    if e.status != 429 or attempt == RATE_LIMIT_RETRIES:
                        raise
                    time.sleep(max(e.retry_after_s, 1.0))
        raise AssertionError("unreachable")

    def batch(self, batch_id: str) -> dict:
        return self.json("GET", f"/v1/batches/{batch_id}", f"batch {batch_id}")

    def download(self, file_id: str, dest: Path) -> int:
        """The file's content streamed to `dest` (whole or not at all); its size."""
        partial = dest.with_name(dest.name + ".part")
        written = 0
        what = f"downloading {file_id}"
        try:
            with self.client.stream(
                "GET", f"/v1/files/{file_id}/content", timeout=httpx.Timeout(None, connect=10.0)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise CommandError(self._explain(response, what))
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                        written += len(chunk)
        except httpx.TransportError as e:
            partial.unlink(missing_ok=True)
            raise CommandError(f"{what}: the connection to {self.url} failed ({e})") from e
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(dest)
        return written


def _retry_after(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("retry-after") or 0)
    except ValueError:
        return 0.0


class Unreachable(CommandError):
    """The gateway did not answer: worth retrying while watching (it may be restarting)."""


# ---------------------------------------------------------------------------------------
# progress


def _duration(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class Rate:
    """Lines per second over the last `window_s` seconds of polls; before two polls have seen
    progress, the batch's own average since it started (`in_progress_at`)."""

    def __init__(self, window_s: float = 60.0):
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, finished: int) -> None:
        if self.samples and finished < self.samples[-1][1]:
            self.samples.clear()  # counts went back (another batch?): start over
        self.samples.append((now, finished))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window_s:
            self.samples.popleft()

    def per_s(self, batch: dict, wall_now: float) -> float | None:
        if len(self.samples) >= 2:
            (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
            if n1 > n0 and t1 > t0:
                return (n1 - n0) / (t1 - t0)
        started = batch.get("in_progress_at")
        finished = _finished(batch)
        if started and finished and wall_now > started:
            return finished / (wall_now - started)
        return None


def _counts(batch: dict) -> tuple[int, int, int]:
    counts = batch.get("request_counts") or {}
    return (
        int(counts.get("completed") or 0),
        int(counts.get("failed") or 0),
        int(counts.get("total") or 0),
    )


def _finished(batch: dict) -> int:
    done, failed, _ = _counts(batch)
    return done + failed


def progress_line(batch: dict, rate: float | None, width: int = 28) -> str:
    """`batch_x in_progress [#####-----] 120/300 done, 2 failed  4.1 lines/s  ETA 0:44`"""
    done, failed, total = _counts(batch)
    finished = done + failed
    share = finished / total if total else 0.0
    filled = int(share * width)
    bar = "#" * filled + "-" * (width - filled)
    line = (
        f"{batch.get('id', '?')} {batch.get('status', '?'):11} [{bar}] {finished}/{total} "
        f"({done} done, {failed} failed)"
    )
    if rate:
        line += f"  {rate:.2f} lines/s"
        if total > finished and batch.get("status") == "in_progress":
            line += f"  ETA {_duration((total - finished) / rate)}"
    return line


class Display:
    """The progress bar on stderr: redrawn in place on a terminal; in a log (not a
    terminal), a line when the status changes and otherwise at most every `log_every_s`."""

    def __init__(self, stream: TextIO, log_every_s: float = 30.0):
        self.stream = stream
        self.tty = stream.isatty()
        self.log_every_s = log_every_s
        self.last_status: str | None = None
        self.last_line = ""
        self.last_logged = 0.0
        self.drawn = False

    def show(self, line: str, status: str) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self.drawn = True
        elif status != self.last_status or (
            line != self.last_line and now - self.last_logged >= self.log_every_s
        ):
            self.stream.write(line + "\n")
            self.last_logged = now
        self.last_status, self.last_line = status, line
        self.stream.flush()

    def note(self, text: str) -> None:
        self.end()
        self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.drawn = False


def watch(
    gateway: Gateway,
    batch_id: str,
    interval_s: float,
    stream: TextIO,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Polls the batch until it ends, drawing its progress on `stream`; the last batch
    object. A gateway that does not answer (restarting) is retried, saying so."""
    display = Display(stream)
    rate = Rate()
    unreachable_since: float | None = None
    try:
        while True:
            try:
                batch = gateway.batch(batch_id)
            except Unreachable as e:
                if unreachable_since is None:
                    unreachable_since = time.monotonic()
                    display.note(f"{e}; retrying every {interval_s:g} s (Ctrl-C to stop)")
                sleep(interval_s)
                continue
            if unreachable_since is not None:
                away = time.monotonic() - unreachable_since
                display.note(f"the gateway answers again (after {away:.0f} s)")
                unreachable_since = None
            rate.add(time.monotonic(), _finished(batch))
            status = str(batch.get("status"))
            display.show(progress_line(batch, rate.per_s(batch, time.time())), status)
            if status in ENDED:
                return batch
            sleep(interval_s)
    finally:
        display.end()


# ---------------------------------------------------------------------------------------
# what the commands print


def _when(at: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) if at else "-"


def summary(batch: dict) -> list[str]:
    """A finished (or any) batch in a few lines: status, counts, timing, its files, errors."""
    done, failed, total = _counts(batch)
    head = f"batch {batch.get('id')}: {batch.get('status')}, {done} done, {failed} failed"
    lines = [f"{head} of {total}"]
    started = batch.get("in_progress_at") or batch.get("created_at")
    ended = next(
        (batch.get(f"{s}_at") for s in ENDED if batch.get(f"{s}_at")), batch.get("finalizing_at")
    )
    if started and ended and ended >= started:
        seconds = ended - started
        per_s = f", {(done + failed) / seconds:.2f} lines/s" if seconds > 0 else ""
        lines.append(
            f"  ran {_duration(seconds)}{per_s} (created {_when(batch['created_at'])} UTC)"
        )
    usage = batch.get("usage") or {}
    if usage.get("total_tokens"):
        cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
        lines.append(
            f"  tokens: {usage.get('input_tokens', 0)} in ({cached} from the prefix cache), "
            f"{usage.get('output_tokens', 0)} out"
        )
    for key in ("output_file_id", "error_file_id"):
        if batch.get(key):
            lines.append(f"  {key}: {batch[key]}")
    errors = (batch.get("errors") or {}).get("data") or []
    for error in errors[:20]:
        where = f"line {error['line']}: " if error.get("line") is not None else ""
        param = f" ({error['param']})" if error.get("param") else ""
        lines.append(f"  error {where}{error.get('code')}: {error.get('message')}{param}")
    if len(errors) > 20:
        lines.append(f"  ... and {len(errors) - 20} more errors (arc-gateway batch show --json)")
    return lines


def download_results(gateway: Gateway, batch: dict, folder: Path) -> list[Path]:
    """The batch's output and error files into `folder`, as BATCH-output.jsonl and
    BATCH-errors.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for key, suffix in (("output_file_id", "output"), ("error_file_id", "errors")):
        if batch.get(key):
            dest = folder / f"{batch['id']}-{suffix}.jsonl"
            gateway.download(batch[key], dest)
            saved.append(dest)
    return saved


def finish(gateway: Gateway, batch: dict, args: argparse.Namespace) -> int:
    """Prints the ended batch (and downloads its files); 0 when it completed."""
    if args.json:
        print(json.dumps(batch))
    else:
        print("\n".join(summary(batch)))
    if args.download:
        for path in download_results(gateway, batch, args.download):
            print(f"saved {path}", file=sys.stderr)
    return 0 if batch.get("status") == "completed" else 1


# ---------------------------------------------------------------------------------------
# the commands


def check_jsonl(path: Path) -> int:
    """A quick look before uploading: every non-empty line a JSON object; the line count."""
    count = 0
    try:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except ValueError as e:
                    raise CommandError(f"{path}:{number}: not JSON ({e})") from e
                if not isinstance(line, dict):
                    raise CommandError(f"{path}:{number}: a line is a JSON object, one request")
                count += 1
    except OSError as e:
        raise CommandError(f"cannot read {path}: {e.strerror or e}") from e
    if not count:
        raise CommandError(f"{path}: no request in it (one JSON object a line)")
    return count


def _metadata(pairs: list[str]) -> dict[str, str] | None:
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--metadata takes KEY=VALUE, not {pair!r}")
        found[key] = value
    return found or None


def cmd_submit(gateway: Gateway, args: argparse.Namespace) -> int:
    lines = check_jsonl(args.file)
    uploaded = gateway.upload(args.file, "batch", f"uploading {args.file}", "application/jsonl")
    body: dict[str, Any] = {
        "input_file_id": uploaded["id"],
        "endpoint": args.endpoint,
        "completion_window": args.completion_window,
    }
    metadata = _metadata(args.metadata)
    if metadata:
        body["metadata"] = metadata
    batch = gateway.json("POST", "/v1/batches", "creating the batch", json=body)
    print(
        f"uploaded {args.file} ({lines} lines) as {uploaded['id']}; batch {batch['id']} "
        f"{batch.get('status')}",
        file=sys.stderr,
    )
    if not (args.wait or args.download):
        print(batch["id"])
        print(f"follow it with: arc-gateway batch watch {batch['id']}", file=sys.stderr)
        return 0
    return _watch_and_finish(gateway, batch["id"], args)


def _watch_and_finish(gateway: Gateway, batch_id: str, args: argparse.Namespace) -> int:
    try:
        batch = watch(gateway, batch_id, args.interval, sys.stderr)
    except KeyboardInterrupt:
        print(
            f"\nstopped watching; the batch goes on (arc-gateway batch watch {batch_id}, "
            f"or arc-gateway batch cancel {batch_id})",
            file=sys.stderr,
        )
        return 130
    return finish(gateway, batch, args)


def cmd_watch(gateway: Gateway, args: argparse.Namespace) -> int:
    return _watch_and_finish(gateway, args.batch_id, args)


def cmd_show(gateway: Gateway, args: argparse.Namespace) -> int:
    batch = gateway.batch(args.batch_id)
    if args.json:
        print(json.dumps(batch, indent=2))
    else:
        print("\n".join(summary(batch)))
        print(f"  {progress_line(batch, None)}")
    return 0


def _pages(gateway: Gateway, after: str | None, limit: int, every: bool) -> Iterator[dict]:
    while True:
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        page = gateway.json("GET", "/v1/batches", "listing the batches", params=params)
        data = page.get("data") or []
        yield from data
        if not (every and page.get("has_more") and data):
            return
        after = page.get("last_id") or data[-1]["id"]


def cmd_list(gateway: Gateway, args: argparse.Namespace) -> int:
    batches = _pages(gateway, args.after, args.limit, args.all)
    if args.json:
        for batch in batches:
            print(json.dumps(batch))
        return 0
    print(f"{'ID':34} {'STATUS':11} {'DONE':>7} {'FAILED':>7} {'TOTAL':>7} {'CREATED (UTC)':19} "
          "INPUT")  # fmt: skip
    for batch in batches:
        done, failed, total = _counts(batch)
        print(
            f"{batch['id']:34} {batch.get('status', '?'):11} {done:>7} {failed:>7} {total:>7} "
            f"{_when(batch.get('created_at')):19} {batch.get('input_file_id', '')}"
        )
    return 0


def cmd_cancel(gateway: Gateway, args: argparse.Namespace) -> int:
    batch = gateway.json(
        "POST", f"/v1/batches/{args.batch_id}/cancel", f"cancelling batch {args.batch_id}"
    )
    print(f"batch {batch['id']}: {batch.get('status')}", file=sys.stderr)
    if args.wait and batch.get("status") not in ENDED:
        args.json, args.download = False, None
        try:
            batch = watch(gateway, batch["id"], args.interval, sys.stderr)
        except KeyboardInterrupt:
            return 130
    print("\n".join(summary(batch)))
    return 0


def videos_in(folder: Path, recursive: bool) -> list[Path]:
    if not folder.is_dir():
        raise CommandError(f"--folder {folder}: not a folder")
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def request_line(custom_id: str, file_id: str, args: argparse.Namespace) -> dict:
    """One batch line asking `args.question` about the stored file `file_id`."""
    content: list[dict] = [{"type": "video_url", "video_url": {"url": file_id}}]
    if args.question:
        content.append({"type": "text", "text": args.question})
    body: dict[str, Any] = {
        "model": "arc",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": args.max_tokens,
    }
    if args.task:
        body["video"] = {"task": args.task}
    if args.response_format:
        body["response_format"] = args.response_format
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}


def cmd_make(gateway: Gateway, args: argparse.Namespace) -> int:
    if not args.question and args.task not in ("summary", "chapters", "none"):
        raise CommandError("--question is needed, except with --task summary or chapters")
    if args.response_format:
        try:
            args.response_format = json.loads(Path(args.response_format).read_text())
        except (OSError, ValueError) as e:
            raise CommandError(f"--response-format {args.response_format}: {e}") from e
    videos = videos_in(args.folder, args.recursive)
    if not videos:
        raise CommandError(f"no video in {args.folder} ({', '.join(VIDEO_SUFFIXES)})")
    out = sys.stdout if args.out is None else args.out.open("w")
    failed = 0
    try:
        for k, path in enumerate(videos, 1):
            name = str(path.relative_to(args.folder))
            try:
                stored = gateway.upload(path, "user_data", f"uploading {name}", "video/mp4")
            except CommandError as e:
                # A video the gateway refuses is skipped; no key, or no gateway, ends it all.
                if isinstance(e, Unreachable) or e.status in (401, 403, 404):
                    raise
                failed += 1
                print(f"[{k}/{len(videos)}] skipped: {e}", file=sys.stderr)
                continue
            out.write(json.dumps(request_line(name, stored["id"], args)) + "\n")
            out.flush()
            print(f"[{k}/{len(videos)}] {name} -> {stored['id']}", file=sys.stderr)
    finally:
        if out is not sys.stdout:
            out.close()
    print(
        f"{len(videos) - failed} lines written" + (f", {failed} videos skipped" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------
# the command line


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get(URL_ENV) or DEFAULT_URL,
        help=f"the gateway (env {URL_ENV}; default {DEFAULT_URL}; a trailing /v1 is fine)",
    )
    parser.add_argument(
        "--api-key",
        help=f"the API key (prefer the env {KEY_ENV}: a command line is visible to others)",
    )


def _watch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between polls (default 2)"
    )
    parser.add_argument(
        "--download",
        type=Path,
        metavar="DIR",
        help="save the output and error files there once it ends (BATCH-output.jsonl, "
        "BATCH-errors.jsonl)",
    )
    parser.add_argument("--json", action="store_true", help="print the ended batch as JSON")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arc-gateway batch",
        description=textwrap.fill(
            "Run many chat requests as one batch on a running gateway (OpenAI's Batch API): "
            "a JSONL file of requests, one a line ({custom_id, method: POST, url: "
            "/v1/chat/completions, body}), is uploaded and run at a lower priority than "
            "interactive requests; the answers come back as an output file (and the failures "
            "as an error file), each line with its custom_id. The batch lives in the "
            "gateway's database: it survives restarts, and stopping a `watch` stops nothing.",
            79,
            break_on_hyphens=False,
        ),
        epilog="examples:\n"
        "  export ARC_BASE_URL=http://127.0.0.1:8080 ARC_API_KEY=sk-arc-...\n"
        "  arc-gateway batch make --folder videos/ --task summary > lines.jsonl\n"
        "  arc-gateway batch submit lines.jsonl --wait --download results/\n"
        "  arc-gateway batch submit lines.jsonl            # prints the batch id\n"
        "  arc-gateway batch watch batch_abc123 --download results/\n"
        "  arc-gateway batch list\n"
        "  arc-gateway batch cancel batch_abc123\n"
        "exit status: 0 done (a batch that completed, some lines failed or not), 1 a batch that "
        "ended\nfailed, expired or cancelled (or videos skipped by make), 2 an error, 130 "
        "Ctrl-C.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser(
        "submit",
        help="upload a JSONL file of requests and create a batch (prints its id)",
        description="Upload LINES (JSONL, one request a line) with purpose=batch and create a "
        "batch of it; prints the batch id on stdout, or with --wait shows its progress until "
        "it ends and prints its output and error file ids.",
    )
    submit.add_argument("file", type=Path, metavar="LINES.jsonl", help="the requests")
    submit.add_argument("--wait", action="store_true", help="watch it until it ends")
    submit.add_argument("--endpoint", default=ENDPOINT, help=f"(default {ENDPOINT})")
    submit.add_argument("--completion-window", default="24h", help="(default 24h)")
    submit.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="(repeatable)"
    )
    _watch_options(submit)

    watch_cmd = commands.add_parser(
        "watch",
        help="a progress bar (done, failed, lines/s, ETA) until the batch ends",
        description="Polls the batch and draws its progress on stderr (done/failed/total, "
        "lines per second, ETA) until it ends; then prints its status and output/error file "
        "ids on stdout (and saves them with --download). A gateway that stops answering "
        "meanwhile is waited for. Ctrl-C stops watching, not the batch.",
    )
    watch_cmd.add_argument("batch_id", metavar="BATCH_ID")
    _watch_options(watch_cmd)

    show = commands.add_parser("show", help="one batch, now")
    show.add_argument("batch_id", metavar="BATCH_ID")
    show.add_argument("--json", action="store_true", help="the batch object as JSON")

    listing = commands.add_parser("list", help="your batches, newest first")
    listing.add_argument("--limit", type=_positive_int, default=20, help="(default 20)")
    listing.add_argument("--after", metavar="BATCH_ID", help="the page after this batch")
    listing.add_argument("--all", action="store_true", help="every page")
    listing.add_argument("--json", action="store_true", help="one JSON object per batch")

    cancel = commands.add_parser(
        "cancel",
        help="stop a batch: no new lines start; what finished is kept",
    )
    cancel.add_argument("batch_id", metavar="BATCH_ID")
    cancel.add_argument("--wait", action="store_true", help="until it is cancelled")
    cancel.add_argument("--interval", type=float, default=2.0, help="seconds between polls")

    make = commands.add_parser(
        "make",
        help="upload every video of a folder and write one request line per video",
        description="Uploads each video of --folder (purpose user_data: decoded once, kept "
        "by the gateway) and writes a batch line per video asking --question about it, on "
        "stdout or --out; custom_id = the video's path in the folder. Feed the result to "
        "`arc-gateway batch submit`.",
    )
    make.add_argument("--folder", type=Path, required=True, help="the videos")
    make.add_argument("--recursive", action="store_true", help="and its subfolders")
    make.add_argument("--question", help="asked about every video")
    make.add_argument("--task", choices=TASKS, help="the model's task (default: the gateway's)")
    make.add_argument("--max-tokens", type=_positive_int, default=512, help="(default 512)")
    make.add_argument(
        "--response-format",
        metavar="FILE",
        help="a JSON file holding a response_format (e.g. a json_schema for tags)",
    )
    make.add_argument("--out", type=Path, help="write the lines there instead of stdout")

    for command in (submit, watch_cmd, show, listing, cancel, make):
        _connection_options(command)
    return parser


COMMANDS: dict[str, Callable[[Gateway, argparse.Namespace], int]] = {
    "submit": cmd_submit,
    "watch": cmd_watch,
    "show": cmd_show,
    "list": cmd_list,
    "cancel": cmd_cancel,
    "make": cmd_make,
}


def main(argv: list[str]) -> int:
    """`argv` after `batch`: `arc-gateway batch submit lines.jsonl` gives ["submit", ...]."""
    args = build_parser().parse_args(argv)
    api_key = args.api_key or os.environ.get(KEY_ENV) or None
    try:
        gateway = Gateway(args.url, api_key)
    except CommandError as e:
        print(f"arc-gateway batch {args.command}: {e}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](gateway, args)
    except CommandError as e:
        print(f"arc-gateway batch {args.command}: {e}", file=sys.stderr)
        return 2
    finally:
        gateway.close()
