"""Chat completions requests translated to Anthropic Messages API requests (pure, no I/O).

`unhonoured` names what Anthropic cannot honour (the router then picks a candidate that
can); `build_messages_request` translates the rest into a `POST /v1/messages` body, and raises
`CannotHonour` for what only the translation finds Anthropic cannot honour (the fallback skips
the candidate on that too). `InvalidRequest` is kept for a request that is wrong whatever
serves it (a tool_choice naming no tool, a malformed data URL, ...): that is the client's to
fix, and no other candidate would do better.

Where the two APIs differ:
- System and developer messages become the top-level `system` string, in order, joined by a
  blank line. Anthropic requires user and assistant turns to alternate, so consecutive messages
  of one role are merged into one; `tool` (and deprecated `function`) messages become
  `tool_result` blocks of a user turn. Deprecated `functions` / `function_call` are tools.
- Fields of a reply object that a client keeps in its history (`reasoning_content`,
  `annotations`, ...) are never sent: only the fields translated here are. A `refusal` part
  or field of an assistant turn is what the assistant said: text. An earlier audio answer is
  its transcript.
- `thinking_blocks` of an assistant message (the thinking and redacted_thinking blocks an
  earlier Anthropic answer gave back, signatures included; `anthropic_response.py`) open its
  assistant turn, as they came, when the request thinks: Anthropic then requires them before
  the tool_use blocks of the turn it is continuing, and checks their signatures. Without
  thinking they are left out (see `_thinking_blocks`).
- `file` parts: a PDF becomes a document block (base64 source), text/plain a document with a
  text source, an image an image block. OpenAI file ids mean nothing to Anthropic.
- JSON response formats are enforced the one way Anthropic can: a tool (the "answer tool")
  whose input_schema is the client's schema (json_object: any object), and a tool_choice that
  forces a call to it; the call's input is the answer, given back as the message content with
  finish_reason "stop" (`anthropic_response.py`). With the client's own tools as well, the
  model may call those or answer: tool_choice "auto" becomes "any" over the client's tools
  and the answer tool (OpenAI's model too either calls a tool or answers in the schema);
  "none" forces the answer tool; "required" or a named function forces that call, and the
  response format has no answer to shape in that turn, so no answer tool is added.
- `reasoning_effort` becomes `thinking` with a token budget (`THINKING_BUDGETS`; "none" and
  "minimal" mean no thinking). Anthropic counts thinking in max_tokens and wants a budget of
  at least 1024 below it: a client's max_tokens keeps its meaning (a cap on everything
  generated, as OpenAI's max_completion_tokens, which counts reasoning tokens too) and the
  budget takes at most half of it; without one, max_tokens is the model's max_output_tokens
  plus the budget, so the answer keeps the room it has without thinking. With thinking
  Anthropic takes temperature 1 only, top_p from 0.95 only, a max_tokens above 1024 and no
  forced tool call: such requests are not honoured (another candidate serves them, or the 400
  names the parameters), never changed silently.
- Anthropic's temperature range is 0..1; a higher value is not honoured (not clamped, which
  would change the sampling the caller asked for).
- Not honoured, so never silently dropped (`unhonoured`): n > 1, logprobs / top_logprobs,
  audio input and output, frequency / presence penalties, logit_bias, `verbosity`,
  `web_search_options` and `moderation` (each changes the answer), custom tools and
  allowed_tools choices. Dropped as harmless (`HARMLESS_PARAMETERS` and the declared `seed`,
  `metadata`, `stream_options`): `seed` (best-effort determinism, no promise to break),
  `service_tier` (billing and latency, not the answer), `prediction` (a latency hint), `store`
  and `metadata` (OpenAI's stored completions), `stream_options` (usage always comes),
  `prompt_cache_key`, `prompt_cache_retention` and `prompt_cache_options` (cache hints;
  Anthropic caches what a request marks, and a translated one marks nothing). `user` (or
  `safety_identifier`) becomes `metadata.user_id`; `top_k` (not OpenAI's, but Anthropic's,
  sent by clients that know they reach Claude) is Anthropic's `top_k`.
- A top-level parameter Palyra has no name for (`ChatRequest.model_extra`) is forwarded to
  OpenAI-compatible upstreams as it came; to Anthropic it means nothing, and leaving it out
  may change the answer the client asked for, so it is not honoured either (null is absent).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal, cast, get_args
from urllib.parse import unquote_to_bytes

import orjson

from palyra.config import ModelConfig
from palyra.errors import InvalidRequest
from palyra.models.anthropic_wire import (
    Base64PDFSourceParam,
    ContentBlockParam,
    DocumentBlockParam,
    ImageBlockParam,
    ImageMediaType,
    MessageCreateParams,
    MessageParam,
    PlainTextSourceParam,
    RedactedThinkingBlockParam,
    ThinkingBlockParam,
    ThinkingConfigEnabledParam,
    ToolChoiceAnyParam,
    ToolChoiceAutoParam,
    ToolChoiceParam,
    ToolChoiceToolParam,
    ToolParam,
    ToolResultBlockParam,
    ToolResultContentParam,
    ToolUseBlockParam,
)
from palyra.types import (
    AllowedToolsChoice,
    ChatRequest,
    CustomTool,
    CustomToolCall,
    FilePart,
    FunctionDefinition,
    ImagePart,
    InputAudioPart,
    Message,
    NamedCustomToolChoice,
    NamedToolChoice,
    RefusalPart,
    TextPart,
)

IMAGE_MEDIA_TYPES: frozenset[str] = frozenset(get_args(ImageMediaType))
PDF: Literal["application/pdf"] = "application/pdf"
PLAIN_TEXT: Literal["text/plain"] = "text/plain"
# What a file part without a data URL is, by its file name.
FILE_SUFFIXES = {".pdf": PDF, ".txt": PLAIN_TEXT}
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}

MIN_THINKING_BUDGET = 1024
THINKING_BUDGETS = {"low": MIN_THINKING_BUDGET, "medium": 4096, "high": 16384}
NO_THINKING = frozenset({"none", "minimal"})
# With thinking Anthropic samples at temperature 1 and takes top_p from 0.95 to 1 only.
THINKING_TOP_P = 0.95

# The answer tool's name when the json_schema names none Anthropic would take (or none is
# given: json_object).
ANSWER_TOOL = "json_answer"
ANSWER_TOOL_DESCRIPTION = (
    "Give your whole answer by calling this tool: its input is the answer, as JSON."
)
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

# Top-level parameters (kept as extras) that change the answer and that Anthropic has no
# counterpart for; an empty value asks nothing.
_UNHONOURED = {
    "audio": "audio output",
    "logit_bias": "logit_bias (Anthropic cannot bias tokens)",
    "verbosity": "verbosity (Anthropic has no such setting)",
    "web_search_options": "web_search_options (OpenAI's web search)",
    "moderation": "moderation (OpenAI's moderation of the input and answer)",
}
# Documented OpenAI parameters (kept as extras) that do not change the answer, so leaving them
# out on the way to Anthropic is faithful. What real clients send by default (openai-python,
# langchain-openai, openai-agents: model, messages, stream, stream_options, tools, tool_choice,
# parallel_tool_calls, response_format, store, metadata, ...) is declared or listed here.
HARMLESS_PARAMETERS = frozenset(
    {
        "service_tier",  # billing and latency
        "prediction",  # a latency hint: the answer is the model's either way
        "store",  # OpenAI's stored completions
        "prompt_cache_key",  # cache hints: Anthropic caches what a request marks
        "prompt_cache_retention",
        "prompt_cache_options",
        "safety_identifier",  # translated: metadata.user_id
    }
)

_DATA_URL = re.compile(r"^data:(?P<media>[^;,]*)(?P<params>(;[^;,]*)*),(?P<data>.*)$", re.DOTALL)


# --- what cannot be honoured -----------------------------------------------------------------


class CannotHonour(Exception):
    """What Anthropic cannot honour in a request, found while translating it: as `unhonoured`
    words it (the parameter or part, what it asks in words). The provider raises it as its
    `Unsupported`, on which the fallback skips to a candidate that can serve."""

    def __init__(self, param: str, what: str) -> None:
        super().__init__(f"{param}: {what}")
        self.param = param
        self.what = what


def unhonoured(request: ChatRequest) -> tuple[str, str] | None:
    """What in `request` Anthropic cannot honour: (the parameter or part, what it asks in
    words), or None. `AnthropicProvider.unsupported` words the refusal."""
    request = request.functions_as_tools()
    if request.n is not None and request.n > 1:
        return "n", f"n={request.n} (Anthropic gives one answer per request)"
    if request.logprobs:
        return "logprobs", "logprobs (Anthropic gives no token probabilities)"
    if request.top_logprobs:
        return "top_logprobs", "top_logprobs (Anthropic gives no token probabilities)"
    if request.modalities and "audio" in request.modalities:
        return "modalities", "audio output (modalities includes audio)"
    for penalty in ("frequency_penalty", "presence_penalty"):
        if getattr(request, penalty):  # 0 is no penalty, and means what it says
            return penalty, f"{penalty} (Anthropic has no repetition penalties)"
    found = _unhonoured_extras(request.model_extra or {})
    if found is not None:
        return found
    found = _unhonoured_tools(request)
    if found is not None:
        return found
    if request.temperature is not None and request.temperature > 1:
        return "temperature", f"temperature {request.temperature} (Anthropic takes 0 to 1)"
    effort = request.reasoning_effort
    if effort is not None and effort not in NO_THINKING and effort not in THINKING_BUDGETS:
        return "reasoning_effort", (
            f"reasoning_effort {effort!r} (Anthropic thinking is mapped from none, minimal, "
            "low, medium and high)"
        )
    if effort is not None and effort in THINKING_BUDGETS:
        found = _unhonoured_thinking(request, effort)
        if found is not None:
            return found
    if answer_tool(request) is not None and answer_schema(request) is None:
        return "response_format", (
            "a json_schema whose root is not an object (Anthropic enforces the schema as a "
            "tool's input, which is an object)"
        )
    return _unhonoured_content(request.messages)


def _unhonoured_extras(extras: dict[str, Any]) -> tuple[str, str] | None:
    for name, value in extras.items():
        if value is None or name in HARMLESS_PARAMETERS:
            continue
        if name == "top_k":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return name, f"top_k {value!r} (Anthropic's top_k is an integer from 0)"
            continue
        what = _UNHONOURED.get(name)
        if what is None:
            return name, (
                f"parameter {name!r} (unknown to Palyra, so only OpenAI-compatible providers "
                "are sent it)"
            )
        if value:
            return name, what
    return None


def _unhonoured_thinking(request: ChatRequest, effort: str) -> tuple[str, str] | None:
    """What Anthropic's extended thinking (for `effort`) does not go with in `request`."""
    asked = f"with reasoning_effort {effort!r}"
    if _forced_call(request):
        return "tool_choice", (
            f"a tool_choice that forces a tool call {asked} (Anthropic thinks only when the "
            "model may choose)"
        )
    if answer_tool(request) is not None:
        return "response_format", (
            f"a JSON response_format {asked} (Anthropic enforces JSON by forcing a tool call, "
            "and does not think then)"
        )
    if request.temperature is not None and request.temperature != 1:
        return "temperature", (
            f"temperature {request.temperature} {asked} (Anthropic thinks at temperature 1 "
            "only; leave temperature or reasoning_effort out)"
        )
    if request.top_p is not None and request.top_p < THINKING_TOP_P:
        return "top_p", (
            f"top_p {request.top_p} {asked} (Anthropic thinks with top_p from "
            f"{THINKING_TOP_P} to 1 only; raise top_p or leave reasoning_effort out)"
        )
    limit = request.output_limit
    if limit is not None and limit <= MIN_THINKING_BUDGET:
        name = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        return name, (
            f"{name} {limit} {asked} (Anthropic thinks in at least {MIN_THINKING_BUDGET} "
            f"tokens, counted in {name}, and needs room for an answer too; raise {name} above "
            f"{MIN_THINKING_BUDGET} or leave reasoning_effort out)"
        )
    return None


