"""The Anthropic Messages API: `POST /v1/messages` (whole and streamed) and
`POST /v1/messages/count_tokens`, with errors in Anthropic's shape.

A request is read into the internal shape (`anthropic_translate`) for routing: the router's
checks, retries and failover work on it as on any chat request. Who answers decides the rest:
an Anthropic provider is handed the client's own body (`send_native` / `stream_native`, the
model replaced by the routed one, `anthropic-beta` forwarded) and its answer or events come
back as they came; any other provider serves the translation, and its result is rendered as a
Message (`render_message`) or as Anthropic's events (`anthropic_stream.EventWriter`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web

from palyra import tokens
from palyra.config import ModelConfig
from palyra.dialects.anthropic_render import render_message
from palyra.dialects.anthropic_stream import EventWriter, frame
from palyra.dialects.anthropic_translate import Translation, to_chat_request
from palyra.dialects.base import Dialect
from palyra.dialects.common import Relay, json_response, route_headers, sse_response
from palyra.errors import PalyraError
from palyra.keylimits import require_model
from palyra.models.anthropic import AnthropicProvider
from palyra.models.anthropic_wire import ErrorResponse, ErrorType, MessageTokensCount
from palyra.models.base import ModelProvider
from palyra.routing import Router
from palyra.server.json_body import parse_json
from palyra.server.keys import GATEWAY, ROUTE, STARTED
from palyra.sse import encode_event
from palyra.types import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    Native,
    ProviderModelRole,
    RouteInfo,
)

log = structlog.get_logger("palyra.inference")

NAME = "anthropic_messages"
# Anthropic's own status for "overloaded": what an unavailable upstream, or every candidate
# cooling down, is to its clients (the SDKs retry it).
OVERLOADED = 529

_ERROR_TYPES: dict[int, ErrorType] = {
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


def anthropic_status(status: int) -> tuple[int, ErrorType]:
    """Anthropic's status and error type for one of Palyra's statuses. Anthropic has no 502
    or 503: an upstream's failure is its `api_error` (500), an unavailable one `overloaded`."""
    if status in (503, OVERLOADED):
        return OVERLOADED, "overloaded_error"
    if status == 504:
        return 504, "timeout_error"
    if status >= 500:
        return 500, "api_error"
    return status, _ERROR_TYPES.get(status, "invalid_request_error")


def error_body(exc: PalyraError) -> tuple[int, ErrorResponse]:
    status, kind = anthropic_status(exc.status)
    return status, {"type": "error", "error": {"type": kind, "message": exc.message}}


def render_error(exc: PalyraError) -> tuple[int, ErrorResponse]:
    return error_body(exc)


def beta_headers(request: web.Request) -> dict[str, str] | None:
    """The client's `anthropic-beta` flags, for an Anthropic upstream to see."""
    flags = request.headers.getall("anthropic-beta", [])
    return {"anthropic-beta": ",".join(flags)} if flags else None


class _Serve:
    """How each candidate answers: Anthropic natively, the others the translation."""

    def __init__(self, translation: Translation, body: dict[str, Any], beta: dict[str, str] | None):
        self._translation = translation
        self._body = body
        self._beta = beta

    async def whole(
        self, provider: ModelProvider, request: ChatRequest, model: ModelConfig
    ) -> ChatResult:
        if isinstance(provider, AnthropicProvider):
            return await provider.send_native(self._body, model, extra_headers=self._beta)
        refusal = self._translation.refusal_for(provider.provider_id)
        if refusal is not None:
            raise refusal
        return await provider.chat(request, model)

    def stream(
        self, provider: ModelProvider, request: ChatRequest, model: ModelConfig
    ) -> AsyncIterator[ChatDelta]:
        if isinstance(provider, AnthropicProvider):
            return provider.stream_native(self._body, model, extra_headers=self._beta)
        refusal = self._translation.refusal_for(provider.provider_id)
        if refusal is not None:
            return _raise(refusal)
        return provider.stream_chat(request, model)


async def _raise(error: PalyraError) -> AsyncIterator[ChatDelta]:
    # A stream that fails on its first read, as a provider's stream does.
    raise error
    yield ChatDelta()  # pragma: no cover - makes this a generator


