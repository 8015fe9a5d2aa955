"""The OpenAI chat completions wire format, as an OpenAI-compatible provider sends and reads it:
the upstream payload for a request (passed through, unknown parameters included, with only the
model name replaced and what only replies carry left out) and the answer, whole or chunk by
chunk, parsed into the shared shapes with every field the upstream sent kept. Pure: no I/O.
The format's types are in `openai_wire.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast

import orjson

from palyra.config import ModelConfig
from palyra.models.http import Malformed, kind_of, token_count
from palyra.models.openai_wire import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageToolCall,
    ChoiceDelta,
    ChoiceDeltaFunctionCall,
    ChoiceDeltaToolCall,
    ChunkChoice,
    CompletionCreateParams,
    CompletionUsage,
    FunctionCall,
)
from palyra.types import (
    ASSISTANT_AUDIO_FIELDS,
    REPLY_ONLY_FUNCTION_FIELDS,
    REPLY_ONLY_MESSAGE_FIELDS,
    ChatDelta,
    ChatRequest,
    ChatResult,
    FinishReason,
    ToolCallDelta,
    ToolCallResult,
    Usage,
)

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    # (The deprecated functions' call is a tool call here; the chat dialect spells it back.)
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}

# Of each message, what only a reply carries is not sent upstream (a history of dumped reply
# objects has it).
_REPLIES: dict[str, Any] = {
    "messages": {
        "__all__": {
            **dict.fromkeys(REPLY_ONLY_MESSAGE_FIELDS, True),
            "tool_calls": {"__all__": {"function": REPLY_ONLY_FUNCTION_FIELDS}},
        }
    }
}


def chat_payload(
    request: ChatRequest, model: ModelConfig, *, stream: bool
) -> CompletionCreateParams:
    """The upstream body: the request as it came (parameters we have no name for included),
    less nulls and reply-only fields, with the upstream's model name."""
    # (The per-message exclusion doubles the dump's cost: only a history that has one pays.
    # One loop, not any() over a generator: most histories are a few messages.)
    replies = audio = False
    for message in request.messages:
        if (
            message.annotations is not None
            or message.reasoning_content is not None
            or message.__pydantic_extra__
        ):
            replies = True
        for call in message.tool_calls or ():
            function = getattr(call, "function", None)
            if function is not None and function.__pydantic_extra__:
                replies = True
        if message.audio is not None:
            audio = True
    # The stream flags are dumped with the rest and set below (an exclusion costs more).
    dumped = request.model_dump(exclude_none=True, exclude=_REPLIES if replies else None)
    if audio:
        for index, message in enumerate(request.messages):
            if message.audio is not None and message.audio.keys() - ASSISTANT_AUDIO_FIELDS:
                sent = dumped["messages"][index]
                sent["audio"] = {
                    k: v for k, v in sent["audio"].items() if k in ASSISTANT_AUDIO_FIELDS
                }
    # `ChatRequest` names its fields as the API does, so its dump is this wire format, with
    # the client's parameters and message fields we have no name for beside them, as they
    # came: a TypedDict cannot list those, and this cast is where they come in.
    payload = cast(CompletionCreateParams, dumped)
    del payload["stream"]
    options = payload.pop("stream_options", None)
    payload["model"] = model.upstream_name
    if stream:
        payload["stream"] = True
        # Always ask for usage: metrics and budgets need it even when the client did not. The
        # client's other stream options go as they came.
        payload["stream_options"] = {**(options or {}), "include_usage": True}
    return payload


_USAGE_COUNTS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})


def parse_usage(data: CompletionUsage | None, where: str = "usage") -> Usage:
    """Usage as the upstream counted it; absent is zero, a count of the wrong type is
    `Malformed` (it would be a 500 later, or a wrong bill). Its detail objects and any
    field we have no name for are kept in `extra`, to be given back as they came."""
    if data is None:
        return Usage()
    if not isinstance(data, dict):
        raise Malformed(f"{where} is {kind_of(data)}, not an object")
    usage = Usage(
        token_count(data.get("prompt_tokens"), f"{where}.prompt_tokens"),
        token_count(data.get("completion_tokens"), f"{where}.completion_tokens"),
    )
    if data.keys() - _USAGE_COUNTS:
        usage.extra = {k: v for k, v in data.items() if k not in _USAGE_COUNTS}
        prompt = data.get("prompt_tokens_details")
        if isinstance(prompt, dict):
            where_prompt = f"{where}.prompt_tokens_details"
            usage.cached_tokens = token_count(
                prompt.get("cached_tokens"), f"{where_prompt}.cached_tokens"
            )
            usage.cache_creation_tokens = token_count(
                prompt.get("cache_write_tokens"), f"{where_prompt}.cache_write_tokens"
            )
        completion = data.get("completion_tokens_details")
        if isinstance(completion, dict):
            usage.reasoning_tokens = token_count(
                completion.get("reasoning_tokens"),
                f"{where}.completion_tokens_details.reasoning_tokens",
            )
    return usage


