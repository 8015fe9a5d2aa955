"""A fake LLM upstream that speaks the real OpenAI and Anthropic wire formats.

Gateway tests point providers at it instead of the public APIs: it serves
`/v1/chat/completions`, `/v1/embeddings`, `/v1/audio/transcriptions` (streamed too),
`/v1/audio/translations`, `/v1/models` (OpenAI) and
`/v1/messages`, `/v1/models` (Anthropic), records every request, and plays scripted replies,
errors, broken streams and dropped connections. `test_upstream.py` keeps it honest by driving
it with the official SDKs.

Order of handling: down -> dropped; every request is recorded (dropped ones too); auth (and
Anthropic's version header) is checked; then the path's next scripted reply, if any, is sent
as given (no body validation); otherwise the default behaviour of the route.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import math
import re
import time
from collections import deque
from typing import Any, Literal

import orjson
from aiohttp import web
from multidict import CIMultiDict

from . import anthropic_wire, openai_wire, responses_wire
from .replies import (
    AnyReply,
    ChatReply,
    DropConnection,
    ErrorReply,
    RateLimits,
    RecordedRequest,
    Reply,
    WireError,
    new_id,
)

__all__ = [
    "AnyReply",
    "ChatReply",
    "DropConnection",
    "ErrorReply",
    "FakeUpstream",
    "RateLimits",
    "RecordedRequest",
    "Reply",
]

Family = Literal["openai", "anthropic"]
DEFAULT_MODELS = ["gpt-4o-mini", "text-embedding-3-small", "whisper-1"]
CHAT_PATHS = ("/v1/chat/completions", "/v1/messages", responses_wire.RESPONSES_PATH)
# The routes whose answers carry rate-limit headers and count against the limits.
MODEL_PATHS = (
    *CHAT_PATHS,
    "/v1/embeddings",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
)
# An aborted handler waits this long for aiohttp to notice the closed socket and cancel it.
_ABORT_GRACE_S = 5.0


class FakeUpstream:
    def __init__(
        self, *, api_key: str | None = "sk-fake-upstream-key", models: list[str] | None = None
    ) -> None:
        self.api_key = api_key
        self.models = list(models) if models is not None else list(DEFAULT_MODELS)
        self.requests: list[RecordedRequest] = []
        self.open_streams = 0
        self.cancelled_streams = 0
        self.down = False
        # Set (see `RateLimits`) to have model routes send rate-limit headers; None: none sent.
        self.rate_limits: RateLimits | None = None
        self._scripts: dict[str, deque[AnyReply]] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._closing = False

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._closing = False
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_response_prepare.append(self._add_rate_limit_headers)
        # handler_cancellation: a client that goes away must cancel the handler, as it would
        # cancel a real upstream's generation; that is what `cancelled_streams` counts.
        # A short shutdown_timeout keeps close() from waiting on streams a test left open.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        self._closing = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeUpstream is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    # --- test controls ---------------------------------------------------------------------

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    def script(self, path: str, *replies: AnyReply) -> None:
        self._scripts.setdefault(path, deque()).extend(replies)

    def clear(self) -> None:
        self.requests.clear()
        self._scripts.clear()

    def set_rate_limits(self, limits: RateLimits | None = None, /, **fields: Any) -> RateLimits:
        """Send rate-limit headers from now on: `limits`, or a `RateLimits` made of `fields`
        (`set_rate_limits(requests_remaining=0, requests_reset_s=20)`)."""
        self.rate_limits = limits if limits is not None else RateLimits(**fields)
        return self.rate_limits

    def set_down(self, down: bool = True) -> None:
        self.down = down

    async def wait_streams_closed(self, timeout_s: float = 5.0) -> None:
        """Wait until no stream is being written (a disconnect is noticed asynchronously)."""
        deadline = time.monotonic() + timeout_s
        while self.open_streams:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.open_streams} upstream stream(s) still open")
            await asyncio.sleep(0.01)

    # --- dispatch --------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record = _record(request, body)
        self.requests.append(record)
        if self.down:
            return await _abort(request)
        family = _family(request)
        refused = self._check_auth(request, family)
        if refused is not None:
            return refused
        limits = self.rate_limits
        if limits is not None and limits.enforce and request.path in MODEL_PATHS:
            if limits.spent:
                retry_after = str(max(1, math.ceil(limits.requests_reset_s)))
                return _error(family, ErrorReply(429, retry_after=retry_after))
            limits.requests_remaining -= 1
        queue = self._scripts.get(request.path)
        try:
            if queue:
                return await self._send(request, record, family, queue.popleft())
            return await self._default(request, record, family)
        except WireError as err:
            return _error(family, ErrorReply(err.status, err.message), param=err.param)

    async def _add_rate_limit_headers(
        self, request: web.Request, response: web.StreamResponse
    ) -> None:
        limits = self.rate_limits
        if limits is None or request.path not in MODEL_PATHS or response.status in (401, 404):
            return
        if _family(request) == "anthropic":
            response.headers.update(anthropic_wire.rate_limit_headers(limits))
        else:
            response.headers.update(openai_wire.rate_limit_headers(limits))

    def _check_auth(self, request: web.Request, family: Family) -> web.Response | None:
        headers = request.headers
        bearer = f"Bearer {self.api_key}"
        if family == "openai":
            if self.api_key is None or headers.get("authorization") == bearer:
                return None
            if "authorization" not in headers:
                message = "You didn't provide an API key. Use Authorization: Bearer YOUR_KEY."
                return _error(family, ErrorReply(401, message))
            return _error(family, ErrorReply(401, code="invalid_api_key"))
        # anthropic 2.14 authenticates with Bearer; the Messages API docs (and the daemon) use
        # x-api-key. Both are accepted.
        if (
            self.api_key is not None
            and bearer != headers.get("authorization")
            and (headers.get("x-api-key") != self.api_key)
        ):
            present = "x-api-key" in headers or "authorization" in headers
            message = "invalid x-api-key" if present else "x-api-key header is required"
            return _error(family, ErrorReply(401, message))
        if "anthropic-version" not in headers:
            return _error(family, ErrorReply(400, "anthropic-version: header is required"))
        return None

    async def _send(
        self, request: web.Request, record: RecordedRequest, family: Family, reply: AnyReply
    ) -> web.StreamResponse:
        if isinstance(reply, DropConnection):
            return await _abort(request)
        if isinstance(reply, ErrorReply):
            return _error(family, reply)
        if isinstance(reply, ChatReply):
            if request.path not in CHAT_PATHS:
                return web.Response(status=500, text=f"ChatReply scripted for {request.path}")
            return await self._chat(request, record, family, reply)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        headers = CIMultiDict(reply.headers or {})
        if reply.json is not None:
            headers.setdefault("Content-Type", "application/json")
            return web.Response(status=reply.status, body=orjson.dumps(reply.json), headers=headers)
        return web.Response(status=reply.status, body=reply.body or b"", headers=headers)

    async def _default(
        self, request: web.Request, record: RecordedRequest, family: Family
    ) -> web.StreamResponse:
        route = (request.method, request.path)
        body = record.json if isinstance(record.json, dict) else {}
        if route == ("POST", "/v1/chat/completions"):
            if not isinstance(record.json, dict):
                raise WireError(400, "We could not parse the JSON body of your request.")
            return await self._chat(request, record, family, openai_wire.default_chat_reply(body))
        if route == ("POST", "/v1/messages"):
            if not isinstance(record.json, dict):
                raise WireError(400, "The request body is not valid JSON.")
            reply = anthropic_wire.default_chat_reply(body)
            return await self._chat(request, record, family, reply)
        if route == ("POST", "/v1/messages/count_tokens"):
            return _json(family, anthropic_wire.count_tokens(body))
        if route == ("POST", responses_wire.RESPONSES_PATH):
            reply = responses_wire.default_reply(body)
            return await self._chat(request, record, family, reply)
        if route == ("POST", "/v1/embeddings"):
            return _json(family, openai_wire.embeddings(body))
        if route in (("POST", "/v1/audio/transcriptions"), ("POST", "/v1/audio/translations")):
            return await self._audio(request, record, family)
        if route == ("GET", "/v1/models"):
            if family == "anthropic":
                return _json(family, anthropic_wire.models_list(self.models))
            return _json(family, openai_wire.models_list(self.models))
        message = f"Unknown request URL: {request.method} {request.path}."
        return _error(family, ErrorReply(404, message))

    # --- audio -----------------------------------------------------------------------------

    async def _audio(
        self, request: web.Request, record: RecordedRequest, family: Family
    ) -> web.StreamResponse:
        answer = openai_wire.audio(
            record.form_items, translate=request.path.endswith("/translations")
        )
        if isinstance(answer, openai_wire.TextAnswer):
            return web.Response(
                text=answer.text,
                content_type=answer.content_type,
                charset="utf-8",
                headers=_ids(family),
            )
        if isinstance(answer, dict):
            return _json(family, answer)
        response = web.StreamResponse(
            headers={
                **_ids(family),
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await response.prepare(request)
        for frame in answer:
            await response.write(frame)
        await response.write_eof()
        return response

    # --- chat ------------------------------------------------------------------------------

    async def _chat(
        self, request: web.Request, record: RecordedRequest, family: Family, reply: ChatReply
    ) -> web.StreamResponse:
        body = record.json if isinstance(record.json, dict) else {}
        model = str(body.get("model", "unknown"))
        stream = body.get("stream") is True
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if request.path == responses_wire.RESPONSES_PATH:
            if not stream:
                payload = responses_wire.response(reply, body)
                return await self._whole(request, family, payload, reply)
            frames, end = responses_wire.stream_events(reply, body)
            error_frame = responses_wire.stream_error_frame()
            return await self._stream(request, family, reply, frames, end, error_frame)
        if family == "anthropic":
            prompt = anthropic_wire.input_tokens(body)
            if not stream:
                payload = anthropic_wire.message(reply, model=model, prompt=prompt)
                return await self._whole(request, family, payload, reply)
            frames, end = anthropic_wire.stream_events(reply, model=model, prompt=prompt)
            error_frame = anthropic_wire.stream_error_frame()
        else:
            messages = body.get("messages")
            prompt = openai_wire.prompt_tokens(messages if isinstance(messages, list) else [])
            if not stream:
                payload = openai_wire.chat_completion(
                    reply, model=model, prompt=prompt, request=body
                )
                return await self._whole(request, family, payload, reply)
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            frames = openai_wire.chat_chunks(
                reply, model=model, prompt=prompt, include_usage=include_usage, request=body
            )
            end, error_frame = openai_wire.DONE, openai_wire.stream_error_frame()
        return await self._stream(request, family, reply, frames, end, error_frame)

    async def _whole(
        self, request: web.Request, family: Family, payload: Any, reply: ChatReply
    ) -> web.StreamResponse:
        if reply.break_after_chunks is None:
            return _json(family, payload)
        # A non-streamed answer "breaks" by announcing its full length and sending only half.
        data = orjson.dumps(payload)
        response = web.StreamResponse(headers={**_ids(family), "Content-Type": "application/json"})
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        return await _abort(request)

    async def _stream(
        self,
        request: web.Request,
        family: Family,
        reply: ChatReply,
        frames: list[bytes],
        end: bytes,
        error_frame: bytes,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                **_ids(family),
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        breaks, fails = reply.break_after_chunks, reply.error_event_after_chunks
        if breaks is not None and (fails is None or breaks <= fails):
            fails = None
        else:
            breaks = None
        stop_at = next((n for n in (breaks, fails) if n is not None), len(frames))
        self.open_streams += 1
        aborting = False
        try:
            await response.prepare(request)
            for index, frame in enumerate(frames[:stop_at]):
                if index and reply.chunk_delay_s:
                    await asyncio.sleep(reply.chunk_delay_s)
                await response.write(frame)
            if breaks is not None:
                aborting = True
                return await _abort(request)
            await response.write(error_frame if fails is not None else end)
            await response.write_eof()
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            if not aborting and not self._closing:
                self.cancelled_streams += 1
            raise
        finally:
            self.open_streams -= 1


# --- helpers ----------------------------------------------------------------------------------


def _family(request: web.Request) -> Family:
    # /v1/models is shared: Anthropic clients are recognised by their headers.
    if request.path.startswith("/v1/messages"):
        return "anthropic"
    if "anthropic-version" in request.headers or "x-api-key" in request.headers:
        return "anthropic"
    return "openai"


def _ids(family: Family) -> dict[str, str]:
    return {"request-id" if family == "anthropic" else "x-request-id": new_id("req_")}


def _json(family: Family, payload: Any, status: int = 200) -> web.Response:
    headers = {**_ids(family), "Content-Type": "application/json"}
    return web.Response(status=status, body=orjson.dumps(payload), headers=headers)


def _error(family: Family, reply: ErrorReply, *, param: str | None = None) -> web.Response:
    if family == "anthropic":
        payload = anthropic_wire.error_body(
            reply.status, reply.message, error_type=reply.error_type
        )
    else:
        payload = openai_wire.error_body(
            reply.status, reply.message, error_type=reply.error_type, code=reply.code, param=param
        )
    response = _json(family, payload, status=reply.status)
    if reply.retry_after is not None:
        response.headers["Retry-After"] = reply.retry_after
    if reply.retry_after_ms is not None:
        response.headers["retry-after-ms"] = str(reply.retry_after_ms)
    if family == "anthropic":
        # Anthropic mirrors the body's request_id in the header the SDK reads.
        response.headers["request-id"] = payload["request_id"]
    return response


async def _abort(request: web.Request) -> web.StreamResponse:
    """Close the socket without finishing the response (or without any response at all)."""
    transport = request.transport
    if transport is not None:
        transport.close()
    # aiohttp cancels this handler once it sees the connection gone (handler_cancellation);
    # returning earlier would make it try to finish the response on a closed socket.
    await asyncio.sleep(_ABORT_GRACE_S)
    raise ConnectionResetError("connection aborted by FakeUpstream")


def _record(request: web.Request, body: bytes) -> RecordedRequest:
    headers = {name.lower(): value for name, value in request.headers.items()}
    record = RecordedRequest(
        method=request.method,
        path=request.path,
        headers=headers,
        query=dict(request.query),
        body=body,
    )
    content_type = headers.get("content-type", "")
    if "json" in content_type and body:
        with contextlib.suppress(orjson.JSONDecodeError):
            record.json = orjson.loads(body)
    elif content_type.startswith("multipart/form-data"):
        record.form_items, record.file_name = _parse_multipart(body, content_type)
        record.form = dict(record.form_items)
    return record


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')


def _parse_multipart(
    body: bytes, content_type: str
) -> tuple[list[tuple[str, str | bytes]], str | None]:
    # Parsed from the raw bytes because the body was already read for the record.
    match = _BOUNDARY.search(content_type)
    if match is None:
        return [], None
    form: list[tuple[str, str | bytes]] = []
    file_name: str | None = None
    for part in body.split(b"--" + match.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        disposition = email.message.Message()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            disposition[name.strip()] = value.strip()
        field = disposition.get_param("name", header="content-disposition")
        if not isinstance(field, str):
            continue
        filename = disposition.get_filename()
        if filename is not None:
            form.append((field, content))
            file_name = filename
        else:
            form.append((field, content.decode("utf-8", "replace")))
    return form, file_name