async def messages(request: web.Request) -> web.StreamResponse:
    started = request[STARTED]
    router = request.app[GATEWAY].router
    body, size = await parse_json(request)
    translation = to_chat_request(body)
    chat = translation.request.with_native(Native(NAME, body))
    serve = _Serve(translation, body, beta_headers(request))
    if size <= tokens.COUNT_INLINE_BYTES:
        return await _answer(request, router, chat, translation, serve, started)
    with tokens.remembering():
        await tokens.prepare_chat(chat, router.registry.chat_rooms())
        return await _answer(request, router, chat, translation, serve, started)


async def _answer(
    request: web.Request,
    router: Router,
    chat: ChatRequest,
    translation: Translation,
    serve: _Serve,
    started: float,
) -> web.StreamResponse:
    if chat.stream:
        return await _stream(request, router, chat, translation, serve, started)
    routed = await router.chat(chat, serve.whole)
    request[ROUTE] = routed.route
    result = routed.value
    if result.native is not None:
        payload: Any = result.native
    else:
        payload = render_message(
            result, routed.route.model_id, routed.route.provider_id, translation.stop_sequences
        )
    return json_response(payload, route_headers(routed.route, started))


async def _stream(
    request: web.Request,
    router: Router,
    chat: ChatRequest,
    translation: Translation,
    serve: _Serve,
    started: float,
) -> web.StreamResponse:
    routed = await router.stream_chat(chat, serve.stream)
    route = routed.route
    request[ROUTE] = route
    writer = EventWriter(route.model_id, translation.stop_sequences)
    native = isinstance(router.providers.get(route.provider_id), AnthropicProvider)
    response = await sse_response(request, route, started)
    if not native:
        # The first events go out at once, with the headers: time to first event is what a
        # client feels.
        await response.write(writer.start())
    relay = Relay(response)
    events = routed.value
    try:
        try:
            if native:
                # A native stream's first event, which the router has read already, goes
                # out at once too: pushed, it would wait for the relay until the rest of the
                # upstream's read had been handled (measured in benchmarks/README.md).
                first = await anext(events, None)
                if first is not None:
                    await response.write(_frames(first, writer))
            async for event in events:
                frames = _frames(event, writer)
                if frames and relay.push(frames):
                    await relay.taken()
        except PalyraError as exc:
            # Headers are gone; the only honest signal left is an error event, then the end.
            log.warning("stream_failed", error=exc.message, code=exc.code)
            relay.push(frame("error", error_body(exc)[1]))
        else:
            if not native:
                relay.push(writer.end())
        await relay.close()
    finally:
        relay.abandon()
    await response.write_eof()
    return response


def _frames(event: ChatDelta, writer: EventWriter) -> bytes:
    return encode_event(*event.native) if event.native is not None else writer.delta(event)


async def count_tokens(request: web.Request) -> web.Response:
    started = request[STARTED]
    router = request.app[GATEWAY].router
    body, size = await parse_json(request)
    translation = to_chat_request(body, counting=True)
    asked_for = router.registry.resolve(translation.request.model, ProviderModelRole.CHAT)
    request[ROUTE] = RouteInfo(asked_for.model_id, asked_for.provider_id)
    require_model(asked_for.model_id)
    # (Counted where a request for the model would be served: none disabled.)
    model, provider = router.counting(asked_for)
    route = request[ROUTE] = RouteInfo(model.model_id, model.provider_id)
    if isinstance(provider, AnthropicProvider):
        asked = time.perf_counter()
        answer = await provider.count_tokens_native(
            body, model, extra_headers=beta_headers(request)
        )
        route.upstream_s = time.perf_counter() - asked
        return json_response(answer, route_headers(route, started))
    kind = provider.kind
    refusal = translation.refusal_for(model.provider_id)
    if refusal is not None:
        raise refusal
    await tokens.load_vocabulary()
    if size <= tokens.COUNT_INLINE_BYTES:
        counted = tokens.estimate_token_count(translation.request, kind)
    else:
        counted = await asyncio.to_thread(tokens.estimate_token_count, translation.request, kind)
    answer_: MessageTokensCount = {"input_tokens": counted}
    return json_response(answer_, route_headers(route, started))


DIALECT = Dialect(
    NAME,
    (
        ("POST", "/v1/messages", messages),
        ("POST", "/v1/messages/count_tokens", count_tokens),
    ),
    render_error,
)
