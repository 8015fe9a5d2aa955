"""OpenAI-compatible upstreams: the OpenAI API itself and the many servers that copy it.

This module does the I/O; the wire formats it speaks live beside it, pure: chat completions
in `openai_chat.py`, audio in `openai_audio.py`, the Responses API (for providers with
`responses_passthrough`) in `openai_responses.py`.
"""

from __future__ import annotations

import base64
import contextlib
import re
import struct
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import hdrs

from palyra.config import ModelConfig
from palyra.errors import (
    ProviderError,
    UpstreamProtocolError,
    upstream_status_error,
)
from palyra.models.http import HttpProvider, Malformed, describe_body, kind_of, native_body
from palyra.models.openai_audio import (
    SUBTITLES,
    audio_path,
    parse_transcription,
    refuses_format,
    transcription_delta,
    upstream_format,
)
from palyra.models.openai_chat import (
    ChunkFields,
    UsualChunk,
    chat_payload,
    parse_chat_response,
    parse_chunk,
    parse_usage,
)
from palyra.models.openai_responses import (
    RESPONSE_FINAL_EVENTS,
    RESPONSES_PATH,
    parse_response,
    response_failure,
    response_stream_delta,
)
from palyra.models.openai_wire import ChatCompletionChunk, EmbeddingCreateParams, merge_extra
from palyra.sse import SSEError, decode_sse
from palyra.types import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    EmbeddingsRequest,
    EmbeddingsResult,
    FloatsJson,
    ModelProviderKind,
    TranscriptionDelta,
    TranscriptionRequest,
    TranscriptionResult,
    Vector,
)


class OpenAIProvider(HttpProvider):
    kind = ModelProviderKind.OPENAI_COMPATIBLE
    # The request is this wire format: every parameter, `functions` included, goes as it came.
    takes_functions = True
    # Until the upstream refuses an embeddings request for asking for base64.
    _upstream_takes_base64 = True
    # Upstream model names that refused to answer in srt or vtt.
    _no_subtitles: frozenset[str] = frozenset()

    def _auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {hdrs.AUTHORIZATION: f"Bearer {api_key}"} if api_key else {}

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
        fields, usual = ChunkFields(), UsualChunk()
        # aclosing: whether we stop on [DONE], an error or the caller leaving, the upstream
        # response is released now, not when the generator is collected.
        events = self._events("/chat/completions", chat_payload(request, model, stream=True))
        async with contextlib.aclosing(events):
            async for event in events:
                data = event.data
                if data == "[DONE]":
                    return
                delta = usual.parse(data)
                if delta is None:
                    delta = self._learn(data, fields, usual)
                    if delta is None:
                        continue
                finished = finished or delta.finish_reason is not None
                yield delta
        if not finished:
            raise UpstreamProtocolError(
                "stream ended before its finish_reason", provider_id=self.provider_id
            )

    def _learn(self, data: str, fields: ChunkFields, usual: UsualChunk) -> ChatDelta | None:
        # (Here, not in the stream's frame: the decoded chunk is not kept for as long as the
        # stream lasts.)
        chunk, delta = self._chunk(data, fields)
        usual.learn(data, chunk, delta)
        return delta

    def _chunk(
        self, data: str, fields: ChunkFields
    ) -> tuple[ChatCompletionChunk, ChatDelta | None]:
        """A stream event's chunk, decoded, and its delta (None: nothing to relay)."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                "sent a stream chunk that is not JSON", provider_id=self.provider_id
            ) from None
        if isinstance(chunk, dict) and "error" in chunk:
            raise self._stream_error(chunk)
        try:
            return chunk, parse_chunk(chunk, fields)
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

    def _stream_error(self, body: Mapping[str, object]) -> ProviderError:
        """The error of a body or stream event that has an `error` (`{"error": {"message",
        "type", "param", "code"}}` by the API; some compatible servers send a string)."""
        error = body["error"]
        if not isinstance(error, dict | str):
            return UpstreamProtocolError(
                f"sent an error that is {kind_of(error)}, not an object",
                provider_id=self.provider_id,
            )
        message, code, param = self._error_details(body)
        status = 500
        if code == "rate_limit_exceeded":
            status = 429
        return upstream_status_error(
            self.provider_id, status, message or "error in stream", upstream_code=code, param=param
        )

    async def embed(self, request: EmbeddingsRequest, model: ModelConfig) -> EmbeddingsResult:
        base64_wanted = request.encoding_format == "base64"
        ask_base64 = base64_wanted and self._upstream_takes_base64
        payload: EmbeddingCreateParams = {
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
        # Parameters we have no name for go as they came, as for chat (servers extend this
        # API too: vLLM's `truncate_prompt_tokens`, `input_type` of retrieval models, ...).
        extra = request.model_extra
        if extra:
            merge_extra(
                payload,
                {k: v for k, v in extra.items() if v is not None and k not in payload},
            )
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
        try:
            data = body["data"]
            # Floats a client wants as floats are relayed as the upstream wrote them, each
            # array's text found in the body (FloatsJson); else, JSON's true and false are no
            # numbers, but sum() takes them: only a body that spells one anywhere needs each
            # element's type checked, which costs several times the search of the whole body.
            texts = None if base64_wanted else _array_texts(raw, len(data))
            booleans = texts is None and (b"true" in raw or b"false" in raw)
            spelt: list[bytes | None] = [None] * len(data) if texts is None else [*texts]
            rows = sorted(
                zip(data, spelt, strict=True),
                key=lambda pair: int(pair[0].get("index", 0)),
            )
            vectors = [
                _vector(row["embedding"], base64_wanted, booleans, text) for row, text in rows
            ]
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
        asked = upstream_format(request.response_format)
        subtitles = asked in SUBTITLES
        if subtitles and model.upstream_name in self._no_subtitles:
            return await self._transcribe_as(request, model, "verbose_json")
        try:
            return await self._transcribe_as(request, model, asked)
        except ProviderError as error:
            if not subtitles or not refuses_format(error):
                raise
            refused = error
        try:
            result = await self._transcribe_as(request, model, "verbose_json")
        except ProviderError as error:
            if refuses_format(error):
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
        asked = upstream_format(request.response_format)
        done = False

        def form() -> aiohttp.FormData:
            return self._transcription_form(request, model, asked, stream=True)

        async with self._request(
            "POST", audio_path(request), form=form, stream=True, upstream_model=model.upstream_name
        ) as response:
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

        async with self._request(
            "POST", audio_path(request), form=form, upstream_model=model.upstream_name
        ) as response:
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
        if response_format in SUBTITLES and content_type.startswith("text/"):
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
            return parse_transcription(body)
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
            return transcription_delta(event)
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

    async def send_responses(self, body: dict[str, object], model: ModelConfig) -> ChatResult:
        """`POST /responses` with a client's own Responses API body (its model replaced by
        the upstream name), for a provider with `responses_passthrough`. The result is
        translated for metrics and routing, and carries the upstream's answer in `native`.
        The body goes as the client sent it, fields we have no name for included, and is
        not read here (its format, the Responses API's: `dialects/responses_wire.py`)."""
        payload = native_body(body, model, stream=False)
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
        self, body: dict[str, object], model: ModelConfig
    ) -> AsyncIterator[ChatDelta]:
        """The same, streamed: one `ChatDelta` per upstream event, its `native` the event as
        it came (name, data) and its other fields the event's translation, so the router
        opens, meters and fails over a native stream like any other. An `error` or
        `response.failed` event is raised as the provider's error."""
        payload = native_body(body, model, stream=True)
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


