"""The planned frames as the model sees them: decoded, stamped, resized to 640x640.

`decode_frames` gets the planned frames from a decoder, burns each one's timestamp at full
resolution and resizes it (bicubic) on a few stamping threads while the next frames decode
(PIL and libav release the GIL), so only a few full-size frames are in memory at once. Two
decoders give the same frames: "pyav" (default), in process, which leaves out the packets
no planned frame needs (`frame_decode`), and "ffmpeg", one hardened ffmpeg process whose
`select` filter keeps the planned frame numbers (it decodes every frame to get there; kept
as a cross-check and a fallback). `ARC_DECODER` picks the default. Frames the header
promised but the stream does not deliver repeat the last decoded picture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import av
import numpy as np
from PIL import Image

from . import ffmpeg, frame_decode
from .clock import NO_CLOCK, StageClock
from .limits import MediaError, MediaTimeoutError
from .model_inputs import IMAGE_SIZE
from .overlay import draw_timestamp
from .probe import VideoProbe

# Threads that stamp and resize decoded frames (PIL releases the GIL while resizing).
STAMP_THREADS = max(1, min(4, os.cpu_count() or 1))


class FrameDecoder(Protocol):
    """Yields (frame number, RGB uint8 [height, width, 3] at the probe's display size) for
    the `wanted` frame numbers (sorted, of the clip's frames when a clip is given)."""

    def __call__(
        self,
        path: Path,
        probe: VideoProbe,
        wanted: Sequence[int],
        *,
        clip: tuple[float, float] | None,
        timeout_s: float | None,
        threads: int | None,
    ) -> Iterator[tuple[int, np.ndarray]]: ...


def _select_expr(indices: Sequence[int]) -> str:
    """`eq(n,a)+eq(n,b)+...` as a balanced tree: ffmpeg's expression parser gives up on a
    flat sum of ~100 terms (nesting depth), a tree stays ~8 levels deep."""
    terms = [f"eq(n,{i})" for i in sorted(set(indices))]
    while len(terms) > 1:
        pairs = [f"({a}+{b})" for a, b in zip(terms[0::2], terms[1::2])]
        terms = pairs + ([terms[-1]] if len(terms) % 2 else [])
    return terms[0]


def _ffmpeg_frames(
    path: Path,
    probe: VideoProbe,
    wanted: Sequence[int],
    *,
    clip: tuple[float, float] | None,
    timeout_s: float | None,
    threads: int | None,
) -> Iterator[tuple[int, np.ndarray]]:
    """The `ffmpeg` decoder: one ffmpeg process, `select` keeps the wanted frame numbers,
    ffmpeg's autorotate turns the picture, rgb24 comes through a pipe one frame at a time.
    ffmpeg decodes every frame to get there."""
    width, height = probe.width, probe.height
    stream = ffmpeg.safe_input(path, clip=clip, threads=threads).video
    stream = stream.filter("select", _select_expr(wanted))
    # scale to the probed display size: a no-op normally, but it keeps every raw frame
    # the size we slice by even if the stream changes resolution midway.
    stream = stream.filter("scale", width, height).filter("format", "rgb24")
    sync = {"fps_mode": "passthrough"} if ffmpeg.has_fps_mode() else {"vsync": "passthrough"}
    out = stream.output(
        "pipe:1",
        format="rawvideo",
        pix_fmt="rgb24",
        an=None,
        sn=None,
        # stop as soon as the last wanted frame has come out
        **{"frames:v": len(wanted)},
        **sync,
    )
    frame_bytes = width * height * 3
    proc = ffmpeg.Process(ffmpeg.command(out), timeout_s, "ffmpeg (video)")
    got = 0
    try:
        assert proc.proc.stdout is not None
        while got < len(wanted):
            buf = proc.proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            yield wanted[got], np.frombuffer(buf, np.uint8).reshape(height, width, 3)
            got += 1
    except BaseException:
        proc.kill()
        raise
    if got == len(wanted):
        proc.kill()  # -frames:v makes it exit by itself; this only reaps it
        if proc.timed_out:
            raise MediaTimeoutError(
                f"ffmpeg (video) took longer than the time limit of {timeout_s:g} s"
            )
        return
    code, err = proc.finish()
    if got == 0 and code != 0:
        raise MediaError(f"could not decode the video: {ffmpeg.last_lines(err)}")


def _pyav_frames(
    path: Path,
    probe: VideoProbe,
    wanted: Sequence[int],
    *,
    clip: tuple[float, float] | None,
    timeout_s: float | None,
    threads: int | None,
) -> Iterator[tuple[int, np.ndarray]]:
    """The `pyav` decoder (default): in process, non-reference frames nothing needs are
    left out (`frame_decode`)."""
    try:
        yield from frame_decode.decode_selected(
            path,
            wanted,
            width=probe.width,
            height=probe.height,
            rotation=probe.rotation,
            window=probe.window(clip),
            container_options=ffmpeg.demuxer_options(),
            timeout_s=timeout_s,
            threads=threads,
        )
    except frame_decode.DecodeTimeout:
        raise MediaTimeoutError(
            f"decoding the video took longer than the time limit of {timeout_s:g} s"
        ) from None
    except (frame_decode.DecodeError, av.error.FFmpegError) as exc:
        raise MediaError(f"could not decode the video: {exc}") from None


DECODERS: dict[str, FrameDecoder] = {"pyav": _pyav_frames, "ffmpeg": _ffmpeg_frames}


def decode_frames(
    path: Path,
    probe: VideoProbe,
    indices: Sequence[int],
    intervals: Sequence[tuple[int, int]],
    *,
    font_path: str,
    size: int = IMAGE_SIZE,
    clip: tuple[float, float] | None = None,
    timeout_s: float | None = None,
    threads: int | None = None,
    decoder: str | None = None,
    clock: StageClock = NO_CLOCK,
) -> np.ndarray:
    """Decode only the frames at `indices` (decoded-frame numbers, like decord's), stamp
    each at full resolution, resize to size x size. Returns uint8 [N, size, size, 3].
    Only a few full-size frames are in memory at once.

    `decoder`: "pyav" (default, in process, fastest) or "ffmpeg" (an ffmpeg process);
    both give the same frames. `ARC_DECODER` sets the default. `clock` gets the seconds
    spent in the decoder ("decode"), the overlay and the resize."""
    name = decoder or os.environ.get("ARC_DECODER") or "pyav"
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}")
    wanted = sorted(set(indices))
    # Below 1 fps two intervals can pick the same frame: each gets its own stamp.
    slots: dict[int, list[int]] = {}
    for k, index in enumerate(indices):
        slots.setdefault(index, []).append(k)
    stamped = np.empty((len(indices), size, size, 3), dtype=np.uint8)

    def finish_frame(rgb: np.ndarray, index: int) -> None:
        for k in slots[index]:
            image = Image.fromarray(rgb)  # a copy: the overlay draws on it
            with clock("overlay"):
                draw_timestamp(image, *intervals[k], font_path)
            with clock("resize"):
                stamped[k] = np.asarray(image.resize((size, size), Image.BICUBIC))

    last: np.ndarray | None = None
    done: set[int] = set()
    frames = DECODERS[name](path, probe, wanted, clip=clip, timeout_s=timeout_s, threads=threads)
    # Overlay and resize run on stamping threads while the next frames decode (PIL and
    # libav release the GIL); at most a few full-size frames wait in between.
    in_flight: list = []
    with ThreadPoolExecutor(max_workers=STAMP_THREADS) as stamper:
        try:
            while True:
                with clock("decode"):
                    item = next(frames, None)
                if item is None:
                    break
                index, rgb = item
                in_flight.append(stamper.submit(finish_frame, rgb, index))
                if len(in_flight) >= 2 * STAMP_THREADS + 2:
                    in_flight.pop(0).result()
                done.add(index)
                last = rgb
        finally:
            frames.close()
            for job in in_flight:
                job.result()
    if last is None:
        raise MediaError("could not decode the video: the decoder returned no frames")
    # The header promised more frames than the decoder delivered: the missing ones (at the
    # end) repeat the last decoded picture, each with its own stamp.
    for index in wanted:
        if index not in done:
            finish_frame(last, index)
    return stamped


__all__ = ["DECODERS", "STAMP_THREADS", "FrameDecoder", "decode_frames"]