def _unhonoured_tools(request: ChatRequest) -> tuple[str, str] | None:
    for index, tool in enumerate(request.tools or []):
        if isinstance(tool, CustomTool):
            return f"tools[{index}]", "custom tools (Anthropic's tools take JSON input only)"
    if isinstance(request.tool_choice, NamedCustomToolChoice):
        return "tool_choice", "a tool_choice naming a custom tool"
    if isinstance(request.tool_choice, AllowedToolsChoice):
        return (
            "tool_choice",
            "tool_choice allowed_tools (Anthropic cannot narrow the tools offered)",
        )
    for index, message in enumerate(request.messages):
        for call_index, call in enumerate(message.tool_calls or []):
            if isinstance(call, CustomToolCall):
                return f"messages[{index}].tool_calls[{call_index}]", "custom tool calls"
    return None


def _unhonoured_content(messages: list[Message]) -> tuple[str, str] | None:
    for index, message in enumerate(messages):
        for part_index, part in enumerate(message.content or []):
            where = f"messages[{index}].content[{part_index}]"
            if isinstance(part, InputAudioPart):
                return where, "input_audio content parts (Anthropic takes no audio input)"
            if isinstance(part, FilePart) and not part.file.file_data:
                return where, "file parts given by file_id (OpenAI file ids mean nothing to it)"
        if message.audio is not None and not _transcript(message) and not message.text():
            return f"messages[{index}].audio", "an earlier audio answer without its transcript"
    return None


