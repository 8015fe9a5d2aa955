"""OpenAI-compatible upstreams: the OpenAI API itself and the many servers that copy it.

The request is already in this wire format, so it is passed through (unknown parameters
included) with only the model name replaced; answers are parsed into the shared shapes.
"""

from __future__ import annotations

import base64
import contextlib
import re
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from palyra.config import ModelConfig
from palyra.errors import (
    ErrorClass,
    ProviderError,
    UpstreamProtocolError,
    upstream_status_error,
)
from palyra.models.http import HttpProvider, Malformed, describe_body, kind_of, token_count
from palyra.models.openai_responses import (
    RESPONSE_FINAL_EVENTS,
    RESPONSES_PATH,
    parse_response,
    response_failure,
    response_stream_delta,
    responses_native_payload,
)
from palyra.sse import SSEError, decode_sse
from palyra.types import (
    ASSISTANT_AUDIO_FIELDS,
    REPLY_ONLY_MESSAGE_FIELDS,
    ChatDelta,
    ChatRequest,
    ChatResult,
    EmbeddingsRequest,
    EmbeddingsResult,
    FinishReason,
    ModelProviderKind,
    ToolCallDelta,
    ToolCallResult,
    TranscriptionDelta,
    TranscriptionRequest,
    TranscriptionResult,
    TranscriptionSegment,
    TranscriptionWord,
    Usage,
    Vector,
)

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    # (The deprecated functions' call is a tool call here; the chat dialect spells it back.)
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}

# What is not sent upstream: the stream flags (set below), and of each message what only a
# reply carries (a history of dumped reply objects has them).
_FLAGS = {"stream", "stream_options"}
_NOT_SENT: dict[str, Any] = {
    "stream": True,
    "stream_options": True,
    "messages": {"__all__": REPLY_ONLY_MESSAGE_FIELDS},
}


def chat_payload(request: ChatRequest, model: ModelConfig, *, stream: bool) -> dict[str, Any]:
    """The upstream body: the request as it came (parameters we have no name for included),
    less nulls and reply-only fields, with the upstream's model name."""
    # (The per-message exclusion doubles the dump's cost: only a history that has one pays.)
    replies = any(
        m.annotations is not None or m.reasoning_content is not None or m.model_extra
        for m in request.messages
    )
    payload = request.model_dump(exclude_none=True, exclude=_NOT_SENT if replies else _FLAGS)
    payload["model"] = model.upstream_name
    for index, message in enumerate(request.messages):
        if message.audio is not None and message.audio.keys() - ASSISTANT_AUDIO_FIELDS:
            audio = payload["messages"][index]["audio"]
            payload["messages"][index]["audio"] = {
                k: v for k, v in audio.items() if k in ASSISTANT_AUDIO_FIELDS
            }
    if stream:
        payload["stream"] = True
        # Always ask for usage: metrics and budgets need it even when the client did not. The
        # client's other stream options go as they came.
        options = request.stream_options
        asked = options.model_dump(exclude_none=True) if options is not None else {}
        payload["stream_options"] = {**asked, "include_usage": True}
    return payload


_USAGE_COUNTS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})


def parse_usage(data: Any, where: str = "usage") -> Usage:
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


def _finish(raw: Any, where: str) -> FinishReason:
    if raw is None:
        return "stop"
    if not isinstance(raw, str):
        raise Malformed(f"{where} is {kind_of(raw)}, not a string")
    return _FINISH_REASONS.get(raw, "stop")


def _tool_call(call: Any, where: str) -> ToolCallResult:
    if isinstance(call, dict) and call.get("type") == "custom":
        custom = call.get("custom")
        if not isinstance(custom, dict):
            raise Malformed(f"{where} is a custom tool call without a custom object")
        call_id, name, text = call.get("id"), custom.get("name"), custom.get("input")
        if not isinstance(call_id, str) or not isinstance(name, str):
            raise Malformed(f"{where} has no string id and custom.name")
        if text is not None and not isinstance(text, str):
            raise Malformed(f"{where}.custom.input is {kind_of(text)}, not a string")
        return ToolCallResult(call_id, name, text or "", "custom")
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise Malformed(f"{where} is not an object with a function")
    function = call["function"]
    call_id, name, arguments = call.get("id"), function.get("name"), function.get("arguments")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise Malformed(f"{where} has no string id and function.name")
    return ToolCallResult(call_id, name, _arguments(arguments, f"{where}.function.arguments"))


