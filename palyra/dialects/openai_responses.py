"""The OpenAI Responses API: `POST /v1/responses` (whole and streamed), and the stored
responses behind `GET|DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`.

A request is read into a `ResponsesCall` (`responses_request`), its `previous_response_id`
resolved from the stored responses, and routed like chat: translated onto the internal
`ChatRequest` for every provider, and handed to an OpenAI-compatible provider with
`responses_passthrough` as its own body instead (the `serve` given to the router), so
retries and failover are chat's. The answer is rendered as a `response` object
(`responses_render`) or its typed events (`responses_stream`), under Palyra's own id; with
`store` (the API's default) it is saved to the `ResponseStore` off the request path.

Reasoning state: a translated answer's reasoning item carries the provider's opaque state in
`encrypted_content` (Anthropic's signed thinking blocks, in Palyra's format; see
`responses_request`), which the next turn of a tool loop must send back. The client is shown
it only when `include` has `reasoning.encrypted_content`, as the API does (what
openai-agents asks for with `store` off); the stored response keeps it regardless, so a turn
chained with `previous_response_id`, or one that sends a reasoning item back by its id
without its content, gets it from the store. `GET /v1/responses/{id}` and its
`input_items` take `include` too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web

from palyra import tokens
from palyra.callers import CALLER
from palyra.config import ModelConfig
from palyra.dialects import responses_render as render
from palyra.dialects.base import Dialect
from palyra.dialects.common import Relay, json_response, route_headers, sse_response
from palyra.dialects.responses_reasoning import INCLUDE_REASONING_STATE
from palyra.dialects.responses_request import ResponsesCall, read_call
from palyra.dialects.responses_stream import EventWriter, NativeEvents
from palyra.errors import InvalidRequest, PalyraError, Unsupported
from palyra.models.base import ModelProvider
from palyra.models.openai import OpenAIProvider
from palyra.routing import Router, ServeChat, ServeStream
from palyra.server.json_body import parse_json
from palyra.server.keys import GATEWAY, RESPONSES, ROUTE, STARTED
from palyra.state.responses import ANYONE, ChainTooLong, ResponseStore, StoredResponse
from palyra.types import ChatDelta, ChatRequest, ChatResult, RouteInfo

log = structlog.get_logger("palyra.inference")

DEFAULT_ITEMS_LIMIT = 20
MAX_ITEMS_LIMIT = 100


class ResponseNotFound(PalyraError):
    status = 404
    type = "invalid_request_error"
    code = None


# --- POST /v1/responses ---------------------------------------------------------------------


async def create_response(request: web.Request) -> web.StreamResponse:
    started = request[STARTED]
    router = request.app[GATEWAY].router
    store = request.app[RESPONSES]
    body, size = await parse_json(request)
    call = read_call(body)
    owner = _owner()
    history = await _history(store, call, owner)
    if call.references():
        # Items of the conversation so far first, then those of other recent responses.
        found = store.find_items(call.references(), owner)
        found.update({item["id"]: item for item in history if isinstance(item.get("id"), str)})
        call.resolve(found)
    chat = call.chat_request(history)
    if size <= tokens.COUNT_INLINE_BYTES and not history:
        return await _respond(request, router, store, call, chat, started)
    with tokens.remembering():
        await tokens.prepare_chat(chat, router.registry.chat_rooms())
        return await _respond(request, router, store, call, chat, started)


def _owner() -> str | None:
    """Whose stored responses the caller may see: a client key its own, the admin token (and
    agent runs) all of them."""
    caller = CALLER.get()
    return caller.key_id if caller.kind == "key" else ANYONE


async def _history(
    store: ResponseStore, call: ResponsesCall, owner: str | None
) -> list[dict[str, Any]]:
    previous = call.params.previous_response_id
    if not previous:
        return []
    try:
        history = await store.history(previous, owner)
    except ChainTooLong as exc:
        raise InvalidRequest(f"previous_response_id: {exc}", param="previous_response_id") from None
    if history is None:
        raise InvalidRequest(
            f"Previous response with id '{previous}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return history


async def _respond(
    request: web.Request,
    router: Router,
    store: ResponseStore,
    call: ResponsesCall,
    chat: ChatRequest,
    started: float,
) -> web.StreamResponse:
    if call.stream:
        return await _stream(request, router, store, call, chat, started)
    routed = await router.chat(chat, serve=serve_whole(call))
    request[ROUTE] = routed.route
    rid, created_at = render.response_id(), int(time.time())
    model_id = routed.route.model_id
    if routed.value.native is not None:
        payload = render.adopt(call, routed.value.native, rid, model_id)
    else:
        payload = dict(render.from_result(call, routed.value, rid, model_id, created_at))
    _save(store, call, payload)
    payload = render.shown(payload, call.shows_reasoning_state)
    return json_response(payload, route_headers(routed.route, started))


def _save(store: ResponseStore, call: ResponsesCall, payload: dict[str, Any]) -> None:
    if call.store:
        store.save(
            StoredResponse.of(
                payload,
                call.input_items,
                call.params.previous_response_id,
                store.now_ms(),
                CALLER.get().key_id,
            )
        )


def _passthrough(provider: ModelProvider) -> OpenAIProvider | None:
    if isinstance(provider, OpenAIProvider) and provider.config.responses_passthrough:
        return provider
    return None


def _check_translatable(call: ResponsesCall, provider: ModelProvider) -> None:
    if call.untranslatable:
        raise Unsupported(
            f"provider {provider.provider_id} ({provider.kind}) serves /v1/responses by "
            "translation to chat completions, which cannot carry " + "; ".join(call.untranslatable),
            param=_param_of(call.untranslatable[0]),
        )


def _param_of(problem: str) -> str | None:
    if problem.startswith("the parameter "):
        return problem.removeprefix("the parameter ").strip("'")
    head = problem.split(":", 1)[0].split(" ", 1)[0]
    return head or None


def serve_whole(call: ResponsesCall) -> ServeChat:
    async def serve(
        provider: ModelProvider, request: ChatRequest, model: ModelConfig
    ) -> ChatResult:
        native = _passthrough(provider)
        if native is not None and request.native is not None:
            return await native.send_responses(request.native.body, model)
        _check_translatable(call, provider)
        return await provider.chat(request, model)

    return serve


def serve_stream(call: ResponsesCall) -> ServeStream:
    def serve(
        provider: ModelProvider, request: ChatRequest, model: ModelConfig
    ) -> AsyncIterator[ChatDelta]:
        native = _passthrough(provider)
        if native is not None and request.native is not None:
            return native.stream_responses(request.native.body, model)
        _check_translatable(call, provider)
        return provider.stream_chat(request, model)

    return serve


async def _stream(
    request: web.Request,
    router: Router,
    store: ResponseStore,
    call: ResponsesCall,
    chat: ChatRequest,
    started: float,
) -> web.StreamResponse:
    routed = await router.stream_chat(chat, serve=serve_stream(call))
    request[ROUTE] = routed.route
    rid, created_at = render.response_id(), int(time.time())
    model_id = routed.route.model_id
    response = await sse_response(request, routed.route, started)
    relay = Relay(response)
    writer: EventWriter | NativeEvents | None = None
    try:
        try:
            async for event in routed.value:
                if writer is None:
                    if event.native is not None:
                        writer = NativeEvents(call, rid, model_id)
                        head = b""
                    else:
                        writer = _writer(call, rid, model_id, created_at)
                        head = writer.start()
                    # The first events go out at once, with the headers: time to first event
                    # is what a client feels. Pushed, they would wait for the relay until the
                    # rest of the upstream's read had been handled (benchmarks/README.md).
                    await response.write(head + writer.delta(event))
                    continue
                frames = writer.delta(event)
                if frames and relay.push(frames):
                    await relay.taken()
            if writer is None:
                writer = _writer(call, rid, model_id, created_at)
                relay.push(writer.start())
            frames = writer.complete()
            if writer.final is not None:
                # Saved before its last event leaves: once a client has it, it can be read.
                _save(store, call, writer.final)
            relay.push(frames)
        except PalyraError as exc:
            # Headers are gone; what is left is the API's own way of saying it failed.
            log.warning("stream_failed", error=exc.message, code=exc.code)
            if writer is None:
                writer = _writer(call, rid, model_id, created_at)
                relay.push(writer.start())
            relay.push(writer.fail(exc))
        await relay.close()
    finally:
        relay.abandon()
    await response.write_eof()
    return response


def _writer(call: ResponsesCall, rid: str, model_id: str, created_at: int) -> EventWriter:
    return EventWriter(
        render.shell(call, rid, model_id, created_at, "in_progress"),
        include_reasoning_state=call.shows_reasoning_state,
    )


# --- stored responses -----------------------------------------------------------------------


def _includes_reasoning_state(request: web.Request) -> bool:
    """Whether the query's `include` (`include[]` as the SDKs send a list) asks for
    reasoning items' encrypted content."""
    asked = [*request.query.getall("include", ()), *request.query.getall("include[]", ())]
    return INCLUDE_REASONING_STATE in asked


