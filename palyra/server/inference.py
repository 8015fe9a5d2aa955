"""The OpenAI-compatible inference routes: `/v1/chat/completions`, `/v1/embeddings`,
`/v1/audio/transcriptions`, `/v1/models`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import structlog
from aiohttp import web

from palyra import tokens
from palyra.errors import PalyraError
from palyra.routing import RouteInfo, Router
from palyra.server import responses
from palyra.server.forms import read_transcription
from palyra.server.json_body import parse_body
from palyra.server.keys import GATEWAY, ROUTE, STARTED
from palyra.sse import DONE, encode_data
from palyra.types import ChatRequest, EmbeddingsRequest, EmbeddingsResult, ProviderModelRole

log = structlog.get_logger("palyra.inference")


def route_headers(route: RouteInfo, started: float) -> dict[str, str]:
    overhead_ms = max(0.0, (time.perf_counter() - started - route.upstream_s) * 1000)
    return {
        "x-palyra-provider-id": route.provider_id,
        "x-palyra-model-id": route.model_id,
        "x-palyra-failover-count": str(route.failovers),
        "x-palyra-retry-count": str(route.retries),
        "x-palyra-overhead-ms": f"{overhead_ms:.3f}",
    }


def json_response(body: Any, headers: dict[str, str], status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


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
    payload = responses.chat_completion(routed.value, routed.route.model_id)
    return json_response(payload, route_headers(routed.route, started))


async def _stream_chat(
    request: web.Request, router: Router, body: ChatRequest, started: float
) -> web.StreamResponse:
    routed = await router.stream_chat(body)
    request[ROUTE] = routed.route
    writer = responses.ChunkWriter(routed.route.model_id, body.include_usage)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            **route_headers(routed.route, started),
        }
    )
    await response.prepare(request)
    # The first frame goes out at once, with the headers: time to first chunk is what a
    # client feels.
    await response.write(writer.role())
    relay = _Relay(response)
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


class _Relay:
    """Writes a stream's frames to the client in as few writes as keep it live.

    The handler hands frames over without waiting; a writer task sends all that has piled up
    whenever it gets to run, which is as soon as the handler waits for upstream. So nothing
    waits for more to arrive, and the events of one upstream read leave in one write: one
    system call where writing each chunk made fifty (measured in benchmarks/README.md)."""

    # Past this much unsent, the handler waits for the writer: a slow client slows the
    # reading of upstream, as writing directly would.
    LIMIT = 64 * 1024

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response
        self._pending: list[bytes] = []
        self._size = 0
        self._closing = False
        self._ready = asyncio.Event()  # frames are pending, or closing
        self._taken = asyncio.Event()  # the writer took what was pending
        self._task = asyncio.get_running_loop().create_task(self._run())

    def push(self, frames: bytes) -> bool:
        """Queue frames for the writer; True when the backlog is past `LIMIT`, and the caller
        should wait for `taken` before pushing more. (Not a coroutine: a stream pushes for
        every event, and most never need to wait.)"""
        if self._task.done():
            self._task.result()  # the write failed (client gone): raise that here
        self._pending.append(frames)
        self._size += len(frames)
        self._ready.set()
        return self._size > self.LIMIT

    async def taken(self) -> None:
        """Returns when the writer has taken what was pending; raises what stopped it, if it
        stopped (the client went away) instead."""
        if self._size > self.LIMIT:
            self._taken.clear()
            waiting = asyncio.ensure_future(self._taken.wait())
            try:
                await asyncio.wait((waiting, self._task), return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
            if self._task.done():
                self._task.result()

    async def close(self) -> None:
        """Returns when everything sent has been written."""
        self._closing = True
        self._ready.set()
        await self._task

    def abandon(self) -> None:
        if not self._task.done():
            self._task.cancel()  # the handler failed or was cancelled (client went away)
        elif not self._task.cancelled():
            self._task.exception()  # retrieved: the handler has seen it, or does not care

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            pending, self._pending, self._size = self._pending, [], 0
            self._taken.set()
            await self._response.write(pending[0] if len(pending) == 1 else b"".join(pending))


async def embeddings(request: web.Request) -> web.StreamResponse:
    started = request[STARTED]
    router = request.app[GATEWAY].router
    body, size = await parse_body(request, EmbeddingsRequest)
    if size <= tokens.COUNT_INLINE_BYTES:
        routed = await router.embed(body)
    else:
        with tokens.remembering():
            model = router.registry.resolve(body.model, ProviderModelRole.EMBEDDINGS)
            await tokens.prepare_texts(body.texts(), budget=router.smallest_budget(model))
            routed = await router.embed(body)
    request[ROUTE] = routed.route
    headers = route_headers(routed.route, started)
    if _answer_size(routed.value) <= INLINE_ANSWER_NUMBERS:
        payload = responses.embeddings(routed.value, routed.route.model_id, body.encoding_format)
        return json_response(payload, headers)
    return await _stream_embeddings(
        request, routed.value, routed.route.model_id, body.encoding_format, headers
    )


# An embeddings answer of up to this many numbers is rendered in one go (orjson takes about
# 140 ns a number); a larger one is rendered and sent a slice of vectors at a time, letting
# other requests run between slices and never holding the whole JSON in memory.
INLINE_ANSWER_NUMBERS = 16 * 1024


def _answer_size(result: EmbeddingsResult) -> int:
    # A base64 vector (as an upstream sent it) holds 4 bytes a number, 3 bytes per 4 chars.
    return sum(len(v) if isinstance(v, list) else len(v) * 3 // 16 for v in result.vectors)


async def _stream_embeddings(
    request: web.Request,
    result: EmbeddingsResult,
    model_id: str,
    encoding_format: str,
    headers: dict[str, str],
) -> web.StreamResponse:
    response = web.StreamResponse(headers={**headers, "Content-Type": "application/json"})
    await response.prepare(request)
    per_vector = max(1, _answer_size(result) // max(1, len(result.vectors)))
    step = max(1, INLINE_ANSWER_NUMBERS // per_vector)
    payload: dict[str, Any] = {}
    vectors = result.vectors
    for start in range(0, len(vectors), step):
        part = EmbeddingsResult(vectors[start : start + step], result.usage)
        # Sent vectors are let go of as they go: a million floats freed at once, at the end,
        # would hold up the event loop for 20 ms.
        vectors[start : start + step] = [[]] * len(part.vectors)
        payload = responses.embeddings(part, model_id, encoding_format)
        for item in payload["data"]:
            item["index"] += start
        items = orjson.dumps(payload["data"])[1:-1]  # the elements, without the brackets
        head = b'{"object":"list","data":[' if start == 0 else b","
        del part, payload["data"]
        await response.write(head + items)
        await asyncio.sleep(0)  # let other requests run between slices
    # What follows the data in the whole answer ("model", "usage"), rendered by the same code.
    rest = {key: value for key, value in payload.items() if key not in ("object", "data")}
    await response.write(b"]," + orjson.dumps(rest)[1:])
    await response.write_eof()
    return response


async def transcriptions(request: web.Request) -> web.Response:
    started = request[STARTED]
    body = await read_transcription(request)
    routed = await request.app[GATEWAY].router.transcribe(body)
    request[ROUTE] = routed.route
    headers = route_headers(routed.route, started)
    if body.response_format == "text":
        return web.Response(text=routed.value.text, content_type="text/plain", headers=headers)
    return json_response(responses.transcription(routed.value, body.response_format), headers)


async def list_models(request: web.Request) -> web.Response:
    router = request.app[GATEWAY].router
    data = []
    for model in router.registry.models():
        data.append(
            {
                "id": model.model_id,
                "object": "model",
                "created": 0,
                "owned_by": model.provider_id,
                "palyra": {
                    "role": model.role.value,
                    "provider_id": model.provider_id,
                    "source": "discovered" if model.discovered else "configured",
                    "enabled": model.enabled,
                    "max_context_tokens": model.max_context_tokens,
                },
            }
        )
    return json_response(
        {"object": "list", "data": data}, route_headers(RouteInfo(), request[STARTED])
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_get("/v1/models", list_models)
