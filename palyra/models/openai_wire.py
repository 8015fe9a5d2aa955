"""The wire format of the OpenAI chat completions API, typed once for all of Palyra.

Typed like openai-python's own types (openai 3.57 is the reference; tests/models/
test_openai_wire.py holds the names to it): the request after its `types/chat/*_param.py`
TypedDicts, the answer and the stream chunk after its `chat_completion*.py` models, spelled as
TypedDicts (`NotRequired` where the SDK's model has a default). The
OpenAI-compatible provider kind writes requests in it (`openai_chat.chat_payload`) and reads
answers and chunks in it (`openai_chat.parse_*`), and the chat completions dialect
(`palyra/dialects/openai_chat.py`) writes answers and chunks in it; the Anthropic Messages
and Responses dialects write the chat request they translate theirs into in it
(`ChatRequestParams`, validated as `ChatRequest` after). A few fields are not
openai-python's: what compatible servers send and Palyra reads or writes (`reasoning_content`,
`reasoning`, `thinking_blocks`), the streamed custom tool call, and any content part in a
system, developer or tool message; each says so. The other OpenAI answers Palyra writes are
typed here too: embeddings, the model object (with Palyra's own `palyra` field) and an error's
body; those of `/v1/audio` are in openai_audio_wire.py.

Fields we have no name for travel beside the typed ones. A client's unknown parameters go
upstream, and an upstream's unknown fields reach the client, each at the level it sent them
(palyra/types.py keeps them as `dict[str, Any]`: `body_extra`, `choice_extra`, ...). A
TypedDict on Python 3.11 cannot say "and other keys" (PEP 728), so a wire object Palyra
builds is typed with its known fields, and the others are added in one place, `merge_extra`.

Answers are untrusted JSON, typed here as the API has them so that every field a reader
names is checked by mypy; their values are what the upstream sent, and the readers check by
type what they rely on (`openai_chat.parse_chat_response` every field it reads,
`parse_chunk` what would otherwise reach a client malformed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, NotRequired, Required, TypeAlias, TypedDict, cast, final

from palyra.models.anthropic_wire import RedactedThinkingBlockParam, ThinkingBlockParam
from palyra.types import ToolCallResult

# --- request: content parts ---------------------------------------------------------------


class ChatCompletionContentPartTextParam(TypedDict, total=False):
    type: Required[Literal["text"]]
    text: Required[str]
    prompt_cache_breakpoint: dict[str, object]


class ImageURL(TypedDict, total=False):
    url: Required[str]
    detail: Literal["auto", "low", "high", "original"]


class ChatCompletionContentPartImageParam(TypedDict, total=False):
    type: Required[Literal["image_url"]]
    image_url: Required[ImageURL]
    prompt_cache_breakpoint: dict[str, object]


class InputAudio(TypedDict):
    data: str  # base64
    format: Literal["wav", "mp3"]


class ChatCompletionContentPartInputAudioParam(TypedDict, total=False):
    type: Required[Literal["input_audio"]]
    input_audio: Required[InputAudio]
    prompt_cache_breakpoint: dict[str, object]


class FileFile(TypedDict, total=False):
    file_data: str  # a data URL (or bare base64) of the file
    file_id: str
    filename: str


class ChatCompletionContentPartFileParam(TypedDict, total=False):
    """openai-python's `File` (`chat_completion_content_part_param.py`)."""

    type: Required[Literal["file"]]
    file: Required[FileFile]
    prompt_cache_breakpoint: dict[str, object]


class ChatCompletionContentPartRefusalParam(TypedDict):
    type: Literal["refusal"]
    refusal: str


ChatCompletionContentPartParam: TypeAlias = (
    ChatCompletionContentPartTextParam
    | ChatCompletionContentPartImageParam
    | ChatCompletionContentPartInputAudioParam
    | ChatCompletionContentPartFileParam
)


# --- request: messages, one shape per role ------------------------------------------------


