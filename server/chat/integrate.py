"""Integrating a long video's segment answers into one answer, per task.

Each segment's answer carries the overlay's segment-local times; here every time becomes a
position in the whole video (seconds, HH:MM:SS in text). Then, per task:

- `chapters`: the segments' chapters in order; where a cut between two segments falls
  inside a chapter (one ends at the cut, the next starts there), the integration pass is
  asked which cuts split one chapter, and those two are joined.
- `grounding`: each segment's candidate range; with two or more, the integration pass
  picks one; `structured.segments` holds the chosen range first, then the others (every
  candidate in order when it names none).
- `summary`, `qa`, `mcq`, `none`: the integration pass answers from a prompt that holds
  each segment's answer under its time range and the user's question.

The prompts are templates (`prompts/<task>.txt`, Python `string.Template`; documented in
docs/long-videos.md), replaceable with `--integrator-prompts DIR`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from arc_media.segments import Segment, clock

from ..schemas import Segment as TimeRange
from ..schemas import StructuredAnswer
from .answers import parse_answer, shift_segments, shift_times

PROMPTS = Path(__file__).with_name("prompts")
TASKS = ("qa", "summary", "mcq", "none", "grounding", "chapters")
# The segments' answers in a prompt, all together: about 6-8k tokens, which leaves the
# 20480-token context room for the answer. Each answer gets its share.
PROMPT_ANSWERS_CHARS = 24000
# A chapter ending (or starting) this close to a cut may be cut by it.
CUT_TOLERANCE_S = 10.0
# The decision passes (chapters, grounding) answer a number or a few.
DECISION_MAX_TOKENS = 128


def load_prompts(folder: str | Path | None = None) -> dict[str, Template]:
    """The templates, by task: the shipped ones, or those of `folder` where it has one."""
    found = {}
    for task in TASKS:
        path = Path(folder) / f"{task}.txt" if folder else None
        if path is None or not path.is_file():
            path = PROMPTS / f"{task}.txt"
        found[task] = Template(path.read_text())
    return found


@dataclass
class SegmentResult:
    """One segment's answer, on the whole video's timeline."""

    segment: Segment
    content: str  # the model's text as it came
    answer: str  # its answer (the <answer> part, or all of it), times made absolute
    ranges: list[TimeRange]  # grounding and chapters: its ranges, absolute


def segment_result(segment: Segment, content: str | None, task: str) -> SegmentResult:
    content = content or ""
    parsed = parse_answer(content, task)
    answer = parsed.answer if parsed.answer is not None else content.strip()
    return SegmentResult(
        segment=segment,
        content=content,
        answer=shift_times(answer, segment.start),
        ranges=shift_segments(parsed.segments, segment.start, segment.end),
    )


def _span(start: float, end: float) -> str:
    return f"{clock(start)}-{clock(end)}"


def _clipped(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def answer_prompt(
    templates: dict[str, Template], task: str, question: str, results: list[SegmentResult]
) -> str:
    """summary, qa, mcq, none: each segment's answer under its range, and the question."""
    count = len(results)
    share = max(200, PROMPT_ANSWERS_CHARS // max(1, count))
    blocks = [
        f"[Segment {r.segment.index + 1} of {count}, "
        f"{_span(r.segment.start, r.segment.end)}]\n{_clipped(r.answer, share) or '(no answer)'}"
        for r in results
    ]
    return templates[task].safe_substitute(segments="\n\n".join(blocks), question=question).strip()


def evidence(results: list[SegmentResult]) -> str:
    """The segments' own answers under their ranges: the answer when the task's format
    could not be read from any of them."""
    return "\n\n".join(
        f"[{_span(r.segment.start, r.segment.end)}] {r.answer}".rstrip() for r in results
    )


# -- grounding -----------------------------------------------------------------------------


def grounding_candidates(results: list[SegmentResult]) -> list[TimeRange]:
    """Each segment's first range, in order (a segment that found none has no candidate)."""
    found = []
    for r in results:
        if r.ranges:
            first = r.ranges[0]
            found.append(TimeRange(start=first.start, end=first.end, text=r.answer or None))
    return found


def grounding_prompt(
    templates: dict[str, Template], question: str, candidates: list[TimeRange]
) -> str:
    share = max(200, PROMPT_ANSWERS_CHARS // max(1, len(candidates)))
    lines = [
        f"{k + 1}. {_span(c.start, c.end)}: {_clipped(c.text or '', share)}"
        for k, c in enumerate(candidates)
    ]
    return (
        templates["grounding"]
        .safe_substitute(candidates="\n".join(lines), question=question)
        .strip()
    )


def chosen_candidate(text: str | None, candidates: list[TimeRange]) -> int | None:
    """The candidate the pass named: its number, else the range it gave (the candidate
    that overlaps it most); None when it names none."""
    answer = parse_answer(text, "grounding")
    said = answer.answer or ""
    if answer.segments:
        picked = answer.segments[0]

        def overlap(c: TimeRange) -> float:
            return min(c.end, picked.end) - max(c.start, picked.start)

        best = max(range(len(candidates)), key=lambda k: overlap(candidates[k]))
        if overlap(candidates[best]) > 0:
            return best
    for number in re.findall(r"\d+", said):
        if 1 <= int(number) <= len(candidates):
            return int(number) - 1
    return None


def grounding_answer(
    candidates: list[TimeRange], chosen: int | None
) -> tuple[str, StructuredAnswer]:
    if not candidates:
        return "", StructuredAnswer()
    order = list(range(len(candidates)))
    if chosen is not None:
        order = [chosen] + [k for k in order if k != chosen]
    ranges = [TimeRange(start=candidates[k].start, end=candidates[k].end) for k in order]
    lines = [_span(r.start, r.end).replace("-", " - ") for r in ranges]
    shown = lines[0] if chosen is not None else "\n".join(lines)
    content = f"<answer>{shown}</answer>"
    return content, StructuredAnswer(answer=shown, segments=ranges)


# -- chapters ------------------------------------------------------------------------------


@dataclass
class Cut:
    """A cut between two segments that may split one chapter: the chapter before it (its
    index in the list) and the one after."""

    before: int
    at: float


def chapter_list(results: list[SegmentResult]) -> list[TimeRange]:
    return [c for r in results for c in r.ranges]


def chapter_cuts(results: list[SegmentResult], chapters: list[TimeRange]) -> list[Cut]:
    """The cuts where one segment's last chapter ends at the cut and the next segment's
    first chapter starts there (within CUT_TOLERANCE_S)."""
    cuts = []
    position = 0
    for left, right in itertools.pairwise(results):
        position += len(left.ranges)
        if not left.ranges or not right.ranges:
            continue
        at = left.segment.end
        if at - left.ranges[-1].end <= CUT_TOLERANCE_S and right.ranges[0].start - at <= (
            CUT_TOLERANCE_S
        ):
            cuts.append(Cut(before=position - 1, at=at))
    return cuts


def chapters_prompt(
    templates: dict[str, Template], chapters: list[TimeRange], cuts: list[Cut]
) -> str:
    lines = []
    for k, cut in enumerate(cuts):
        a, b = chapters[cut.before], chapters[cut.before + 1]
        lines.append(
            f"{k + 1}. cut at {clock(cut.at)}: before it {_span(a.start, a.end)} "
            f'"{_clipped(a.text or "", 300)}"; after it {_span(b.start, b.end)} '
            f'"{_clipped(b.text or "", 300)}"'
        )
    return templates["chapters"].safe_substitute(cuts="\n".join(lines)).strip()


def joined_cuts(text: str | None, cuts: list[Cut]) -> set[int]:
    """The cuts the pass says split one chapter (numbers 1..len(cuts); 0 or nothing: none)."""
    said = parse_answer(text, "none").answer or ""
    return {int(n) - 1 for n in re.findall(r"\d+", said) if 1 <= int(n) <= len(cuts)}


def chapters_answer(
    chapters: list[TimeRange], cuts: list[Cut], joined: set[int]
) -> tuple[str, StructuredAnswer]:
    """The chapters in order, those a joined cut split made one (the text of the first,
    the second's added when it says something else)."""
    merge_after = {cuts[k].before for k in joined}
    merged: list[TimeRange] = []
    for k, chapter in enumerate(chapters):
        if merged and k - 1 in merge_after:
            last = merged[-1]
            text = last.text
            if chapter.text and chapter.text != last.text:
                text = f"{last.text}; {chapter.text}" if last.text else chapter.text
            merged[-1] = TimeRange(start=last.start, end=chapter.end, text=text)
        else:
            merged.append(chapter)
    lines = [
        f"{clock(c.start)} - {clock(c.end)}" + (f": {c.text}" if c.text else "") for c in merged
    ]
    shown = "\n".join(lines)
    return f"<answer>\n{shown}\n</answer>", StructuredAnswer(answer=shown, segments=merged or None)


__all__ = [
    "DECISION_MAX_TOKENS",
    "Cut",
    "SegmentResult",
    "answer_prompt",
    "chapter_cuts",
    "chapter_list",
    "chapters_answer",
    "chapters_prompt",
    "chosen_candidate",
    "evidence",
    "grounding_answer",
    "grounding_candidates",
    "grounding_prompt",
    "joined_cuts",
    "load_prompts",
    "segment_result",
]
