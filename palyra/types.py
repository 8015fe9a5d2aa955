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

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from palyra.limits import (
    MAX_CHAT_MESSAGES,
    MAX_CHAT_TOOLS,
    MAX_EMBEDDING_DIMENSIONS,
    MAX_EMBEDDING_INPUTS,
    MAX_EMBEDDING_TOKEN_IDS,
    MAX_EMBEDDING_VALUES,
    MAX_INTEGER,
    MAX_JSON_DEPTH,
    MAX_TOOL_CALLS_PER_MESSAGE,
    json_too_deep,
    may_be_too_deep,
)

# What an integer parameter may hold: what every upstream's JSON decoder takes.
Int64 = Annotated[int, Field(ge=-MAX_INTEGER - 1, le=MAX_INTEGER)]


class ModelProviderKind(StrEnum):
    DETERMINISTIC = "deterministic"
    OPENAI_COMPATIBLE = "openai_compatible"
    ANTHROPIC = "anthropic"


class ProviderModelRole(StrEnum):
    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    AUDIO_TRANSCRIPTION = "audio_transcription"


class _Wire(BaseModel):
    # Every field of the public schema is known by name; a field we do not know (what an SDK's
    # reply object carries when dumped, or a provider's extension) is kept and forwarded to
    # OpenAI-compatible upstreams, and each provider kind decides what it can honour.
    model_config = ConfigDict(extra="allow")


class _Closed(BaseModel):
    # Where a field outside the schema can only be a typo.
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


class InputAudio(_Wire):
    data: str
    format: str


class InputAudioPart(_Wire):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileData(_Wire):
    file_data: str | None = None  # a data URL (or bare base64) of the file
    file_id: str | None = None
    filename: str | None = None


class FilePart(_Wire):
    type: Literal["file"]
    file: FileData


class RefusalPart(_Wire):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[
    TextPart | ImagePart | InputAudioPart | FilePart | RefusalPart, Field(discriminator="type")
]


class FunctionCall(_Wire):
    name: str
    arguments: str

    @field_validator("arguments")
    @classmethod
    def _check_depth(cls, arguments: str) -> str:
        # Arguments are JSON in a string, which providers parse and encode again (Anthropic
        # wants an object): as deep as a body may be, no deeper. Text that is not JSON is
        # the provider's to judge.
        if may_be_too_deep(arguments):
            try:
                value = orjson.loads(arguments)
            except orjson.JSONDecodeError:
                return arguments
            if json_too_deep(value):
                raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
        return arguments


class ToolCall(_Wire):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class CustomCall(_Wire):
    name: str
    input: str


class CustomToolCall(_Wire):
    """A call of a custom (free-form input) tool, as an assistant message of a history holds
    it. Providers that only know function tools read it through `function`; none but an
    OpenAI-compatible one can honour it (see `ModelProvider.unsupported`)."""

    id: str
    type: Literal["custom"]
    custom: CustomCall

    @property
    def function(self) -> FunctionCall:
        return FunctionCall.model_construct(name=self.custom.name, arguments=self.custom.input)


def _tagged_by_type(default: str) -> Any:
    # Tagged by `type` (absent: `default`, as the API allows for function tools and calls),
    # so that a bad item is reported against its own kind, not against every kind at once.
    def tag(value: Any) -> Any:
        if isinstance(value, dict):
            return value.get("type", default)
        return getattr(value, "type", default)

    return Discriminator(tag)


AnyToolCall = Annotated[
    Annotated[ToolCall, Tag("function")] | Annotated[CustomToolCall, Tag("custom")],
    _tagged_by_type("function"),
]


# Fields of an assistant message that only ever come back from a provider (an SDK's reply
# object dumped whole carries them): accepted in a history, never sent upstream as input.
# (`thinking_blocks`, Anthropic's signed thinking, is sent back by the Anthropic provider
# only, which reads it itself: see anthropic_request.py.)
REPLY_ONLY_MESSAGE_FIELDS = frozenset(
    {
        "annotations",
        "reasoning_content",
        "reasoning",
        "reasoning_details",
        "thinking_blocks",
        # What openai-python's `parse()` adds to the message it gives back (and to each tool
        # call's function, `parsed_arguments`: REPLY_ONLY_FUNCTION_FIELDS).
        "parsed",
    }
)
REPLY_ONLY_FUNCTION_FIELDS = frozenset({"parsed_arguments"})
# Of an earlier audio answer, the request refers to its id only; a dumped reply also carries
# its data, transcript and expiry, which are not sent back.
ASSISTANT_AUDIO_FIELDS = frozenset({"id"})