class ChatCompletionDeveloperMessageParam(TypedDict, total=False):
    role: Required[Literal["developer"]]
    # openai-python's takes text parts only; Palyra takes any part here, as a Responses
    # system or developer message may hold images and files.
    content: Required[str | list[ChatCompletionContentPartParam]]
    name: str


class ChatCompletionSystemMessageParam(TypedDict, total=False):
    role: Required[Literal["system"]]
    # (Any part, as a developer message's.)
    content: Required[str | list[ChatCompletionContentPartParam]]
    name: str


class ChatCompletionUserMessageParam(TypedDict, total=False):
    role: Required[Literal["user"]]
    content: Required[str | list[ChatCompletionContentPartParam]]
    name: str


class FunctionCall(TypedDict):
    """The deprecated functions' call, in an assistant message (sent and answered)."""

    name: str
    arguments: str  # JSON, as the model wrote it (not always valid)


class Function(TypedDict):
    name: str
    arguments: str


class ChatCompletionMessageFunctionToolCallParam(TypedDict):
    id: str
    type: Literal["function"]
    function: Function


class Custom(TypedDict):
    name: str
    input: str  # free-form, as the model wrote it


class ChatCompletionMessageCustomToolCallParam(TypedDict):
    id: str
    type: Literal["custom"]
    custom: Custom


ChatCompletionMessageToolCallUnionParam: TypeAlias = (
    ChatCompletionMessageFunctionToolCallParam | ChatCompletionMessageCustomToolCallParam
)


class Audio(TypedDict):
    """An earlier audio answer, referred to by its id."""

    id: str


class ChatCompletionAssistantMessageParam(TypedDict, total=False):
    role: Required[Literal["assistant"]]
    content: (
        str
        | list[ChatCompletionContentPartTextParam | ChatCompletionContentPartRefusalParam]
        | None
    )
    refusal: str | None
    name: str
    tool_calls: list[ChatCompletionMessageToolCallUnionParam]
    function_call: FunctionCall | None
    audio: Audio | None
    # Not openai-python's: what a client keeps in its history of an answer that thought, and
    # Palyra's dialects write when they translate one: its text (as on
    # `ChatCompletionMessage`), and Anthropic's signed thinking blocks as they came (LiteLLM's
    # name; Palyra's answers carry them, and the Anthropic provider sends them back).
    reasoning_content: str | None
    thinking_blocks: list[ThinkingBlockParam | RedactedThinkingBlockParam]


class ChatCompletionToolMessageParam(TypedDict):
    role: Literal["tool"]
    # openai-python's takes text parts only; Palyra takes any part here, as an Anthropic tool
    # result may hold images and documents (read by the providers that can send them).
    content: str | list[ChatCompletionContentPartParam]
    tool_call_id: str


class ChatCompletionFunctionMessageParam(TypedDict):
    role: Literal["function"]
    content: str | None
    name: str


ChatCompletionMessageParam: TypeAlias = (
    ChatCompletionDeveloperMessageParam
    | ChatCompletionSystemMessageParam
    | ChatCompletionUserMessageParam
    | ChatCompletionAssistantMessageParam
    | ChatCompletionToolMessageParam
    | ChatCompletionFunctionMessageParam
)


# --- request: tools and how to answer -----------------------------------------------------


class FunctionDefinition(TypedDict, total=False):
    name: Required[str]
    description: str
    parameters: dict[str, Any]  # a JSON schema
    strict: bool | None


class ChatCompletionFunctionToolParam(TypedDict):
    type: Literal["function"]
    function: FunctionDefinition


class CustomToolDefinition(TypedDict, total=False):
    """openai-python's `Custom` (`chat_completion_custom_tool_param.py`)."""

    name: Required[str]
    description: str
    format: dict[str, Any]  # {"type": "text"} or a grammar


class ChatCompletionCustomToolParam(TypedDict):
    type: Literal["custom"]
    custom: CustomToolDefinition