def _arguments(arguments: Any, where: str) -> str:
    if isinstance(arguments, dict):
        # Some compatible servers send the arguments as an object; clients want its JSON.
        return orjson.dumps(arguments).decode()
    if arguments is not None and not isinstance(arguments, str):
        raise Malformed(f"{where} is {kind_of(arguments)}, not a string")
    return arguments or ""


def _function_call(call: Any, where: str) -> ToolCallResult:
    # The deprecated functions' call: no id (the chat dialect gives it back as it came).
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise Malformed(f"{where} is not an object with a string name")
    return ToolCallResult("", call["name"], _arguments(call.get("arguments"), f"{where}.arguments"))


# What the chat completions schema names, at each level of an answer; anything else an
# upstream sends is kept as an extra of that level and given back as it came.
_BODY_KEYS = frozenset({"id", "object", "created", "model", "choices", "usage"})
_CHOICE_KEYS = frozenset({"index", "message", "delta", "finish_reason", "logprobs"})
_MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "refusal", "function_call"})


def _extra(data: dict[str, Any], known: frozenset[str]) -> dict[str, Any] | None:
    # The subset test is one C call: the usual level has nothing unknown and costs no more.
    if data.keys() <= known:
        return None
    return {k: v for k, v in data.items() if k not in known}


def _reasoning(message: dict[str, Any], where: str) -> str | None:
    # Servers spell it `reasoning_content` (DeepSeek, vLLM, SGLang) or `reasoning` (vLLM's
    # newer releases, OpenRouter, Ollama). Both stay in the extras as they came; this is
    # their text for the dialects that render reasoning their own way.
    reasoning = message.get("reasoning_content")
    if reasoning is None:
        reasoning = message.get("reasoning")
        if not isinstance(reasoning, str):
            return None  # (OpenRouter's `reasoning` may be an object: an extra only)
    if not isinstance(reasoning, str):
        raise Malformed(f"{where}.reasoning_content is {kind_of(reasoning)}, not a string")
    return reasoning or None


def _first_choice(choices: list[Any]) -> tuple[Any, list[dict[str, Any]] | None]:
    """The choice of index 0 (absent index is 0) and the others, as they came."""
    if len(choices) == 1 and isinstance(choices[0], dict) and not choices[0].get("index"):
        return choices[0], None
    first, more = None, []
    for choice in choices:
        if first is None and isinstance(choice, dict) and not choice.get("index"):
            first = choice
        else:
            more.append(choice)
    return first, more or None


def parse_chat_response(body: Any) -> ChatResult:
    """A `chat.completion` body as a `ChatResult`; `Malformed` names the first field that is
    not what the API says it is."""
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
    if message.get("function_call") is not None:
        tool_calls.append(
            _function_call(message["function_call"], "choices[0].message.function_call")
        )
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


def _chunk_extra(chunk: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any] | None:
    # Most upstreams send the same fields on every chunk (OpenAI: service_tier,
    # system_fingerprint): the previous chunk's are handed on, the same object, so that the
    # chat dialect's writer sees at once that its encoded head still holds.
    if chunk.keys() <= _BODY_KEYS:
        return None
    if previous is not None and chunk.keys() - _BODY_KEYS == previous.keys():
        for key, value in previous.items():
            if chunk[key] != value:
                break
        else:
            return previous
    return _extra(chunk, _BODY_KEYS)