class Message(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[AnyToolCall] | None = Field(
        default=None, max_length=MAX_TOOL_CALLS_PER_MESSAGE
    )
    tool_call_id: str | None = None
    refusal: str | None = None
    # Deprecated by OpenAI, still sent by older clients and dumped reply objects.
    function_call: FunctionCall | None = None
    # An earlier audio answer, referred to by id ({"id": ...}; a dumped reply has more).
    audio: dict[str, Any] | None = None
    annotations: list[Any] | None = None
    reasoning_content: str | None = None

    @model_validator(mode="after")
    def _check_role_fields(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.role == "function" and not self.name:
            raise ValueError("a function message needs name")
        # (A function message's content is nullable in the API's own schema.)
        if self.role not in ("assistant", "function") and self.content is None:
            raise ValueError(f"a {self.role} message needs content")
        if (
            self.role == "assistant"
            and self.content is None
            and not self.tool_calls
            and self.function_call is None
            and self.audio is None
            and self.refusal is None
        ):
            raise ValueError(
                "an assistant message needs content, tool_calls, function_call, audio or refusal"
            )
        return self

    def text(self) -> str:
        """The message's text (refusal parts included), other parts left out."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(
            p.text if isinstance(p, TextPart) else p.refusal
            for p in self.content
            if isinstance(p, TextPart | RefusalPart)
        )

    def images(self) -> list[ImageURL]:
        if isinstance(self.content, list):
            return [p.image_url for p in self.content if isinstance(p, ImagePart)]
        return []

    def part_types(self) -> set[str]:
        """The content part types of this message (`text`, `image_url`, `input_audio`, ...)."""
        if isinstance(self.content, list):
            return {p.type for p in self.content}
        return set()


class FunctionDefinition(_Closed):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Closed):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class CustomDefinition(_Wire):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    # {"type": "text"} or {"type": "grammar", "grammar": {...}}: the upstream's to judge.
    format: dict[str, Any] | None = None


class CustomTool(_Closed):
    """A tool that takes free-form text (OpenAI's custom tools). Read through `function` by
    providers that only know function tools; only OpenAI-compatible ones can honour it."""

    type: Literal["custom"]
    custom: CustomDefinition

    @property
    def function(self) -> FunctionDefinition:
        return FunctionDefinition.model_construct(
            name=self.custom.name, description=self.custom.description, parameters=None
        )


AnyTool = Annotated[
    Annotated[Tool, Tag("function")] | Annotated[CustomTool, Tag("custom")],
    _tagged_by_type("function"),
]


class NamedFunction(_Closed):
    name: str


class NamedToolChoice(_Closed):
    type: Literal["function"] = "function"
    function: NamedFunction


class NamedCustomToolChoice(_Closed):
    type: Literal["custom"]
    custom: NamedFunction


class AllowedTools(_Closed):
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]] = Field(max_length=MAX_CHAT_TOOLS)


class AllowedToolsChoice(_Closed):
    """Of the tools offered, the ones the model may call this turn (OpenAI only)."""

    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


ToolChoice = (
    Literal["none", "auto", "required"]
    | Annotated[
        Annotated[NamedToolChoice, Tag("function")]
        | Annotated[NamedCustomToolChoice, Tag("custom")]
        | Annotated[AllowedToolsChoice, Tag("allowed_tools")],
        _tagged_by_type("function"),
    ]
)


class ResponseFormat(_Closed):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check_schema(self) -> ResponseFormat:
        # (As the API refuses it: a schema format without its schema has nothing to hold
        # an answer to.)
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("a json_schema response format needs its json_schema object")
        return self


class StreamOptions(_Wire):
    include_usage: bool = False
    include_obfuscation: bool | None = None


@dataclass(frozen=True, slots=True)
class Native:
    """A request body in an inbound dialect's own wire format (`dialect` names it, e.g.
    "anthropic_messages" or "openai_responses"), kept as the client sent it."""

    dialect: str
    body: dict[str, Any]


class ChatRequest(BaseModel):
    """`POST /v1/chat/completions`. Unknown top-level fields are kept and passed to
    OpenAI-compatible upstreams, so new OpenAI parameters work before we know them."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[Message] = Field(min_length=1, max_length=MAX_CHAT_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[AnyTool] | None = Field(default=None, max_length=MAX_CHAT_TOOLS)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_INTEGER)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_INTEGER)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    seed: Int64 | None = None
    user: str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    reasoning_effort: str | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    modalities: list[str] | None = None
    metadata: dict[str, Any] | None = None
    # The rest of the public schema (`audio`, `logit_bias`, `prediction`, `service_tier`,
    # `store`, `verbosity`, `web_search_options`, `prompt_cache_key`, `safety_identifier`,
    # ...) and whatever OpenAI adds next are extras (`model_extra`): unvalidated here, sent
    # as they came to OpenAI-compatible upstreams, and judged by each other provider kind's
    # `unsupported`.
    # Deprecated by OpenAI in favour of tools, still sent by older clients.
    functions: list[FunctionDefinition] | None = Field(default=None, max_length=MAX_CHAT_TOOLS)
    function_call: Literal["none", "auto"] | NamedFunction | None = None

    # Two values kept beside the fields, in the instance's __dict__ under `_native` and
    # `_as_tools`, as functools.cached_property keeps its own: pydantic leaves such keys out
    # of dumps, equality and repr, and copies carry them, as they did private attributes.
    # Declared private attributes cost a Python call on every validation (pydantic's
    # init_private_attributes: about a third of ChatRequest's validation, benchmarks/README.md).
    # `_native`: the request as an inbound dialect's client sent it, when that dialect can be
    # passed to a provider natively (Anthropic Messages to Anthropic, Responses to an
    # upstream that serves it): a provider that speaks it sends this, the others the
    # translation above.

    @property
    def native(self) -> Native | None:
        native: Native | None = self.__dict__.get("_native")
        return native

    def with_native(self, native: Native) -> ChatRequest:
        self.__dict__["_native"] = native
        return self

    @property
    def uses_functions(self) -> bool:
        """Whether the client speaks the deprecated `functions` dialect (and so wants its
        answer's calls as `function_call`, not `tool_calls`)."""
        return self.functions is not None and not self.tools

    def functions_as_tools(self) -> ChatRequest:
        """The request with the deprecated `functions`, `function_call`, assistant
        `function_call`s and `function` messages spelled as tools, tool calls and tool
        messages: the same meaning, for providers that only know tools. Itself when there is
        nothing to convert; worked out once per request."""
        cached: ChatRequest | None = self.__dict__.get("_as_tools")
        if cached is not None:
            return cached
        converted = self
        if (
            self.functions is not None
            or self.function_call is not None
            or any(m.role == "function" or m.function_call is not None for m in self.messages)
        ):
            converted = _functions_as_tools(self)
            converted.__dict__["_as_tools"] = converted  # (a copy: nothing left to convert)
        self.__dict__["_as_tools"] = converted
        return converted

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


def _functions_as_tools(request: ChatRequest) -> ChatRequest:
    tools: list[Tool | CustomTool] = list(request.tools or [])
    tools += [Tool(function=f) for f in request.functions or ()]
    choice = request.tool_choice
    if isinstance(request.function_call, NamedFunction):
        choice = NamedToolChoice(function=request.function_call)
    elif request.function_call is not None and choice is None:
        choice = request.function_call
    messages: list[Message] = []
    call_id = ""
    for index, message in enumerate(request.messages):
        if message.function_call is not None:
            # A function call has no id; the function message that answers it names the
            # function only. The call and its answer are paired by order, as the API did.
            call_id = f"call_function_{index}"
            call = ToolCall(id=call_id, function=message.function_call)
            message = message.model_copy(
                update={"function_call": None, "tool_calls": [*(message.tool_calls or []), call]}
            )
        elif message.role == "function":
            message = message.model_copy(
                update={
                    "role": "tool",
                    "tool_call_id": call_id or f"call_function_{index}",
                    "content": message.content or "",
                }
            )
        messages.append(message)
    return request.model_copy(
        update={
            "tools": tools or None,
            "tool_choice": choice,
            "functions": None,
            "function_call": None,
            "messages": messages,
        }
    )


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]]
    dimensions: int | None = Field(default=None, ge=1, le=MAX_EMBEDDING_DIMENSIONS)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _check_input(
        cls, value: str | list[str] | list[int] | list[list[int]]
    ) -> str | list[str] | list[int] | list[list[int]]:
        if isinstance(value, str):
            return value
        if not value:
            raise ValueError("must not be empty")
        if isinstance(value[0], int):
            ids = len(value)
        else:
            if len(value) > MAX_EMBEDDING_INPUTS:
                raise ValueError(
                    f"{len(value)} inputs; at most {MAX_EMBEDDING_INPUTS} in one request"
                )
            ids = sum(len(item) for item in value if isinstance(item, list))
        if ids > MAX_EMBEDDING_TOKEN_IDS:
            raise ValueError(
                f"{ids} token ids; at most {MAX_EMBEDDING_TOKEN_IDS} in one request, summed "
                "over all inputs"
            )
        return value

    @field_validator("dimensions")
    @classmethod
    def _check_answer_size(cls, dimensions: int | None, info: ValidationInfo) -> int | None:
        inputs = info.data.get("input")
        count = len(inputs) if isinstance(inputs, list) and not isinstance(inputs[0], int) else 1
        if dimensions is not None and count * dimensions > MAX_EMBEDDING_VALUES:
            raise ValueError(
                f"{count} inputs of {dimensions} dimensions are {count * dimensions} numbers; "
                f"at most {MAX_EMBEDDING_VALUES} in one answer"
            )
        return dimensions

    def texts(self) -> list[str | list[int]]:
        """The inputs as a list: strings, or token arrays."""
        if isinstance(self.input, str):
            return [self.input]
        if self.input and isinstance(self.input[0], int):
            return [self.input]  # one token array
        return list(self.input)  # type: ignore[arg-type]


AudioResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"]


@dataclass(slots=True)
class TranscriptionRequest:
    """`POST /v1/audio/transcriptions` or (`translate`) `/v1/audio/translations`."""

    model: str | None
    file: bytes
    filename: str
    content_type: str
    response_format: AudioResponseFormat = "json"
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    # "word", "segment" (`timestamp_granularities[]`): what verbose_json carries timings for.
    timestamp_granularities: list[str] = field(default_factory=list)
    stream: bool = False
    # `/v1/audio/translations`: the answer in English, whatever was spoken.
    translate: bool = False
    # Form fields Palyra does not read (`chunking_strategy`, `include[]`,
    # `known_speaker_names[]`, ...), in the order sent: passed on to OpenAI-compatible
    # upstreams as they came, so new API parameters work before we know them.
    extra_fields: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Of prompt_tokens: read from the provider's prompt cache. Of completion_tokens: spent on
    # reasoning the client does not see.
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    # Of prompt_tokens: written to the provider's prompt cache (Anthropic bills these apart).
    cache_creation_tokens: int = 0
    # The upstream's own detail objects and any usage fields we have no name for, given back
    # as they came (OpenAI's `prompt_tokens_details`, `completion_tokens_details`, ...).
    extra: dict[str, Any] | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_openai(self) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.extra:
            usage.update(self.extra)
        if self.cached_tokens or self.cache_creation_tokens:
            details = usage.get("prompt_tokens_details")
            details = {**(details if isinstance(details, dict) else {})}
            if self.cached_tokens:
                details["cached_tokens"] = self.cached_tokens
            if self.cache_creation_tokens:
                # Written to the cache, billed dearer than fresh input, unlike cached_tokens
                # (read, billed cheaper): kept apart under the name OpenAI-compatible
                # gateways use for it.
                details["cache_write_tokens"] = self.cache_creation_tokens
            usage["prompt_tokens_details"] = details
        if self.reasoning_tokens:
            details = usage.get("completion_tokens_details")
            usage["completion_tokens_details"] = {
                **(details if isinstance(details, dict) else {}),
                "reasoning_tokens": self.reasoning_tokens,
            }
        return usage


