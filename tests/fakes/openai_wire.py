"""Bodies and SSE frames in the wire format of the public OpenAI API, for the fake upstream."""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
import time
from dataclasses import dataclass
from typing import Any

import orjson

from .replies import (
    ChatReply,
    RateLimits,
    ToolCall,
    WireError,
    new_id,
    normalized_tool_calls,
    rough_tokens,
    split_json,
    split_text,
)

DONE = b"data: [DONE]\n\n"
_TOOL_COMMAND = re.compile(r"^/tool\s+(\S+)\s*(.*)$", re.DOTALL)

_DEFAULT_MESSAGES = {
    400: "Invalid request.",
    401: "Incorrect API key provided.",
    403: "You are not allowed to access this resource.",
    404: "The requested resource does not exist.",
    429: "Rate limit reached for requests. Please try again in 1s.",
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The server is overloaded or not ready yet.",
    504: "Gateway timeout.",
}

# Stop reasons a test may write in Anthropic's spelling for a route that speaks OpenAI.
_FROM_ANTHROPIC = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def error_body(
    status: int,
    message: str | None = None,
    *,
    error_type: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    if error_type is None:
        # The real API types 429s by the exhausted limit ("requests"/"tokens") and puts
        # "rate_limit_exceeded" in `code`; other client errors are invalid_request_error.
        error_type = (
            "requests"
            if status == 429
            else "server_error"
            if status >= 500
            else "invalid_request_error"
        )
    if code is None and status == 429:
        code = "rate_limit_exceeded"
    return {
        "error": {
            "message": message or _DEFAULT_MESSAGES.get(status, f"Error {status}."),
            "type": error_type,
            "param": param,
            "code": code,
        }
    }


def sse(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def stream_error_frame() -> bytes:
    # Mid-stream failures arrive as a data frame holding only an `error` object, no [DONE].
    return sse(error_body(500, "The server had an error while processing your request."))


def message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def prompt_tokens(messages: list[Any]) -> int:
    text = " ".join(message_text(m.get("content")) for m in messages if isinstance(m, dict))
    return rough_tokens(text)


def default_chat_reply(body: dict[str, Any]) -> ChatReply:
    for name in ("model", "messages"):
        if name not in body:
            raise WireError(400, f"you must provide a {name} parameter", param=name)
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise WireError(400, "'messages' must be a non-empty array", param="messages")
    text = next(
        (
            message_text(m.get("content"))
            for m in reversed(messages)
            if isinstance(m, dict) and m.get("role") == "user"
        ),
        "",
    )
    # A reasoning model (asked with reasoning_effort) says what it thought, as DeepSeek does.
    reasoning = f"thinking about: {text}" if body.get("reasoning_effort") else None
    command = _TOOL_COMMAND.match(text.strip())
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    if last.get("role") in ("tool", "function"):
        # A tool's result came back: the model answers with it, so tool loops end.
        result = message_text(last.get("content"))
        return ChatReply(content=f"the tool said: {result}", reasoning=reasoning)
    if (body.get("tools") or body.get("functions")) and command:
        # Lets a test ask for a tool call through the gateway without scripting the upstream.
        arguments = command.group(2).strip() or "{}"
        call = {"id": new_id("call_"), "name": command.group(1), "arguments": arguments}
        return ChatReply(content=None, tool_calls=[call], reasoning=reasoning)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_object":
        return ChatReply(content=orjson.dumps({"echo": text}).decode(), reasoning=reasoning)
    return ChatReply(content=f"echo: {text}", reasoning=reasoning)


def finish_reason(reply: ChatReply, body: dict[str, Any] | None = None) -> str:
    if reply.finish_reason is not None:
        return _FROM_ANTHROPIC.get(reply.finish_reason, reply.finish_reason)
    if reply.tool_calls:
        # A request in the deprecated functions' dialect is answered in it.
        return "function_call" if _functions(body) else "tool_calls"
    return "stop"


def _functions(body: dict[str, Any] | None) -> bool:
    return bool(body and body.get("functions") and not body.get("tools"))


def _usage(reply: ChatReply, calls: list[ToolCall], prompt: int) -> dict[str, Any]:
    if reply.usage is not None:
        prompt, completion = reply.usage
    else:
        completion = rough_tokens(reply.content or "") + sum(
            rough_tokens(c.arguments) for c in calls
        )
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reply.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


SYSTEM_FINGERPRINT = "fp_fake0001"


def _head(body: dict[str, Any] | None) -> dict[str, Any]:
    # The tier the request asked for, as the API says which one served it.
    tier = (body or {}).get("service_tier")
    return {
        "service_tier": tier if isinstance(tier, str) and tier != "auto" else "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def _choice_count(body: dict[str, Any] | None) -> int:
    n = (body or {}).get("n")
    return n if isinstance(n, int) and 1 <= n <= 8 else 1


def _choice_text(reply: ChatReply, index: int) -> str | None:
    # Each choice of n > 1 differs, as sampled ones do.
    if reply.content is None or index == 0:
        return reply.content
    return f"{reply.content} (choice {index})"


def _logprobs(text: str) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": piece,
                "logprob": -0.25,
                "bytes": list(piece.encode()),
                "top_logprobs": [{"token": piece, "logprob": -0.25, "bytes": list(piece.encode())}],
            }
            for piece in split_text(text)
        ],
        "refusal": None,
    }