def _finish(raw: object, where: str) -> FinishReason:
    if raw is None:
        return "stop"
    if not isinstance(raw, str):
        raise Malformed(f"{where} is {kind_of(raw)}, not a string")
    return _FINISH_REASONS.get(raw, "stop")


def _tool_call(call: ChatCompletionMessageToolCall, where: str) -> ToolCallResult:
    # (`in` before the type: a call without one is a function's.)
    if isinstance(call, dict) and "type" in call and call["type"] == "custom":
        custom = call.get("custom")
        if not isinstance(custom, dict):
            raise Malformed(f"{where} is a custom tool call without a custom object")
        call_id, name, text = call.get("id"), custom.get("name"), custom.get("input")
        if not isinstance(call_id, str) or not isinstance(name, str):
            raise Malformed(f"{where} has no string id and custom.name")
        if text is not None and not isinstance(text, str):
            raise Malformed(f"{where}.custom.input is {kind_of(text)}, not a string")
        return ToolCallResult(call_id, name, text or "", "custom")
    if (
        not isinstance(call, dict)
        or "function" not in call
        or not isinstance(call["function"], dict)
    ):
        raise Malformed(f"{where} is not an object with a function")
    function = call["function"]
    call_id, name, arguments = call.get("id"), function.get("name"), function.get("arguments")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise Malformed(f"{where} has no string id and function.name")
    return ToolCallResult(call_id, name, _arguments(arguments, f"{where}.function.arguments"))


def _arguments(arguments: object, where: str) -> str:
    if isinstance(arguments, dict):
        # Some compatible servers send the arguments as an object; clients want its JSON.
        return orjson.dumps(arguments).decode()
    if arguments is not None and not isinstance(arguments, str):
        raise Malformed(f"{where} is {kind_of(arguments)}, not a string")
    return arguments or ""


def _function_call(call: FunctionCall, where: str) -> ToolCallResult:
    # The deprecated functions' call: no id (the chat dialect gives it back as it came).
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise Malformed(f"{where} is not an object with a string name")
    return ToolCallResult("", call["name"], _arguments(call.get("arguments"), f"{where}.arguments"))


# What the chat completions schema names, at each level of an answer; anything else an
# upstream sends is kept as an extra of that level and given back as it came.
_BODY_KEYS = frozenset({"id", "object", "created", "model", "choices", "usage"})
_CHOICE_KEYS = frozenset({"index", "message", "delta", "finish_reason", "logprobs"})
_MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "refusal", "function_call"})


def _extra(data: Mapping[str, object], known: frozenset[str]) -> dict[str, Any] | None:
    # The subset test is one C call: the usual level has nothing unknown and costs no more.
    if data.keys() <= known:
        return None
    return {k: v for k, v in data.items() if k not in known}


def _reasoning(message: ChatCompletionMessage | ChoiceDelta, where: str) -> str | None:
    # Servers spell it `reasoning_content` (DeepSeek, vLLM, SGLang) or `reasoning` (vLLM's
    # newer releases, OpenRouter, Ollama). Both stay in the extras as they came; this is
    # their text for the dialects that render reasoning their own way.
    reasoning = message.get("reasoning_content")
    if reasoning is None:
        spelt = message.get("reasoning")
        if not isinstance(spelt, str):
            return None  # (OpenRouter's `reasoning` may be an object: an extra only)
        reasoning = spelt
    if not isinstance(reasoning, str):
        raise Malformed(f"{where}.reasoning_content is {kind_of(reasoning)}, not a string")
    return reasoning or None


# A choice of an answer or of a chunk.
_Choice = TypeVar("_Choice", bound=Mapping[str, object])


