"""Rendering results in the OpenAI wire format, whole and as stream chunks."""

from __future__ import annotations

import base64
import random
import struct
import time
from typing import Any

import orjson

from palyra.types import (
    ChatDelta,
    ChatResult,
    EmbeddingsResult,
    TranscriptionResult,
)


def random_id() -> str:
    """32 hex digits. Request and completion ids only need to be unique, not secret, so they
    come from the PRNG: uuid4 reads os.urandom, a system call per id (5x the cost)."""
    return f"{random.getrandbits(128):032x}"


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


def embeddings(result: EmbeddingsResult, model_id: str, encoding_format: str) -> dict[str, Any]:
    data = []
    for index, vector in enumerate(result.vectors):
        embedding: Any = vector
        if encoding_format == "base64" and not isinstance(vector, str):
            # The OpenAI SDK asks for base64 by default: little-endian float32, base64-encoded.
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        elif encoding_format != "base64" and isinstance(vector, str):
            packed = base64.b64decode(vector)
            embedding = list(struct.unpack(f"<{len(packed) // 4}f", packed))
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": model_id,
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "total_tokens": result.usage.prompt_tokens,
        },
    }


def transcription(result: TranscriptionResult, response_format: str) -> dict[str, Any]:
    if response_format != "verbose_json":
        return {"text": result.text}
    return {
        "task": "transcribe",
        "language": result.language or "unknown",
        "duration": result.duration_s or 0.0,
        "text": result.text,
        "segments": [
            {
                "id": s.id,
                "seek": 0,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
            for s in result.segments
        ],
    }