ChatCompletionToolUnionParam: TypeAlias = (
    ChatCompletionFunctionToolParam | ChatCompletionCustomToolParam
)


class NamedTool(TypedDict):
    name: str


class ChatCompletionNamedToolChoiceParam(TypedDict):
    type: Literal["function"]
    function: NamedTool


class ChatCompletionNamedToolChoiceCustomParam(TypedDict):
    type: Literal["custom"]
    custom: NamedTool


class ChatCompletionAllowedToolsParam(TypedDict):
    mode: Literal["auto", "required"]
    tools: list[dict[str, object]]


class ChatCompletionAllowedToolChoiceParam(TypedDict):
    type: Literal["allowed_tools"]
    allowed_tools: ChatCompletionAllowedToolsParam


ChatCompletionToolChoiceOptionParam: TypeAlias = (
    Literal["none", "auto", "required"]
    | ChatCompletionAllowedToolChoiceParam
    | ChatCompletionNamedToolChoiceParam
    | ChatCompletionNamedToolChoiceCustomParam
)


class ResponseFormatText(TypedDict):
    type: Literal["text"]


class ResponseFormatJSONObject(TypedDict):
    type: Literal["json_object"]


class JSONSchema(TypedDict, total=False):
    name: Required[str]
    description: str
    schema: dict[str, Any]
    strict: bool | None


class ResponseFormatJSONSchema(TypedDict):
    type: Literal["json_schema"]
    json_schema: JSONSchema


ResponseFormat: TypeAlias = ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema


class ChatCompletionStreamOptionsParam(TypedDict, total=False):
    include_usage: bool
    include_obfuscation: bool


class ChatCompletionAudioParam(TypedDict):
    format: Literal["wav", "aac", "mp3", "flac", "opus", "pcm16"]
    voice: str | dict[str, str]


class ChatCompletionPredictionContentParam(TypedDict):
    type: Literal["content"]
    content: str | list[ChatCompletionContentPartTextParam]


class FunctionCallOption(TypedDict):
    name: str


class _CompletionParams(TypedDict, total=False):
    """`POST /v1/chat/completions` but for the model and messages: the parameters of both
    bodies below. Only those Palyra reads or writes are typed beyond their name; the rest are
    relayed as the client sent them."""

    audio: ChatCompletionAudioParam | None
    frequency_penalty: float | None
    function_call: Literal["none", "auto"] | FunctionCallOption
    functions: list[FunctionDefinition]
    logit_bias: dict[str, int] | None
    logprobs: bool | None
    max_completion_tokens: int | None
    max_tokens: int | None
    metadata: dict[str, str] | None
    modalities: list[Literal["text", "audio"]] | None
    moderation: dict[str, object] | None
    n: int | None
    parallel_tool_calls: bool
    prediction: ChatCompletionPredictionContentParam | None
    presence_penalty: float | None
    prompt_cache_key: str | None
    prompt_cache_options: dict[str, object]
    prompt_cache_retention: Literal["in_memory", "24h"] | None
    reasoning_effort: str | None
    response_format: ResponseFormat
    safety_identifier: str | None
    seed: int | None
    service_tier: str | None
    stop: str | list[str] | None
    store: bool | None
    stream: bool | None
    stream_options: ChatCompletionStreamOptionsParam | None
    temperature: float | None
    tool_choice: ChatCompletionToolChoiceOptionParam
    tools: list[ChatCompletionToolUnionParam]
    top_logprobs: int | None
    top_p: float | None
    user: str
    verbosity: Literal["low", "medium", "high"] | None
    web_search_options: dict[str, object]


class CompletionCreateParams(_CompletionParams, total=False):
    """`POST /v1/chat/completions`, as an upstream is sent it."""

    messages: Required[list[ChatCompletionMessageParam]]
    model: Required[str]


class ChatRequestParams(_CompletionParams, total=False):
    """`POST /v1/chat/completions` as Palyra takes it (`ChatRequest`): the model may be left
    out, for the default model. What the inbound dialects write when they translate a request
    of theirs, to be validated as `ChatRequest`."""

    messages: Required[list[ChatCompletionMessageParam]]
    model: str


