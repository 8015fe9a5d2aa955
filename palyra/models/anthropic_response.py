"""Anthropic Messages API answers translated to chat completions results (pure, no I/O).

`parse_message` reads a whole answer into a `ChatResult`; `StreamTranslator` turns the SSE
events of a streamed one into `ChatDelta`s. Answers are untrusted JSON: every field read is
checked (they are typed `object` until then, so mypy sees that it is), and a wrong one is an
`UpstreamProtocolError` naming it (never its value). The thinking blocks given back are
`anthropic_wire`'s.

What is translated:
- text blocks -> content; tool_use blocks -> tool calls; thinking blocks -> reasoning.
- thinking and redacted_thinking blocks are also given back whole, signatures included, as
  the message's `thinking_blocks` (as LiteLLM does): Anthropic wants them back, unchanged,
  in the assistant turn a tool loop continues when the request thinks
  (`anthropic_request.py`), and `reasoning_content` is only their text. Streamed, each block
  is one delta's `thinking_blocks` (a list of that one block), sent when the block ends (its
  signature comes last); a client appends them in order to rebuild the message's list.
- The answer tool (`anthropic_answer.py`): the forced tool call that carries a JSON
  answer is given back as the message content, finish_reason "stop"; text beside it is not
  part of the answer and is left out.
- usage: input, cache-creation and cache-read tokens add up to prompt_tokens; the cache-read
  ones are also `cached_tokens`, the cache-creation ones `cache_creation_tokens`.
- stop_reason `refusal` -> finish_reason content_filter with a refusal text (Anthropic sends
  none of its own; what text came before the stop is kept as content).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from palyra.errors import ProviderError, UpstreamProtocolError, upstream_status_error
from palyra.models.anthropic_wire import RedactedThinkingBlockParam, ThinkingBlockParam
from palyra.models.http import Malformed, kind_of, token_count
from palyra.sse import SSEEvent
from palyra.types import ChatDelta, ChatResult, FinishReason, ToolCallDelta, ToolCallResult, Usage

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
REFUSAL = "The model declined to continue this answer (Anthropic stop_reason: refusal)."

# The HTTP status Anthropic sends with each error type, for errors that arrive inside a
# stream (where the HTTP status was already 200). Overloaded is Anthropic's own 529: kept as
# the error's upstream_status (the Messages dialect gives it back as it is), while chat
# clients see 503 (`upstream_status_error`).
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
    "overloaded_error": 529,
}

_USAGE_KEYS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def finish_reason(stop_reason: object) -> FinishReason:
    return STOP_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def prompt_tokens(usage: Mapping[str, object], where: str = "usage") -> int | None:
    """Every input token the request cost: fresh, written to the cache and read from it.
    None when the usage holds none of the three; `Malformed` when one is not a count."""
    counts = [token_count(usage[key], f"{where}.{key}") for key in _USAGE_KEYS if key in usage]
    present = [key for key in _USAGE_KEYS if usage.get(key) is not None]
    return sum(counts) if present else None


def compact_json(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        # Nested past orjson's 255 levels: no client could be handed it either.
        raise Malformed("a tool_use input is nested too deep to pass on") from None


def parse_message(body: object, provider_id: str, *, answer_tool: str | None = None) -> ChatResult:
    """A `ChatResult` from a non-streamed Messages API answer. `answer_tool`: the name of the
    tool whose input is the answer (JSON response formats), if the request had one."""
    try:
        return _parse_message(body, answer_tool)
    except Malformed as exc:
        raise UpstreamProtocolError(
            f"answered a malformed message: {exc}", provider_id=provider_id
        ) from None


def _parse_message(body: object, answer_tool: str | None) -> ChatResult:
    if not isinstance(body, dict) or not isinstance(body.get("content"), list):
        raise Malformed("the body has no Messages API `content` list")
    texts: list[str] = []
    thoughts: list[str] = []
    thinking_blocks: list[ThinkingBlockParam | RedactedThinkingBlockParam] = []
    answers: list[str] = []
    calls: list[ToolCallResult] = []
    for index, block in enumerate(body["content"]):
        where = f"content[{index}]"
        if not isinstance(block, dict):
            raise Malformed(f"{where} is {kind_of(block)}, not an object")
        kind = block.get("type")
        if kind == "text":
            texts.append(_string(block, "text", where))
        elif kind == "thinking":
            thought = _string(block, "thinking", where)
            thoughts.append(thought)
            thinking_blocks.append(_thinking_block(thought, block.get("signature"), where))
        elif kind == "redacted_thinking":
            # Encrypted reasoning: no text a client could read (nothing for reasoning), but
            # Anthropic wants it back like a thinking block.
            data = _string(block, "data", where)
            thinking_blocks.append({"type": "redacted_thinking", "data": data})
        elif kind == "tool_use":
            call = _tool_use(block, where)
            if call.name == answer_tool:
                answers.append(call.arguments)
            else:
                calls.append(call)
        # Server-tool blocks have no chat completions counterpart.
    raw_usage = body.get("usage")
    if raw_usage is not None and not isinstance(raw_usage, dict):
        raise Malformed(f"usage is {kind_of(raw_usage)}, not an object")
    finish = finish_reason(body.get("stop_reason"))
    if finish == "tool_calls" and not calls:
        finish = "stop"  # the one tool called was the answer tool: the answer is complete
    model = body.get("model")
    content: str | None
    if answer_tool is not None:
        # One answer: the request allowed no parallel answer calls, so a second is noise.
        content = answers[0] if answers else None
    else:
        content = "".join(texts) if texts else None
    return ChatResult(
        content=content,
        finish_reason=finish,
        usage=usage_of(raw_usage or {}),
        tool_calls=calls,
        upstream_model=model if isinstance(model, str) else "",
        reasoning="".join(thoughts) if thoughts else None,
        refusal=REFUSAL if finish == "content_filter" else None,
        message_extra={"thinking_blocks": thinking_blocks} if thinking_blocks else None,
    )


def _thinking_block(thinking: str, signature: object, where: str) -> ThinkingBlockParam:
    """A thinking block as a client sends it back: its text and signature, as they came."""
    if signature is not None and not isinstance(signature, str):
        raise Malformed(f"{where}.signature is {kind_of(signature)}, not a string")
    block: ThinkingBlockParam = {"type": "thinking", "thinking": thinking}
    if signature is not None:
        # (Absent from what some Anthropic-compatible servers send; Anthropic always signs.)
        block["signature"] = signature
    return block


def usage_of(usage: Mapping[str, object]) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens(usage) or 0,
        completion_tokens=token_count(usage.get("output_tokens"), "usage.output_tokens"),
        cached_tokens=token_count(
            usage.get("cache_read_input_tokens"), "usage.cache_read_input_tokens"
        ),
        cache_creation_tokens=token_count(
            usage.get("cache_creation_input_tokens"), "usage.cache_creation_input_tokens"
        ),
    )


def _string(block: Mapping[str, object], key: str, where: str) -> str:
    value = block.get(key)
    if not isinstance(value, str):
        raise Malformed(f"{where}.{key} is {kind_of(value)}, not a string")
    return value


def _tool_use(block: Mapping[str, object], where: str) -> ToolCallResult:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise Malformed(f"{where} (tool_use) has no string id and name")
    if arguments is not None and not isinstance(arguments, dict):
        # Clients parse the arguments as a JSON object; anything else would fail there.
        raise Malformed(f"{where}.input is {kind_of(arguments)}, not an object")
    return ToolCallResult(id=call_id, name=name, arguments=compact_json(arguments or {}))


def error_event(payload: object, provider_id: str) -> ProviderError:
    """The `ProviderError` for an `error` event inside a stream (the HTTP status was 200), or
    an error body answered with a 200."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        error = {}
    error_type = str(error.get("type") or "api_error")
    message = str(error.get("message") or error_type)
    # An unknown type still broke the stream mid-way: treat it as a server error.
    status = ERROR_TYPE_STATUS.get(error_type, 500)
    return upstream_status_error(provider_id, status, message, upstream_code=error_type)


