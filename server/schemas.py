"""Request and response bodies (OpenAI's shapes, with the gateway's extras)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .errors import APIError
from .priority import INTERACTIVE, MAX_PRIORITY
from .response_format import ResponseFormat, SchemaLimits, check_schema

if TYPE_CHECKING:
    from .config import Settings

TaskName = Literal["qa", "summary", "grounding", "mcq", "chapters", "none"]


class _Closed(BaseModel):
    # Unknown keys are refused, not ignored: vLLM decides what a content part is by its
    # keys (a `uuid` makes it ignore `type`), so nothing the gateway did not check may pass.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class VideoURL(_Closed):
    url: str = Field(description="https URL, data: URL, or a file id from /v1/files")


class FileRef(_Closed):
    file_id: str = Field(max_length=64)
    filename: str | None = Field(default=None, max_length=255, description="ignored")


CONTENT_TYPES = ("text", "video_url", "file")
# Each part type and the one key that carries its value.
_PART_KEYS = {"text": "text", "video_url": "video_url", "file": "file"}


class ContentPart(_Closed):
    type: str
    text: str | None = None
    video_url: VideoURL | None = None
    file: FileRef | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") not in CONTENT_TYPES:
            raise PydanticCustomError(
                "unsupported_content",
                "content type {kind} is not supported: send one video (video_url or file) and text",
                {"kind": repr(data.get("type"))[:40]},
            )
        return data

    @model_validator(mode="after")
    def _keys_match_type(self) -> ContentPart:
        wanted = _PART_KEYS[self.type]
        if getattr(self, wanted) is None:
            raise ValueError(f"a {self.type!r} part needs {wanted!r}")
        for key in _PART_KEYS.values():
            if key != wanted and getattr(self, key) is not None:
                raise ValueError(f"a {self.type!r} part takes no {key!r}")
        return self


class Message(_Closed):
    role: Literal["user", "system", "assistant", "developer"]
    content: list[ContentPart] | None = None
    name: str | None = Field(default=None, max_length=64)

    @field_validator("content", mode="before")
    @classmethod
    def _text_as_part(cls, value: Any) -> Any:
        # A plain string is one text part: one shape to check and to rebuild.
        return [{"type": "text", "text": value}] if isinstance(value, str) else value


class VideoOptions(_Closed):
    """The gateway's extras beside `messages` (clients that don't send it lose nothing)."""

    task: TaskName | None = Field(
        default=None,
        description="the authors' prompt preset; default qa (the question + the think/answer "
        "instruction); none sends the question alone",
    )
    start: float | None = Field(default=None, ge=0, description="clip start, seconds")
    end: float | None = Field(default=None, gt=0, description="clip end, seconds")
    segments: str | float = Field(
        default="auto",
        description="a video (or clip) longer than five minutes: auto cuts it into segments "
        "of 300 s, asked in parallel and integrated into one answer; off asks in one pass "
        "(150 frames spread over the whole video); a number (60-300) is the seconds per "
        "segment",
    )

    @field_validator("segments", mode="before")
    @classmethod
    def _segments(cls, value: Any) -> Any:
        if value in ("auto", "off"):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool) and 60 <= value <= 300:
            return float(value)
        raise ValueError('must be "auto", "off" or the seconds per segment, from 60 to 300')

    @field_validator("end")
    @classmethod
    def _clip_order(cls, end: float | None, info: ValidationInfo) -> float | None:
        start = info.data.get("start")
        if start is not None and end is not None and end <= start:
            raise ValueError(f"must be after video.start ({start:g} s); it is {end:g} s")
        return end


class StreamOptions(_Closed):
    include_usage: bool = False


class TemplateOptions(_Closed):
    """The chat template's one input (other keys would reach its Jinja)."""

    task: TaskName | None = None


# The sampling parameters that go to vLLM, each with the bounds vLLM accepts. Anything
# else (chat_template, mm_processor_kwargs, tools, logit_bias, truncate_prompt_tokens...)
# is refused with a 400 naming it.
SAMPLING_PARAMETERS = (
    "max_tokens",
    "max_completion_tokens",
    "min_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "seed",
    "n",
    "stop",
    "ignore_eos",
    "logprobs",
    "top_logprobs",
    "return_token_ids",
    "user",
)


# The tasks whose prompt needs the user's question. The authors have a question of their
# own only for summary and chapters (arc-serve's chat template adds it when the text is
# empty: vllm_plugin/prompts.py), and "none" sends whatever text there is.
TASKS_NEEDING_A_QUESTION = ("qa", "grounding", "mcq")


