"""The request and response shapes every provider speaks.

Requests arrive in the OpenAI wire format and are validated once, at the edge, into the
pydantic models below; providers translate them to their own dialect. Results come back as
small slotted dataclasses (cheap to build per streamed chunk) that the server renders in the
OpenAI wire format again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelProviderKind(StrEnum):
    DETERMINISTIC = "deterministic"
    OPENAI_COMPATIBLE = "openai_compatible"
    ANTHROPIC = "anthropic"


class ProviderModelRole(StrEnum):
    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    AUDIO_TRANSCRIPTION = "audio_transcription"


class _Wire(BaseModel):
    # Unknown fields inside messages are refused: a typo there silently changes meaning.
    model_config = ConfigDict(extra="forbid")


class TextPart(_Wire):
    type: Literal["text"]
    text: str


class ImageURL(_Wire):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Wire):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Wire):
    name: str
    arguments: str


class ToolCall(_Wire):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None

    @model_validator(mode="after")
    def _check_role_fields(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.role != "assistant" and self.content is None:
            raise ValueError(f"a {self.role} message needs content")
        if self.role == "assistant" and self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs content or tool_calls")
        return self

    def text(self) -> str:
        """The message's text, image parts left out."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    def images(self) -> list[ImageURL]:
        if isinstance(self.content, list):
            return [p.image_url for p in self.content if isinstance(p, ImagePart)]
        return []


class FunctionDefinition(_Wire):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Wire):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(_Wire):
    name: str


class NamedToolChoice(_Wire):
    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ResponseFormat(_Wire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class StreamOptions(_Wire):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """`POST /v1/chat/completions`. Unknown top-level fields are kept and passed to
    OpenAI-compatible upstreams, so new OpenAI parameters work before we know them."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    n: Literal[1] | None = None
    seed: int | None = None
    user: str | None = None

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def wants_json(self) -> bool:
        return self.response_format is not None and self.response_format.type != "text"

    @property
    def has_images(self) -> bool:
        return any(m.images() for m in self.messages)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]]
    dimensions: int | None = Field(default=None, ge=1, le=8192)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    @model_validator(mode="after")
    def _check_input(self) -> EmbeddingsRequest:
        if isinstance(self.input, list) and not self.input:
            raise ValueError("input must not be empty")
        return self

    def texts(self) -> list[str | list[int]]:
        """The inputs as a list: strings, or token arrays."""
        if isinstance(self.input, str):
            return [self.input]
        if self.input and isinstance(self.input[0], int):
            return [self.input]  # one token array
        return list(self.input)  # type: ignore[arg-type]


@dataclass(slots=True)
class TranscriptionRequest:
    model: str | None
    file: bytes
    filename: str
    content_type: str
    response_format: Literal["json", "text", "verbose_json"] = "json"
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_openai(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(slots=True)
class ToolCallResult:
    id: str
    name: str
    arguments: str


FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(slots=True)
class ChatResult:
    content: str | None
    finish_reason: FinishReason
    usage: Usage
    tool_calls: list[ToolCallResult] = field(default_factory=list)
    upstream_model: str = ""


@dataclass(slots=True)
class ToolCallDelta:
    """One fragment of a streamed tool call; fragments with the same index form one call."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class ChatDelta:
    """One stream event. Content and tool-call fragments arrive in order; the last event
    carries finish_reason, and usage arrives once, on the last event that has it."""

    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


# One embedding: floats, or base64 of little-endian float32s as an upstream sent it when the
# client asked for base64 (relayed as it came, never becoming floats).
Vector = list[float] | str


@dataclass(slots=True)
class EmbeddingsResult:
    vectors: list[Vector]
    usage: Usage
    upstream_model: str = ""


@dataclass(slots=True)
class TranscriptionSegment:
    id: int
    start: float
    end: float
    text: str


@dataclass(slots=True)
class TranscriptionResult:
    text: str
    language: str | None = None
    duration_s: float | None = None
    segments: list[TranscriptionSegment] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