def parse_chunk(chunk: Any, previous: dict[str, Any] | None = None) -> ChatDelta | None:
    """One `chat.completion.chunk` as a delta; None when it carries nothing we relay.

    On the hot path: only what a client would otherwise receive malformed is checked by type;
    anything else wrong raises KeyError, TypeError and the like, which the caller reports.
    `previous`: the last chunk's `chunk_extra` of this stream. What the schema does not
    name is looked for by a subset test of each level's keys (one C call), and the delta is
    built with the fields it has only."""
    usage = parse_usage(chunk["usage"]) if chunk.get("usage") else None
    choices = chunk.get("choices") or ()
    chunk_extra = _chunk_extra(chunk, previous)
    if not choices:
        return ChatDelta(usage=usage, chunk_extra=chunk_extra) if usage else None
    choice = choices[0]
    more_choices = None
    if len(choices) > 1 or type(choice) is not dict or choice.get("index"):
        choice, more_choices = _first_choice(choices)
    if choice is None:
        # Only other choices (n > 1) in this chunk.
        return ChatDelta(usage=usage, chunk_extra=chunk_extra, more_choices=more_choices)
    delta = choice.get("delta") or {}
    tool_calls = None
    if delta.get("tool_calls"):
        tool_calls = [_tool_call_delta(call, i) for i, call in enumerate(delta["tool_calls"])]
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
    if delta.get("function_call"):
        tool_calls = [*(tool_calls or ()), _function_call_delta(delta["function_call"])]
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


def _tool_call_delta(call: Any, position: int) -> ToolCallDelta:
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


def _function_call_delta(call: Any) -> ToolCallDelta:
    name, arguments = call.get("name"), call.get("arguments")
    if not (isinstance(name, str | None) and isinstance(arguments, str | None)):
        raise Malformed("choices[0].delta.function_call has fields of the wrong type")
    return ToolCallDelta(index=0, name=name, arguments=arguments or "")


class OpenAIProvider(HttpProvider):
    kind = ModelProviderKind.OPENAI_COMPATIBLE
    # The request is this wire format: every parameter, `functions` included, goes as it came.
    takes_functions = True
    # Until the upstream refuses an embeddings request for asking for base64.
    _upstream_takes_base64 = True
    # Upstream model names that refused to answer in srt or vtt.
    _no_subtitles: frozenset[str] = frozenset()

    def _auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _error_details(self, body: Any) -> tuple[str, str | None, str | None]:
        error = body["error"]
        if isinstance(error, str):
            return error, None, None
        if not isinstance(error, dict):
            return f"an error that is {kind_of(error)}", None, None
        code, param = error.get("code"), error.get("param")
        return (
            str(error.get("message") or ""),
            None if code is None else str(code),
            param if isinstance(param, str) else None,
        )

    async def chat(self, request: ChatRequest, model: ModelConfig) -> ChatResult:
        body = await self._post_json(
            "/chat/completions", chat_payload(request, model, stream=False)
        )
        if isinstance(body, dict) and "error" in body and "choices" not in body:
            # An error sent with a 200 (some compatible servers do): the upstream's own words.
            raise self._stream_error(body)
        try:
            return parse_chat_response(body)
        except Malformed as exc:
            raise UpstreamProtocolError(
                f"answered a malformed chat completion: {exc}", provider_id=self.provider_id
            ) from None

    async def stream_chat(
        self, request: ChatRequest, model: ModelConfig
    ) -> AsyncIterator[ChatDelta]:
        finished = False
        chunk_extra: dict[str, Any] | None = None
        payload = chat_payload(request, model, stream=True)
        # aclosing: whether we stop on [DONE], an error or the caller leaving, the upstream
        # response is released now, not when the generator is collected.
        events = self._events("/chat/completions", payload)
        async with contextlib.aclosing(events):
            async for event in events:
                if event.data == "[DONE]":
                    return
                try:
                    chunk = orjson.loads(event.data)
                except orjson.JSONDecodeError:
                    raise UpstreamProtocolError(
                        "sent a stream chunk that is not JSON", provider_id=self.provider_id
                    ) from None
                if isinstance(chunk, dict) and "error" in chunk:
                    raise self._stream_error(chunk)
                try:
                    delta = parse_chunk(chunk, chunk_extra)
                except Malformed as exc:
                    raise UpstreamProtocolError(
                        f"sent a malformed stream chunk: {exc}", provider_id=self.provider_id
                    ) from None
                except (KeyError, IndexError, TypeError, ValueError, AttributeError):
                    what = (
                        "choices[0].delta is not as the API has it"
                        if isinstance(chunk, dict)
                        else f"a chunk is {kind_of(chunk)}, not a JSON object"
                    )
                    raise UpstreamProtocolError(
                        f"sent a malformed stream chunk: {what}", provider_id=self.provider_id
                    ) from None
                if delta is not None:
                    chunk_extra = delta.chunk_extra or chunk_extra
                    finished = finished or delta.finish_reason is not None
                    yield delta
        if not finished:
            raise UpstreamProtocolError(
                "stream ended before its finish_reason", provider_id=self.provider_id
            )

    def _stream_error(self, chunk: dict[str, Any]) -> ProviderError:
        if not isinstance(chunk["error"], dict | str):
            return UpstreamProtocolError(
                f"sent an error that is {kind_of(chunk['error'])}, not an object",
                provider_id=self.provider_id,
            )
        message, code, param = self._error_details(chunk)
        status = 500
        if code == "rate_limit_exceeded":
            status = 429
        return upstream_status_error(
            self.provider_id, status, message or "error in stream", upstream_code=code, param=param
        )

    async def embed(self, request: EmbeddingsRequest, model: ModelConfig) -> EmbeddingsResult:
        base64_wanted = request.encoding_format == "base64"
        ask_base64 = base64_wanted and self._upstream_takes_base64
        payload: dict[str, Any] = {
            "model": model.upstream_name,
            "input": request.input,
            # Asked for as the client wants them: base64 comes back as base64 and is relayed as
            # it came, never parsed into floats and printed again (most of an embeddings
            # request's CPU when done).
            "encoding_format": "base64" if ask_base64 else "float",
        }
        if request.dimensions is not None:
            payload["dimensions"] = request.dimensions
        if request.user is not None:
            payload["user"] = request.user
        try:
            raw = await self._post_raw("/embeddings", payload)
        except ProviderError as error:
            if not ask_base64 or error.upstream_status not in (400, 422):
                raise
            # Some OpenAI-compatible servers and gateways refuse base64 (vLLM did, so do some
            # proxies): ask for floats, and keep asking for floats once that works, so that
            # clients (whose SDK asks for base64 by default) never see the difference.
            payload["encoding_format"] = "float"
            raw = await self._post_raw("/embeddings", payload)
            self._upstream_takes_base64 = False
        body = self._parse(raw)
        # JSON's true and false are no numbers, but sum() takes them: only a body that spells
        # one anywhere needs each element's type checked (23 µs a vector; the search, 5 µs
        # for the whole body).
        booleans = b"true" in raw or b"false" in raw
        try:
            rows = sorted(body["data"], key=lambda row: int(row.get("index", 0)))
            vectors = [_vector(row["embedding"], base64_wanted, booleans) for row in rows]
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, struct.error):
            raise UpstreamProtocolError(
                "answered embeddings without data[].embedding as numbers or base64 float32",
                provider_id=self.provider_id,
            ) from None
        try:
            usage = parse_usage(body.get("usage"))
        except Malformed as exc:
            raise UpstreamProtocolError(
                f"answered malformed embeddings: {exc}", provider_id=self.provider_id
            ) from None
        model = body.get("model")
        return EmbeddingsResult(vectors, usage, model if isinstance(model, str) else "")

    async def transcribe(
        self, request: TranscriptionRequest, model: ModelConfig
    ) -> TranscriptionResult:
        """`/audio/transcriptions`, or `/audio/translations` for a translation. Subtitles
        (srt, vtt) are asked of the upstream; one that refuses them for a model is asked for
        verbose_json instead (then and from then on), whose segments Palyra renders."""
        asked = _upstream_format(request.response_format)
        subtitles = asked in _SUBTITLES
        if subtitles and model.upstream_name in self._no_subtitles:
            return await self._transcribe_as(request, model, "verbose_json")
        try:
            return await self._transcribe_as(request, model, asked)
        except ProviderError as error:
            if not subtitles or not _refuses_format(error):
                raise
            refused = error
        try:
            result = await self._transcribe_as(request, model, "verbose_json")
        except ProviderError as error:
            if _refuses_format(error):
                raise refused from None  # what the client asked for is what it cannot have
            raise
        self._no_subtitles = self._no_subtitles | {model.upstream_name}
        return result

    async def stream_transcribe(
        self, request: TranscriptionRequest, model: ModelConfig
    ) -> AsyncIterator[TranscriptionDelta]:
        """The upstream's events relayed whole. An upstream that answers a stream request
        with the whole transcription (OpenAI's whisper-1 ignores `stream`) has that answer
        given as the events it would have streamed: all its text in one delta, then done."""
        asked = _upstream_format(request.response_format)
        done = False

        def form() -> aiohttp.FormData:
            return self._transcription_form(request, model, asked, stream=True)

        async with self._request("POST", _audio_path(request), form=form, stream=True) as response:
            if response.content_type != "text/event-stream":
                raw = await self._read_body(response)
                result = self._transcription_answer(raw, response.content_type, asked)
                if result.subtitles is not None:
                    result.text = result.subtitles  # all there is of its text
                yield TranscriptionDelta(text=result.text)
                yield TranscriptionDelta(result=result)
                return
            try:
                async for event in decode_sse(response.content.iter_any()):
                    if event.data == "[DONE]":
                        break
                    delta = self._transcription_event(event.data)
                    done = done or delta.result is not None
                    yield delta
            except SSEError as exc:
                raise UpstreamProtocolError(
                    f"sent a broken event stream: {exc}", provider_id=self.provider_id
                ) from None
        if not done:
            raise UpstreamProtocolError(
                "transcription stream ended before transcript.text.done",
                provider_id=self.provider_id,
            )

    async def _transcribe_as(
        self, request: TranscriptionRequest, model: ModelConfig, response_format: str
    ) -> TranscriptionResult:
        def form() -> aiohttp.FormData:
            return self._transcription_form(request, model, response_format)

        async with self._request("POST", _audio_path(request), form=form) as response:
            raw = await self._read_body(response)
            content_type = response.content_type
        return self._transcription_answer(raw, content_type, response_format)

    def _transcription_form(
        self,
        request: TranscriptionRequest,
        model: ModelConfig,
        response_format: str,
        *,
        stream: bool = False,
    ) -> aiohttp.FormData:
        data = aiohttp.FormData()
        data.add_field(
            "file", request.file, filename=request.filename, content_type=request.content_type
        )
        data.add_field("model", model.upstream_name)
        data.add_field("response_format", response_format)
        for name in ("language", "prompt"):
            value = getattr(request, name)
            if value is not None:
                data.add_field(name, value)
        if request.temperature is not None:
            data.add_field("temperature", str(request.temperature))
        for granularity in request.timestamp_granularities:
            data.add_field("timestamp_granularities[]", granularity)
        if stream:
            data.add_field("stream", "true")
        for name, value in request.extra_fields:
            data.add_field(name, value)
        return data

    def _transcription_answer(
        self, raw: bytes, content_type: str, response_format: str
    ) -> TranscriptionResult:
        """A whole transcription answer: subtitles as they came when they were asked for and
        came as text, otherwise a JSON body (some servers answer JSON whatever is asked)."""
        if response_format in _SUBTITLES and content_type.startswith("text/"):
            if content_type in ("text/html", "text/xml"):
                raise UpstreamProtocolError(
                    f"answered {response_format} with {describe_body(raw)} ({content_type})",
                    provider_id=self.provider_id,
                )
            # The plain text is in the cues; the client asked for the cues.
            return TranscriptionResult(text="", subtitles=raw.decode("utf-8", "replace"))
        body = self._parse(raw)
        if isinstance(body, dict) and "error" in body and "text" not in body:
            raise self._stream_error(body)  # an error sent with a 200: the upstream's words
        try:
            return _parse_transcription(body)
        except Malformed as exc:
            raise UpstreamProtocolError(
                f"answered a malformed transcription: {exc}", provider_id=self.provider_id
            ) from None
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UpstreamProtocolError(
                "answered a transcription without text, or with segments or words that are "
                "not objects with start, end and text (or word)",
                provider_id=self.provider_id,
            ) from None

    def _transcription_event(self, data: str) -> TranscriptionDelta:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                "sent a transcription event that is not JSON", provider_id=self.provider_id
            ) from None
        if isinstance(event, dict) and "error" in event:
            raise self._stream_error(event)
        try:
            return _transcription_delta(event)
        except Malformed as exc:
            raise UpstreamProtocolError(
                f"sent a malformed transcription event: {exc}", provider_id=self.provider_id
            ) from None

    async def list_models(self) -> list[str]:
        body = await self._get_json("/models")
        try:
            return [str(row["id"]) for row in body["data"]]
        except (KeyError, TypeError):
            raise UpstreamProtocolError(
                "answered /models without data[].id", provider_id=self.provider_id
            ) from None

    # --- native pass-through (the OpenAI Responses dialect) ---------------------------------

    async def send_responses(self, body: dict[str, Any], model: ModelConfig) -> ChatResult:
        """`POST /responses` with a client's own Responses API body (its model replaced by
        the upstream name), for a provider with `responses_passthrough`. The result is
        translated for metrics and routing, and carries the upstream's answer in `native`."""
        payload = responses_native_payload(body, model.upstream_name, stream=False)
        answer = await self._post_json(RESPONSES_PATH, payload)
        if isinstance(answer, dict) and "error" in answer and "output" not in answer:
            raise self._stream_error(answer)
        if isinstance(answer, dict) and answer.get("status") == "failed":
            message, code = response_failure(answer)
            raise upstream_status_error(self.provider_id, 500, message, upstream_code=code)
        try:
            return parse_response(answer)
        except Malformed as exc:
            raise UpstreamProtocolError(
                f"answered a malformed response: {exc}", provider_id=self.provider_id
            ) from None

    async def stream_responses(
        self, body: dict[str, Any], model: ModelConfig
    ) -> AsyncIterator[ChatDelta]:
        """The same, streamed: one `ChatDelta` per upstream event, its `native` the event as
        it came (name, data) and its other fields the event's translation, so the router
        opens, meters and fails over a native stream like any other. An `error` or
        `response.failed` event is raised as the provider's error."""
        payload = responses_native_payload(body, model.upstream_name, stream=True)
        events = self._events(RESPONSES_PATH, payload)
        async with contextlib.aclosing(events):
            async for event in events:
                try:
                    data = orjson.loads(event.data)
                except orjson.JSONDecodeError:
                    raise UpstreamProtocolError(
                        "sent a stream event that is not JSON", provider_id=self.provider_id
                    ) from None
                if not isinstance(data, dict):
                    raise UpstreamProtocolError(
                        f"sent a stream event that is {kind_of(data)}, not an object",
                        provider_id=self.provider_id,
                    )
                kind = str(data.get("type") or event.event)
                if kind == "error" or (kind == "" and "error" in data):
                    raise self._stream_error({"error": data.get("error", data)})
                if kind == "response.failed":
                    message, code = response_failure(data)
                    raise upstream_status_error(self.provider_id, 500, message, upstream_code=code)
                try:
                    delta = response_stream_delta(kind, data) or ChatDelta()
                except Malformed as exc:
                    raise UpstreamProtocolError(
                        f"sent a malformed stream event: {exc}", provider_id=self.provider_id
                    ) from None
                delta.native = (kind, event.data)
                yield delta
                if kind in RESPONSE_FINAL_EVENTS:
                    return
        raise UpstreamProtocolError(
            "stream ended before response.completed", provider_id=self.provider_id
        )


# Base64 is checked by a pattern and its length (9 µs for 1,536 float32s), not by decoding it
# (17 µs) and encoding it again for the client. (A pattern that also counts the groups of
# four takes 40 µs.)
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _vector(embedding: Any, base64_wanted: bool, booleans: bool = True) -> Vector:
    """An upstream's embedding, checked: a list of numbers, or base64 of float32s (servers that
    ignore `encoding_format` send either, whatever was asked). Numbers a client wants as
    base64 are packed here, where a value float32 cannot hold is the upstream's error."""
    if isinstance(embedding, str):
        size = len(embedding) // 4 * 3 - embedding[-2:].count("=")
        if len(embedding) % 4 or size % 4 or _BASE64.fullmatch(embedding) is None:
            raise ValueError("not base64 of whole float32s")
        return embedding
    if not isinstance(embedding, list):
        raise TypeError("embedding is neither a list nor base64")
    # sum() raises TypeError on anything but numbers and booleans, in C (4 µs for 1,536;
    # float() on each took 89); `booleans`: whether the body may hold any.
    sum(embedding)
    if booleans and not set(map(type, embedding)) <= _NUMBER_TYPES:
        raise TypeError("embedding has elements that are not numbers")
    if base64_wanted:
        return base64.b64encode(struct.pack(f"<{len(embedding)}f", *embedding)).decode()
    return embedding


_NUMBER_TYPES = {int, float}


def _parse_transcription(body: Any) -> TranscriptionResult:
    if not isinstance(body, dict):
        raise Malformed(f"the body is {kind_of(body)}, not a JSON object")
    text = body.get("text")
    if not isinstance(text, str):
        raise Malformed(f"text is {kind_of(text)}, not a string")
    segments = [
        TranscriptionSegment(
            int(s.get("id", i)), float(s["start"]), float(s["end"]), str(s["text"])
        )
        for i, s in enumerate(body.get("segments") or ())
    ]
    words = [
        TranscriptionWord(str(w["word"]), float(w["start"]), float(w["end"]))
        for w in body.get("words") or ()
    ]
    duration = body.get("duration")
    language = body.get("language")
    return TranscriptionResult(
        text=text,
        language=language if isinstance(language, str) else None,
        duration_s=float(duration) if duration is not None else None,
        segments=segments,
        usage=_transcription_usage(body.get("usage")),
        words=words,
        body=body,
    )


def _transcription_usage(usage: Any) -> Usage:
    """Usage billed in tokens; usage billed by duration (whisper-1) counts none."""
    if usage is None:
        return Usage()
    if not isinstance(usage, dict):
        raise Malformed(f"usage is {kind_of(usage)}, not an object")
    return Usage(
        token_count(usage.get("input_tokens"), "usage.input_tokens"),
        token_count(usage.get("output_tokens"), "usage.output_tokens"),
    )