class ChatCompletionRequest(_Closed):
    model: str | None = Field(default=None, max_length=256, description="ignored: one model")
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    min_tokens: int | None = Field(default=None, ge=0, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1, le=1_000_000)
    min_p: float | None = Field(default=None, ge=0, le=1)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: float | None = Field(default=None, gt=0, le=2)
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    n: int | None = Field(default=None, ge=1, le=16)
    stop: list[Annotated[str, Field(max_length=256)]] | None = Field(default=None, max_length=16)
    ignore_eos: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    return_token_ids: bool | None = None
    user: str | None = Field(default=None, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    chat_template_kwargs: TemplateOptions | None = None
    video: VideoOptions | None = None
    response_format: ResponseFormat | None = Field(
        default=None,
        description="text (default), json_object, or json_schema {name, schema, strict}: "
        "the answer is JSON that follows it (server.response_format)",
    )
    priority: int | None = Field(
        default=None,
        ge=INTERACTIVE,
        le=MAX_PRIORITY,
        description="0 (default) is interactive; a larger number is served after every "
        "request with a smaller one (a batch runner sends 10)",
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("n")
    @classmethod
    def _several_answers_are_sampled(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value > 1 and not info.data.get("temperature"):
            raise ValueError(
                f"asks for {value} answers, but without a temperature above 0 every answer "
                "is the same greedy one: set temperature (e.g. 0.7) or leave n at 1"
            )
        return value

    def answers_in_json(self) -> bool:
        return self.response_format is not None and self.response_format.is_json

    def template_task(self) -> str | None:
        """The task for the chat template: `video.task`, else `chat_template_kwargs.task`,
        else none for a JSON answer (the qa instruction asks for <think>/<answer> tags,
        which the JSON grammar leaves no room for), else None (the template's qa)."""
        template = self.chat_template_kwargs.task if self.chat_template_kwargs else None
        named = (self.video.task if self.video else None) or template
        return named or ("none" if self.answers_in_json() else None)

    def task(self) -> str:
        """The prompt preset: the template's task (`template_task`), else qa."""
        return self.template_task() or "qa"

    def check(self, settings: Settings) -> None:
        """What the request's fields alone cannot say: a question where the task needs one,
        a response_format schema within the gateway's limits. A 400 naming the problem."""
        self.check_question()
        self.check_response_format(settings)

    def check_response_format(self, settings: Settings) -> None:
        if self.response_format is not None and self.response_format.json_schema is not None:
            check_schema(
                self.response_format.json_schema.schema_, SchemaLimits.from_settings(settings)
            )

    def check_question(self) -> None:
        """A 400 when the task needs a question and the user message has no text: the model
        would answer the bare instruction (noise)."""
        task = self.task()
        content = self.messages[0].content or []
        if task not in TASKS_NEEDING_A_QUESTION or any(
            part.text and part.text.strip() for part in content
        ):
            return
        raise APIError(
            400,
            f"task {task!r} needs a question: add a text part to the user message "
            "(only summary and chapters have a default question)",
            "missing_question",
            param="messages[0].content",
        )

    def sampling_parameters(self) -> dict[str, Any]:
        """The sampling parameters for vLLM: those the request set, and temperature 0
        (greedy, as the authors generate) when it set none. Any upstream vLLM then answers
        greedily by default, whatever its own or the checkpoint's defaults."""
        sent = self.model_dump(include=set(SAMPLING_PARAMETERS), exclude_none=True)
        sent.setdefault("temperature", 0.0)
        return sent

    def engine_options(self) -> dict[str, Any]:
        """What else goes to vLLM: the response format of a JSON answer, and the priority
        when it is not the interactive one (vLLM's default)."""
        options: dict[str, Any] = {}
        if self.response_format is not None and self.response_format.is_json:
            options["response_format"] = self.response_format.upstream()
        if self.priority:
            options["priority"] = self.priority
        return options


class _EveryKey(BaseModel):
    """Serialized with every field, null included, even where the answer drops empty
    fields (exclude_none): clients read `structured["answer"]` without looking first."""

    @model_serializer(mode="wrap")
    def _every_key(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        return {name: data.get(name) for name in type(self).model_fields}


class Segment(_EveryKey):
    start: float
    end: float
    text: str | None = None


class StructuredAnswer(_EveryKey):
    """The answer parsed from the model's `<think>...</think><answer>...</answer>`: every
    key always present, null when the text has no such part."""

    thinking: str | None = None
    answer: str | None = None
    segments: list[Segment] | None = Field(
        default=None, description="grounding and chapters: time ranges in seconds"
    )


class SegmentUsage(BaseModel):
    """One segment of a segmented answer: where it is, what the model saw, what it said."""

    start: float  # seconds of the whole video
    end: float
    frames: int
    video_tokens: int
    has_audio: bool
    answer: str  # the segment's own answer, its times in the whole video's seconds


class VideoUsage(BaseModel):
    frames: int
    has_audio: bool
    video_tokens: int
    duration_s: float
    clip: list[float] | None = None
    segments: list[SegmentUsage] | None = None  # a segmented answer only


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    status: Literal["processed", "error"] = "processed"
    video: dict[str, Any] | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    # One page holds every file (the openai client pages on until has_more is false).
    has_more: bool = False


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "arc-video-serve"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ChoiceMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str = "assistant"
    content: str | None = None


class Choice(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    message: ChoiceMessage
    finish_reason: str | None = None
    structured: StructuredAnswer | None = None


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    video: VideoUsage | None = None


class ChatCompletion(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