def _first_choice(choices: Sequence[_Choice]) -> tuple[_Choice | None, list[Any] | None]:
    """The choice of index 0 (absent index is 0) and the others, as they came (relayed
    unread: the shared shapes hold them as plain JSON)."""
    if len(choices) == 1 and isinstance(choices[0], dict) and not choices[0].get("index"):
        return choices[0], None
    first: _Choice | None = None
    more: list[Any] = []
    for choice in choices:
        if first is None and isinstance(choice, dict) and not choice.get("index"):
            first = choice
        else:
            more.append(choice)
    return first, more or None


def parse_chat_response(body: ChatCompletion) -> ChatResult:
    """A `chat.completion` body as a `ChatResult`; `Malformed` names the first field that is
    not what the API says it is (the body is the upstream's JSON, whatever it holds)."""
    if not isinstance(body, dict):
        raise Malformed(f"the body is {kind_of(body)}, not a JSON object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise Malformed("the body has no choices[0]")
    choice, more_choices = _first_choice(choices)
    if not isinstance(choice, dict):
        raise Malformed("the body has no choices[0]")
    message = choice.get("message")
    if not isinstance(message, dict):
        raise Malformed("choices[0].message is not an object")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise Malformed(f"choices[0].message.content is {kind_of(content)}, not a string")
    refusal = message.get("refusal")
    if refusal is not None and not isinstance(refusal, str):
        raise Malformed(f"choices[0].message.refusal is {kind_of(refusal)}, not a string")
    raw_calls = message.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise Malformed("choices[0].message.tool_calls is not a list")
    tool_calls = [
        _tool_call(call, f"choices[0].message.tool_calls[{i}]") for i, call in enumerate(raw_calls)
    ]
    function_call = message.get("function_call")
    if function_call is not None:
        tool_calls.append(_function_call(function_call, "choices[0].message.function_call"))
    model = body.get("model")
    return ChatResult(
        content=content,
        finish_reason=_finish(choice.get("finish_reason"), "choices[0].finish_reason"),
        usage=parse_usage(body.get("usage")),
        tool_calls=tool_calls,
        upstream_model=model if isinstance(model, str) else "",
        reasoning=_reasoning(message, "choices[0].message"),
        refusal=refusal,
        logprobs=choice.get("logprobs"),
        body_extra=_extra(body, _BODY_KEYS),
        choice_extra=_extra(choice, _CHOICE_KEYS),
        message_extra=_extra(message, _MESSAGE_KEYS),
        more_choices=more_choices,
    )


_ABSENT = object()


class ChunkFields:
    """The top-level fields of one stream's chunks that have no name here (OpenAI's
    system_fingerprint and service_tier, a server's own). Most upstreams send the same on
    every chunk: the last ones are handed on, the same object, while they hold, so the chat
    dialect's writer sees at once that its encoded head still holds. Checking that costs one
    subset test of the chunk's keys and a comparison per field."""

    __slots__ = ("_known", "_last")

    def __init__(self) -> None:
        self._last: dict[str, Any] | None = None
        # The keys a chunk may have for `_last` to still hold: the named ones and its own.
        self._known = _BODY_KEYS

    def of(self, chunk: ChatCompletionChunk) -> dict[str, Any] | None:
        last = self._last
        if chunk.keys() <= self._known:
            if last is None:
                return None
            for key, value in last.items():
                if chunk.get(key, _ABSENT) != value:
                    break
            else:
                return last
        extra = _extra(chunk, _BODY_KEYS)
        self._last = extra
        self._known = _BODY_KEYS | extra.keys() if extra else _BODY_KEYS
        return extra


# Where the content of a delta that holds nothing else starts, as a chunk's text spells it.
_CONTENT_DELTA = '{"content":'
# A stream learns its usual chunk's text again when it changes (a new system_fingerprint,
# say), this many times at most: an upstream whose chunks never repeat their text (OpenAI's
# `obfuscation` differs on every chunk) stops paying for trying after that.
_MAX_LEARNS = 8


class UsualChunk:
    """The text of one stream's usual chunk, a content delta and nothing else, around its
    content: `{"id":...,"choices":[{"index":0,"delta":{"content":` + the content + `},...}`.
    A chunk whose text is that prefix, a JSON string and that suffix is, by JSON's grammar,
    the same object as the chunk it was learned from with another content: its delta is
    the content with the same chunk fields, and the whole chunk need not be decoded and
    checked field by field (most of a stream's own work a chunk; benchmarks/README.md).
    Every other chunk takes `parse_chunk`; a chunk of this shape teaches the text."""

    __slots__ = ("_fields", "_fixed", "_learns", "_prefix", "_suffix")

    def __init__(self) -> None:
        self._prefix: str | None = None
        self._suffix = ""
        self._fixed = 0
        self._fields: dict[str, Any] | None = None
        self._learns = 0

    def parse(self, data: str) -> ChatDelta | None:
        """The delta of a chunk of the usual text; None for any other (it goes the full way,
        an empty content included)."""
        prefix = self._prefix
        if (
            prefix is None
            or len(data) <= self._fixed
            or not data.startswith(prefix)
            or not data.endswith(self._suffix)
        ):
            return None
        try:
            content = orjson.loads(data[len(prefix) : len(data) - len(self._suffix)])
        except orjson.JSONDecodeError:
            return None  # (not one JSON value there: the full way names what is wrong)
        if type(content) is not str or not content:
            return None
        delta = ChatDelta(content)
        if self._fields is not None:
            delta.chunk_extra = self._fields
        return delta

    def learn(self, data: str, chunk: ChatCompletionChunk, delta: ChatDelta | None) -> None:
        """Take `data`'s text as the usual chunk's when `delta`, what `parse_chunk` made of
        `chunk` (its decoded text), is content and nothing else. The content is looked for
        after the text's first `{"content":`, which is outside any string (a string's quotes
        are escaped); it is taken when the text with another content there decodes to
        `chunk` with that content as the delta's, whatever else the text holds."""
        if (
            delta is None
            or self._learns >= _MAX_LEARNS
            or not delta.content
            or delta.tool_calls is not None
            or delta.finish_reason is not None
            or delta.usage is not None
            or delta.reasoning is not None
            or delta.refusal is not None
            or delta.logprobs is not None
            or delta.choice_extra is not None
            or delta.delta_extra is not None
            or delta.more_choices is not None
            or delta.native is not None
        ):
            return
        self._learns += 1
        at = data.find(_CONTENT_DELTA)
        if at < 0:
            return
        start = at + len(_CONTENT_DELTA)
        while data[start : start + 1] == " ":  # (`{"content": "..."}` from some encoders)
            start += 1
        # The content's end, as orjson would spell it; an upstream that escapes otherwise is
        # learned from a chunk whose content both spell alike.
        end = start + len(orjson.dumps(delta.content).decode())
        prefix, suffix = data[:start], data[end:]
        try:
            if orjson.loads(data[start:end]) != delta.content:
                return
            probe = orjson.loads(prefix + '""' + suffix)
            probe["choices"][0]["delta"]["content"] = delta.content
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            return
        if probe != chunk:
            return  # (that content was not the delta's, or not its only difference)
        self._prefix, self._suffix = prefix, suffix
        self._fixed = len(prefix) + len(suffix)
        self._fields = delta.chunk_extra


def parse_chunk(chunk: ChatCompletionChunk, fields: ChunkFields | None = None) -> ChatDelta | None:
    """One `chat.completion.chunk` as a delta; None when it carries nothing we relay.

    On the hot path: only what a client would otherwise receive malformed is checked by type;
    anything else wrong raises KeyError, TypeError and the like, which the caller reports.
    `fields`: the stream's chunk fields so far (a chunk alone without). What the schema does not
    name is looked for by a subset test of each level's keys (one C call), and the delta is
    built with the fields it has only."""
    usage = parse_usage(chunk["usage"]) if chunk.get("usage") else None
    choices = chunk.get("choices") or ()
    chunk_extra = fields.of(chunk) if fields is not None else _extra(chunk, _BODY_KEYS)
    if not choices:
        return ChatDelta(usage=usage, chunk_extra=chunk_extra) if usage else None
    choice: ChunkChoice | None = choices[0]
    more_choices = None
    if len(choices) > 1 or type(choice) is not dict or choice.get("index"):
        choice, more_choices = _first_choice(choices)
    if choice is None:
        # Only other choices (n > 1) in this chunk.
        return ChatDelta(usage=usage, chunk_extra=chunk_extra, more_choices=more_choices)
    delta = choice.get("delta") or {}
    calls = delta.get("tool_calls")
    tool_calls = None
    if calls:
        tool_calls = [_tool_call_delta(call, i) for i, call in enumerate(calls)]
    finish_raw = choice.get("finish_reason")
    finish = _finish(finish_raw, "choices[0].finish_reason") if finish_raw else None
    content = delta.get("content") or None
    if content is not None and not isinstance(content, str):
        raise Malformed(f"choices[0].delta.content is {kind_of(content)}, not a string")
    plain_delta = delta.keys() <= _PLAIN_DELTA_KEYS
    plain_choice = choice.keys() <= _PLAIN_CHOICE_KEYS and choice.get("logprobs") is None
    if plain_delta and plain_choice and more_choices is None:
        # The usual chunk: content, tool calls, a finish, usage.
        if content is None and tool_calls is None and finish is None and usage is None:
            return None
        parsed = ChatDelta(content, tool_calls, finish, usage)
        if chunk_extra is not None:
            parsed.chunk_extra = chunk_extra
        return parsed
    function_call = delta.get("function_call")
    if function_call:
        tool_calls = [*(tool_calls or ()), _function_call_delta(function_call)]
    refusal = delta.get("refusal") or None
    if refusal is not None and not isinstance(refusal, str):
        raise Malformed(f"choices[0].delta.refusal is {kind_of(refusal)}, not a string")
    logprobs = choice.get("logprobs")
    delta_extra = None if plain_delta else _extra(delta, _MESSAGE_KEYS)
    choice_extra = None if plain_choice else _extra(choice, _CHOICE_KEYS)
    if (
        content is None
        and tool_calls is None
        and finish is None
        and usage is None
        and refusal is None
        and logprobs is None
        and delta_extra is None
        and choice_extra is None
        and more_choices is None
    ):
        return None
    return ChatDelta(
        content=content,
        tool_calls=tool_calls,
        finish_reason=finish,
        usage=usage,
        reasoning=_reasoning(delta, "choices[0].delta") if delta_extra else None,
        refusal=refusal,
        logprobs=logprobs,
        chunk_extra=chunk_extra,
        choice_extra=choice_extra,
        delta_extra=delta_extra,
        more_choices=more_choices,
    )


# What the usual chunk's choice and delta hold: anything else takes the longer way above.
_PLAIN_CHOICE_KEYS = frozenset({"index", "delta", "finish_reason", "logprobs"})
# (A null refusal comes with every first delta of OpenAI's.)
_PLAIN_DELTA_KEYS = frozenset({"role", "content", "tool_calls"})


# Tool calls in one answer are numbered from 0; a request offers at most 128 tools and a
# model calls each a few times at most. A larger index is no index (1e300 or 2**64 failed the
# encoding of our own chunk: a 500, found by the fuzz suite).
_MAX_TOOL_CALL_INDEX = 1023


def _tool_call_delta(call: ChoiceDeltaToolCall, position: int) -> ToolCallDelta:
    where = f"choices[0].delta.tool_calls[{position}]"
    if not isinstance(call, dict):
        raise Malformed(f"{where} is {kind_of(call)}, not an object")
    custom = call.get("type") == "custom"
    function = (call.get("custom") if custom else call.get("function")) or {}
    if not isinstance(function, dict):
        raise Malformed(f"{where}.function is {kind_of(function)}, not an object")
    call_id, name = call.get("id"), function.get("name")
    arguments = function.get("input" if custom else "arguments")
    if not (
        isinstance(call_id, str | None)
        and isinstance(name, str | None)
        and isinstance(arguments, str | None)
    ):
        raise Malformed(f"{where} has fields of the wrong type")
    index = call.get("index", 0)
    if type(index) is not int or not 0 <= index <= _MAX_TOOL_CALL_INDEX:
        raise Malformed(f"{where}.index is not a whole number from 0 to {_MAX_TOOL_CALL_INDEX}")
    return ToolCallDelta(
        index=index,
        id=call_id,
        name=name,
        arguments=arguments or "",
        type="custom" if custom else "function",
    )


def _function_call_delta(call: ChoiceDeltaFunctionCall) -> ToolCallDelta:
    name, arguments = call.get("name"), call.get("arguments")
    if not (isinstance(name, str | None) and isinstance(arguments, str | None)):
        raise Malformed("choices[0].delta.function_call has fields of the wrong type")
    return ToolCallDelta(index=0, name=name, arguments=arguments or "")
