"""OpenAI chat completions: `POST /v1/chat/completions`, whole and streamed.

The internal request shape is this wire format already, so the adapter is thin: validate,
route, and render the result (or its stream of deltas) as `chat.completion` objects or
`chat.completion.chunk` SSE frames.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import structlog
from aiohttp import web

from palyra import tokens
from palyra.dialects.base import Dialect
from palyra.dialects.common import Relay, json_response, random_id, route_headers, sse_response
from palyra.errors import PalyraError
from palyra.routing import Router
from palyra.server.json_body import parse_body
from palyra.server.keys import GATEWAY, ROUTE, STARTED
from palyra.sse import DONE, encode_data
from palyra.types import ChatDelta, ChatRequest, ChatResult

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
    payload = chat_completion(routed.value, routed.route.model_id)
    return json_response(payload, route_headers(routed.route, started))


async def _stream_chat(
    request: web.Request, router: Router, body: ChatRequest, started: float
) -> web.StreamResponse:
    routed = await router.stream_chat(body)
    request[ROUTE] = routed.route
    writer = ChunkWriter(routed.route.model_id, body.include_usage)
    response = await sse_response(request, routed.route, started)
    # The first frame goes out at once, with the headers: time to first chunk is what a
    # client feels.
    await response.write(writer.role())
    relay = Relay(response)
    try:
        try:
            async for event in routed.value:
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


def chat_completion(result: ChatResult, model_id: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.content, "refusal": None}
    if result.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in result.tool_calls
        ]
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": result.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": result.usage.as_openai(),
        "system_fingerprint": None,
    }


class ChunkWriter:
    """Builds the SSE frames (`data: {chat.completion.chunk}`) of one stream, sharing id and
    created.

    Every chunk of a stream repeats the same head (id, object, created, model,
    system_fingerprint), so it is encoded once and each chunk is that head, the encoded delta
    and a fixed tail: per chunk only the delta goes through the JSON encoder. The bytes are
    exactly what encoding the whole chunk object would give, keys in the same order."""

    def __init__(self, model_id: str, include_usage: bool) -> None:
        head = orjson.dumps(
            {
                "id": completion_id(),
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model_id,
                "system_fingerprint": None,
            }
        )[:-1]  # without its closing brace: the chunk goes on
        self._include_usage = include_usage
        # as OpenAI does: with include_usage, usage is null on every chunk but the last,
        # choice-less one
        self._usage_null = b',"usage":null' if include_usage else b""
        self._open = b"data: " + head + b',"choices":[{"index":0,"delta":'
        self._open_usage = b"data: " + head + b',"choices":[],"usage":'
        self._tail = b',"finish_reason":null,"logprobs":null}]' + self._usage_null + b"}\n\n"

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        if finish_reason is None:
            tail = self._tail
        else:
            tail = (
                b',"finish_reason":'
                + orjson.dumps(finish_reason)
                + b',"logprobs":null}]'
                + self._usage_null
                + b"}\n\n"
            )
        return self._open + orjson.dumps(delta) + tail

    def role(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def delta(self, event: ChatDelta) -> bytes:
        """The frames of one event (none, one or two), as one piece to write at once."""
        frames = b""
        if event.content or event.tool_calls:
            delta: dict[str, Any] = {}
            if event.content:
                delta["content"] = event.content
            if event.tool_calls:
                calls = []
                for call in event.tool_calls:
                    item: dict[str, Any] = {"index": call.index}
                    function: dict[str, Any] = {"arguments": call.arguments}
                    if call.id is not None:
                        item["id"] = call.id
                        item["type"] = "function"
                    if call.name is not None:
                        function["name"] = call.name
                    item["function"] = function
                    calls.append(item)
                delta["tool_calls"] = calls
            frames = self._chunk(delta)
        if event.finish_reason is not None:
            frames += self._chunk({}, event.finish_reason)
        return frames

    def usage(self, event: ChatDelta) -> bytes:
        if not self._include_usage or event.usage is None:
            return b""
        return self._open_usage + orjson.dumps(event.usage.as_openai()) + b"}\n\n"


DIALECT = Dialect("openai_chat", (("POST", "/v1/chat/completions", chat_completions),))