def _not_found(response_id: str) -> ResponseNotFound:
    return ResponseNotFound(f"Response with id '{response_id}' not found.")


async def get_response(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    if request.query.get("stream") in ("true", "1"):
        raise InvalidRequest(
            "stream: only a response made in the background can be streamed again, and "
            "Palyra makes none in the background",
            param="stream",
        )
    record = await request.app[RESPONSES].get(response_id, _owner())
    if record is None:
        raise _not_found(response_id)
    return json_response(
        render.shown(record.response, _includes_reasoning_state(request)),
        route_headers(RouteInfo(), request[STARTED]),
    )


async def delete_response(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    if not await request.app[RESPONSES].delete(response_id, _owner()):
        raise _not_found(response_id)
    return json_response(
        {"id": response_id, "object": "response.deleted", "deleted": True},
        route_headers(RouteInfo(), request[STARTED]),
    )


async def list_input_items(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    limit = _limit(request.query.get("limit"))
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be asc or desc", param="order")
    store = request.app[RESPONSES]
    owner = _owner()
    record = await store.get(response_id, owner)
    if record is None:
        raise _not_found(response_id)
    # As the API lists them: the whole input the answer was given, the turns before it
    # (chained with previous_response_id) included.
    earlier: list[dict[str, Any]] | None = []
    if record.previous_response_id:
        try:
            earlier = await store.history(record.previous_response_id, owner)
        except ChainTooLong:
            earlier = None
    include = _includes_reasoning_state(request)
    items = [
        render.shown_item(listed_item(item), include) for item in [*(earlier or []), *record.input]
    ]
    if order == "desc":
        items.reverse()
    after = request.query.get("after")
    if after:
        position = next((i for i, item in enumerate(items) if item.get("id") == after), None)
        if position is None:
            raise InvalidRequest(f"after: no input item {after!r} in this response", param="after")
        items = items[position + 1 :]
    page = items[:limit]
    return json_response(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        },
        route_headers(RouteInfo(), request[STARTED]),
    )


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_ITEMS_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_ITEMS_LIMIT:
        raise InvalidRequest(
            f"limit must be a whole number from 1 to {MAX_ITEMS_LIMIT}", param="limit"
        )
    return limit


def listed_item(item: dict[str, Any]) -> dict[str, Any]:
    """An input item as `input_items` lists it (`ResponseItem`): messages with their content
    as parts, every item with a status."""
    listed = {**item}
    if item.get("type") == "message" and isinstance(item.get("content"), str):
        kind = "output_text" if item.get("role") == "assistant" else "input_text"
        part: dict[str, Any] = {"type": kind, "text": item["content"]}
        if kind == "output_text":
            part["annotations"] = []
        listed["content"] = [part]
    if item.get("type") in ("message", "function_call", "function_call_output"):
        listed["status"] = item.get("status") or "completed"
    return listed


DIALECT = Dialect(
    "openai_responses",
    (
        ("POST", "/v1/responses", create_response),
        ("GET", "/v1/responses/{response_id}", get_response),
        ("DELETE", "/v1/responses/{response_id}", delete_response),
        ("GET", "/v1/responses/{response_id}/input_items", list_input_items),
    ),
)
