"""The Anthropic Messages API, spoken to clients as OpenAI chat completions.

Requests arrive in the OpenAI wire format; `build_messages_request` turns them into a
`POST /v1/messages` body, `parse_message` turns the answer back into a `ChatResult`, and
`StreamTranslator` turns the SSE events of a streamed answer into `ChatDelta`s. All three are
pure (no I/O), so the translation is tested without a network.

Where the two APIs differ:
- System and developer messages become the top-level `system` string, in order, joined by a
  blank line. Anthropic requires user and assistant turns to alternate, so consecutive messages
  of one role are merged into one; `tool` messages become `tool_result` blocks of a user turn.
- Anthropic has no JSON mode. `response_format` json_object (and json_schema) is emulated with
  a system instruction to answer with a single JSON object only (for json_schema, one that
  matches the given schema). The model usually complies; nothing enforces it.
- Anthropic's temperature range is 0..1; a higher value is refused rather than clamped, since
  clamping would silently change the sampling the caller asked for.
- `max_tokens` is required upstream; without one in the request the model's configured
  `max_output_tokens` is sent.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from palyra.config import ModelConfig
from palyra.errors import (
    InvalidRequest,
    ProviderError,
    Unsupported,
    UpstreamProtocolError,
    upstream_status_error,
)
from palyra.models.http import HttpProvider, Malformed, kind_of, token_count
from palyra.sse import SSEEvent
from palyra.types import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    EmbeddingsRequest,
    EmbeddingsResult,
    FinishReason,
    ImagePart,
    Message,
    ModelProviderKind,
    NamedToolChoice,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallResult,
    TranscriptionRequest,
    TranscriptionResult,
    Usage,
)

ANTHROPIC_VERSION = "2023-06-01"
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
MODELS_PATH = "/v1/models"
# The one client header a native pass-through forwards: which beta features the body uses.
FORWARDED_HEADER = "anthropic-beta"
# Discovery must end even if an upstream keeps saying has_more; 10 pages of 1000 is plenty.
MAX_MODEL_PAGES = 10
MODELS_PAGE_LIMIT = 1000

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}

JSON_OBJECT_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else: no prose, no explanation, "
    "no Markdown code fences."
)

STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    # The answer was cut off by the context window: to a client that is a length stop too.
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# The HTTP status Anthropic sends with each error type, for errors that arrive inside a
# stream (where the HTTP status was already 200). Overloaded is 529 upstream; 529 is no
# standard status, and to a client it means "unavailable, try again": 503.
ERROR_TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 503,
}
OVERLOADED_STATUS = 529

_DATA_URL = re.compile(r"^data:(?P<media>[^;,]*)(?P<params>(;[^;,]*)*),(?P<data>.*)$", re.DOTALL)


# --- request ---------------------------------------------------------------------------------


def build_messages_request(
    request: ChatRequest, model: ModelConfig, *, stream: bool = False
) -> dict[str, Any]:
    """The `POST /v1/messages` body for an OpenAI-format chat request.

    Raises `InvalidRequest` for what Anthropic cannot express or would refuse anyway, naming
    the offending field, so the caller gets a precise 400 rather than an upstream one.
    """
    system_parts: list[str] = []
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for index, message in enumerate(request.messages):
        if message.role in ("system", "developer"):
            _refuse_images(message, index)
            text = message.text()
            if text:
                system_parts.append(text)
        elif message.role == "user":
            turns.append(("user", _user_blocks(message, index)))
        elif message.role == "assistant":
            turns.append(("assistant", _assistant_blocks(message, index)))
        else:
            turns.append(("user", [_tool_result_block(message, index)]))

    instruction = _json_instruction(request)
    if instruction:
        system_parts.append(instruction)

    messages = _merge_turns(turns)
    if not messages:
        raise InvalidRequest(
            "messages: Anthropic needs at least one non-empty user or assistant message",
            param="messages",
        )

    payload: dict[str, Any] = {
        "model": model.upstream_name,
        "max_tokens": request.output_limit or model.max_output_tokens,
    }
    if system_parts:
        payload["system"] = "\n\n".join(system_parts)
    payload["messages"] = messages
    if request.tools:
        payload["tools"] = [_tool(tool) for tool in request.tools]
        choice = _tool_choice(request)
        if choice is not None:
            payload["tool_choice"] = choice
    elif isinstance(request.tool_choice, NamedToolChoice):
        raise InvalidRequest(
            "tool_choice: names a function but the request has no tools", param="tool_choice"
        )
    if request.temperature is not None:
        if request.temperature > 1:
            raise InvalidRequest(
                f"temperature: Anthropic accepts 0 to 1, got {request.temperature}",
                param="temperature",
            )
        payload["temperature"] = request.temperature
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if stop:
        payload["stop_sequences"] = stop
    if request.user:
        payload["metadata"] = {"user_id": request.user}
    if stream:
        payload["stream"] = True
    return payload


def _tool(tool: Tool) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": tool.function.name}
    if tool.function.description is not None:
        spec["description"] = tool.function.description
    # Anthropic requires an input schema; OpenAI lets a function without parameters omit it.
    spec["input_schema"] = tool.function.parameters or dict(EMPTY_SCHEMA)
    return spec


def _refuse_images(message: Message, index: int) -> None:
    if message.images():
        raise InvalidRequest(
            f"messages[{index}]: images are only allowed in user and tool messages, "
            f"not in {message.role} messages",
            param=f"messages[{index}].content",
        )


def _content_blocks(message: Message, index: int) -> list[dict[str, Any]]:
    """Text and image blocks of a message's content; empty text is left out because
    Anthropic refuses empty text blocks."""
    if message.content is None:
        return []
    if isinstance(message.content, str):
        return [{"type": "text", "text": message.content}] if message.content else []
    blocks: list[dict[str, Any]] = []
    for part_index, part in enumerate(message.content):
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            where = f"messages[{index}].content[{part_index}].image_url.url"
            blocks.append(image_block(part.image_url.url, where))
    return blocks


def image_block(url: str, where: str = "image_url.url") -> dict[str, Any]:
    """An Anthropic image block for an OpenAI `image_url`: base64 for data URLs, a URL source
    for http(s) URLs (Anthropic fetches those itself)."""
    if url.startswith("data:"):
        match = _DATA_URL.match(url)
        if match is None:
            raise InvalidRequest(f"{where}: not a valid data URL", param=where)
        media_type = match.group("media").strip().lower()
        params = [p.strip().lower() for p in match.group("params").split(";") if p.strip()]
        if "base64" not in params:
            raise InvalidRequest(f"{where}: data URLs must be base64-encoded", param=where)
        if media_type not in IMAGE_MEDIA_TYPES:
            allowed = ", ".join(sorted(IMAGE_MEDIA_TYPES))
            raise InvalidRequest(
                f"{where}: image type {media_type or '(none)'!r} is not supported; use {allowed}",
                param=where,
            )
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": match.group("data")},
        }
    if url.lower().startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest(f"{where}: must be an http(s) URL or a base64 data URL", param=where)


def _user_blocks(message: Message, index: int) -> list[dict[str, Any]]:
    return _content_blocks(message, index)


def _assistant_blocks(message: Message, index: int) -> list[dict[str, Any]]:
    _refuse_images(message, index)
    blocks = _content_blocks(message, index)
    for call_index, call in enumerate(message.tool_calls or []):
        where = f"messages[{index}].tool_calls[{call_index}].function.arguments"
        raw = call.function.arguments
        # Some clients send "" for a call without arguments; Anthropic wants an object.
        if not raw.strip():
            arguments: Any = {}
        else:
            try:
                arguments = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise InvalidRequest(f"{where}: not valid JSON", param=where) from None
        if not isinstance(arguments, dict):
            raise InvalidRequest(f"{where}: must be a JSON object", param=where)
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}
        )
    return blocks


def _tool_result_block(message: Message, index: int) -> dict[str, Any]:
    content: str | list[dict[str, Any]]
    if isinstance(message.content, str) or message.content is None:
        content = message.content or ""
    else:
        # Parts that were all empty text leave nothing; "" is the empty result Anthropic takes.
        content = _content_blocks(message, index) or ""
    return {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": content}


def _merge_turns(turns: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Anthropic wants strictly alternating roles: join runs of one role into one message."""
    merged: list[tuple[str, list[dict[str, Any]]]] = []
    for role, blocks in turns:
        if not blocks:
            continue  # an empty message carries nothing and would be refused upstream
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(blocks)
        else:
            merged.append((role, list(blocks)))
    out: list[dict[str, Any]] = []
    for position, (role, blocks) in enumerate(merged):
        if role == "user":
            # Tool results must open the user turn that answers the tool calls.
            blocks.sort(key=lambda block: block["type"] != "tool_result")
        elif position == len(merged) - 1:
            _strip_final_assistant(blocks)
            if not blocks:
                continue
        out.append({"role": role, "content": _compact(blocks)})
    return out


