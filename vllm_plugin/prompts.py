"""The authors' prompt format and task instructions (ARC_MODEL.md §6.3), exactly."""

from __future__ import annotations

_THINK = "Output the thinking process in <think> </think> and final answer"
_TAIL = (
    " in <answer> </answer> tags, i.e., <think> reasoning process here </think>"
    "<answer> answer here </answer>."
)
INSTRUCTIONS = {
    "mcq": _THINK + " (only option index)" + _TAIL,
    "grounding": _THINK + " (only time range)" + _TAIL,
    "qa": _THINK + _TAIL,
    "summary": _THINK + _TAIL,
    "chapters": _THINK + _TAIL,
}
TASKS = tuple(INSTRUCTIONS)
# The authors' own questions for the tasks that need none from the user.
DEFAULT_QUESTIONS = {
    "summary": "Describe the video content.",
    "chapters": "Localize video chapters with temporal boundaries and the corresponding "
    "sentence description.",
}


def instruction(task: str) -> str:
    try:
        return INSTRUCTIONS[task.lower()]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}") from None


def user_text(question: str | None, task: str = "qa") -> str:
    """The text after the video: `\\n{question}\\n{INSTRUCTION}` (the caller adds `<sep>`)."""
    task = task.lower()
    if not question:
        question = DEFAULT_QUESTIONS.get(task)
        if question is None:
            raise ValueError(f"task {task!r} needs a question")
    return f"\n{question}\n{instruction(task)}"
