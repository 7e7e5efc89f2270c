"""Hardened access to FFmpeg for untrusted files: child processes and in-process demuxers.

Every ffmpeg child runs without a shell, with `-nostdin`, reads the input by a `file:` name
(so a name can neither start an option nor pick a protocol), accepts only the `file`/`pipe`
protocols and the container formats of `ALLOWED_DEMUXERS`, and is killed at a wall-clock
limit; its stderr is drained on a thread and only its last lines, without server paths,
reach error messages. `set_child_limits` adds address-space and CPU-second limits to every
later child (the gateway's decode workers set them). `demuxer_options` gives PyAV the same
allow-lists and probing bounds for the in-process readers (probe, frame decoder).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import threading
from pathlib import Path

import ffmpeg  # ffmpeg-python (an absolute import: not this module)

from .limits import MediaError, MediaTimeoutError

FFMPEG = os.environ.get("ARC_FFMPEG", "ffmpeg")
# Demuxers we accept. Playlist-like formats (hls, concat, image2, ...) are left out on
# purpose: they open other files named inside the upload.
ALLOWED_DEMUXERS = (
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,ogg,asf,wav,mp3,aac,flac,ivf"
)
# Bounds for probing untrusted input (bytes / microseconds).
PROBE_SIZE = 20_000_000
ANALYZE_DURATION = 20_000_000


def input_name(path: Path) -> str:
    # "file:" + absolute path: a name can neither start an option ("-x") nor pick a
    # protocol ("concat:...").
    return "file:" + str(path.resolve())


def demuxer_options() -> dict[str, str]:
    """PyAV container options: the same allow-lists and probing bounds as the children."""
    return {
        "protocol_whitelist": "file",
        "format_whitelist": ALLOWED_DEMUXERS,
        "probesize": str(PROBE_SIZE),
        "analyzeduration": str(ANALYZE_DURATION),
    }


def last_lines(stderr: bytes, limit: int = 300) -> str:
    """ffmpeg's last error lines, without its "[demuxer @ 0x...]" prefixes and file names
    (no server paths in messages that go back to users)."""
    text = stderr.decode("utf-8", "replace")
    text = re.sub(r"\[[^\]]*@ 0x[0-9a-fA-F]+\]\s*", "", text)
    text = re.sub(r"file:\S+?: ", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(dict.fromkeys(lines[-3:]))[-limit:] if lines else "no details"


# Resource limits for every ffmpeg child (untrusted input): address space and
# CPU seconds. Off by default; the gateway's decode workers set them (`set_child_limits`).
_CHILD_LIMITS: dict[int, int] = {}


def set_child_limits(memory_mb: int | None = None, cpu_s: int | None = None) -> None:
    import resource

    _CHILD_LIMITS.clear()
    if memory_mb:
        _CHILD_LIMITS[resource.RLIMIT_AS] = int(memory_mb) * 1024 * 1024
    if cpu_s:
        _CHILD_LIMITS[resource.RLIMIT_CPU] = int(cpu_s)


def _limit_child(pid: int) -> None:
    # Set right after the start (no preexec_fn: unsafe in threaded parents); the child
    # has done nothing costly yet when it lands.
    if not _CHILD_LIMITS:
        return
    import resource

    for kind, value in _CHILD_LIMITS.items():
        try:
            resource.prlimit(pid, kind, (value, value))
        except (ProcessLookupError, PermissionError, OSError):
            pass


class Process:
    """A child process with a wall-clock limit; stderr is drained in a thread."""

    def __init__(self, args: list[str], timeout_s: float | None, what: str, stdin=None):
        self.what = what
        self.timeout_s = timeout_s
        self.timed_out = False
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _limit_child(self.proc.pid)
        self._stderr = bytearray()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self._timer = None
        if timeout_s is not None:
            self._timer = threading.Timer(timeout_s, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for chunk in iter(lambda: self.proc.stderr.read(4096), b""):
            self._stderr += chunk
            del self._stderr[:-16384]  # keep the tail only

    def _expire(self) -> None:
        self.timed_out = True
        self.proc.kill()

    def finish(self) -> tuple[int, bytes]:
        returncode = self.proc.wait()
        self._close()
        if self.timed_out:
            raise MediaTimeoutError(
                f"{self.what} took longer than the time limit of {self.timeout_s:g} s"
            )
        return returncode, bytes(self._stderr)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._reader.join(timeout=5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def run(args: list[str], timeout_s: float | None, what: str) -> bytes:
    """Run to the end, return stdout; MediaError with ffmpeg's last words on failure."""
    proc = Process(args, timeout_s, what)
    assert proc.proc.stdout is not None
    out = proc.proc.stdout.read()
    code, err = proc.finish()
    if code != 0:
        raise MediaError(f"{what} failed: {last_lines(err)}")
    return out


def command(stream: ffmpeg.nodes.OutputStream) -> list[str]:
    """ffmpeg-python builds the command; we add the hardening options in front."""
    return [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", *ffmpeg.get_args(stream)]


def safe_input(
    path: Path,
    *,
    clip: tuple[float, float] | None = None,
    threads: int | None = None,
) -> ffmpeg.nodes.FilterableStream:
    """The file as an ffmpeg input behind the allow-lists; `clip` = (start, end) seconds
    from the start of the file, as ffmpeg's `-ss`/`-t` count them."""
    options: dict[str, object] = {}
    if threads:
        options["threads"] = threads
    if clip is not None:
        options["ss"] = f"{clip[0]:.6f}"
        options["t"] = f"{clip[1] - clip[0]:.6f}"
    return ffmpeg.input(
        input_name(path),
        protocol_whitelist="file,pipe",
        format_whitelist=ALLOWED_DEMUXERS,
        **options,
    )


def pipe_input(format_name: str) -> ffmpeg.nodes.FilterableStream:
    """Our own stdin (another child's output), read as `format_name`."""
    return ffmpeg.input("pipe:0", format=format_name, protocol_whitelist="pipe")


@functools.lru_cache(maxsize=1)
def has_fps_mode() -> bool:
    """`-fps_mode` exists from ffmpeg 5.1; older ones only know `-vsync`."""
    try:
        out = subprocess.run(
            [FFMPEG, "-hide_banner", "-h", "full"], capture_output=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return True
    return b"-fps_mode" in out


__all__ = [
    "ALLOWED_DEMUXERS",
    "FFMPEG",
    "Process",
    "command",
    "demuxer_options",
    "has_fps_mode",
    "input_name",
    "last_lines",
    "pipe_input",
    "run",
    "safe_input",
    "set_child_limits",
]