class EmbeddingCreateParams(TypedDict, total=False):
    """`POST /v1/embeddings` (openai-python's `types/embedding_create_params.py`)."""

    input: Required[str | list[str] | list[int] | list[list[int]]]
    model: Required[str]
    dimensions: int
    encoding_format: Literal["float", "base64"]
    user: str


# --- the embeddings answer ---------------------------------------------------------------


class Embedding(TypedDict):
    object: Literal["embedding"]
    index: int
    # Floats, or (`encoding_format` "base64") their little-endian float32 bytes in base64,
    # which openai-python's model, typed for floats, decodes before it reads them.
    embedding: list[float] | str


class EmbeddingUsage(TypedDict):
    """openai-python's `create_embedding_response.Usage`."""

    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(TypedDict):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# --- models and errors --------------------------------------------------------------------


class PalyraModelInfo(TypedDict):
    """Not openai-python's: what Palyra knows of a model, under `palyra` in its object."""

    role: str
    provider_id: str
    source: Literal["discovered", "configured"]
    enabled: bool
    max_context_tokens: int


class Model(TypedDict):
    """`GET /v1/models/{id}` and each of `GET /v1/models`."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    shutdown_date: NotRequired[str | None]
    palyra: NotRequired[PalyraModelInfo]  # (not openai-python's: see above)


class ModelList(TypedDict):
    """`GET /v1/models` (openai-python pages it; no type of its own)."""

    object: Literal["list"]
    data: list[Model]


class ErrorObject(TypedDict):
    message: str
    type: str
    code: str | None
    param: str | None
    misalignment: NotRequired[dict[str, object] | None]  # never written by Palyra


class ErrorResponse(TypedDict):
    """An error answer's body (openai-python reads `error` from it: no type of its own)."""

    error: ErrorObject


# --- the answer ---------------------------------------------------------------------------

FinishReason: TypeAlias = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class TopLogprob(TypedDict):
    token: str
    bytes: list[int] | None
    logprob: float


class ChatCompletionTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(TypedDict, total=False):
    """Relayed as the upstream sent it: Palyra never reads it."""

    content: list[ChatCompletionTokenLogprob] | None
    refusal: list[ChatCompletionTokenLogprob] | None


# (final: a reader tells a function call from a custom one by `in`, which narrows a union of
# TypedDicts only when neither can be subclassed with the other's keys.)
@final
class ChatCompletionMessageFunctionToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: Function


@final
class ChatCompletionMessageCustomToolCall(TypedDict):
    id: str
    type: Literal["custom"]
    custom: Custom


ChatCompletionMessageToolCall: TypeAlias = (
    ChatCompletionMessageFunctionToolCall | ChatCompletionMessageCustomToolCall
)


class ChatCompletionAudio(TypedDict):
    id: str
    data: str
    expires_at: int
    transcript: str


class ChatCompletionMessage(TypedDict):
    role: Literal["assistant"]
    content: NotRequired[str | None]
    refusal: NotRequired[str | None]
    annotations: NotRequired[list[dict[str, Any]] | None]
    audio: NotRequired[ChatCompletionAudio | None]
    function_call: NotRequired[FunctionCall | None]
    tool_calls: NotRequired[list[ChatCompletionMessageToolCall] | None]
    # Not openai-python's: a reasoning model's thinking, as DeepSeek, vLLM and SGLang spell it
    # (and Palyra writes it), and as vLLM's newer releases, OpenRouter and Ollama do (an
    # object, from OpenRouter).
    reasoning_content: NotRequired[str | None]
    reasoning: NotRequired[str | dict[str, Any] | None]


class Choice(TypedDict):
    index: int
    message: ChatCompletionMessage
    finish_reason: FinishReason
    logprobs: NotRequired[ChoiceLogprobs | None]


