"""The Anthropic provider kind: chat completions over Anthropic's Messages API, and the
Messages API passed through natively for clients that speak it.

The translation is pure and lives apart: `anthropic_request.py` (chat completions request ->
Messages API body), `anthropic_honour.py` (what Anthropic cannot honour), `anthropic_answer.py`
(JSON answers through a forced tool call), `anthropic_response.py` (answers and stream events
-> chat results and deltas), `anthropic_wire.py` (the wire format, typed).
This module does the I/O: headers, errors, the calls, discovery.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from multidict import istr

from palyra.config import ModelConfig
from palyra.errors import Unsupported, UpstreamProtocolError
from palyra.models.anthropic_answer import answer_tool
from palyra.models.anthropic_honour import CannotHonour, unhonoured
from palyra.models.anthropic_request import build_messages_request
from palyra.models.anthropic_response import StreamTranslator, error_event, parse_message
from palyra.models.anthropic_wire import MessageCreateParams
from palyra.models.http import HttpProvider, kind_of, native_body
from palyra.types import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    EmbeddingsRequest,
    EmbeddingsResult,
    ModelProviderKind,
    TranscriptionRequest,
    TranscriptionResult,
)

ANTHROPIC_VERSION = "2023-06-01"
# (Header names as istr: see palyra.dialects.common's route headers.)
_VERSION, _API_KEY = istr("anthropic-version"), istr("x-api-key")
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
MODELS_PATH = "/v1/models"
# The one client header a native pass-through forwards: which beta features the body uses.
FORWARDED_HEADER = "anthropic-beta"
# Discovery must end even if an upstream keeps saying has_more; 10 pages of 1000 is plenty.
MAX_MODEL_PAGES = 10
MODELS_PAGE_LIMIT = 1000


def forwarded_headers(extra_headers: dict[str, str] | None) -> dict[str, str] | None:
    """Of a client's headers, only `anthropic-beta` goes upstream: the others are the
    gateway's to set (its key, its `anthropic-version`)."""
    if not extra_headers:
        return None
    values = [v for name, v in extra_headers.items() if name.lower() == FORWARDED_HEADER]
    # Several betas are one comma-separated header, as the anthropic SDK sends them.
    return {FORWARDED_HEADER: ",".join(values)} if values else None


# --- provider --------------------------------------------------------------------------------


