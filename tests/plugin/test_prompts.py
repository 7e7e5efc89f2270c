"""The chat template renders the authors' prompts exactly (docs/model.md#prompts-and-generation)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
import pytest

from vllm_plugin.prompts import INSTRUCTIONS, chat_template, user_text


def render(content: str, **kwargs: object) -> str:
    env = jinja2.Environment()

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(chat_template()).render(
        messages=[{"role": "user", "content": content}], **kwargs
    )


# The task instructions as the model's specification lists them (its "prompts and generation"
# section, word for word): kept here so that no test reads a file outside the repository.
SPEC_INSTRUCTIONS = (
    "- `MCQ`: `Output the thinking process in <think> </think> and final answer (only option "
    "index) in <answer> </answer> tags, i.e., <think> reasoning process here </think><answer>"
    " answer here </answer>.`\n"
    "- `Grounding`: `Output the thinking process in <think> </think> and final answer (only "
    "time range) in <answer> </answer> tags, i.e., <think> reasoning process here "
    "</think><answer> answer here </answer>.`\n"
    "- any other task (`QA`, `summary`, `segment`): `Output the thinking process in <think> "
    "</think> and final answer in <answer> </answer> tags, i.e., <think> reasoning process "
    "here </think><answer> answer here </answer>.`\n"
)


def test_instructions_are_the_spec_strings() -> None:
    spec = SPEC_INSTRUCTIONS
    found = {
        name: re.search(rf"^- `?{name}`?[^:]*: `([^`]+)`", spec, re.MULTILINE).group(1)
        for name in ("MCQ", "Grounding", "any other task")
    }
    assert found["MCQ"] == INSTRUCTIONS["mcq"]
    assert found["Grounding"] == INSTRUCTIONS["grounding"]
    for task in ("qa", "summary", "chapters"):
        assert INSTRUCTIONS[task] == found["any other task"]


def test_summary_prompt_equals_golden(golden_dir: Path) -> None:
    meta = json.loads((golden_dir / "model/inputs/w33698kgs05/inputs.json").read_text())
    golden = meta["prompt_path_b_before_expansion"].replace("<image>" * 8, "<vid>")
    # vLLM puts the video placeholder before the text, joined by a newline.
    assert render("<vid>\nDescribe the video content.", task="summary") == golden
    assert "<vid>" + user_text(None, "summary") + "<sep>" == golden.removeprefix("<|startoftext|>")


def test_plain_question_and_refusals() -> None:
    assert render("<vid>\nHi", task="none") == "<|startoftext|><vid>\nHi<sep>"
    # No video at all (the gateway's integration pass): the text alone.
    assert render("Joined?", task="none") == "<|startoftext|>Joined?<sep>"
    assert render("Joined?", task="qa") == "<|startoftext|>Joined?\n" + INSTRUCTIONS["qa"] + "<sep>"
    with pytest.raises(ValueError, match="unknown task"):
        render("<vid>\nHi", task="poem")
    env_messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]
    env = jinja2.Environment()
    env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(ValueError(m))
    with pytest.raises(ValueError, match="single user message"):
        env.from_string(chat_template()).render(messages=env_messages)


def test_summary_and_chapters_without_a_question_use_the_authors_question(
    golden_dir: Path,
) -> None:
    meta = json.loads((golden_dir / "model/inputs/w33698kgs05/inputs.json").read_text())
    golden = meta["prompt_path_b_before_expansion"].replace("<image>" * 8, "<vid>")
    for video_alone in ("<vid>", "<vid>\n", "<vid>\n  "):
        assert render(video_alone, task="summary") == golden
    chapters = render("<vid>", task="chapters")
    assert chapters == "<|startoftext|><vid>" + user_text(None, "chapters") + "<sep>"
    # A question of the user's own is kept.
    assert "Describe" not in render("<vid>\nWho?", task="summary")
