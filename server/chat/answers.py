"""The model's answer text -> a structured answer (`<think>`, `<answer>`, time ranges).

The authors' instructions ask for `<think> ... </think><answer> ... </answer>`; grounding
answers a time range and chapters list one range per line. Times come as HH:MM:SS,
MM:SS or plain seconds (the overlay on the frames uses HH:MM:SS, so the model tends to
answer in that form). Anything that does not parse leaves the field empty: the raw text
is always in `message.content`.

A JSON answer (response_format json_object or json_schema; `task` JSON_ANSWER) is not
parsed for tags or time ranges: the grammar leaves no room for tags, and the JSON is the
caller's own shape. Its `structured` is `{"thinking": null, "answer": <the JSON text>,
"segments": null}`: `answer` is `message.content`, stripped.
"""

from __future__ import annotations

import re

from arc_media.segments import clock

from ..schemas import Segment, StructuredAnswer

# The `task` that marks a JSON answer.
JSON_ANSWER = "json"

_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)
_TIME = r"(\d{1,2}:\d{1,2}:\d{1,2}(?:\.\d+)?|\d{1,3}:\d{1,2}(?:\.\d+)?|\d+(?:\.\d+)?)"
_RANGE = re.compile(
    _TIME + r"\s*(?:seconds|secs|sec|s)?\s*(?:-|–|to|~)\s*" + _TIME + r"\s*(?:seconds|secs|sec|s)?"
)
# A time in the overlay's clock form (HH:MM:SS or MM:SS) inside free text.
_CLOCK = re.compile(
    r"(?<![\d:.])(\d{1,2}:\d{1,2}:\d{1,2}(?:\.\d+)?|\d{1,3}:\d{2}(?:\.\d+)?)(?!\d|:\d)"
)


def seconds(text: str) -> float:
    parts = [float(p) for p in text.split(":")]
    total = 0.0
    for part in parts:
        total = total * 60 + part
    return total


def _segments(text: str, many: bool) -> list[Segment] | None:
    found: list[Segment] = []
    lines = text.splitlines() if many else [text]
    for line in lines:
        match = _RANGE.search(line)
        if not match:
            continue
        start, end = seconds(match.group(1)), seconds(match.group(2))
        if end < start:
            continue
        rest = (line[: match.start()] + line[match.end() :]).strip(" \t:-,.;")
        found.append(Segment(start=start, end=end, text=rest or None))
        if not many:
            break
    return found or None


def parse_answer(text: str | None, task: str | None) -> StructuredAnswer:
    if not text:
        return StructuredAnswer()
    if task == JSON_ANSWER:
        return StructuredAnswer(answer=text.strip() or None)
    think = _THINK.search(text)
    answer = _ANSWER.search(text)
    thinking = think.group(1).strip() if think else None
    final = answer.group(1).strip() if answer else None
    if final is None and think is None:
        final = text.strip()  # the plain form (task "none")
    segments = None
    if task in ("grounding", "chapters") and final:
        segments = _segments(final, many=task == "chapters")
    return StructuredAnswer(thinking=thinking, answer=final, segments=segments)


def shift_times(text: str, offset: float) -> str:
    """Every clock-form time in `text` (HH:MM:SS, MM:SS: what the overlay shows, counted
    from a segment's start) moved by `offset` seconds to the whole video's timeline. Plain
    numbers are left alone: they may be counts."""
    if not offset:
        return text
    return _CLOCK.sub(lambda m: clock(seconds(m.group(1)) + offset), text)


def shift_segments(segments: list[Segment] | None, start: float, end: float) -> list[Segment]:
    """Time ranges read from a segment's answer (its own seconds) on the whole video's
    timeline, kept inside the segment [start, end]."""
    length = end - start
    return [
        Segment(
            start=start + min(max(s.start, 0.0), length),
            end=start + min(max(s.end, 0.0), length),
            text=s.text,
        )
        for s in segments or []
    ]