class PromptTokensDetails(TypedDict, total=False):
    audio_tokens: int | None
    cache_write_tokens: int | None
    cached_tokens: int | None
    image_tokens: int | None
    text_tokens: int | None


class CompletionTokensDetails(TypedDict, total=False):
    accepted_prediction_tokens: int | None
    audio_tokens: int | None
    reasoning_tokens: int | None
    rejected_prediction_tokens: int | None
    text_tokens: int | None


class CompletionUsage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: NotRequired[PromptTokensDetails | None]
    completion_tokens_details: NotRequired[CompletionTokensDetails | None]


class ChatCompletion(TypedDict):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: NotRequired[CompletionUsage | None]
    system_fingerprint: NotRequired[str | None]
    service_tier: NotRequired[str | None]
    metadata: NotRequired[dict[str, str] | None]
    moderation: NotRequired[dict[str, Any] | None]


# --- the stream chunk ---------------------------------------------------------------------


class ChoiceDeltaFunctionCall(TypedDict, total=False):
    name: str | None
    arguments: str | None


class ChoiceDeltaToolCallFunction(TypedDict, total=False):
    name: str | None
    arguments: str | None


class ChoiceDeltaToolCallCustom(TypedDict, total=False):
    """Not openai-python's (its delta has a function only): a custom tool's call, streamed
    as the API streams it."""

    name: str | None
    input: str | None


class ChoiceDeltaToolCall(TypedDict, total=False):
    index: Required[int]
    id: str | None
    type: Literal["function", "custom"] | None
    function: ChoiceDeltaToolCallFunction | None
    custom: ChoiceDeltaToolCallCustom | None  # (not openai-python's: see above)


class ChoiceDeltaAudio(TypedDict, total=False):
    id: str | None
    data: str | None
    expires_at: int | None
    transcript: str | None


class ChoiceDelta(TypedDict, total=False):
    role: Literal["developer", "system", "user", "assistant", "tool"] | None
    content: str | None
    refusal: str | None
    tool_calls: list[ChoiceDeltaToolCall] | None
    function_call: ChoiceDeltaFunctionCall | None
    audio: ChoiceDeltaAudio | None
    # Not openai-python's: as on `ChatCompletionMessage`.
    reasoning_content: str | None
    reasoning: str | dict[str, Any] | None


class ChunkChoice(TypedDict):
    """openai-python's `chat_completion_chunk.Choice`."""

    index: int
    delta: ChoiceDelta
    finish_reason: NotRequired[FinishReason | None]
    logprobs: NotRequired[ChoiceLogprobs | None]


class ChatCompletionChunk(TypedDict):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: NotRequired[CompletionUsage | None]
    system_fingerprint: NotRequired[str | None]
    service_tier: NotRequired[str | None]
    obfuscation: NotRequired[str | None]
    moderation: NotRequired[dict[str, Any] | None]


# --- where the typed fields meet the ones we have no name for -----------------------------


# merge_extra(known, extra): add to `known`, a wire object Palyra builds (a TypedDict: a plain
# dict), the fields of the same level that the other side sent and Palyra has no name for, as
# they came and after the known ones (the order a client sees). The one place an object typed
# here gets keys its type does not list: a TypedDict cannot say "and other keys". An extra
# may also be a field named here that Palyra does not read into the shared shapes (an
# upstream's own `reasoning_content`, its `annotations`): its value is the other side's,
# unchecked, which is why nothing reads a wire object back once its extras are in.
# At run time it is `dict.update` itself: typed, and no Python call per chunk.
merge_extra = cast("Callable[[Mapping[str, object], Mapping[str, object]], None]", dict.update)


def message_tool_call(call: ToolCallResult) -> ChatCompletionMessageToolCall:
    """A whole answer's tool call as the API writes it: a function's, or a custom tool's."""
    if call.type == "custom":
        return {
            "id": call.id,
            "type": "custom",
            "custom": {"name": call.name, "input": call.arguments},
        }
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }
