"""OpenAI chat completions: `POST /v1/chat/completions`, whole and streamed.

The internal request shape is this wire format already, so the adapter is thin: validate,
route, and render the result (or its stream of deltas) as `chat.completion` objects or
`chat.completion.chunk` SSE frames.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import cast

import orjson
import structlog
from aiohttp import web

from palyra import tokens
from palyra.dialects.base import Dialect
from palyra.dialects.common import Relay, json_response, random_id, route_headers, sse_response
from palyra.errors import PalyraError
from palyra.models.openai_wire import (
    ChatCompletion,
    ChatCompletionMessage,
    Choice,
    ChoiceDelta,
    ChoiceDeltaFunctionCall,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallCustom,
    ChoiceDeltaToolCallFunction,
    ChunkChoice,
    CompletionUsage,
    FinishReason,
    merge_extra,
    message_tool_call,
)
from palyra.routing import Router
from palyra.server.json_body import parse_body
from palyra.server.keys import GATEWAY, ROUTE, STARTED
from palyra.sse import DONE, encode_data
from palyra.types import ChatDelta, ChatRequest, ChatResult, ToolCallDelta

log = structlog.get_logger("palyra.inference")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = request[STARTED]
    router = request.app[GATEWAY].router
    body, size = await parse_body(request, ChatRequest)
    if size <= tokens.COUNT_INLINE_BYTES:
        # Counting what fits in this many bytes takes a few milliseconds at most, wherever
        # the router needs it: the usual request pays for nothing more.
        return await _chat(request, router, body, started)
    with tokens.remembering():
        await tokens.prepare_chat(body, router.registry.chat_rooms())
        return await _chat(request, router, body, started)


async def _chat(
    request: web.Request, router: Router, body: ChatRequest, started: float
) -> web.StreamResponse:
    if body.stream:
        return await _stream_chat(request, router, body, started)
    routed = await router.chat(body)
    request[ROUTE] = routed.route
    payload = chat_completion(routed.value, routed.route.model_id, functions=body.uses_functions)
    return json_response(payload, route_headers(routed.route, started))


async def _stream_chat(
    request: web.Request, router: Router, body: ChatRequest, started: float
) -> web.StreamResponse:
    routed = await router.stream_chat(body)
    request[ROUTE] = routed.route
    writer = ChunkWriter(routed.route.model_id, body.include_usage, functions=body.uses_functions)
    events = routed.value
    # The router has read the stream up to its first token already: taking its first event
    # waits for nothing, and lets the role chunk carry the upstream's chunk fields too.
    first = await anext(events, None)
    writer.follow(first.chunk_extra if first is not None else None)
    response = await sse_response(request, routed.route, started)
    # The first frame goes out at once, with the headers: time to first chunk is what a
    # client feels.
    await response.write(writer.role())
    relay = Relay(response)
    try:
        try:
            if first is not None:
                relay.push(writer.delta(first) + writer.usage(first))
            async for event in events:
                frames = writer.delta(event) + writer.usage(event)
                if frames and relay.push(frames):
                    await relay.taken()
        except PalyraError as exc:
            # Headers are gone; the only honest signal left is an error event, then the end.
            log.warning("stream_failed", error=exc.message, code=exc.code)
            relay.push(encode_data(exc.body()))
        else:
            relay.push(DONE)
        await relay.close()
    finally:
        relay.abandon()
    await response.write_eof()
    return response


def completion_id() -> str:
    return "chatcmpl-" + random_id()


def chat_completion(
    result: ChatResult, model_id: str, *, functions: bool = False
) -> ChatCompletion:
    """The `chat.completion` body of a result: what the upstream sent, whole (its fields we
    have no name for included, and with n > 1 its other choices). `functions`: the client
    spoke the deprecated functions, and gets its call as `function_call`."""
    message: ChatCompletionMessage = {
        "role": "assistant",
        "content": result.content,
        "refusal": result.refusal,
    }
    finish_reason: FinishReason = result.finish_reason
    if result.tool_calls:
        if functions:
            call = result.tool_calls[0]
            message["function_call"] = {"name": call.name, "arguments": call.arguments}
            if finish_reason == "tool_calls":
                finish_reason = "function_call"
        else:
            message["tool_calls"] = [message_tool_call(c) for c in result.tool_calls]
    extra = result.message_extra
    if extra:
        merge_extra(message, extra)
    if result.reasoning is not None and not (
        extra and ("reasoning_content" in extra or "reasoning" in extra)
    ):
        # (An upstream's own spelling, in the extras, is given back as it came.)
        message["reasoning_content"] = result.reasoning
    choice: Choice = {
        "index": 0,
        "message": message,
        "finish_reason": finish_reason,
        "logprobs": result.logprobs,
    }
    if result.choice_extra:
        merge_extra(choice, result.choice_extra)
    # The shared shapes hold what is relayed unread as plain JSON (palyra/types.py): usage
    # with the upstream's own detail objects and fields, and with n > 1 its other choices as
    # it sent them. They are these types by the API.
    body: ChatCompletion = {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": [choice],
        "usage": cast(CompletionUsage, result.usage.as_openai()),
        "system_fingerprint": None,
    }
    if result.more_choices:
        body["choices"] += cast("list[Choice]", result.more_choices)
    if result.body_extra:
        merge_extra(body, result.body_extra)
    return body


class ChunkWriter:
    """Builds the SSE frames (`data: {chat.completion.chunk}`) of one stream, sharing id and
    created.

    Every chunk of a stream repeats the same head (id, object, created, model,
    system_fingerprint, and what else the upstream puts at the top of each chunk, such as
    service_tier), so it is encoded once and each chunk is that head, the encoded delta and a
    fixed tail: per chunk only the delta goes through the JSON encoder. The upstream's chunk
    fields are compared with the last ones seen and the head encoded again only when they
    change (most upstreams send the same on every chunk; none, for the other kinds). The
    bytes are exactly what encoding the whole chunk object would give, keys in the same
    order."""

    def __init__(self, model_id: str, include_usage: bool, *, functions: bool = False) -> None:
        self._head = {
            "id": completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model_id,
            "system_fingerprint": None,
        }
        self._include_usage = include_usage
        self._functions = functions
        # as OpenAI does: with include_usage, usage is null on every chunk but the last,
        # choice-less one
        self._usage_null = b',"usage":null' if include_usage else b""
        self._tail = b',"finish_reason":null,"logprobs":null}]' + self._usage_null + b"}\n\n"
        self._chunk_extra: Mapping[str, object] | None = None
        self._encode_head()

    def _encode_head(self) -> None:
        head: Mapping[str, object] = self._head
        if self._chunk_extra:
            head = {**head, **self._chunk_extra}
        encoded = orjson.dumps(head)[:-1]  # without its closing brace: the chunk goes on
        self._prefix = b"data: " + encoded + b',"choices":'
        self._open = self._prefix + b'[{"index":0,"delta":'
        self._open_usage = self._prefix + b'[],"usage":'

    def follow(self, chunk_extra: Mapping[str, object] | None) -> None:
        """Take the upstream's chunk fields (`system_fingerprint`, `service_tier`, ...) for
        the chunks to come. Free when it sends none (other kinds) or the same as before (the
        usual)."""
        if chunk_extra is not self._chunk_extra and chunk_extra != self._chunk_extra:
            self._chunk_extra = chunk_extra
            self._encode_head()

    def _chunk(
        self,
        delta: ChoiceDelta,
        finish_reason: FinishReason | None = None,
        event: ChatDelta | None = None,
    ) -> bytes:
        if event is None or (event.logprobs is None and not event.choice_extra):
            if finish_reason is None:
                return self._open + orjson.dumps(delta) + self._tail
            tail = (
                b',"finish_reason":'
                + orjson.dumps(finish_reason)
                + b',"logprobs":null}]'
                + self._usage_null
                + b"}\n\n"
            )
            return self._open + orjson.dumps(delta) + tail
        choice: ChunkChoice = {
            "index": 0,
            "delta": delta,
            "finish_reason": finish_reason,
            "logprobs": event.logprobs,
        }
        if event.choice_extra:
            merge_extra(choice, event.choice_extra)
        return self._choices([choice])

    def _choices(self, choices: Sequence[Mapping[str, object]]) -> bytes:
        return self._prefix + orjson.dumps(choices) + self._usage_null + b"}\n\n"

    def role(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def delta(self, event: ChatDelta) -> bytes:
        """The frames of one event (none, one or two), as one piece to write at once."""
        if event.chunk_extra is not self._chunk_extra:
            self.follow(event.chunk_extra)
        if (
            event.delta_extra is None
            and event.choice_extra is None
            and event.logprobs is None
            and event.more_choices is None
            and not event.reasoning
            and not event.refusal
            and not self._functions
        ):
            return self._plain(event)
        return self._rich(event)

    def _plain(self, event: ChatDelta) -> bytes:
        # The usual event: content or tool calls, perhaps a finish.
        frames = b""
        if event.content or event.tool_calls:
            delta: ChoiceDelta = {}
            if event.content:
                delta["content"] = event.content
            if event.tool_calls:
                delta["tool_calls"] = [_tool_call_delta(call) for call in event.tool_calls]
            frames = self._open + orjson.dumps(delta) + self._tail
        if event.finish_reason is not None:
            frames += self._chunk({}, event.finish_reason)
        return frames

    def _rich(self, event: ChatDelta) -> bytes:
        frames = b""
        finish: FinishReason | None = event.finish_reason
        if finish == "tool_calls" and self._functions:
            finish = "function_call"
        if (
            event.content
            or event.tool_calls
            or event.reasoning
            or event.refusal
            or event.delta_extra
            or event.logprobs is not None
            or event.choice_extra
        ):
            delta: ChoiceDelta = {}
            if event.content:
                delta["content"] = event.content
            if event.refusal:
                delta["refusal"] = event.refusal
            if event.tool_calls:
                if self._functions:
                    delta["function_call"] = _function_call_delta(event.tool_calls[0])
                else:
                    delta["tool_calls"] = [_tool_call_delta(call) for call in event.tool_calls]
            extra = event.delta_extra
            if extra:
                merge_extra(delta, extra)
            if event.reasoning and not (
                extra and ("reasoning_content" in extra or "reasoning" in extra)
            ):
                delta["reasoning_content"] = event.reasoning
            if finish is not None and (event.logprobs is not None or event.choice_extra):
                # One chunk, as it came: its delta, its finish and its choice's fields.
                return self._chunk(delta, finish, event) + self._more(event)
            frames = self._chunk(delta, None, event)
        if finish is not None:
            frames += self._chunk({}, finish)
        return frames + self._more(event)

    def _more(self, event: ChatDelta) -> bytes:
        # With n > 1, the upstream's other choices go in a chunk of their own, as they came.
        if not event.more_choices:
            return b""
        return self._choices(event.more_choices)

    def usage(self, event: ChatDelta) -> bytes:
        if not self._include_usage or event.usage is None:
            return b""
        return self._open_usage + orjson.dumps(event.usage.as_openai()) + b"}\n\n"


def _tool_call_delta(call: ToolCallDelta) -> ChoiceDeltaToolCall:
    item: ChoiceDeltaToolCall = {"index": call.index}
    if call.id is not None:
        item["id"] = call.id
        item["type"] = call.type
    if call.type == "custom":
        custom: ChoiceDeltaToolCallCustom = {"input": call.arguments}
        if call.name is not None:
            custom["name"] = call.name
        item["custom"] = custom
        return item
    function: ChoiceDeltaToolCallFunction = {"arguments": call.arguments}
    if call.name is not None:
        function["name"] = call.name
    item["function"] = function
    return item


def _function_call_delta(call: ToolCallDelta) -> ChoiceDeltaFunctionCall:
    function: ChoiceDeltaFunctionCall = {"arguments": call.arguments}
    if call.name is not None:
        function["name"] = call.name
    return function


DIALECT = Dialect("openai_chat", (("POST", "/v1/chat/completions", chat_completions),))
