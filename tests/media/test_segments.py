"""The segment plan of long videos (arc_media/segments.py) and its clock."""

from __future__ import annotations

import pytest

from arc_media.segments import clock, plan_segments


def spans(start: float, end: float, length: float) -> list[tuple[float, float]]:
    return [(s.start, s.end) for s in plan_segments(start, end, length)]


def test_the_segment_plan() -> None:
    assert spans(0, 3600, 300) == [(300.0 * k, 300.0 * k + 300) for k in range(12)]
    assert spans(0, 420, 300) == [(0, 300), (300, 420)]
    assert spans(0, 310, 300) == [(0, 300), (300, 310)]  # a 10 s tail is a segment
    assert spans(0, 309.9, 300) == [(0, 309.9)]  # under 10 s it joins: one pass
    assert spans(0, 300, 300) == [(0, 300)]
    assert spans(35, 400, 120) == [(35, 155), (155, 275), (275, 400)]
    assert spans(0, 1e-3, 60) == [(0, 1e-3)]
    with pytest.raises(ValueError):
        plan_segments(10, 10, 60)
    assert plan_segments(0, 600, 300)[1].label(2) == "segment 2 of 2 (00:05:00-00:10:00, 300-600 s)"


def test_clock() -> None:
    assert clock(0) == "00:00:00" and clock(3725) == "01:02:05" and clock(61.5) == "00:01:01.5"