# Base64 is checked by a pattern and its length, not by decoding it and encoding it again for
# the client, which costs about twice as much; a pattern that also counts the groups of four
# costs more than both (benchmarks/README.md).
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _vector(
    embedding: Any, base64_wanted: bool, booleans: bool = True, text: bytes | None = None
) -> Vector:
    """An upstream's embedding, checked: a list of numbers, or base64 of float32s (servers that
    ignore `encoding_format` send either, whatever was asked). Numbers a client wants as
    base64 are packed here, where a value float32 cannot hold is the upstream's error.
    `text`: the array as the body holds it (`_array_texts`), kept with the floats."""
    if isinstance(embedding, str):
        size = len(embedding) // 4 * 3 - embedding[-2:].count("=")
        if len(embedding) % 4 or size % 4 or _BASE64.fullmatch(embedding) is None:
            raise ValueError("not base64 of whole float32s")
        return embedding
    if not isinstance(embedding, list):
        raise TypeError("embedding is neither a list nor base64")
    # sum() raises TypeError on anything but numbers and booleans, in C (float() on each
    # took twenty times as long); `booleans`: whether the body may hold any.
    sum(embedding)
    if text is not None and (
        # A t or an f (of true, false) is the one letter a numbers' array cannot hold; the
        # commas count its elements (one byte searched for each, at memchr's speed).
        b"t" in text or b"f" in text or text.count(b",") + (1 if embedding else 0) != len(embedding)
    ):
        booleans, text = True, None  # (not an array of numbers: each element is checked)
    if booleans and not set(map(type, embedding)) <= _NUMBER_TYPES:
        raise TypeError("embedding has elements that are not numbers")
    if base64_wanted:
        return base64.b64encode(struct.pack(f"<{len(embedding)}f", *embedding)).decode()
    return embedding if text is None else FloatsJson(embedding, text)


_EMBEDDING = b'"embedding"'
_EMBEDDING_KEY = re.compile(rb'"embedding"\s*:\s*')


def _array_texts(raw: bytes, rows: int) -> list[bytes] | None:
    """The text of each data row's `embedding` array in `raw` (a body orjson has parsed), in
    the body's order; None unless the body plainly has one such key a row with an array
    value. Sure by JSON's grammar: outside a string a quote is a string's start or end, and a
    string's quote is escaped, so `"embedding"` then a colon is a key (one whose name ends in
    an escaped quote, `\\"embedding"`, sends the body the long way), and an array of numbers
    ends at its first `]` (whether it holds numbers only, `_vector` checks)."""
    texts: list[bytes] = []
    at = raw.find(_EMBEDDING)
    while at >= 0:
        key = _EMBEDDING_KEY.match(raw, at)
        if key is None:  # a value ("object": "embedding")
            at = raw.find(_EMBEDDING, at + len(_EMBEDDING))
            continue
        start = key.end()
        if raw[at - 1 : at] == b"\\" or raw[start : start + 1] != b"[" or len(texts) == rows:
            return None
        end = raw.find(b"]", start)
        if end < 0:
            return None
        texts.append(raw[start : end + 1])
        at = raw.find(_EMBEDDING, end)
    return texts if len(texts) == rows else None


_NUMBER_TYPES = {int, float}
