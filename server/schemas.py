"""Request and response bodies (OpenAI's shapes, with the gateway's extras)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TaskName = Literal["qa", "summary", "grounding", "mcq", "chapters", "none"]


class VideoURL(BaseModel):
    url: str = Field(description="https URL, data: URL, or a file id from /v1/files")


class FileRef(BaseModel):
    file_id: str


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    video_url: VideoURL | None = None
    file: FileRef | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None


class VideoOptions(BaseModel):
    """The gateway's extras beside `messages` (clients that don't send it lose nothing)."""

    model_config = ConfigDict(extra="forbid")
    task: TaskName | None = Field(
        default=None,
        description="the authors' prompt preset; default qa (the question + the think/answer "
        "instruction); none sends the question alone",
    )
    start: float | None = Field(default=None, ge=0, description="clip start, seconds")
    end: float | None = Field(default=None, gt=0, description="clip end, seconds")

    @model_validator(mode="after")
    def _clip_order(self) -> VideoOptions:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"video.end ({self.end}) must be after video.start ({self.start})")
        return self


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # Other OpenAI / vLLM sampling parameters (logprobs, penalties...) pass through.
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    n: int | None = Field(default=None, ge=1, le=16)
    chat_template_kwargs: dict[str, Any] | None = None
    video: VideoOptions | None = None


class Segment(BaseModel):
    start: float
    end: float
    text: str | None = None


class StructuredAnswer(BaseModel):
    """The answer parsed from the model's `<think>...</think><answer>...</answer>`."""

    thinking: str | None = None
    answer: str | None = None
    segments: list[Segment] | None = Field(
        default=None, description="grounding and chapters: time ranges in seconds"
    )


class VideoUsage(BaseModel):
    frames: int
    has_audio: bool
    video_tokens: int
    duration_s: float
    clip: list[float] | None = None


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