def _transcription_delta(event: Any) -> TranscriptionDelta:
    """One event of a transcription stream (`transcript.text.delta`, `.done`, or one we
    relay without reading, such as `.segment`), kept whole to be relayed as it came."""
    if not isinstance(event, dict):
        raise Malformed(f"an event is {kind_of(event)}, not a JSON object")
    kind = event.get("type")
    if kind == "transcript.text.delta":
        delta = event.get("delta")
        if not isinstance(delta, str):
            raise Malformed(f"transcript.text.delta has a delta that is {kind_of(delta)}")
        return TranscriptionDelta(text=delta, event=event)
    if kind == "transcript.text.done":
        text = event.get("text")
        if not isinstance(text, str):
            raise Malformed(f"transcript.text.done has a text that is {kind_of(text)}")
        result = TranscriptionResult(text=text, usage=_transcription_usage(event.get("usage")))
        return TranscriptionDelta(result=result, event=event)
    if not isinstance(kind, str):
        raise Malformed(f"an event has a type that is {kind_of(kind)}, not a string")
    return TranscriptionDelta(event=event)


# Subtitle formats, and the form the upstream is asked for to answer each format.
_SUBTITLES = ("srt", "vtt")


def _upstream_format(response_format: str) -> str:
    # Plain text is the text of a json answer, which also carries usage.
    return "json" if response_format == "text" else response_format


def _audio_path(request: TranscriptionRequest) -> str:
    return "/audio/translations" if request.translate else "/audio/transcriptions"


def _refuses_format(error: ProviderError) -> bool:
    """Whether an upstream's 4xx refused the response_format (a server or model without
    subtitles), not the request as a whole."""
    return (
        error.upstream_status in (400, 422)
        and error.error_class is ErrorClass.CLIENT
        and (error.param == "response_format" or "response_format" in error.message)
    )