def _transcript(message: Message) -> str:
    transcript = (message.audio or {}).get("transcript")
    return transcript if isinstance(transcript, str) else ""


# --- the request -----------------------------------------------------------------------------


def build_messages_request(
    request: ChatRequest, model: ModelConfig, *, stream: bool = False
) -> MessageCreateParams:
    """The `POST /v1/messages` body for a chat request.

    Raises `CannotHonour` for what Anthropic cannot honour (what `unhonoured` finds, and what
    only translating finds), and `InvalidRequest` for what is wrong whatever serves the request,
    naming the offending field, so the caller gets a precise 400 rather than an upstream one.
    """
    found = unhonoured(request)
    if found is not None:
        raise CannotHonour(*found)
    request = request.functions_as_tools()
    max_tokens, thinking = _thinking(request, model)
    system_parts: list[str] = []
    turns: list[tuple[str, list[ContentBlockParam]]] = []
    for index, message in enumerate(request.messages):
        if message.role in ("system", "developer"):
            _refuse_media(message, index)
            text = message.text()
            if text:
                system_parts.append(text)
        elif message.role == "user":
            turns.append(("user", list(_content_blocks(message, index))))
        elif message.role == "assistant":
            blocks = _assistant_blocks(message, index)
            if thinking is not None:
                blocks[:0] = _thinking_blocks(message, index)
            turns.append(("assistant", blocks))
        else:  # tool (function messages are tool messages by now)
            turns.append(("user", [_tool_result_block(message, index)]))

    messages = _merge_turns(turns)
    if not messages:
        # OpenAI answers a request of system messages alone; Anthropic does not.
        raise CannotHonour(
            "messages",
            "a request without a non-empty user or assistant message (Anthropic needs one)",
        )
    payload: MessageCreateParams = {
        "model": model.upstream_name,
        "max_tokens": max_tokens,
        "messages": messages,
    }
    if system_parts:
        payload["system"] = "\n\n".join(system_parts)
    tools, choice = _tools_and_choice(request)
    if tools:
        payload["tools"] = tools
    if choice is not None:
        payload["tool_choice"] = choice
    if thinking is not None:
        payload["thinking"] = thinking
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    top_k = (request.model_extra or {}).get("top_k")
    if top_k is not None:  # an integer from 0: `unhonoured` checked
        payload["top_k"] = top_k
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if stop:
        payload["stop_sequences"] = stop
    user = request.user or getattr(request, "safety_identifier", None)
    if isinstance(user, str) and user:
        payload["metadata"] = {"user_id": user}
    if stream:
        payload["stream"] = True
    return payload