def _wants_audio(body: dict[str, Any] | None) -> bool:
    modalities = (body or {}).get("modalities")
    return isinstance(modalities, list) and "audio" in modalities


def _audio(transcript: str, created: int) -> dict[str, Any]:
    return {
        "id": new_id("audio_"),
        "data": base64.b64encode(b"RIFF fake audio").decode(),
        "expires_at": created + 3600,
        "transcript": transcript,
    }


def chat_completion(
    reply: ChatReply, *, model: str, prompt: int, request: dict[str, Any] | None = None
) -> dict[str, Any]:
    calls = normalized_tool_calls(reply, "call_")
    created = int(time.time())
    choices = []
    for index in range(_choice_count(request)):
        text = _choice_text(reply, index)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text,
            "refusal": reply.refusal,
            "annotations": reply.annotations or [],
        }
        if reply.reasoning is not None:
            message[reply.reasoning_key] = reply.reasoning
        if _wants_audio(request) and text is not None:
            message["content"] = None
            message["audio"] = _audio(text, created)
        if calls and _functions(request):
            message["function_call"] = {"name": calls[0].name, "arguments": calls[0].arguments}
        elif calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in calls
            ]
        message.update(reply.message_extra or {})
        choice = {
            "index": index,
            "message": message,
            "logprobs": _logprobs(text or "") if (request or {}).get("logprobs") else None,
            "finish_reason": finish_reason(reply, request),
            **(reply.choice_extra or {}),
        }
        choices.append(choice)
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": _usage(reply, calls, prompt),
        **_head(request),
        **(reply.body_extra or {}),
    }


def _choice_deltas(
    reply: ChatReply, calls: list[ToolCall], index: int, request: dict[str, Any] | None
) -> list[tuple[dict[str, Any], Any]]:
    """One choice's deltas in order, each with its logprobs (None unless asked)."""
    text = _choice_text(reply, index)
    extra = reply.message_extra or {}
    logprobs = bool((request or {}).get("logprobs"))
    first_content = "" if text is not None else None
    deltas: list[tuple[dict[str, Any], Any]] = [
        ({"role": "assistant", "content": first_content, "refusal": None}, None)
    ]
    if reply.reasoning:
        deltas += [
            ({reply.reasoning_key: piece, **extra}, None) for piece in split_text(reply.reasoning)
        ]
    if text:
        deltas += [
            ({"content": piece, **extra}, _logprobs(piece) if logprobs else None)
            for piece in split_text(text)
        ]
    if reply.refusal:
        deltas += [({"refusal": piece, **extra}, None) for piece in split_text(reply.refusal)]
    if reply.annotations:
        deltas.append(({"annotations": reply.annotations, **extra}, None))
    if calls and _functions(request):
        call = calls[0]
        deltas.append(({"function_call": {"name": call.name, "arguments": ""}}, None))
        deltas += [
            ({"function_call": {"arguments": piece}}, None) for piece in split_json(call.arguments)
        ]
        return deltas
    # Parallel calls are sent one after another, as the real API does; `index` tells them apart.
    for call_index, call in enumerate(calls):
        head = {
            "index": call_index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        deltas.append(({"tool_calls": [head]}, None))
        deltas += [
            ({"tool_calls": [{"index": call_index, "function": {"arguments": piece}}]}, None)
            for piece in split_json(call.arguments)
        ]
    return deltas


def chat_chunks(
    reply: ChatReply,
    *,
    model: str,
    prompt: int,
    include_usage: bool,
    request: dict[str, Any] | None = None,
) -> list[bytes]:
    """Every data frame of the stream except the `[DONE]` terminator."""
    calls = normalized_tool_calls(reply, "call_")
    chunk_id, created = new_id("chatcmpl-"), int(time.time())
    head = {**_head(request), **(reply.body_extra or {})}

    def chunk(index: int, delta: dict[str, Any], reason: str | None, logprobs: Any) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
        data: dict[str, Any] = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            **head,
            "choices": [{**choice, **(reply.choice_extra or {})}],
        }
        if include_usage:
            # With include_usage every chunk carries `usage: null` until the final one.
            data["usage"] = None
        return sse(data)

    per_choice = [
        [chunk(index, delta, None, logprobs) for delta, logprobs in deltas]
        + [chunk(index, {}, finish_reason(reply, request), None)]
        for index, deltas in enumerate(
            _choice_deltas(reply, calls, i, request) for i in range(_choice_count(request))
        )
    ]
    # With n > 1 the choices' chunks are interleaved, as the API sends them.
    frames = [
        frame
        for step in range(max(map(len, per_choice)))
        for frames_of in per_choice
        if step < len(frames_of)
        for frame in [frames_of[step]]
    ]
    if include_usage:
        frames.append(
            sse(
                {
                    "id": chunk_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    **head,
                    "choices": [],
                    "usage": _usage(reply, calls, prompt),
                }
            )
        )
    return frames


