"""The authors' prompt format and task instructions (docs/model.md#prompts-and-generation),
exactly."""

from __future__ import annotations

from typing import Any

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


def chat_template() -> str:
    """A Jinja chat template for the checkpoint, which ships none
    (docs/model.md#prompts-and-generation).

    One user turn holding the video and the question; the task instruction is chosen
    with `chat_template_kwargs={"task": ...}` (default qa; "none" sends the question
    alone). A system prompt or a second turn is refused, since the model was trained on
    neither.
    """
    branches = "".join(
        f"{'if' if i == 0 else 'elif'} task == '{name}' %}}{{%- set instruction = "
        f"{text!r} -%}}{{%- "
        for i, (name, text) in enumerate(INSTRUCTIONS.items())
    )
    # Summary and chapters asked with the video alone get the authors' own question.
    defaults = "".join(
        f"{{%- if task == '{name}' and (content | replace('<vid>', '') | trim) == '' -%}}"
        f"{{%- set content = (content | trim) + '\\n' + {text!r} -%}}{{%- endif -%}}"
        for name, text in DEFAULT_QUESTIONS.items()
    )
    return (
        "{%- set task = (task | default('qa')) | lower -%}"
        "{%- if messages | length != 1 or messages[0]['role'] != 'user' -%}"
        "{{- raise_exception('ARC-Hunyuan-Video answers a single user message: no system "
        "prompt, no earlier turns') -}}"
        "{%- endif -%}"
        "{%- set content = messages[0]['content'] -%}"
        "{%- if content is not string -%}"
        "{%- set content = content | selectattr('type', 'equalto', 'text') "
        "| map(attribute='text') | join('\\n') -%}"
        "{%- endif -%}"
        + defaults
        + "{%- "
        + branches
        + "elif task == 'none' %}{%- set instruction = '' -%}"
        "{%- else -%}{{- raise_exception('unknown task: ' + task) -}}{%- endif -%}"
        "<|startoftext|>{{ content }}"
        "{%- if instruction %}{{ '\\n' + instruction }}{% endif %}<sep>"
    )


def prompt_ids(tokenizer: Any, question: str | None, task: str) -> list[int]:
    """The token ids of one prompt (Path A): `<|startoftext|>`, the video placeholder the
    processor expands, the user text and `<sep>` (docs/model.md#prompts-and-generation)."""
    from .processor import ARCProcessingInfo

    start = tokenizer.convert_tokens_to_ids("<|startoftext|>")
    text = ARCProcessingInfo.VIDEO_PLACEHOLDER + user_text(question, task) + "<sep>"
    return [start] + tokenizer.encode(text, add_special_tokens=False)