@dataclass(slots=True)
class _Thought:
    """A thinking block being streamed."""

    parts: list[str]
    # Opened empty and set by a signature_delta (the anthropic SDK keeps the last one).
    signature: str | None


class StreamTranslator:
    """Turns the SSE events of a streamed Messages API answer into `ChatDelta`s.

    Feed events in order; each yields at most one delta. `finish()` raises if the stream
    ended before `message_stop`. `answer_tool` as for `parse_message`.
    """

    def __init__(self, provider_id: str, *, answer_tool: str | None = None) -> None:
        self.provider_id = provider_id
        self.answer_tool = answer_tool
        self.usage = Usage()
        self.finish_reason: FinishReason = "stop"
        self.done = False
        self.upstream_model = ""
        # Anthropic numbers every content block; OpenAI numbers tool calls only.
        self._tool_index: dict[int, int] = {}
        # Per tool_use block (the answer tool's too): whether any input came yet.
        self._has_input: dict[int, bool] = {}
        self._answer_block: int | None = None
        # Per thinking block being streamed: its text so far and its signature; per redacted
        # one, its data. Each is given back whole when the block stops.
        self._thoughts: dict[int, _Thought] = {}
        self._redacted: dict[int, str] = {}

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
            if self.finish_reason == "tool_calls" and not self._tool_index:
                self.finish_reason = "stop"  # only the answer tool was called
            refusal = REFUSAL if self.finish_reason == "content_filter" else None
            return ChatDelta(finish_reason=self.finish_reason, usage=self.usage, refusal=refusal)
        if kind == "error":
            raise error_event(data, self.provider_id)
        # ping, and event types added after this was written, carry nothing for the client.
        return None

    def finish(self) -> None:
        if not self.done:
            raise self._protocol("stream ended early")

    def _message_start(self, data: Mapping[str, object]) -> None:
        message = data.get("message")
        if isinstance(message, dict):
            self.upstream_model = str(message.get("model") or "")
            usage = message.get("usage")
            if isinstance(usage, dict):
                self._record_usage(usage)

    def _block_start(self, data: Mapping[str, object]) -> ChatDelta | None:
        block = data.get("content_block")
        index = data.get("index")
        if not isinstance(block, dict) or not isinstance(index, int):
            raise self._protocol("sent a content_block_start without a block and index")
        kind = block.get("type")
        if kind == "text":
            text = _optional_string(block, "text", "content_block")
            return ChatDelta(content=text) if text and self.answer_tool is None else None
        if kind == "thinking":
            thought = _optional_string(block, "thinking", "content_block")
            signature = _optional_string(block, "signature", "content_block")
            self._thoughts[index] = _Thought([thought] if thought else [], signature or None)
            return ChatDelta(reasoning=thought) if thought else None
        if kind == "redacted_thinking":
            encrypted = _optional_string(block, "data", "content_block")
            if encrypted is None:
                raise Malformed("content_block.data (redacted_thinking) is missing")
            self._redacted[index] = encrypted
            return None
        if kind != "tool_use":
            return None  # server tools
        initial = block.get("input")
        # The real API opens with `input: {}` and streams the input as JSON fragments; an
        # input given up front (some compatible servers) is passed on as is.
        arguments = compact_json(initial) if isinstance(initial, dict) and initial else ""
        self._has_input[index] = bool(arguments)
        if self.answer_tool is not None and block.get("name") == self.answer_tool:
            if self._answer_block is None:
                self._answer_block = index
                return ChatDelta(content=arguments) if arguments else None
            return None  # a second answer call (see parse_message): not part of the answer
        position = len(self._tool_index)
        self._tool_index[index] = position
        call = ToolCallDelta(
            index=position,
            id=str(block.get("id") or ""),
            name=str(block.get("name") or ""),
            arguments=arguments,
        )
        return ChatDelta(tool_calls=[call])

    def _block_delta(self, data: Mapping[str, object]) -> ChatDelta | None:
        delta = data.get("delta")
        index = data.get("index")
        if not isinstance(delta, dict):
            raise self._protocol("sent a content_block_delta without a delta")
        kind = delta.get("type")
        if kind == "text_delta":
            text = _optional_string(delta, "text", "delta")
            if text is None:
                raise Malformed("delta.text is null, not a string")
            return ChatDelta(content=text) if text and self.answer_tool is None else None
        if kind == "thinking_delta":
            thought = _optional_string(delta, "thinking", "delta")
            if thought and isinstance(index, int) and index in self._thoughts:
                self._thoughts[index].parts.append(thought)
            return ChatDelta(reasoning=thought) if thought else None
        if kind == "signature_delta":
            signature = _optional_string(delta, "signature", "delta")
            if signature is not None and isinstance(index, int) and index in self._thoughts:
                self._thoughts[index].signature = signature
            return None
        if kind == "input_json_delta":
            if not isinstance(index, int) or index not in self._has_input:
                raise self._protocol("sent tool input for a block that is not a tool_use")
            fragment = delta.get("partial_json")
            if not isinstance(fragment, str) or not fragment:
                return None
            self._has_input[index] = True
            if index == self._answer_block:
                return ChatDelta(content=fragment)
            if index not in self._tool_index:
                return None  # a second answer call
            call = ToolCallDelta(index=self._tool_index[index], arguments=fragment)
            return ChatDelta(tool_calls=[call])
        # citation deltas have no chat completions counterpart.
        return None

    def _block_stop(self, data: Mapping[str, object]) -> ChatDelta | None:
        index = data.get("index")
        if isinstance(index, int) and (index in self._thoughts or index in self._redacted):
            return self._thinking_block_stop(index)
        if not isinstance(index, int) or self._has_input.get(index) is not False:
            return None
        # A call without input streams no fragment at all; clients parse the assembled
        # arguments (or answer) as JSON, and "" is not JSON.
        self._has_input[index] = True
        if index == self._answer_block:
            return ChatDelta(content="{}")
        if index not in self._tool_index:
            return None
        call = ToolCallDelta(index=self._tool_index[index], arguments="{}")
        return ChatDelta(tool_calls=[call])

    def _thinking_block_stop(self, index: int) -> ChatDelta:
        # The whole block, once: its text was streamed as reasoning already, but a client
        # needs it beside its signature, unchanged, to send it back (see the module doc).
        block: ThinkingBlockParam | RedactedThinkingBlockParam
        if index in self._redacted:
            block = {"type": "redacted_thinking", "data": self._redacted.pop(index)}
        else:
            thought = self._thoughts.pop(index)
            thinking: ThinkingBlockParam = {"type": "thinking", "thinking": "".join(thought.parts)}
            if thought.signature is not None:  # (as `_thinking_block`: given as it came)
                thinking["signature"] = thought.signature
            block = thinking
        return ChatDelta(delta_extra={"thinking_blocks": [block]})

    def _message_delta(self, data: Mapping[str, object]) -> None:
        delta = data.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason") is not None:
            self.finish_reason = finish_reason(delta.get("stop_reason"))
        usage = data.get("usage")
        if isinstance(usage, dict):
            self._record_usage(usage)

    def _record_usage(self, usage: Mapping[str, object]) -> None:
        # Counts are cumulative; message_delta may repeat the input counts, or leave them out.
        prompt = prompt_tokens(usage)
        if prompt is not None:
            self.usage.prompt_tokens = prompt
        counts = (
            ("output_tokens", "completion_tokens"),
            ("cache_read_input_tokens", "cached_tokens"),
            ("cache_creation_input_tokens", "cache_creation_tokens"),
        )
        for key, name in counts:
            if usage.get(key) is not None:
                setattr(self.usage, name, token_count(usage[key], f"usage.{key}"))

    def _protocol(self, message: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(message, provider_id=self.provider_id)


def _optional_string(value: Mapping[str, object], key: str, where: str) -> str | None:
    text = value.get(key)
    if text is not None and not isinstance(text, str):
        raise Malformed(f"{where}.{key} is {kind_of(text)}, not a string")
    return text