def _vector(item: Any, dimensions: int) -> list[float]:
    seed = hashlib.sha256(orjson.dumps(item)).digest()
    raw = [
        int.from_bytes(hashlib.sha256(seed + i.to_bytes(4, "little")).digest()[:4], "little")
        / 2**31
        - 1.0
        for i in range(dimensions)
    ]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    # Round-trip through float32 so the float and base64 encodings carry identical values.
    packed = struct.pack(f"<{dimensions}f", *(x / norm for x in raw))
    return list(struct.unpack(f"<{dimensions}f", packed))


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    for name in ("model", "input"):
        if name not in body:
            raise WireError(400, f"you must provide a {name} parameter", param=name)
    raw = body["input"]
    items: list[Any]
    if isinstance(raw, str):
        items = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        items = [raw]  # one token array
    elif isinstance(raw, list) and raw and all(isinstance(x, str | list) for x in raw):
        items = raw
    else:
        raise WireError(400, "'input' must be a string or a non-empty array", param="input")
    if any(item in ("", []) for item in items):
        raise WireError(400, "'input' cannot contain an empty string", param="input")
    dimensions = body.get("dimensions", 8)
    if not isinstance(dimensions, int) or dimensions < 1:
        raise WireError(400, "'dimensions' must be a positive integer", param="dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise WireError(400, "'encoding_format' must be float or base64", param="encoding_format")
    data = []
    for index, item in enumerate(items):
        vector = _vector(item, dimensions)
        embedding: list[float] | str = vector
        if encoding == "base64":
            embedding = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(rough_tokens(i) if isinstance(i, str) else len(i) for i in items)
    return {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@dataclass(frozen=True)
class TextAnswer:
    """An audio answer in a text format, with the content type the API sends it as."""

    text: str
    content_type: str


_TEXT_TYPES = {"text": "text/plain", "srt": "text/plain", "vtt": "text/vtt"}
_TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
_TRANSLATION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


def audio(
    items: list[tuple[str, str | bytes]], *, translate: bool = False
) -> dict[str, Any] | TextAnswer | list[bytes]:
    """`/v1/audio/transcriptions` or (`translate`) `/v1/audio/translations`: a JSON body, a
    text body, or (a transcription asked to stream, of a model that streams) SSE frames.

    As the API does: whisper models answer every format and ignore `stream`; the newer
    (gpt-4o-*-transcribe) models answer json and text only, stream, bill in tokens, and give
    `logprobs` when `include[]` asks for them."""
    form = dict(items)
    audio = form.get("file")
    if not isinstance(audio, bytes):
        raise WireError(400, "you must provide a file parameter", param="file")
    model = form.get("model")
    if not isinstance(model, str) or not model:
        raise WireError(400, "you must provide a model parameter", param="model")
    whisper = model.startswith("whisper")
    response_format = str(form.get("response_format") or "json")
    formats = _TRANSLATION_FORMATS if translate else _TRANSCRIPTION_FORMATS
    if response_format not in formats:
        raise WireError(400, f"Invalid response_format: {response_format}", param="response_format")
    if not whisper and response_format not in ("json", "text"):
        raise WireError(
            400,
            f"response_format '{response_format}' is not compatible with model '{model}'. "
            "Use 'json' or 'text'.",
            param="response_format",
        )
    text = f"{'English translation' if translate else 'transcript'} of {len(audio)} bytes"
    # Pretend 16 kHz 16-bit mono so longer uploads get longer (and stable) durations.
    duration = round(len(audio) / 32000, 2)
    granularities = [v for k, v in items if k == "timestamp_granularities[]"]
    logprobs = None
    if ("include[]", "logprobs") in items and not whisper:
        logprobs = [{"token": w, "logprob": -0.1, "bytes": list(w.encode())} for w in text.split()]
    usage: dict[str, Any] = {"type": "duration", "seconds": math.ceil(duration)}
    if not whisper:
        audio_tokens = max(1, len(audio) // 1000)
        output = rough_tokens(text)
        usage = {
            "type": "tokens",
            "input_tokens": audio_tokens,
            "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
            "output_tokens": output,
            "total_tokens": audio_tokens + output,
        }
    if form.get("stream") == "true" and not whisper and not translate:
        return _transcription_events(text, logprobs, usage)
    if response_format == "json":
        body: dict[str, Any] = {"text": text, "usage": usage}
        if logprobs is not None:
            body["logprobs"] = logprobs
        return body
    if response_format in _TEXT_TYPES:
        return TextAnswer(_as_text(text, duration, response_format), _TEXT_TYPES[response_format])
    if response_format == "diarized_json":
        segment = {"type": "transcript.text.segment", "id": "seg_0", "start": 0.0}
        segment.update({"end": duration, "text": text, "speaker": "A"})
        return {"task": "transcribe", "duration": duration, "text": text, "segments": [segment]}
    verbose: dict[str, Any] = {
        "task": "translate" if translate else "transcribe",
        "language": "english",
        "duration": duration,
        "text": text,
    }
    if "segment" in granularities or not granularities:
        verbose["segments"] = [
            {
                "id": 0,
                "seek": 0,
                "start": 0.0,
                "end": duration,
                "text": text,
                "tokens": [50364, 50365],
                "temperature": 0.0,
                "avg_logprob": -0.25,
                "compression_ratio": 1.0,
                "no_speech_prob": 0.01,
            }
        ]
    if "word" in granularities and not translate:
        words = text.split()
        step = duration / len(words)
        verbose["words"] = [
            {"word": w, "start": round(i * step, 2), "end": round((i + 1) * step, 2)}
            for i, w in enumerate(words)
        ]
    verbose["usage"] = usage
    return verbose


def _as_text(text: str, duration: float, response_format: str) -> str:
    def stamp(seconds: float, decimal: str) -> str:
        millis = round(seconds * 1000)
        return (
            f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:"
            f"{millis // 1000 % 60:02d}{decimal}{millis % 1000:03d}"
        )

    if response_format == "text":
        return text
    if response_format == "srt":
        return f"1\n{stamp(0, ',')} --> {stamp(duration, ',')}\n{text}\n\n"
    return f"WEBVTT\n\n{stamp(0, '.')} --> {stamp(duration, '.')}\n{text}\n\n"


def _transcription_events(
    text: str, logprobs: list[dict[str, Any]] | None, usage: dict[str, Any]
) -> list[bytes]:
    """`data:` frames of `transcript.text.delta` events, then `transcript.text.done` (the
    API sends no `[DONE]` after it)."""
    frames = []
    for index, piece in enumerate(split_text(text)):
        delta: dict[str, Any] = {"type": "transcript.text.delta", "delta": piece}
        if logprobs is not None:
            delta["logprobs"] = logprobs[index : index + 1]
        frames.append(sse(delta))
    done: dict[str, Any] = {"type": "transcript.text.done", "text": text, "usage": usage}
    if logprobs is not None:
        done["logprobs"] = logprobs
    frames.append(sse(done))
    return frames


def models_list(models: list[str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "openai"}
            for m in models
        ],
    }


# --- rate limits ------------------------------------------------------------------------------


def rate_limit_headers(limits: RateLimits) -> dict[str, str]:
    """The `x-ratelimit-*` headers OpenAI sends on an answer."""
    return {
        "x-ratelimit-limit-requests": str(limits.requests_limit),
        "x-ratelimit-limit-tokens": str(limits.tokens_limit),
        "x-ratelimit-remaining-requests": str(max(0, limits.requests_remaining)),
        "x-ratelimit-remaining-tokens": str(max(0, limits.tokens_remaining)),
        "x-ratelimit-reset-requests": go_duration(limits.requests_reset_s),
        "x-ratelimit-reset-tokens": go_duration(limits.tokens_reset_s),
    }


def go_duration(seconds: float) -> str:
    """`seconds` as Go's time.Duration prints itself, which is what OpenAI sends: "20ms",
    "1s", "6m0s", "1m30.5s", "1h0m0s"."""
    if seconds <= 0:
        return "0s"
    if seconds < 1e-6:
        return f"{_decimal(seconds * 1e9)}ns"
    if seconds < 1e-3:
        return f"{_decimal(seconds * 1e6)}\u00b5s"
    if seconds < 1:
        return f"{_decimal(seconds * 1e3)}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{_decimal(secs)}s"
    if hours or minutes:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text


def _decimal(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")
