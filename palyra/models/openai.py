"""OpenAI-compatible upstreams: the OpenAI API itself and the many servers that copy it.

The request is already in this wire format, so it is passed through (unknown parameters
included) with only the model name replaced; answers are parsed into the shared shapes.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import orjson

from palyra.config import ModelConfig
from palyra.errors import (
    ProviderError,
    UpstreamProtocolError,
    upstream_status_error,
)
from palyra.models.http import HttpProvider
from palyra.types import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    EmbeddingsRequest,
    EmbeddingsResult,
    FinishReason,
    ModelProviderKind,
    ToolCallDelta,
    ToolCallResult,
    TranscriptionRequest,
    TranscriptionResult,
    TranscriptionSegment,
    Usage,
    Vector,
)

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def chat_payload(request: ChatRequest, model: ModelConfig, *, stream: bool) -> dict[str, Any]:
    payload = request.model_dump(exclude_none=True, exclude={"stream", "stream_options"})
    payload["model"] = model.upstream_name
    if stream:
        payload["stream"] = True
        # Always ask for usage: metrics and budgets need it even when the client did not.
        payload["stream_options"] = {"include_usage": True}
    return payload


def parse_usage(data: Any) -> Usage:
    if not isinstance(data, dict):
        return Usage()
    return Usage(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0))


def parse_chat_response(body: Any) -> ChatResult:
    choice = body["choices"][0]
    message = choice["message"]
    tool_calls = [
        ToolCallResult(
            call["id"], call["function"]["name"], call["function"].get("arguments") or ""
        )
        for call in message.get("tool_calls") or ()
    ]
    finish = _FINISH_REASONS.get(choice.get("finish_reason") or "", "stop")
    return ChatResult(
        content=message.get("content"),
        finish_reason=finish,
        usage=parse_usage(body.get("usage")),
        tool_calls=tool_calls,
        upstream_model=str(body.get("model") or ""),
    )


def parse_chunk(chunk: Any) -> ChatDelta | None:
    """One `chat.completion.chunk` as a delta; None when it carries nothing we relay."""
    usage = parse_usage(chunk["usage"]) if chunk.get("usage") else None
    choices = chunk.get("choices") or ()
    if not choices:
        return ChatDelta(usage=usage) if usage else None
    choice = choices[0]
    delta = choice.get("delta") or {}
    tool_calls = None
    if delta.get("tool_calls"):
        tool_calls = [
            ToolCallDelta(
                index=int(call.get("index", 0)),
                id=call.get("id"),
                name=(call.get("function") or {}).get("name"),
                arguments=(call.get("function") or {}).get("arguments") or "",
            )
            for call in delta["tool_calls"]
        ]
    finish_raw = choice.get("finish_reason")
    finish = _FINISH_REASONS.get(finish_raw, "stop") if finish_raw else None
    content = delta.get("content") or None
    if content is None and tool_calls is None and finish is None and usage is None:
        return None
    return ChatDelta(content=content, tool_calls=tool_calls, finish_reason=finish, usage=usage)


class OpenAIProvider(HttpProvider):
    kind = ModelProviderKind.OPENAI_COMPATIBLE
    # Until the upstream refuses an embeddings request for asking for base64.
    _upstream_takes_base64 = True

    def _auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _error_details(self, body: Any) -> tuple[str, str | None, str | None]:
        error = body["error"]
        if isinstance(error, str):
            return error, None, None
        return str(error.get("message") or ""), error.get("code"), error.get("param")

    async def chat(self, request: ChatRequest, model: ModelConfig) -> ChatResult:
        body = await self._post_json(
            "/chat/completions", chat_payload(request, model, stream=False)
        )
        try:
            return parse_chat_response(body)
        except (KeyError, IndexError, TypeError, AttributeError):
            raise UpstreamProtocolError(
                "answered a chat completion without choices[0].message",
                provider_id=self.provider_id,
            ) from None

    async def stream_chat(
        self, request: ChatRequest, model: ModelConfig
    ) -> AsyncIterator[ChatDelta]:
        finished = False
        payload = chat_payload(request, model, stream=True)
        async for event in self._events("/chat/completions", payload):
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
                delta = parse_chunk(chunk)
            except (KeyError, IndexError, TypeError, ValueError, AttributeError):
                raise UpstreamProtocolError(
                    "sent a malformed stream chunk", provider_id=self.provider_id
                ) from None
            if delta is not None:
                finished = finished or delta.finish_reason is not None
                yield delta
        if not finished:
            raise UpstreamProtocolError(
                "stream ended before its finish_reason", provider_id=self.provider_id
            )

    def _stream_error(self, chunk: dict[str, Any]) -> ProviderError:
        message, code, param = self._error_details(chunk)
        status = 500
        raw_code = chunk["error"].get("code") if isinstance(chunk["error"], dict) else None
        if raw_code == "rate_limit_exceeded":
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
        except (KeyError, TypeError, ValueError, OverflowError, struct.error):
            raise UpstreamProtocolError(
                "answered embeddings without data[].embedding as numbers or base64 float32",
                provider_id=self.provider_id,
            ) from None
        return EmbeddingsResult(
            vectors, parse_usage(body.get("usage")), str(body.get("model") or "")
        )

    async def transcribe(
        self, request: TranscriptionRequest, model: ModelConfig
    ) -> TranscriptionResult:
        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field(
                "file", request.file, filename=request.filename, content_type=request.content_type
            )
            data.add_field("model", model.upstream_name)
            # verbose_json carries language, duration and segments; json is the lowest common
            # form.
            data.add_field(
                "response_format",
                "verbose_json" if request.response_format == "verbose_json" else "json",
            )
            for name in ("language", "prompt"):
                value = getattr(request, name)
                if value is not None:
                    data.add_field(name, value)
            if request.temperature is not None:
                data.add_field("temperature", str(request.temperature))
            return data

        async with self._request("POST", "/audio/transcriptions", form=form) as response:
            raw = await response.read()
        body = self._parse(raw)
        try:
            return _parse_transcription(cast(dict[str, Any], body))
        except (KeyError, TypeError, ValueError):
            raise UpstreamProtocolError(
                "answered a transcription without text", provider_id=self.provider_id
            ) from None

    async def list_models(self) -> list[str]:
        body = await self._get_json("/models")
        try:
            return [str(row["id"]) for row in body["data"]]
        except (KeyError, TypeError):
            raise UpstreamProtocolError(
                "answered /models without data[].id", provider_id=self.provider_id
            ) from None


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


def _parse_transcription(body: dict[str, Any]) -> TranscriptionResult:
    segments = [
        TranscriptionSegment(
            int(s.get("id", i)), float(s["start"]), float(s["end"]), str(s["text"])
        )
        for i, s in enumerate(body.get("segments") or ())
    ]
    duration = body.get("duration")
    usage = body.get("usage") or {}
    return TranscriptionResult(
        text=str(body["text"]),
        language=body.get("language"),
        duration_s=float(duration) if duration is not None else None,
        segments=segments,
        usage=Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)),
    )