class AnthropicProvider(HttpProvider):
    """Chat through Anthropic's Messages API; model discovery through its Models API."""

    kind = ModelProviderKind.ANTHROPIC

    def _auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers: dict[str, str] = {_VERSION: ANTHROPIC_VERSION}
        if api_key:
            headers[_API_KEY] = api_key
        return headers

    def _error_details(self, body: Any) -> tuple[str, str | None, str | None]:
        # {"type": "error", "error": {"type": "...", "message": "..."}, "request_id": "..."}
        error = body["error"]
        if isinstance(error, str):
            return error, None, None
        if not isinstance(error, dict):
            return f"an error that is {kind_of(error)}", None, None
        message = error.get("message") or error.get("type") or "unknown error"
        code = error.get("type")
        return str(message), str(code) if code else None, None

    def unsupported(self, request: ChatRequest) -> Unsupported | None:
        native = request.native
        if native is not None and native.dialect == "anthropic_messages":
            # Served as the client's own Messages body (send_native / stream_native), which
            # Anthropic judges itself: the limits of translating the chat shape are not its.
            return None
        found = unhonoured(request)
        return None if found is None else self.cannot_honour(found[1], found[0])

    def _payload(
        self, request: ChatRequest, model: ModelConfig, *, stream: bool = False
    ) -> MessageCreateParams:
        """The Messages API body for `request`. What Anthropic cannot honour in it is this
        provider's `Unsupported` (the fallback skips to a candidate that can serve), whether
        `unsupported` named it before any attempt or only the translation finds it."""
        try:
            return build_messages_request(request, model, stream=stream)
        except CannotHonour as found:
            raise self.cannot_honour(found.what, found.param) from None

    async def chat(self, request: ChatRequest, model: ModelConfig) -> ChatResult:
        payload = self._payload(request, model)
        body = await self._post_json(MESSAGES_PATH, payload)
        if isinstance(body, dict) and body.get("type") == "error":
            raise error_event(body, self.provider_id)
        return parse_message(body, self.provider_id, answer_tool=answer_tool(request))

    async def stream_chat(
        self, request: ChatRequest, model: ModelConfig
    ) -> AsyncIterator[ChatDelta]:
        payload = self._payload(request, model, stream=True)
        translator = StreamTranslator(self.provider_id, answer_tool=answer_tool(request))
        # aclosing: whether we stop on message_stop, an error event or the caller leaving,
        # the upstream response is released now, not when the generator is collected.
        events = self._events(MESSAGES_PATH, payload)
        async with contextlib.aclosing(events):
            async for event in events:
                delta = translator.feed(event)
                if delta is not None:
                    yield delta
                if translator.done:
                    return
        translator.finish()

    # --- native pass-through (the Anthropic Messages dialect) -------------------------------

    async def send_native(
        self,
        body: dict[str, Any],
        model: ModelConfig,
        *,
        extra_headers: dict[str, str] | None = None,
    ) -> ChatResult:
        """`POST /v1/messages` with a client's own Messages API body (its model replaced by
        the upstream name). The result is translated for metrics and routing, and carries the
        upstream's answer as it came in `native`."""
        payload = native_body(body, model, stream=False)
        answer = await self._post_json(
            MESSAGES_PATH, payload, extra_headers=forwarded_headers(extra_headers)
        )
        if isinstance(answer, dict) and answer.get("type") == "error":
            raise error_event(answer, self.provider_id)
        result = parse_message(answer, self.provider_id)
        result.native = answer
        return result

    async def stream_native(
        self,
        body: dict[str, Any],
        model: ModelConfig,
        *,
        extra_headers: dict[str, str] | None = None,
    ) -> AsyncIterator[ChatDelta]:
        """The same, streamed: one `ChatDelta` per upstream event, its `native` the event as
        it came and its other fields the event's translation (empty for `ping`,
        `message_start`, ...), so the router meters and settles a native stream like any."""
        payload = native_body(body, model, stream=True)
        translator = StreamTranslator(self.provider_id)
        events = self._events(
            MESSAGES_PATH, payload, extra_headers=forwarded_headers(extra_headers)
        )
        async with contextlib.aclosing(events):
            async for event in events:
                delta = translator.feed(event) or ChatDelta()
                delta.native = (event.event, event.data)
                yield delta
                if translator.done:
                    return
        translator.finish()

    async def count_tokens_native(
        self,
        body: dict[str, Any],
        model: ModelConfig,
        *,
        extra_headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/messages/count_tokens` with a client's body (model replaced): the
        upstream's answer as it came."""
        payload = native_body(body, model, stream=None)
        # Anthropic limits token counting apart from messages: its headers say nothing of
        # whether this model can take a message.
        answer = await self._post_json(
            COUNT_TOKENS_PATH,
            payload,
            extra_headers=forwarded_headers(extra_headers),
            observe_limits=False,
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("input_tokens"), int):
            raise UpstreamProtocolError(
                "answered count_tokens without an `input_tokens` count",
                provider_id=self.provider_id,
            )
        return answer

    async def embed(self, request: EmbeddingsRequest, model: ModelConfig) -> EmbeddingsResult:
        raise Unsupported(
            f"provider {self.provider_id} (anthropic): the Anthropic API has no embeddings "
            "endpoint; route embeddings to an openai_compatible provider"
        )

    async def transcribe(
        self, request: TranscriptionRequest, model: ModelConfig
    ) -> TranscriptionResult:
        raise Unsupported(
            f"provider {self.provider_id} (anthropic): the Anthropic API has no audio "
            "transcription endpoint; route transcription to an openai_compatible provider"
        )

    async def list_models(self) -> list[str]:
        ids: list[str] = []
        after: str | None = None
        for _ in range(MAX_MODEL_PAGES):
            query: dict[str, str | int] = {"limit": MODELS_PAGE_LIMIT}
            if after:
                query["after_id"] = after
            body = await self._get_json(f"{MODELS_PATH}?{urlencode(query)}")
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise UpstreamProtocolError(
                    "answered the models list without a `data` list", provider_id=self.provider_id
                )
            ids += [
                str(item["id"])
                for item in body["data"]
                if isinstance(item, dict) and item.get("id")
            ]
            last = body.get("last_id") or (ids[-1] if ids else None)
            if not body.get("has_more") or not last or last == after:
                break
            after = str(last)
        return ids
