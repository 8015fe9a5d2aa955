"""The OpenAI-compatible inference routes: `/v1/chat/completions`, `/v1/embeddings`,
`/v1/audio/transcriptions`, `/v1/models`."""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import BodyPartReader, web
from pydantic import BaseModel, ValidationError

from palyra.errors import InvalidRequest, PalyraError
from palyra.routing import RouteInfo, Router
from palyra.server import responses
from palyra.server.keys import GATEWAY, ROUTE, STARTED
from palyra.sse import DONE, encode_data
from palyra.types import ChatRequest, EmbeddingsRequest, TranscriptionRequest

log = structlog.get_logger("palyra.inference")

M = TypeVar("M", bound=BaseModel)

MAX_AUDIO_BYTES = 25 * 1024 * 1024
_TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json")


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


async def parse_body(request: web.Request, model: type[M]) -> M:
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return InvalidRequest(f"{param}: {message}{more}" if param else message, param=param)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = request[STARTED]
    router = request.app[GATEWAY].router
    body = await parse_body(request, ChatRequest)
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


async def embeddings(request: web.Request) -> web.Response:
    started = request[STARTED]
    body = await parse_body(request, EmbeddingsRequest)
    routed = await request.app[GATEWAY].router.embed(body)
    request[ROUTE] = routed.route
    payload = responses.embeddings(routed.value, routed.route.model_id, body.encoding_format)
    return json_response(payload, route_headers(routed.route, started))


async def transcriptions(request: web.Request) -> web.Response:
    started = request[STARTED]
    body = await _read_transcription(request)
    routed = await request.app[GATEWAY].router.transcribe(body)
    request[ROUTE] = routed.route
    headers = route_headers(routed.route, started)
    if body.response_format == "text":
        return web.Response(text=routed.value.text, content_type="text/plain", headers=headers)
    return json_response(responses.transcription(routed.value, body.response_format), headers)


async def _read_transcription(request: web.Request) -> TranscriptionRequest:
    if not request.content_type.startswith("multipart/"):
        raise InvalidRequest("send multipart/form-data with `file` and `model`", param="file")
    fields: dict[str, str] = {}
    audio: bytes | None = None
    filename, content_type = "audio", "application/octet-stream"
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.name == "file":
            audio = await part.read(decode=False)
            if len(audio) > MAX_AUDIO_BYTES:
                raise InvalidRequest(
                    f"file: larger than {MAX_AUDIO_BYTES // (1024 * 1024)} MB", param="file"
                )
            filename = part.filename or filename
            content_type = part.headers.get("Content-Type", content_type)
        else:
            fields[part.name] = (await part.read(decode=True)).decode("utf-8", "replace")
    if not audio:
        raise InvalidRequest("file: required (the audio to transcribe)", param="file")
    response_format = fields.get("response_format", "json")
    if response_format not in _TRANSCRIPTION_FORMATS:
        raise InvalidRequest(
            f"response_format: must be one of {', '.join(_TRANSCRIPTION_FORMATS)}",
            param="response_format",
        )
    temperature = None
    if fields.get("temperature"):
        try:
            temperature = float(fields["temperature"])
        except ValueError:
            raise InvalidRequest("temperature: must be a number", param="temperature") from None
    return TranscriptionRequest(
        model=fields.get("model") or None,
        file=audio,
        filename=filename,
        content_type=content_type,
        response_format=response_format,  # type: ignore[arg-type]
        language=fields.get("language") or None,
        prompt=fields.get("prompt") or None,
        temperature=temperature,
    )


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