@dataclass(slots=True)
class ToolCallResult:
    id: str
    name: str
    # A custom tool's free-form input is its `arguments` here.
    arguments: str
    type: Literal["function", "custom"] = "function"


FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(slots=True)
class ChatResult:
    content: str | None
    finish_reason: FinishReason
    usage: Usage
    tool_calls: list[ToolCallResult] = field(default_factory=list)
    upstream_model: str = ""
    # What reasoning models say of their thinking (OpenAI-compatible `reasoning_content`,
    # Anthropic thinking blocks).
    reasoning: str | None = None
    refusal: str | None = None
    logprobs: Any = None
    # Fields the upstream sent that have no name above, kept to be given back as they came:
    # of the answer (`system_fingerprint`, `service_tier`, ...), of its choice, and of its
    # message (`annotations`, `audio`, ...).
    body_extra: dict[str, Any] | None = None
    choice_extra: dict[str, Any] | None = None
    message_extra: dict[str, Any] | None = None
    # With n > 1: the upstream's choices after the first, as it sent them (index included),
    # given back beside the first.
    more_choices: list[dict[str, Any]] | None = None
    # The upstream's answer in the inbound dialect's own wire format, when the request was
    # passed through natively (see `ChatRequest.native`): the dialect hands it back as it is.
    native: dict[str, Any] | None = None


