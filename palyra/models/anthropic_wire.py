"""The request side of the Anthropic Messages API wire format, as typed dicts.

Shaped after the anthropic SDK's `types/*_param.py`: only what Palyra sends when it translates
a chat completions request (`anthropic_request.py`). Answers are read as untrusted JSON and
checked field by field (`anthropic_response.py`), so they get no types here.
"""

from __future__ import annotations

from typing import Any, Literal, Required, TypeAlias, TypedDict


class TextBlockParam(TypedDict):
    type: Literal["text"]
    text: str


class Base64ImageSourceParam(TypedDict):
    type: Literal["base64"]
    media_type: str  # image/jpeg, image/png, image/gif or image/webp
    data: str


class URLImageSourceParam(TypedDict):
    type: Literal["url"]
    url: str


class ImageBlockParam(TypedDict):
    type: Literal["image"]
    source: Base64ImageSourceParam | URLImageSourceParam


class Base64PDFSourceParam(TypedDict):
    type: Literal["base64"]
    media_type: Literal["application/pdf"]
    data: str


class PlainTextSourceParam(TypedDict):
    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


class DocumentBlockParam(TypedDict, total=False):
    type: Required[Literal["document"]]
    source: Required[Base64PDFSourceParam | PlainTextSourceParam]
    title: str


class ToolUseBlockParam(TypedDict):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ThinkingBlockParam(TypedDict, total=False):
    """A thinking block of an earlier answer, sent back exactly as it came: with thinking
    enabled, Anthropic checks its signature and wants it first in the assistant turn that
    called a tool."""

    type: Required[Literal["thinking"]]
    thinking: Required[str]
    signature: str  # Anthropic always signs; some Anthropic-compatible servers do not


class RedactedThinkingBlockParam(TypedDict):
    type: Literal["redacted_thinking"]
    data: str  # encrypted reasoning, opaque to everyone but Anthropic


ToolResultContentParam: TypeAlias = TextBlockParam | ImageBlockParam | DocumentBlockParam


class ToolResultBlockParam(TypedDict, total=False):
    type: Required[Literal["tool_result"]]
    tool_use_id: Required[str]
    content: str | list[ToolResultContentParam]
    is_error: bool


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
    role: Literal["user", "assistant"]
    content: str | list[ContentBlockParam]


class ToolParam(TypedDict, total=False):
    name: Required[str]
    input_schema: Required[dict[str, Any]]
    description: str


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


class ThinkingConfigEnabledParam(TypedDict):
    type: Literal["enabled"]
    # At least 1024, and less than max_tokens (which counts thinking too).
    budget_tokens: int


class MetadataParam(TypedDict, total=False):
    user_id: str


class MessageCreateParams(TypedDict, total=False):
    """`POST /v1/messages`."""

    model: Required[str]
    max_tokens: Required[int]
    messages: Required[list[MessageParam]]
    system: str
    tools: list[ToolParam]
    tool_choice: ToolChoiceParam
    thinking: ThinkingConfigEnabledParam
    temperature: float
    top_p: float
    stop_sequences: list[str]
    metadata: MetadataParam
    stream: bool