def _thinking(
    request: ChatRequest, model: ModelConfig
) -> tuple[int, ThinkingConfigEnabledParam | None]:
    """max_tokens, and the thinking configuration for the request's reasoning_effort."""
    limit = request.output_limit
    effort = request.reasoning_effort
    if effort is None or effort not in THINKING_BUDGETS:
        return limit or model.max_output_tokens, None
    # (The limits thinking puts on the rest of the request are `unhonoured`'s to name.)
    budget = THINKING_BUDGETS[effort]
    if limit is None:
        return model.max_output_tokens + budget, {"type": "enabled", "budget_tokens": budget}
    budget = min(budget, max(MIN_THINKING_BUDGET, limit // 2))
    return limit, {"type": "enabled", "budget_tokens": budget}


# --- tools -----------------------------------------------------------------------------------


def _forced_call(request: ChatRequest) -> bool:
    """Whether the client forces a call to one of its own tools."""
    choice = request.tool_choice
    return bool(request.tools) and (choice == "required" or isinstance(choice, NamedToolChoice))


def answer_tool(request: ChatRequest) -> str | None:
    """The name of the tool whose forced call carries a JSON answer, or None when the
    request wants no JSON (or forces a call to a tool of its own, leaving no answer)."""
    request = request.functions_as_tools()
    response_format = request.response_format
    if response_format is None or response_format.type == "text" or _forced_call(request):
        return None
    taken = {tool.function.name for tool in request.tools or []}
    spec = response_format.json_schema or {}
    name = spec.get("name") if response_format.type == "json_schema" else None
    if not isinstance(name, str) or not _TOOL_NAME.match(name):
        name = ANSWER_TOOL
    while name in taken:
        name = f"{name[:56]}_answer"
    return name


def answer_schema(request: ChatRequest) -> dict[str, Any] | None:
    """The answer tool's input schema: the client's json_schema (OpenAI wraps it as
    {"name", "schema", "strict"}; a bare schema is taken too), or any object for json_object.
    None when the schema's root is not an object, which a tool's input must be."""
    response_format = request.response_format
    spec = response_format.json_schema if response_format is not None else None
    if response_format is None or response_format.type != "json_schema" or not spec:
        return {"type": "object"}
    schema = spec["schema"] if isinstance(spec.get("schema"), dict) else spec
    if schema.get("type") == "object":
        return schema
    if "type" not in schema and isinstance(schema.get("properties"), dict):
        return {"type": "object", **schema}
    return None


def _tools_and_choice(request: ChatRequest) -> tuple[list[ToolParam], ToolChoiceParam | None]:
    tools = [_tool(tool.function) for tool in request.tools or []]
    choice = request.tool_choice
    names = {tool["name"] for tool in tools}
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        if not tools:
            raise InvalidRequest(
                "tool_choice: names a function but the request has no tools", param="tool_choice"
            )
        raise InvalidRequest(
            f"tool_choice: no tool named {choice.function.name!r} in tools", param="tool_choice"
        )
    answer = answer_tool(request)
    if answer is not None:
        tools.append(_answer_tool(request, answer))
        if len(tools) == 1 or choice == "none":
            # One answer, so one call: a second would be a second answer.
            return tools, {"type": "tool", "name": answer, "disable_parallel_tool_use": True}
        result: ToolChoiceAutoParam | ToolChoiceAnyParam | ToolChoiceToolParam = {"type": "any"}
    elif not tools:
        return [], None
    elif choice is None:
        result = {"type": "auto"}
    elif isinstance(choice, NamedToolChoice):
        result = {"type": "tool", "name": choice.function.name}
    elif choice == "none":
        # Anthropic's "none" takes no other fields; parallelism is moot without tool use.
        return tools, {"type": "none"}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "auto":
        result = {"type": "auto"}
    else:  # custom and allowed_tools choices: `unhonoured` names them
        raise CannotHonour("tool_choice", f"tool_choice {choice}")
    if request.parallel_tool_calls is False:
        result["disable_parallel_tool_use"] = True
    elif choice is None and answer is None:
        return tools, None  # Anthropic's default is auto: nothing to say
    return tools, result


def _tool(function: FunctionDefinition) -> ToolParam:
    spec: ToolParam = {
        "name": function.name,
        # Anthropic requires an input schema; OpenAI lets a function without parameters omit it.
        "input_schema": function.parameters or dict(EMPTY_SCHEMA),
    }
    if function.description is not None:
        spec["description"] = function.description
    return spec


def _answer_tool(request: ChatRequest, name: str) -> ToolParam:
    schema = answer_schema(request)
    if schema is None:  # `unhonoured` names it first
        raise CannotHonour("response_format", "a json_schema whose root is not an object")
    description = ANSWER_TOOL_DESCRIPTION
    spec = request.response_format.json_schema if request.response_format else None
    if spec and isinstance(spec.get("description"), str) and spec["description"]:
        description += f" The answer: {spec['description']}"
    return {"name": name, "description": description, "input_schema": schema}


# --- content ---------------------------------------------------------------------------------


def _refuse_media(message: Message, index: int) -> None:
    kinds = message.part_types() & {"image_url", "file", "input_audio"}
    if kinds:
        raise InvalidRequest(
            f"messages[{index}]: {', '.join(sorted(kinds))} parts are only allowed in user "
            f"and tool messages, not in {message.role} messages",
            param=f"messages[{index}].content",
        )


def _content_blocks(message: Message, index: int) -> list[ToolResultContentParam]:
    """Text, image and document blocks of a message's content; empty text is left out
    because Anthropic refuses empty text blocks."""
    if message.content is None:
        return []
    if isinstance(message.content, str):
        return [{"type": "text", "text": message.content}] if message.content else []
    blocks: list[ToolResultContentParam] = []
    for part_index, part in enumerate(message.content):
        where = f"messages[{index}].content[{part_index}]"
        if isinstance(part, TextPart | RefusalPart):
            # A refusal in the history is what the assistant said: text, to Anthropic.
            text = part.text if isinstance(part, TextPart) else part.refusal
            if text:
                blocks.append({"type": "text", "text": text})
        elif isinstance(part, ImagePart):
            blocks.append(image_block(part.image_url.url, f"{where}.image_url.url"))
        elif isinstance(part, FilePart):
            blocks.append(file_block(part, where))
        else:  # `unhonoured` names it first
            raise CannotHonour(f"{where}.type", f"{part.type} content parts")
    return blocks


def image_block(url: str, where: str = "image_url.url") -> ImageBlockParam:
    """An Anthropic image block for an OpenAI `image_url`: base64 for data URLs, a URL source
    for http(s) URLs (Anthropic fetches those itself)."""
    if url.startswith("data:"):
        media_type, data = _base64_data_url(url, where)
        if media_type not in IMAGE_MEDIA_TYPES:
            allowed = ", ".join(sorted(IMAGE_MEDIA_TYPES))
            raise CannotHonour(
                where, f"an image of type {media_type or '(none)'!r} (Anthropic reads {allowed})"
            )
        return {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": cast(ImageMediaType, media_type),  # checked just above
                "data": data,
            },
        }
    if url.lower().startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest(f"{where}: must be an http(s) URL or a base64 data URL", param=where)


def _base64_data_url(url: str, where: str) -> tuple[str, str]:
    """(media type, base64 data) of a base64 data URL."""
    match = _DATA_URL.match(url)
    if match is None:
        raise InvalidRequest(f"{where}: not a valid data URL", param=where)
    params = [p.strip().lower() for p in match.group("params").split(";") if p.strip()]
    if "base64" not in params:
        raise InvalidRequest(f"{where}: data URLs must be base64-encoded", param=where)
    return match.group("media").strip().lower(), match.group("data")


def file_block(part: FilePart, where: str) -> ImageBlockParam | DocumentBlockParam:
    """A document block for a PDF or plain text file part (an image block for an image)."""
    where = f"{where}.file.file_data"
    raw = part.file.file_data or ""
    name = part.file.filename
    if raw.startswith("data:"):
        match = _DATA_URL.match(raw)
        if match is None:
            raise InvalidRequest(f"{where}: not a valid data URL", param=where)
        media_type = match.group("media").strip().lower()
    else:
        # Bare base64, as some clients send it: what it is, its file name says.
        suffix = name[name.rfind(".") :].lower() if name and "." in name else ""
        media_type = FILE_SUFFIXES.get(suffix, "")
        if not media_type:
            # An upstream may tell the type from the bytes; Anthropic must be told it.
            raise CannotHonour(
                where,
                f"bare base64 of a file named {name!r} (Anthropic must be told the type: send a "
                "data URL naming it, application/pdf or text/plain, or a file name ending .pdf "
                "or .txt)",
            )
        raw = f"data:{media_type};base64,{raw}"
    source: Base64PDFSourceParam | PlainTextSourceParam
    if media_type == PDF:
        source = {"type": "base64", "media_type": PDF, "data": _base64_data_url(raw, where)[1]}
    elif media_type == PLAIN_TEXT:
        source = {"type": "text", "media_type": PLAIN_TEXT, "data": _plain_text(raw, where)}
    elif media_type in IMAGE_MEDIA_TYPES:
        return image_block(raw, where)
    else:
        raise CannotHonour(
            where,
            f"a file of type {media_type or '(none)'!r} (Anthropic reads application/pdf and "
            "text/plain files, and images)",
        )
    block: DocumentBlockParam = {"type": "document", "source": source}
    if name:
        block["title"] = name
    return block


def _plain_text(url: str, where: str) -> str:
    match = _DATA_URL.match(url)
    assert match is not None  # checked by the caller
    params = [p.strip().lower() for p in match.group("params").split(";") if p.strip()]
    data = match.group("data")
    try:
        raw = (
            base64.b64decode(data, validate=True) if "base64" in params else unquote_to_bytes(data)
        )
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        # Anthropic's plain text source is text; the bytes are for an upstream to judge.
        raise CannotHonour(where, "a text/plain file that is not UTF-8 text") from None


def _assistant_blocks(message: Message, index: int) -> list[ContentBlockParam]:
    _refuse_media(message, index)
    blocks: list[ContentBlockParam] = list(_content_blocks(message, index))
    if not blocks and (message.refusal or _transcript(message)):
        # What the assistant said, when the content holds nothing: its refusal, or the
        # transcript of its audio answer.
        blocks.append({"type": "text", "text": message.refusal or _transcript(message)})
    for call_index, call in enumerate(message.tool_calls or []):
        where = f"messages[{index}].tool_calls[{call_index}].function.arguments"
        blocks.append(_tool_use(call.id, call.function.name, call.function.arguments, where))
    return blocks


def _thinking_blocks(
    message: Message, index: int
) -> list[ThinkingBlockParam | RedactedThinkingBlockParam]:
    """The thinking blocks an assistant message of the history carries (`thinking_blocks`,
    as an earlier answer gave them), to open its turn in a request that thinks.

    Only a request that thinks sends them. Anthropic requires them then (an assistant turn
    with tool_use that the request continues must start with the thinking that led to it,
    signature intact) and uses them as context. Without thinking it requires none, refuses
    them in a final assistant message ("When thinking is disabled, an `assistant` message in
    the final position cannot contain `thinking`") and has no thinking to continue: leaving
    them out never fails and changes nothing the model could use, as leaving out
    `reasoning_content` does. Signatures are Anthropic's to check; their shape is ours."""
    raw = (message.model_extra or {}).get("thinking_blocks")
    if raw is None:
        return []
    where = f"messages[{index}].thinking_blocks"
    if not isinstance(raw, list):
        raise InvalidRequest(
            f"{where}: must be a list of thinking blocks, as the answer gave them", param=where
        )
    blocks: list[ThinkingBlockParam | RedactedThinkingBlockParam] = []
    for position, block in enumerate(raw):
        at = f"{where}[{position}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "thinking":
            thinking, signature = block.get("thinking"), block.get("signature")
            if not isinstance(thinking, str):
                raise InvalidRequest(f"{at}.thinking: must be a string", param=f"{at}.thinking")
            if signature is not None and not isinstance(signature, str):
                raise InvalidRequest(f"{at}.signature: must be a string", param=f"{at}.signature")
            sent: ThinkingBlockParam = {"type": "thinking", "thinking": thinking}
            if signature is not None:
                sent["signature"] = signature
            blocks.append(sent)
        elif kind == "redacted_thinking":
            data = block.get("data")
            if not isinstance(data, str):
                raise InvalidRequest(f"{at}.data: must be a string", param=f"{at}.data")
            blocks.append({"type": "redacted_thinking", "data": data})
        else:
            raise InvalidRequest(
                f"{at}: must be a block of type thinking or redacted_thinking, as the answer "
                "gave it",
                param=at,
            )
    return blocks


def _tool_use(call_id: str, name: str, raw: str, where: str) -> ToolUseBlockParam:
    # Some clients send "" for a call without arguments; Anthropic wants an object. OpenAI
    # takes the arguments a model wrote back as they are, JSON or not (a cut-off answer's are
    # not), so anything else is Anthropic's limit, not the request's fault.
    if not raw.strip():
        arguments: Any = {}
    else:
        try:
            arguments = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise CannotHonour(where, "tool call arguments that are not JSON") from None
    if not isinstance(arguments, dict):
        raise CannotHonour(where, "tool call arguments that are not a JSON object")
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def _tool_result_block(message: Message, index: int) -> ToolResultBlockParam:
    content: str | list[ToolResultContentParam]
    if isinstance(message.content, str) or message.content is None:
        content = message.content or ""
    else:
        # Parts that were all empty text leave nothing; "" is the empty result Anthropic takes.
        content = _content_blocks(message, index) or ""
    return {"type": "tool_result", "tool_use_id": message.tool_call_id or "", "content": content}


def _merge_turns(turns: list[tuple[str, list[ContentBlockParam]]]) -> list[MessageParam]:
    """Anthropic wants strictly alternating roles: join runs of one role into one message."""
    merged: list[tuple[str, list[ContentBlockParam]]] = []
    for role, blocks in turns:
        if not blocks:
            continue  # an empty message carries nothing and would be refused upstream
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(blocks)
        else:
            merged.append((role, list(blocks)))
    out: list[MessageParam] = []
    for position, (role, blocks) in enumerate(merged):
        if role == "user":
            # Tool results must open the user turn that answers the tool calls.
            blocks.sort(key=lambda block: block["type"] != "tool_result")
            out.append({"role": "user", "content": _compact(blocks)})
            continue
        if position == len(merged) - 1:
            _strip_final_assistant(blocks)
            if not blocks:
                continue
        out.append({"role": "assistant", "content": _compact(blocks)})
    return out


def _strip_final_assistant(blocks: list[ContentBlockParam]) -> None:
    # A final assistant message is a prefill, and Anthropic refuses one that ends in whitespace.
    last = blocks[-1] if blocks else None
    if last is not None and last["type"] == "text":
        text = last["text"].rstrip()
        if text:
            blocks[-1] = {"type": "text", "text": text}
        else:
            blocks.pop()


def _compact(blocks: list[ContentBlockParam]) -> str | list[ContentBlockParam]:
    # A lone text block is sent as a plain string, the shape most Anthropic examples use.
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        return blocks[0]["text"]
    return blocks
