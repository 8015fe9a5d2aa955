"""A fast mock of an OpenAI-compatible and an Anthropic upstream, for benchmarks: canned
answers from a bare asyncio protocol (no framework), so the mock's own cost stays far below
the daemon's.

    python benchmarks/mock_upstream.py --port 9100

The first path segment picks the behaviour; the rest is the provider's path:
  /fast/v1/...   answers at once
  /slow/v1/...   answers after 50 ms (streams: the first chunk after 50 ms)
  /hold/v1/...   streams with 50 ms between chunks (for many concurrently open streams)
  /fail/v1/...   503 to everything but models, as a provider that is down
Routes: POST chat/completions (whole, or SSE with 50 content chunks when "stream": true,
usage when stream_options.include_usage), POST responses (the Responses API: whole, or its
typed events with sequence_number and 50 output_text deltas), POST messages (the Anthropic
Messages API: whole, or its events with 50 text_delta deltas), POST embeddings (1536 floats
per input, or base64 float32 when asked), GET models. Every answer is canned bytes: the mock
never looks at a request body beyond `stream`, `stream_options` and embeddings' `input`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import signal
import struct
import time

import orjson

DELAY_S = 0.050
HOLD_INTERVAL_S = 0.050
STREAM_CHUNKS = 50
EMBEDDING_DIMS = 1536

_CREATED = 1_767_225_600
_CHAT = orjson.dumps(
    {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": _CREATED,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello! This is a canned answer from the benchmark mock upstream.",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 21, "completion_tokens": 14, "total_tokens": 35},
        "system_fingerprint": "fp_bench",
    }
)
_EMBEDDING = [round(((i * 7919) % 2000) / 1000 - 1, 6) for i in range(EMBEDDING_DIMS)]
# What `encoding_format: "base64"` asks for: the vector as little-endian float32, base64.
_EMBEDDING_B64 = base64.b64encode(struct.pack(f"<{EMBEDDING_DIMS}f", *_EMBEDDING)).decode()
_ERROR_503 = orjson.dumps(
    {"error": {"message": "the mock provider is down", "type": "server_error", "code": None}}
)
# Both providers' model lists in one: OpenAI's fields and Anthropic's side by side.
_MODEL_IDS = ("gpt-4o-mini", "text-embedding-3-small", "claude-sonnet-4-5")
_MODELS = orjson.dumps(
    {
        "object": "list",
        "data": [
            {
                "id": m,
                "object": "model",
                "created": 0,
                "owned_by": "mock",
                "type": "model",
                "display_name": m,
                "created_at": "2025-01-01T00:00:00Z",
            }
            for m in _MODEL_IDS
        ],
        "has_more": False,
        "first_id": _MODEL_IDS[0],
        "last_id": _MODEL_IDS[-1],
    }
)


def _chunk(delta: dict[str, object], finish: str | None, usage: object = None) -> bytes:
    body = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if usage is None
        else [],
    }
    if usage is not None:
        body["usage"] = usage
    return b"data: " + orjson.dumps(body) + b"\n\n"


_STREAM_HEAD = _chunk({"role": "assistant", "content": ""}, None)
_STREAM_BODY = [_chunk({"content": f"tok{i} "}, None) for i in range(STREAM_CHUNKS)]
_STREAM_FINISH = _chunk({}, "stop")
_STREAM_USAGE = _chunk(
    {}, None, {"prompt_tokens": 21, "completion_tokens": STREAM_CHUNKS, "total_tokens": 71}
)
_DONE = b"data: [DONE]\n\n"

# --- the Anthropic Messages API ---------------------------------------------------------------

_ANSWER_TEXT = "Hello! This is a canned answer from the benchmark mock upstream."
_CLAUDE = "claude-sonnet-4-5-20250929"
_ANTHROPIC_USAGE = {
    "input_tokens": 21,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "output_tokens": 14,
    "service_tier": "standard",
}
_MESSAGE = orjson.dumps(
    {
        "id": "msg_bench00000000000000000000",
        "type": "message",
        "role": "assistant",
        "model": _CLAUDE,
        "content": [{"type": "text", "text": _ANSWER_TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": _ANTHROPIC_USAGE,
    }
)


def _event(name: str, data: dict[str, object]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


_MESSAGES_HEAD = _event(
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_bench00000000000000000000",
            "type": "message",
            "role": "assistant",
            "model": _CLAUDE,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**_ANTHROPIC_USAGE, "output_tokens": 1},
        },
    },
) + _event(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)
_MESSAGES_BODY = [
    _event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
    )
    for t in (f"tok{i} " for i in range(STREAM_CHUNKS))
]
_MESSAGES_TAIL = (
    _event("content_block_stop", {"type": "content_block_stop", "index": 0})
    + _event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": STREAM_CHUNKS},
        },
    )
    + _event("message_stop", {"type": "message_stop"})
)

# --- the OpenAI Responses API -----------------------------------------------------------------

_RESPONSE_ID = "resp_bench0000000000000000000000000000000000000000"
_ITEM_ID = "msg_bench0000000000000000000000000000000000000000"
_STREAMED_TEXT = "".join(f"tok{i} " for i in range(STREAM_CHUNKS))


def _response(status: str, text: str | None, output_tokens: int) -> dict[str, object]:
    output: list[object] = []
    if text is not None:
        output.append(_output_message("completed", text))
    return {
        "id": _RESPONSE_ID,
        "object": "response",
        "created_at": _CREATED,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": "gpt-4o-mini-2024-07-18",
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": False,
        "temperature": 0.2,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None
        if status != "completed"
        else {
            "input_tokens": 21,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 21 + output_tokens,
        },
        "user": None,
        "metadata": {},
    }


def _output_message(status: str, text: str | None) -> dict[str, object]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    return {
        "id": _ITEM_ID,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


_RESPONSE = orjson.dumps(_response("completed", _ANSWER_TEXT, 14))
_TEXT_PART = {"item_id": _ITEM_ID, "output_index": 0, "content_index": 0}


def _typed(kind: str, sequence: int, **fields: object) -> bytes:
    return _event(kind, {"type": kind, "sequence_number": sequence, **fields})


_RESPONSES_HEAD = (
    _typed("response.created", 0, response=_response("in_progress", None, 0))
    + _typed("response.in_progress", 1, response=_response("in_progress", None, 0))
    + _typed(
        "response.output_item.added", 2, output_index=0, item=_output_message("in_progress", None)
    )
    + _typed(
        "response.content_part.added",
        3,
        **_TEXT_PART,
        part={"type": "output_text", "text": "", "annotations": []},
    )
)
_RESPONSES_BODY = [
    _typed("response.output_text.delta", 4 + i, **_TEXT_PART, delta=f"tok{i} ", logprobs=[])
    for i in range(STREAM_CHUNKS)
]
_RESPONSES_TAIL = (
    _typed(
        "response.output_text.done",
        4 + STREAM_CHUNKS,
        **_TEXT_PART,
        text=_STREAMED_TEXT,
        logprobs=[],
    )
    + _typed(
        "response.content_part.done",
        5 + STREAM_CHUNKS,
        **_TEXT_PART,
        part={"type": "output_text", "text": _STREAMED_TEXT, "annotations": []},
    )
    + _typed(
        "response.output_item.done",
        6 + STREAM_CHUNKS,
        output_index=0,
        item=_output_message("completed", _STREAMED_TEXT),
    )
    + _typed(
        "response.completed",
        7 + STREAM_CHUNKS,
        response=_response("completed", _STREAMED_TEXT, STREAM_CHUNKS),
    )
)


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _head(status: int, reason: bytes, content_type: bytes, length: int | None) -> bytes:
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s\r\nConnection: keep-alive\r\n\r\n" % (
        status,
        reason,
        content_type,
        framing,
    )


def _whole(status: int, body: bytes) -> bytes:
    reason = b"OK" if status == 200 else b"Service Unavailable"
    return _head(status, reason, b"application/json", len(body)) + body


# By the path after /v1: whole answers, and streams as (head, the 50 deltas, tail). A chat
# stream's tail gains the usage chunk when stream_options.include_usage asks for it.
_WHOLE = {
    "/chat/completions": _whole(200, _CHAT),
    "/responses": _whole(200, _RESPONSE),
    "/messages": _whole(200, _MESSAGE),
}
_STREAMS = {
    "/chat/completions": (_STREAM_HEAD, _STREAM_BODY, _STREAM_FINISH + _DONE),
    "/responses": (_RESPONSES_HEAD, _RESPONSES_BODY, _RESPONSES_TAIL),
    "/messages": (_MESSAGES_HEAD, _MESSAGES_BODY, _MESSAGES_TAIL),
}


class Mock(asyncio.Protocol):
    hold_interval_s = HOLD_INTERVAL_S

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._busy = False  # a slow or streamed answer in flight: later requests wait
        self._task: asyncio.Future[None] | None = None  # held so it is not collected mid-way

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._drain()

    def _drain(self) -> None:
        while self._transport is not None and not self._busy:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end].decode("latin-1")
            lines = head.split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self._buffer) < end + 4 + length:
                return
            body = self._buffer[end + 4 : end + 4 + length]
            self._buffer = self._buffer[end + 4 + length :]
            self._answer(method, path, body)

    def _answer(self, method: str, path: str, body: bytes) -> None:
        assert self._transport is not None
        mode, _, rest = path.lstrip("/").partition("/")
        rest = "/" + rest.split("?", 1)[0]
        if rest.endswith("/models"):
            self._transport.write(_whole(200, _MODELS))
            return
        if mode == "fail":
            self._transport.write(_whole(503, _ERROR_503))
            return
        request = orjson.loads(body) if body else {}
        if request.get("stream"):
            events = _STREAMS.get(rest.rpartition("/v1")[2])
            if events is not None:
                head, pieces, tail = events
                if rest.endswith("/chat/completions"):
                    options = request.get("stream_options") or {}
                    if options.get("include_usage"):
                        tail = _STREAM_FINISH + _STREAM_USAGE + _DONE
                self._busy = True
                self._task = asyncio.ensure_future(self._stream(mode, head, pieces, tail))
                return
        if rest.endswith("/embeddings"):
            inputs = request.get("input")
            many = isinstance(inputs, list) and inputs and isinstance(inputs[0], str)
            count = len(inputs) if many and isinstance(inputs, list) else 1
            vector = _EMBEDDING_B64 if request.get("encoding_format") == "base64" else _EMBEDDING
            answer = _whole(
                200,
                orjson.dumps(
                    {
                        "object": "list",
                        "data": [
                            {"object": "embedding", "index": i, "embedding": vector}
                            for i in range(count)
                        ],
                        "model": "text-embedding-3-small",
                        "usage": {"prompt_tokens": 8 * count, "total_tokens": 8 * count},
                    }
                ),
            )
        else:
            answer = _WHOLE.get(rest.rpartition("/v1")[2], _WHOLE["/chat/completions"])
        if mode == "slow":
            self._busy = True
            asyncio.get_running_loop().call_later(DELAY_S, self._late, answer)
        else:
            self._transport.write(answer)

    def _late(self, answer: bytes) -> None:
        self._busy = False
        if self._transport is not None:
            self._transport.write(answer)
            self._drain()

    async def _stream(self, mode: str, head: bytes, pieces: list[bytes], tail: bytes) -> None:
        try:
            if mode == "slow":
                await asyncio.sleep(DELAY_S)
            if self._transport is None:
                return
            self._transport.write(_head(200, b"OK", b"text/event-stream", None) + _chunked(head))
            for piece in pieces:
                if mode == "hold":
                    await asyncio.sleep(self.hold_interval_s)
                if self._transport is None:
                    return
                self._transport.write(_chunked(piece))
            self._transport.write(_chunked(tail) + b"0\r\n\r\n")
        finally:
            self._busy = False
            if self._transport is not None:
                self._drain()


async def serve(host: str, port: int, ready_fd: int | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Mock, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="fast mock OpenAI and Anthropic upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--hold-interval-ms", type=float, default=HOLD_INTERVAL_S * 1000, help="/hold/ pacing"
    )
    args = parser.parse_args()
    Mock.hold_interval_s = args.hold_interval_ms / 1000
    with contextlib.suppress(ImportError):
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        uvloop.install()
    started = time.perf_counter()
    print(f"mock upstream on {args.host}:{args.port}", flush=True)
    asyncio.run(serve(args.host, args.port))
    print(f"mock upstream stopped after {time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