@dataclass(slots=True)
class ToolCallDelta:
    """One fragment of a streamed tool call; fragments with the same index form one call."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    type: Literal["function", "custom"] = "function"


@dataclass(slots=True)
class ChatDelta:
    """One stream event. Content and tool-call fragments arrive in order; the last event
    carries finish_reason, and usage arrives once, on the last event that has it."""

    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    reasoning: str | None = None
    refusal: str | None = None
    logprobs: Any = None
    # As on `ChatResult`: unnamed fields of the chunk, of its choice, of its delta.
    chunk_extra: dict[str, Any] | None = None
    choice_extra: dict[str, Any] | None = None
    delta_extra: dict[str, Any] | None = None
    # With n > 1: the chunk's choices other than the first (index > 0), as they came.
    more_choices: list[dict[str, Any]] | None = None
    # The upstream's own event when the request was passed through natively: (event name,
    # data). The dialect relays it as it came.
    native: tuple[str, str] | None = None

    @property
    def shows_something(self) -> bool:
        """Whether this delta shows the client anything of the answer (so a stream that
        fails after it can no longer be retried elsewhere)."""
        return bool(
            self.content
            or self.tool_calls
            or self.finish_reason
            or self.reasoning
            or self.refusal
            or self.more_choices
            # (An audio answer's deltas, say: a field we have no name for, with a value.)
            or (self.delta_extra and any(v is not None for v in self.delta_extra.values()))
        )


# One embedding: floats, or base64 of little-endian float32s as an upstream sent it when the
# client asked for base64 (relayed as it came, never becoming floats).
Vector = list[float] | str


class FloatsJson(list[float]):
    """An upstream's embedding as floats, with the JSON array it came as. A client that wants
    floats gets that text as it came: printing thousands of floats again is most of what an
    embeddings answer costs (benchmarks/README.md), and the text is the upstream's digit for
    digit. Everything else reads it as the list it is."""

    __slots__ = ("json",)

    def __init__(self, values: list[float], json: bytes) -> None:
        super().__init__(values)
        self.json = json


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
class TranscriptionWord:
    word: str
    start: float
    end: float


@dataclass(slots=True)
class TranscriptionResult:
    text: str
    language: str | None = None
    duration_s: float | None = None
    segments: list[TranscriptionSegment] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    words: list[TranscriptionWord] = field(default_factory=list)
    # The upstream's JSON answer as it came (in the format asked for), given back with every
    # field it has (words, logprobs, usage, ...); None when Palyra made the answer.
    body: dict[str, Any] | None = None
    # The upstream's answer in the subtitle format asked for (srt, vtt), as it came.
    subtitles: str | None = None


@dataclass(slots=True)
class TranscriptionDelta:
    """One event of a streamed transcription: a piece of text, or (last) the whole result."""

    text: str = ""
    result: TranscriptionResult | None = None
    # The upstream's own event (`transcript.text.delta`, `.done`, `.segment`, ...) as it
    # came, relayed whole (logprobs and fields we have no name for included).
    event: dict[str, Any] | None = None

    @property
    def shows_something(self) -> bool:
        """Whether the client sees this event (a stream that fails after it can no longer be
        retried elsewhere)."""
        return bool(self.text) or self.result is not None or self.event is not None

    @property
    def usage(self) -> Usage | None:
        return self.result.usage if self.result is not None else None


@dataclass(slots=True)
class RouteInfo:
    """Who served a request and what it took; rendered as the `x-palyra-*` headers."""

    model_id: str = ""
    provider_id: str = ""
    retries: int = 0
    failovers: int = 0
    # Time spent upstream or waiting to retry: not the gateway's own overhead.
    upstream_s: float = 0.0
    # What the answer used (whole: its usage; streamed: the last usage it sent), and for a
    # stream the time to its first token. Estimated: the upstream sent no usage, so the
    # tokens are Palyra's count.
    usage: Usage | None = None
    usage_estimated: bool = False
    ttft_s: float | None = None  # of the serving attempt, upstream
    first_token_at: float | None = None  # perf_counter() when the stream's first token came
