"""The OpenAI Responses API wire format, as far as Palyra speaks it: TypedDicts after
openai-python's `types/responses/*` (the shapes its SDK parses), for the request Palyra takes,
the `response` object and items it answers, and the events of the stream it writes
(`responses_stream`; an upstream's own stream is relayed as it came)."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, Required, TypedDict, final

ItemStatus = Literal["in_progress", "completed", "incomplete"]
ResponseStatus = Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]


# --- request ------------------------------------------------------------------------------


class InputTextParam(TypedDict, total=False):
    type: Required[Literal["input_text"]]
    text: Required[str]


class InputImageParam(TypedDict, total=False):
    type: Required[Literal["input_image"]]
    detail: Literal["low", "high", "auto"]
    image_url: str | None
    file_id: str | None


class InputFileParam(TypedDict, total=False):
    type: Required[Literal["input_file"]]
    file_data: str
    file_id: str | None
    file_url: str
    filename: str


class OutputTextParam(TypedDict, total=False):
    type: Required[Literal["output_text"]]
    text: Required[str]
    annotations: list[Any]
    logprobs: list[Any]


class RefusalParam(TypedDict):
    type: Literal["refusal"]
    refusal: str


class MessageParam(TypedDict, total=False):
    """An input message (`EasyInputMessageParam`, `Message`) or an earlier answer's output
    message echoed back (`ResponseOutputMessageParam`)."""

    type: Literal["message"]
    id: str
    role: Required[Literal["user", "assistant", "system", "developer"]]
    content: Required[str | list[dict[str, Any]]]
    status: ItemStatus
    phase: str | None


class FunctionCallParam(TypedDict, total=False):
    type: Required[Literal["function_call"]]
    id: str
    call_id: Required[str]
    name: Required[str]
    arguments: Required[str]
    status: ItemStatus


class FunctionCallOutputParam(TypedDict, total=False):
    type: Required[Literal["function_call_output"]]
    id: str | None
    call_id: Required[str]
    output: Required[str | list[dict[str, Any]]]
    status: ItemStatus | None


class SummaryText(TypedDict):
    type: Literal["summary_text"]
    text: str


class ReasoningParam(TypedDict, total=False):
    type: Required[Literal["reasoning"]]
    id: Required[str]
    summary: Required[list[SummaryText]]
    content: list[dict[str, Any]]
    encrypted_content: str | None
    status: ItemStatus


class FunctionToolParam(TypedDict, total=False):
    type: Required[Literal["function"]]
    name: Required[str]
    parameters: Required[dict[str, Any] | None]
    strict: Required[bool | None]
    description: str | None


class ToolChoiceFunctionParam(TypedDict):
    type: Literal["function"]
    name: str


class TextFormatParam(TypedDict, total=False):
    """`text.format`: `{"type": "text"}`, `{"type": "json_object"}`, or a JSON schema."""

    type: Required[Literal["text", "json_object", "json_schema"]]
    name: str
    schema: dict[str, Any]
    description: str
    strict: bool | None


class TextConfigParam(TypedDict, total=False):
    format: TextFormatParam
    verbosity: Literal["low", "medium", "high"] | None


class ReasoningConfigParam(TypedDict, total=False):
    effort: str | None
    summary: str | None
    generate_summary: str | None


class ResponseCreateParams(TypedDict, total=False):
    """`POST /v1/responses`: the parameters Palyra knows (see `openai_responses` for what it
    does with the others)."""

    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None
    tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any]
    text: TextConfigParam
    reasoning: ReasoningConfigParam | None
    max_output_tokens: int | None
    temperature: float | None
    top_p: float | None
    parallel_tool_calls: bool | None
    metadata: dict[str, str] | None
    user: str
    store: bool | None
    previous_response_id: str | None
    stream: bool | None


# --- the answer ---------------------------------------------------------------------------


class OutputText(TypedDict):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]
    logprobs: list[Any]


class OutputRefusal(TypedDict):
    type: Literal["refusal"]
    refusal: str


@final
class OutputMessage(TypedDict):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    status: ItemStatus
    content: list[OutputText | OutputRefusal]


@final
class FunctionCall(TypedDict):
    id: str
    type: Literal["function_call"]
    status: ItemStatus
    call_id: str
    name: str
    arguments: str


@final
class Reasoning(TypedDict):
    id: str
    type: Literal["reasoning"]
    summary: list[SummaryText]
    encrypted_content: NotRequired[str]


# (final: `"status" in item` tells a message or a call from a reasoning item, and `in`
# narrows a union of TypedDicts only when none can be subclassed with another's keys.)
OutputItem = OutputMessage | FunctionCall | Reasoning


class InputTokensDetails(TypedDict):
    cached_tokens: int
    cache_write_tokens: int


class OutputTokensDetails(TypedDict):
    reasoning_tokens: int


class ResponseUsage(TypedDict):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ResponseError(TypedDict):
    code: str
    message: str


class IncompleteDetails(TypedDict):
    reason: Literal["max_output_tokens", "content_filter"]


class Response(TypedDict, total=False):
    id: Required[str]
    object: Required[Literal["response"]]
    created_at: Required[int]
    completed_at: int | None
    status: Required[ResponseStatus]
    error: Required[ResponseError | None]
    incomplete_details: Required[IncompleteDetails | None]
    instructions: Required[str | None]
    max_output_tokens: int | None
    model: Required[str]
    output: Required[list[OutputItem]]
    parallel_tool_calls: Required[bool]
    previous_response_id: str | None
    reasoning: dict[str, Any]
    store: bool
    temperature: float | None
    text: dict[str, Any]
    tool_choice: Required[str | dict[str, Any]]
    tools: Required[list[dict[str, Any]]]
    top_p: float | None
    truncation: str
    usage: ResponseUsage | None
    user: str | None
    metadata: dict[str, str]


class ItemList(TypedDict):
    """`GET /v1/responses/{id}/input_items`."""

    object: Literal["list"]
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeletedResponse(TypedDict):
    id: str
    object: Literal["response.deleted"]
    deleted: bool


# --- the stream's events ------------------------------------------------------------------
# Each carries its `sequence_number`, from 0. After openai-python's
# `types/responses/response_*_event.py`, those Palyra writes.


class ResponseCreatedEvent(TypedDict):
    type: Literal["response.created"]
    sequence_number: int
    response: Response


class ResponseInProgressEvent(TypedDict):
    type: Literal["response.in_progress"]
    sequence_number: int
    response: Response


class ResponseCompletedEvent(TypedDict):
    type: Literal["response.completed"]
    sequence_number: int
    response: Response


class ResponseIncompleteEvent(TypedDict):
    type: Literal["response.incomplete"]
    sequence_number: int
    response: Response


class ResponseFailedEvent(TypedDict):
    type: Literal["response.failed"]
    sequence_number: int
    response: Response


class ResponseErrorEvent(TypedDict):
    type: Literal["error"]
    sequence_number: int
    code: NotRequired[str | None]
    message: str
    param: NotRequired[str | None]


class ResponseOutputItemAddedEvent(TypedDict):
    type: Literal["response.output_item.added"]
    sequence_number: int
    output_index: int
    item: OutputItem


class ResponseOutputItemDoneEvent(TypedDict):
    type: Literal["response.output_item.done"]
    sequence_number: int
    output_index: int
    item: OutputItem


class ResponseContentPartAddedEvent(TypedDict):
    type: Literal["response.content_part.added"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: OutputText | OutputRefusal


class ResponseContentPartDoneEvent(TypedDict):
    type: Literal["response.content_part.done"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: OutputText | OutputRefusal


class ResponseTextDeltaEvent(TypedDict):
    type: Literal["response.output_text.delta"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any]


class ResponseTextDoneEvent(TypedDict):
    type: Literal["response.output_text.done"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any]


class ResponseRefusalDeltaEvent(TypedDict):
    type: Literal["response.refusal.delta"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str


class ResponseRefusalDoneEvent(TypedDict):
    type: Literal["response.refusal.done"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    refusal: str


class ResponseReasoningSummaryPartAddedEvent(TypedDict):
    type: Literal["response.reasoning_summary_part.added"]
    sequence_number: int
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText


class ResponseReasoningSummaryPartDoneEvent(TypedDict):
    type: Literal["response.reasoning_summary_part.done"]
    sequence_number: int
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText
    status: NotRequired[Literal["incomplete"] | None]


class ResponseReasoningSummaryTextDeltaEvent(TypedDict):
    type: Literal["response.reasoning_summary_text.delta"]
    sequence_number: int
    item_id: str
    output_index: int
    summary_index: int
    delta: str


class ResponseReasoningSummaryTextDoneEvent(TypedDict):
    type: Literal["response.reasoning_summary_text.done"]
    sequence_number: int
    item_id: str
    output_index: int
    summary_index: int
    text: str


class ResponseFunctionCallArgumentsDeltaEvent(TypedDict):
    type: Literal["response.function_call_arguments.delta"]
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class ResponseFunctionCallArgumentsDoneEvent(TypedDict):
    type: Literal["response.function_call_arguments.done"]
    sequence_number: int
    item_id: str
    output_index: int
    arguments: str


ResponseStreamEvent = (
    ResponseCreatedEvent
    | ResponseInProgressEvent
    | ResponseCompletedEvent
    | ResponseIncompleteEvent
    | ResponseFailedEvent
    | ResponseErrorEvent
    | ResponseOutputItemAddedEvent
    | ResponseOutputItemDoneEvent
    | ResponseContentPartAddedEvent
    | ResponseContentPartDoneEvent
    | ResponseTextDeltaEvent
    | ResponseTextDoneEvent
    | ResponseRefusalDeltaEvent
    | ResponseRefusalDoneEvent
    | ResponseReasoningSummaryPartAddedEvent
    | ResponseReasoningSummaryPartDoneEvent
    | ResponseReasoningSummaryTextDeltaEvent
    | ResponseReasoningSummaryTextDoneEvent
    | ResponseFunctionCallArgumentsDeltaEvent
    | ResponseFunctionCallArgumentsDoneEvent
)
