"""A clip (a long video's segment) reads only its own part of the file: its frames are
decoded from the keyframe before it, its frames counted from there, and the demuxer stops
at the end of its window. The frames are those a decode of the whole file shows in the
window, on MP4 (B frames, open GOPs), Matroska, MPEG-TS (whose seeks land on any packet)
and WebM/VP9."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from media_factory import card_luma, ffmpeg

from arc_media import frame_decode
from arc_media.pipeline import prepare_video
from arc_media.probe import count_frames, probe_video


@pytest.fixture
def packets_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the packets every reader of a file takes from the demuxer (probe, scan and
    decode all go through `frame_decode.window_packets`)."""
    read = [0]
    original = frame_decode.window_packets

    def counting(*args: object, **kwargs: object) -> Iterator[av.Packet]:
        for packet in original(*args, **kwargs):
            read[0] += 1
            yield packet

    monkeypatch.setattr(frame_decode, "window_packets", counting)
    return read


def _all_packets(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for p in container.demux(container.streams.video[0]) if p.size)


def test_a_late_segment_reads_about_what_an_early_one_does(
    long_video: Path, packets_read: list[int]
) -> None:
    total = _all_packets(long_video)
    read = {}
    for start in (0.0, 360.0):
        packets_read[0] = 0
        video = prepare_video(long_video, start=start, end=start + 60, audio_mode="direct")
        assert video.num_frames == 60
        read[start] = packets_read[0]
    # Counting, scanning and decoding a minute: about 3 x its 120 packets plus a GOP each,
    # whether the minute is the first or the seventh of the video (840 packets).
    assert read[360.0] <= 1.2 * read[0.0]
    assert read[360.0] < 0.6 * total, (read, total)


def _card_colour(path: Path, second: float) -> np.ndarray:
    """The mean RGB of the card at `second`, read by PyAV from the first frame there."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.time >= second:
                return frame.to_ndarray(format="rgb24")[30:60, 60:100].mean(axis=(0, 1))
    raise AssertionError(f"no frame at {second} s")


def test_a_segment_shows_its_own_cards(long_video: Path) -> None:
    video = prepare_video(long_video, start=300, end=420, audio_mode="direct")
    assert video.num_frames == 120 and video.duration == 120
    # Frame k is the middle of second k of the clip: the card of minute 5 for the first 60,
    # of minute 6 after (the picture's centre, away from the timestamp overlay).
    centre = video.frames[:, 400:440, 300:340].mean(axis=(1, 2))
    for frames, second in ((centre[:60], 330), (centre[60:], 390)):
        assert np.abs(frames - _card_colour(long_video, second)).max() < 3
    assert card_luma(330) != card_luma(390)


def test_window_counts_equal_a_full_count(long_video: Path) -> None:
    with av.open(str(long_video)) as container:
        stream = container.streams.video[0]
        times = [float(p.pts * stream.time_base) for p in container.demux(stream) if p.size]
    for window in ((0.0, 60.0), (123.4, 187.9), (360.0, 420.0), (415.0, 500.0)):
        expected = sum(window[0] <= t < window[1] for t in times)
        assert count_frames(long_video, 60, window) == expected


def _encode(path: Path, *args: str, seconds: int = 24) -> Path:
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=176x144:rate=25:duration={seconds}",
        *args, str(path),
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def containers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seek")
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "3", "-pix_fmt", "yuv420p"]
    vp9 = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k"]
    return {
        "mp4_bframes": _encode(root / "b.mp4", *x264, "-g", "48"),
        "open_gops": _encode(
            root / "open.mp4", *x264, "-x264-params", "keyint=30:min-keyint=30:open-gop=1"
        ),
        "mkv": _encode(root / "b.mkv", *x264, "-g", "48"),
        "annexb_ts": _encode(root / "b.ts", *x264, "-g", "48"),
        "vp9": _encode(root / "vp9.webm", *vp9, "-g", "50", seconds=12),
    }


def _whole_decode(path: Path, window: tuple[float, float]) -> list[np.ndarray]:
    """The frames shown in `window` (seconds of the file's timeline), in order, from a
    decode of the whole file: no seek, nothing left out."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        shown = {
            frame.pts: frame.to_ndarray(format="rgb24")
            for frame in container.decode(stream)
            if window[0] <= float(frame.pts * stream.time_base) < window[1]
        }
    return [shown[pts] for pts in sorted(shown)]


@pytest.mark.parametrize("name", ["mp4_bframes", "open_gops", "mkv", "annexb_ts", "vp9"])
def test_late_clips_are_the_frames_of_a_whole_decode(
    containers: dict[str, Path], name: str, packets_read: list[int]
) -> None:
    path = containers[name]
    probe = probe_video(path)
    end = min(probe.duration, 24.0)
    for start in (end - 7.3, end / 2):
        window = probe.window((start, end))
        expected = _whole_decode(path, window)
        assert count_frames(path, 60, window) == len(expected)
        wanted = list(range(3, len(expected), 7))
        packets_read[0] = 0
        got = dict(
            frame_decode.decode_selected(
                path, wanted, width=probe.width, height=probe.height, window=window
            )
        )
        assert sorted(got) == wanted
        for index in wanted:
            assert np.array_equal(got[index], expected[index]), (name, start, index)
    # The last clip (the second half) read about half of the file, twice (scan, decode).
    assert packets_read[0] < 1.6 * _all_packets(path), name


def test_a_clip_of_a_container_without_a_frame_count_reads_no_more_than_its_window(
    containers: dict[str, Path], packets_read: list[int]
) -> None:
    # Matroska keeps no frame count in its header: the whole video's count would be a
    # demux of the whole file; a clip has no use for it.
    path = containers["mkv"]
    assert probe_video(path).num_frames == 600
    packets_read[0] = 0
    assert probe_video(path, count=False).num_frames == 600  # duration x frame rate
    assert packets_read[0] == 0
    video = prepare_video(path, start=20, end=24, audio_mode="direct")
    assert video.vlen == 100
    assert packets_read[0] < 600
