"""The wire format of the public Anthropic Messages API, typed once for all of Palyra.

Typed like the anthropic SDK's own `*_param.py` TypedDicts (anthropic 2.14 is the reference).
Two sides use it: the Anthropic provider kind writes requests in it when it translates a chat
completions request (`anthropic_request.py`; the answers it reads are untrusted JSON, checked
field by field in `anthropic_response.py`), and the Anthropic Messages dialect
(`palyra/dialects/anthropic_*`) reads requests in it and writes answers, stream events and
errors in it. Only what either side touches is spelled out; a body passed through to an
Anthropic provider travels as the client sent it, fields we do not name included.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, Required, TypeAlias, TypedDict

# --- request -----------------------------------------------------------------------------------

ImageMediaType: TypeAlias = Literal["image/jpeg", "image/png", "image/gif", "image/webp"]


class CacheControlParam(TypedDict, total=False):
    type: Required[Literal["ephemeral"]]
    ttl: Literal["5m", "1h"]


class TextBlockParam(TypedDict, total=False):
    type: Required[Literal["text"]]
    text: Required[str]
    cache_control: CacheControlParam | None
    citations: list[dict[str, Any]] | None


class Base64ImageSourceParam(TypedDict):
    type: Literal["base64"]
    media_type: ImageMediaType
    data: str


class URLSourceParam(TypedDict):
    type: Literal["url"]
    url: str


class ImageBlockParam(TypedDict, total=False):
    type: Required[Literal["image"]]
    source: Required[Base64ImageSourceParam | URLSourceParam]
    cache_control: CacheControlParam | None


class Base64PDFSourceParam(TypedDict):
    type: Literal["base64"]
    media_type: Literal["application/pdf"]
    data: str


class PlainTextSourceParam(TypedDict):
    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


class ContentBlockSourceParam(TypedDict):
    type: Literal["content"]
    content: str | list[TextBlockParam | ImageBlockParam]


class DocumentBlockParam(TypedDict, total=False):
    type: Required[Literal["document"]]
    source: Required[
        Base64PDFSourceParam | PlainTextSourceParam | ContentBlockSourceParam | URLSourceParam
    ]
    title: str | None
    context: str | None
    citations: dict[str, Any] | None
    cache_control: CacheControlParam | None


class ToolUseBlockParam(TypedDict, total=False):
    type: Required[Literal["tool_use"]]
    id: Required[str]
    name: Required[str]
    input: Required[dict[str, Any]]
    cache_control: CacheControlParam | None


ToolResultContentParam: TypeAlias = TextBlockParam | ImageBlockParam | DocumentBlockParam


class ToolResultBlockParam(TypedDict, total=False):
    type: Required[Literal["tool_result"]]
    tool_use_id: Required[str]
    content: str | list[ToolResultContentParam]
    is_error: bool
    cache_control: CacheControlParam | None


class ThinkingBlockParam(TypedDict, total=False):
    """A thinking block of an earlier answer, sent back exactly as it came: with thinking
    enabled, Anthropic checks its signature and wants it first in the assistant turn that
    called a tool."""

    type: Required[Literal["thinking"]]
    thinking: Required[str]
    # Required by Anthropic, which always signs; some Anthropic-compatible servers do not.
    signature: str


class RedactedThinkingBlockParam(TypedDict):
    type: Literal["redacted_thinking"]
    data: str  # encrypted reasoning, opaque to everyone but Anthropic


ContentBlockParam: TypeAlias = (
    TextBlockParam
    | ImageBlockParam
    | DocumentBlockParam
    | ToolUseBlockParam
    | ToolResultBlockParam
    | ThinkingBlockParam
    | RedactedThinkingBlockParam
)


class MessageParam(TypedDict):
    # "system" turns are accepted by the newest API versions (anthropic 2.14's
    # SystemMessageParam); they take text only.
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlockParam]


class ToolParam(TypedDict, total=False):
    name: Required[str]
    input_schema: Required[dict[str, Any]]
    description: str
    type: Literal["custom"] | None
    strict: bool
    cache_control: CacheControlParam | None


class ToolChoiceAutoParam(TypedDict, total=False):
    type: Required[Literal["auto"]]
    disable_parallel_tool_use: bool


class ToolChoiceAnyParam(TypedDict, total=False):
    type: Required[Literal["any"]]
    disable_parallel_tool_use: bool


class ToolChoiceToolParam(TypedDict, total=False):
    type: Required[Literal["tool"]]
    name: Required[str]
    disable_parallel_tool_use: bool


class ToolChoiceNoneParam(TypedDict):
    type: Literal["none"]


ToolChoiceParam: TypeAlias = (
    ToolChoiceAutoParam | ToolChoiceAnyParam | ToolChoiceToolParam | ToolChoiceNoneParam
)


class ThinkingConfigEnabledParam(TypedDict, total=False):
    type: Required[Literal["enabled"]]
    # At least 1024, and less than max_tokens (which counts thinking too).
    budget_tokens: Required[int]
    display: Literal["summarized", "omitted"] | None


class ThinkingConfigDisabledParam(TypedDict):
    type: Literal["disabled"]


class ThinkingConfigAdaptiveParam(TypedDict, total=False):
    type: Required[Literal["adaptive"]]
    display: Literal["summarized", "omitted"] | None


ThinkingConfigParam: TypeAlias = (
    ThinkingConfigEnabledParam | ThinkingConfigDisabledParam | ThinkingConfigAdaptiveParam
)


class MetadataParam(TypedDict, total=False):
    user_id: str | None


class MessageCountTokensParams(TypedDict, total=False):
    """`POST /v1/messages/count_tokens`."""

    model: Required[str]
    messages: Required[list[MessageParam]]
    system: str | list[TextBlockParam]
    tools: list[ToolParam]
    tool_choice: ToolChoiceParam
    thinking: ThinkingConfigParam


class MessageCreateParams(MessageCountTokensParams, total=False):
    """`POST /v1/messages`."""

    max_tokens: Required[int]
    stop_sequences: list[str]
    metadata: MetadataParam
    temperature: float
    top_p: float
    top_k: int
    stream: bool


# --- answer ------------------------------------------------------------------------------------

StopReason: TypeAlias = Literal[
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
]


class TextBlock(TypedDict):
    type: Literal["text"]
    text: str


class ThinkingBlock(TypedDict):
    type: Literal["thinking"]
    thinking: str
    signature: str


class ToolUseBlock(TypedDict):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


ContentBlock: TypeAlias = TextBlock | ThinkingBlock | ToolUseBlock


class Usage(TypedDict):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


class Message(TypedDict):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    content: list[ContentBlock]
    model: str
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: Usage


class MessageTokensCount(TypedDict):
    input_tokens: int


# --- stream events -----------------------------------------------------------------------------


class MessageStartEvent(TypedDict):
    type: Literal["message_start"]
    message: Message


class ContentBlockStartEvent(TypedDict):
    type: Literal["content_block_start"]
    index: int
    content_block: ContentBlock


class TextDelta(TypedDict):
    type: Literal["text_delta"]
    text: str


class InputJSONDelta(TypedDict):
    type: Literal["input_json_delta"]
    partial_json: str


class ThinkingDelta(TypedDict):
    type: Literal["thinking_delta"]
    thinking: str


class SignatureDelta(TypedDict):
    type: Literal["signature_delta"]
    signature: str


class ContentBlockDeltaEvent(TypedDict):
    type: Literal["content_block_delta"]
    index: int
    delta: TextDelta | InputJSONDelta | ThinkingDelta | SignatureDelta


class ContentBlockStopEvent(TypedDict):
    type: Literal["content_block_stop"]
    index: int


class MessageDelta(TypedDict):
    stop_reason: StopReason | None
    stop_sequence: str | None
    # The API's, never written by Palyra (it runs no container tools and gives no refusal
    # details): named so the keys match the SDK's.
    container: NotRequired[dict[str, Any] | None]
    stop_details: NotRequired[dict[str, Any] | None]


class MessageDeltaUsage(TypedDict, total=False):
    output_tokens: Required[int]
    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    # The API's, never written by Palyra (see MessageDelta).
    output_tokens_details: dict[str, Any] | None
    server_tool_use: dict[str, Any] | None


class MessageDeltaEvent(TypedDict):
    type: Literal["message_delta"]
    delta: MessageDelta
    usage: MessageDeltaUsage


class MessageStopEvent(TypedDict):
    type: Literal["message_stop"]


# What the Messages dialect writes of a stream (`anthropic_stream`); `ping` is not the SDK's
# and goes out as fixed bytes.
MessageStreamEvent: TypeAlias = (
    MessageStartEvent
    | ContentBlockStartEvent
    | ContentBlockDeltaEvent
    | ContentBlockStopEvent
    | MessageDeltaEvent
    | MessageStopEvent
)


# --- errors ------------------------------------------------------------------------------------

ErrorType: TypeAlias = Literal[
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "timeout_error",
    "overloaded_error",
]


class ErrorObject(TypedDict):
    type: ErrorType
    message: str


class ErrorResponse(TypedDict):
    type: Literal["error"]
    error: ErrorObject
    request_id: NotRequired[str | None]