def _strip_final_assistant(blocks: list[dict[str, Any]]) -> None:
    # A final assistant message is a prefill, and Anthropic refuses one that ends in whitespace.
    if blocks and blocks[-1]["type"] == "text":
        text = blocks[-1]["text"].rstrip()
        if text:
            blocks[-1] = {"type": "text", "text": text}
        else:
            blocks.pop()


def _compact(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    # A lone text block is sent as a plain string, the shape most Anthropic examples use.
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        text: str = blocks[0]["text"]
        return text
    return blocks


def _tool_choice(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    result: dict[str, Any] | None
    if choice is None:
        result = None
    elif isinstance(choice, NamedToolChoice):
        names = {tool.function.name for tool in request.tools or []}
        if choice.function.name not in names:
            raise InvalidRequest(
                f"tool_choice: no tool named {choice.function.name!r} in tools",
                param="tool_choice",
            )
        result = {"type": "tool", "name": choice.function.name}
    elif choice == "none":
        # Anthropic's "none" takes no other fields; parallelism is moot without tool use.
        return {"type": "none"}
    elif choice == "required":
        result = {"type": "any"}
    else:
        result = {"type": "auto"}
    if request.parallel_tool_calls is False:
        result = result or {"type": "auto"}
        result["disable_parallel_tool_use"] = True
    return result


def _json_instruction(request: ChatRequest) -> str | None:
    response_format = request.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_schema" and response_format.json_schema:
        spec = response_format.json_schema
        # OpenAI wraps the schema as {"name", "schema", "strict"}; accept a bare schema too.
        schema = spec.get("schema", spec) if isinstance(spec.get("schema"), dict) else spec
        rendered = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()
        return (
            f"{JSON_OBJECT_INSTRUCTION} The JSON object must conform to this JSON Schema:\n"
            f"{rendered}"
        )
    return JSON_OBJECT_INSTRUCTION


def native_body(body: dict[str, Any], model: ModelConfig, *, stream: bool | None) -> dict[str, Any]:
    """A client's own Messages API body for the upstream: its model is the upstream's name for
    the routed model, and `stream` is what this call does (None: a route that takes none)."""
    payload = {**body, "model": model.upstream_name}
    payload.pop("stream", None)
    if stream:
        payload["stream"] = True
    return payload


def forwarded_headers(extra_headers: dict[str, str] | None) -> dict[str, str] | None:
    """Of a client's headers, only `anthropic-beta` goes upstream: the others are the
    gateway's to set (its key, its `anthropic-version`)."""
    if not extra_headers:
        return None
    values = [v for name, v in extra_headers.items() if name.lower() == FORWARDED_HEADER]
    # Several betas are one comma-separated header, as the anthropic SDK sends them.
    return {FORWARDED_HEADER: ",".join(values)} if values else None


# --- response --------------------------------------------------------------------------------


def finish_reason(stop_reason: Any) -> FinishReason:
    return STOP_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def prompt_tokens(usage: dict[str, Any], where: str = "usage") -> int | None:
    """Every input token the request cost: fresh, written to the cache and read from it.
    None when the usage holds none of the three; `Malformed` when one is not a count."""
    keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    counts = [token_count(usage[key], f"{where}.{key}") for key in keys if key in usage]
    present = [key for key in keys if usage.get(key) is not None]
    return sum(counts) if present else None


def compact_json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        # Nested past orjson's 255 levels: no client could be handed it either.
        raise Malformed("a tool_use input is nested too deep to pass on") from None


def parse_message(body: Any, provider_id: str) -> ChatResult:
    """A `ChatResult` from a non-streamed Messages API answer."""
    try:
        return _parse_message(body)
    except Malformed as exc:
        raise UpstreamProtocolError(
            f"answered a malformed message: {exc}", provider_id=provider_id
        ) from None


def _parse_message(body: Any) -> ChatResult:
    if not isinstance(body, dict) or not isinstance(body.get("content"), list):
        raise Malformed("the body has no Messages API `content` list")
    texts: list[str] = []
    calls: list[ToolCallResult] = []
    for index, block in enumerate(body["content"]):
        where = f"content[{index}]"
        if not isinstance(block, dict):
            raise Malformed(f"{where} is {kind_of(block)}, not an object")
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise Malformed(f"{where}.text is {kind_of(text)}, not a string")
            texts.append(text)
        elif kind == "tool_use":
            calls.append(_tool_use(block, where))
        # Thinking and server-tool blocks have no OpenAI counterpart and are left out.
    raw_usage = body.get("usage")
    if raw_usage is not None and not isinstance(raw_usage, dict):
        raise Malformed(f"usage is {kind_of(raw_usage)}, not an object")
    raw_usage = raw_usage or {}
    model = body.get("model")
    return ChatResult(
        content="".join(texts) if texts else None,
        finish_reason=finish_reason(body.get("stop_reason")),
        usage=Usage(
            prompt_tokens=prompt_tokens(raw_usage) or 0,
            completion_tokens=token_count(raw_usage.get("output_tokens"), "usage.output_tokens"),
        ),
        tool_calls=calls,
        upstream_model=model if isinstance(model, str) else "",
    )


def _tool_use(block: dict[str, Any], where: str) -> ToolCallResult:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise Malformed(f"{where} (tool_use) has no string id and name")
    if arguments is not None and not isinstance(arguments, dict):
        # Clients parse the arguments as a JSON object; anything else would fail there.
        raise Malformed(f"{where}.input is {kind_of(arguments)}, not an object")
    return ToolCallResult(id=call_id, name=name, arguments=compact_json(arguments or {}))


def error_event(payload: Any, provider_id: str) -> ProviderError:
    """The `ProviderError` for an `error` event inside a stream (the HTTP status was 200)."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        error = {}
    error_type = str(error.get("type") or "api_error")
    message = str(error.get("message") or error_type)
    # An unknown type still broke the stream mid-way: treat it as a server error.
    status = ERROR_TYPE_STATUS.get(error_type, 500)
    return upstream_status_error(provider_id, status, message, upstream_code=error_type)


class StreamTranslator:
    """Turns the SSE events of a streamed Messages API answer into `ChatDelta`s.

    Feed events in order; each yields at most one delta. `finish()` raises if the stream
    ended before `message_stop`.
    """

    def __init__(self, provider_id: str) -> None:
        self.provider_id = provider_id
        self.usage = Usage()
        self.finish_reason: FinishReason = "stop"
        self.done = False
        self.upstream_model = ""
        # Anthropic numbers every content block; OpenAI numbers tool calls only.
        self._tool_index: dict[int, int] = {}
        self._tool_has_arguments: dict[int, bool] = {}

    def feed(self, event: SSEEvent) -> ChatDelta | None:
        if self.done:
            return None
        try:
            return self._feed(event)
        except Malformed as exc:
            raise self._protocol(f"sent a malformed {event.event!r} event: {exc}") from None

    def _feed(self, event: SSEEvent) -> ChatDelta | None:
        try:
            data = orjson.loads(event.data) if event.data else {}
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                f"sent a {event.event!r} event that is not JSON", provider_id=self.provider_id
            ) from None
        if not isinstance(data, dict):
            raise self._protocol(f"sent a {event.event!r} event that is not a JSON object")
        kind = data.get("type") or event.event
        if kind == "message_start":
            self._message_start(data)
            return None
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._block_delta(data)
        if kind == "content_block_stop":
            return self._block_stop(data)
        if kind == "message_delta":
            self._message_delta(data)
            return None
        if kind == "message_stop":
            self.done = True
            return ChatDelta(finish_reason=self.finish_reason, usage=self.usage)
        if kind == "error":
            raise error_event(data, self.provider_id)
        # ping, and event types added after this was written, carry nothing for the client.
        return None

    def finish(self) -> None:
        if not self.done:
            raise self._protocol("stream ended early")

    def _message_start(self, data: dict[str, Any]) -> None:
        message = data.get("message")
        if isinstance(message, dict):
            self.upstream_model = str(message.get("model") or "")
            usage = message.get("usage")
            if isinstance(usage, dict):
                self._record_usage(usage)

    def _block_start(self, data: dict[str, Any]) -> ChatDelta | None:
        block = data.get("content_block")
        index = data.get("index")
        if not isinstance(block, dict) or not isinstance(index, int):
            raise self._protocol("sent a content_block_start without a block and index")
        if block.get("type") == "text":
            text = block.get("text")
            if text is not None and not isinstance(text, str):
                raise Malformed(f"content_block.text is {kind_of(text)}, not a string")
            return ChatDelta(content=text) if text else None
        if block.get("type") == "tool_use":
            position = len(self._tool_index)
            self._tool_index[index] = position
            initial = block.get("input")
            # The real API opens with `input: {}` and streams the input as JSON fragments;
            # an input given up front (some compatible servers) is passed on as is.
            arguments = compact_json(initial) if isinstance(initial, dict) and initial else ""
            self._tool_has_arguments[index] = bool(arguments)
            call = ToolCallDelta(
                index=position,
                id=str(block.get("id") or ""),
                name=str(block.get("name") or ""),
                arguments=arguments,
            )
            return ChatDelta(tool_calls=[call])
        return None

    def _block_delta(self, data: dict[str, Any]) -> ChatDelta | None:
        delta = data.get("delta")
        index = data.get("index")
        if not isinstance(delta, dict):
            raise self._protocol("sent a content_block_delta without a delta")
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            if not isinstance(text, str):
                raise Malformed(f"delta.text is {kind_of(text)}, not a string")
            return ChatDelta(content=text) if text else None
        if kind == "input_json_delta":
            if not isinstance(index, int) or index not in self._tool_index:
                raise self._protocol("sent tool input for a block that is not a tool_use")
            fragment = delta.get("partial_json")
            if not isinstance(fragment, str) or not fragment:
                return None
            self._tool_has_arguments[index] = True
            call = ToolCallDelta(index=self._tool_index[index], arguments=fragment)
            return ChatDelta(tool_calls=[call])
        # thinking, signature and citation deltas have no OpenAI counterpart.
        return None

    def _block_stop(self, data: dict[str, Any]) -> ChatDelta | None:
        index = data.get("index")
        if isinstance(index, int) and self._tool_has_arguments.get(index) is False:
            # A call without arguments streams no fragment at all; OpenAI clients parse the
            # assembled arguments as JSON, and "" is not JSON.
            self._tool_has_arguments[index] = True
            call = ToolCallDelta(index=self._tool_index[index], arguments="{}")
            return ChatDelta(tool_calls=[call])
        return None

    def _message_delta(self, data: dict[str, Any]) -> None:
        delta = data.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason") is not None:
            self.finish_reason = finish_reason(delta.get("stop_reason"))
        usage = data.get("usage")
        if isinstance(usage, dict):
            self._record_usage(usage)

    def _record_usage(self, usage: dict[str, Any]) -> None:
        # Counts are cumulative; message_delta may repeat the input counts, or leave them out.
        prompt = prompt_tokens(usage)
        if prompt is not None:
            self.usage.prompt_tokens = prompt
        output = usage.get("output_tokens")
        if output is not None:
            self.usage.completion_tokens = token_count(output, "usage.output_tokens")

    def _protocol(self, message: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(message, provider_id=self.provider_id)


# --- provider --------------------------------------------------------------------------------


class AnthropicProvider(HttpProvider):
    """Chat through Anthropic's Messages API; model discovery through its Models API."""

    kind = ModelProviderKind.ANTHROPIC

    def _auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def _error_details(self, body: Any) -> tuple[str, str | None, str | None]:
        # {"type": "error", "error": {"type": "...", "message": "..."}, "request_id": "..."}
        error = body["error"]
        if isinstance(error, str):
            return error, None, None
        if not isinstance(error, dict):
            return f"an error that is {kind_of(error)}", None, None
        message = error.get("message") or error.get("type") or "unknown error"
        code = error.get("type")
        return str(message), str(code) if code else None, None

    async def _status_error(
        self, response: aiohttp.ClientResponse, sent: tuple[str | None, ...] = ()
    ) -> ProviderError:
        error = await super()._status_error(response, sent)
        if response.status == OVERLOADED_STATUS:
            # 529 is Anthropic's own "overloaded"; clients understand 503 (retryable either way).
            error.status = 503
        return error

    async def chat(self, request: ChatRequest, model: ModelConfig) -> ChatResult:
        payload = build_messages_request(request, model)
        body = await self._post_json(MESSAGES_PATH, payload)
        if isinstance(body, dict) and body.get("type") == "error":
            raise error_event(body, self.provider_id)
        return parse_message(body, self.provider_id)

    async def stream_chat(
        self, request: ChatRequest, model: ModelConfig
    ) -> AsyncIterator[ChatDelta]:
        payload = build_messages_request(request, model, stream=True)
        translator = StreamTranslator(self.provider_id)
        # aclosing: whether we stop on message_stop, an error event or the caller leaving,
        # the upstream response is released now, not when the generator is collected.
        events = self._events(MESSAGES_PATH, payload)
        async with contextlib.aclosing(events):
            async for event in events:
                delta = translator.feed(event)
                if delta is not None:
                    yield delta
                if translator.done:
                    return
        translator.finish()

    # --- native pass-through (the Anthropic Messages dialect) -------------------------------

    async def send_native(
        self,
        body: dict[str, Any],
        model: ModelConfig,
        *,
        extra_headers: dict[str, str] | None = None,
    ) -> ChatResult:
        """`POST /v1/messages` with a client's own Messages API body (its model replaced by
        the upstream name). The result is translated for metrics and routing, and carries the
        upstream's answer as it came in `native`."""
        payload = native_body(body, model, stream=False)
        answer = await self._post_json(
            MESSAGES_PATH, payload, extra_headers=forwarded_headers(extra_headers)
        )
        if isinstance(answer, dict) and answer.get("type") == "error":
            raise error_event(answer, self.provider_id)
        result = parse_message(answer, self.provider_id)
        result.native = answer
        return result

    async def stream_native(
        self,
        body: dict[str, Any],
        model: ModelConfig,
        *,
        extra_headers: dict[str, str] | None = None,
    ) -> AsyncIterator[ChatDelta]:
        """The same, streamed: one `ChatDelta` per upstream event, its `native` the event as
        it came and its other fields the event's translation (empty for `ping`,
        `message_start`, ...), so the router meters and settles a native stream like any."""
        payload = native_body(body, model, stream=True)
        translator = StreamTranslator(self.provider_id)
        events = self._events(
            MESSAGES_PATH, payload, extra_headers=forwarded_headers(extra_headers)
        )
        async with contextlib.aclosing(events):
            async for event in events:
                delta = translator.feed(event) or ChatDelta()
                delta.native = (event.event, event.data)
                yield delta
                if translator.done:
                    return
        translator.finish()

    async def count_tokens_native(
        self,
        body: dict[str, Any],
        model: ModelConfig,
        *,
        extra_headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/messages/count_tokens` with a client's body (model replaced): the
        upstream's answer as it came."""
        payload = native_body(body, model, stream=None)
        answer = await self._post_json(
            COUNT_TOKENS_PATH, payload, extra_headers=forwarded_headers(extra_headers)
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("input_tokens"), int):
            raise UpstreamProtocolError(
                "answered count_tokens without an `input_tokens` count",
                provider_id=self.provider_id,
            )
        return answer

    async def embed(self, request: EmbeddingsRequest, model: ModelConfig) -> EmbeddingsResult:
        raise Unsupported(
            f"provider {self.provider_id} (anthropic): the Anthropic API has no embeddings "
            "endpoint; route embeddings to an openai_compatible provider"
        )

    async def transcribe(
        self, request: TranscriptionRequest, model: ModelConfig
    ) -> TranscriptionResult:
        raise Unsupported(
            f"provider {self.provider_id} (anthropic): the Anthropic API has no audio "
            "transcription endpoint; route transcription to an openai_compatible provider"
        )

    async def list_models(self) -> list[str]:
        ids: list[str] = []
        after: str | None = None
        for _ in range(MAX_MODEL_PAGES):
            query: dict[str, str | int] = {"limit": MODELS_PAGE_LIMIT}
            if after:
                query["after_id"] = after
            body = await self._get_json(f"{MODELS_PATH}?{urlencode(query)}")
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise UpstreamProtocolError(
                    "answered the models list without a `data` list", provider_id=self.provider_id
                )
            ids += [
                str(item["id"])
                for item in body["data"]
                if isinstance(item, dict) and item.get("id")
            ]
            last = body.get("last_id") or (ids[-1] if ids else None)
            if not body.get("has_more") or not last or last == after:
                break
            after = str(last)
        return ids
