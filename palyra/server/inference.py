"""The OpenAI-compatible inference routes: `/v1/chat/completions`, `/v1/embeddings`,
`/v1/audio/transcriptions`, `/v1/models`."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import warnings
from collections.abc import Generator
from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import BadContentDispositionHeader, BodyPartReader, HttpVersion11, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ValidationError

from palyra import tokens
from palyra.errors import InvalidRequest, PalyraError
from palyra.limits import (
    ALLOWED_TRANSFER_ENCODINGS,
    MAX_AUDIO_BYTES,
    MAX_FORM_FIELD_BYTES,
    MAX_FORM_PARTS,
    MAX_JSON_COST,
    MAX_JSON_DEPTH,
    json_too_deep,
    may_be_too_deep,
)
from palyra.routing import RouteInfo, Router, token_budget
from palyra.server import responses
from palyra.server.keys import GATEWAY, ROUTE, STARTED
from palyra.sse import DONE, encode_data
from palyra.types import (
    ChatRequest,
    EmbeddingsRequest,
    EmbeddingsResult,
    ProviderModelRole,
    TranscriptionRequest,
)

log = structlog.get_logger("palyra.inference")

M = TypeVar("M", bound=BaseModel)

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


async def parse_body(request: web.Request, model: type[M]) -> tuple[M, int]:
    """The body validated as `model`, and its size in bytes. A body of up to
    `PARSE_INLINE_BYTES` is parsed in one go (a millisecond or less); a larger one in slices,
    letting other requests run in between (see `parse_large`)."""
    raw = await read_body(request)
    if len(raw) <= PARSE_INLINE_BYTES:
        return _validate(_parse_small(raw), model), len(raw)
    return _validate(await parse_large(raw), model), len(raw)


async def read_body(request: web.Request) -> bytes | bytearray:
    """The body, at most `client_max_size` bytes (413 past it). aiohttp's `read` copies a
    body whole once it has it all (40-90 ms for 32 MB on a slow machine, the event loop held
    throughout); a large body is kept in the buffer it arrived in instead. That buffer grows
    a network chunk at a time, which the allocator does by remapping pages, not copying."""
    length = request.content_length
    if length is None or length <= PARSE_INLINE_BYTES:
        return await request.read()
    limit = request.client_max_size
    if length > limit:
        raise _body_too_large(f"{length} bytes", limit)
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        # (A compressed body arrives decompressed, longer than its Content-Length says.)
        if len(body) > limit:
            raise _body_too_large(f"more than {limit} bytes", limit)
    return body


def _body_too_large(size: str, limit: int) -> InvalidRequest:
    return InvalidRequest(
        f"request body too large: {size}, the limit is {limit}",
        status=413,
        code="request_too_large",
    )


def _validate(data: Any, model: type[M]) -> M:
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


# --- JSON bodies ----------------------------------------------------------------------
#
# orjson parses a body in one call that holds the interpreter throughout: 30 MB of prompt
# took 86 ms, 16 MB of numbers 400 ms, and no other request was served meanwhile, not even
# from another thread. So a body past PARSE_INLINE_BYTES is parsed by pieces no larger than
# SLICE_BYTES: long strings (prompts, images) and long arrays of numbers (token ids) are cut
# out of the body and decoded slice by slice, and only the rest, the skeleton, goes to orjson
# whole. A scan before any of it charges the body against MAX_JSON_COST and MAX_JSON_DEPTH,
# so a body past either is refused before being parsed.

PARSE_INLINE_BYTES = 128 * 1024
SLICE_BYTES = 256 * 1024
_LONG_STRING = 1024
_LONG_ARRAY = 256
# What a piece of JSON costs to parse, in units of MAX_JSON_COST (about 20 ns each on a slow
# core): a value parsed with the skeleton 3, one in an array parsed in slices 1 (it weighs
# on memory, not on any one parse), a string 3 more, an array or object 8 more.
_VALUE_COST, _SLICED_VALUE_COST, _STRING_COST, _CONTAINER_COST = 3, 1, 3, 8
_QUOTE, _BACKSLASH, _OPEN_ARRAY, _OPEN_OBJECT, _CLOSE_ARRAY = 0x22, 0x5C, 0x5B, 0x7B, 0x5D
_BRACKET = re.compile(rb"[\[\]{}]")
# A string's content up to its closing quote, escape by escape (possessive: no backtracking).
_STRING_BODY = re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)
_HIGH_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}")
_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_POSITION = re.compile(r":? line \d+ column \d+ \(char \d+\)$")


def _not_json(exc: orjson.JSONDecodeError | str) -> InvalidRequest:
    # A position in a slice or the skeleton is no position in the body: left out.
    reason = exc if isinstance(exc, str) else _POSITION.sub("", str(exc))
    return InvalidRequest(f"request body is not valid JSON: {reason}", code="invalid_json")


def _too_deep() -> InvalidRequest:
    return InvalidRequest(
        f"request body: JSON nested more than {MAX_JSON_DEPTH} levels deep "
        f"(the limit is {MAX_JSON_DEPTH})",
        code="json_too_deep",
    )


def _parse_small(raw: bytes | bytearray) -> Any:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    # The brackets alone say "not too deep" for a microsecond or so (see may_be_too_deep);
    # the parsed value is walked only when they cannot.
    if may_be_too_deep(raw) and json_too_deep(data):
        raise _too_deep()
    return data


class _Skeleton:
    """The body with its long strings and arrays cut out, and what the scan charged."""

    __slots__ = ("copied", "cost", "depth", "key_cut", "marker", "parts", "raw", "spans")

    def __init__(self, raw: bytes | bytearray) -> None:
        self.raw = raw
        self.cost = 0
        self.depth = 0
        self.copied = 0
        self.parts: list[bytes | bytearray] = []
        self.spans: list[tuple[bool, int, int]] = []  # (is a string, start, end) in raw
        self.key_cut = False
        # What stands in for a cut-out value: a string no client can guess.
        self.marker = "\x00" + secrets.token_hex(8) + ":"

    def charge(self, units: int) -> None:
        self.cost += units
        if self.cost > MAX_JSON_COST:
            raise InvalidRequest(
                f"request body: too much JSON to parse (more than {MAX_JSON_COST} units, the "
                "limit: each value counts 3, or 1 in a long array of numbers; each string 3 "
                "more, each array or object 8 more)",
                status=413,
                code="request_too_large",
            )

    def cut(self, is_string: bool, start: int, end: int) -> None:
        self.parts.append(self.raw[self.copied : start])
        self.parts.append(orjson.dumps(self.marker + str(len(self.spans))))
        self.spans.append((is_string, start, end))
        self.copied = end


# A run of the parse holds the event loop for about this long before letting others run.
_TURN_S = 0.002

Steps = Generator[None, None, Any]


async def parse_large(raw: bytes | bytearray) -> Any:
    """`orjson.loads(raw)`, with the limits checked first, on the event loop in turns of
    `_TURN_S`; no single step takes long but the skeleton's parse (MAX_JSON_COST bounds it)
    and the copying of the longest string into one.

    Turns on the event loop rather than a worker thread: most of this is Python, and a thread
    running Python takes the interpreter from the event loop for 5 ms at every switch."""
    steps = _parse_large(raw)
    turn_ends = time.perf_counter() + _TURN_S
    try:
        while True:
            next(steps)
            if time.perf_counter() > turn_ends:
                await asyncio.sleep(0)
                turn_ends = time.perf_counter() + _TURN_S
    except StopIteration as done:
        return done.value


def _parse_large(raw: bytes | bytearray) -> Steps:
    sk = _Skeleton(raw)
    pos = 0
    while True:
        quote = raw.find(b'"', pos)
        yield from _scan_structure(sk, pos, len(raw) if quote < 0 else quote)
        if quote < 0:
            break
        end = (yield from _string_end(raw, quote)) + 1
        sk.charge(_STRING_COST)
        if end - quote > _LONG_STRING:
            sk.cut(True, quote, end)
            after = _WHITESPACE.match(raw, end)
            at = after.end() if after else end
            sk.key_cut = sk.key_cut or raw[at : at + 1] == b":"
        pos = end
        yield
    if sk.spans:
        sk.parts.append(raw[sk.copied :])
    yield
    try:
        data = orjson.loads(b"".join(sk.parts) if sk.spans else raw)
    except orjson.JSONDecodeError as exc:
        raise _not_json(exc) from None
    if sk.spans:
        data = yield from _put_back(data, sk)
    return data


def _scan_structure(sk: _Skeleton, start: int, stop: int) -> Steps:
    """Charge and depth-check what lies between two strings, cutting out long arrays."""
    raw = sk.raw
    if stop - start <= _LONG_ARRAY:
        opens = raw.count(b"[", start, stop) + raw.count(b"{", start, stop)
        if sk.depth + opens <= MAX_JSON_DEPTH:
            sk.charge(_VALUE_COST * raw.count(b",", start, stop) + _CONTAINER_COST * opens)
            sk.depth += opens - raw.count(b"]", start, stop) - raw.count(b"}", start, stop)
            return
    # Long, or deep enough to matter: bracket by bracket. An array with no bracket inside
    # holds only numbers and literals here (a string would have ended the stretch), so a
    # long one can be parsed apart, in slices, and weighs less.
    depth = sk.depth
    last_open = -1
    sliced = 0  # commas in the arrays cut out
    for window in range(start, stop, SLICE_BYTES):
        for match in _BRACKET.finditer(raw, window, min(stop, window + SLICE_BYTES)):
            at = match.start()
            bracket = raw[at]
            if bracket in (_OPEN_ARRAY, _OPEN_OBJECT):
                depth += 1
                if depth > MAX_JSON_DEPTH:
                    raise _too_deep()
                sk.charge(_CONTAINER_COST)
                last_open = at if bracket == _OPEN_ARRAY else -1
            else:
                depth -= 1
                if bracket == _CLOSE_ARRAY and last_open >= 0 and at - last_open > _LONG_ARRAY:
                    commas = raw.count(b",", last_open, at)
                    sk.charge(_SLICED_VALUE_COST * (commas + 1))
                    sliced += commas
                    sk.cut(False, last_open, at + 1)
                last_open = -1
            yield
        yield
    sk.depth = depth
    commas = 0
    for window in range(start, stop, SLICE_BYTES):
        commas += raw.count(b",", window, min(stop, window + SLICE_BYTES))
        yield
    sk.charge(_VALUE_COST * (commas - sliced))


def _string_end(raw: bytes | bytearray, quote: int) -> Generator[None, None, int]:
    """Where the string opened at `quote` closes."""
    end = raw.find(b'"', quote + 1)
    if end < 0:
        raise _not_json("a string is not closed")
    if raw[end - 1] != _BACKSLASH:
        return end
    # The quote found is escaped, perhaps: step escape by escape instead, a slice at a time.
    pos = quote + 1
    while True:
        match = _STRING_BODY.match(raw, pos, min(len(raw), pos + SLICE_BYTES))
        pos = match.end() if match else pos
        if pos >= len(raw) - 1 and (pos >= len(raw) or raw[pos] != _QUOTE):
            raise _not_json("a string is not closed")
        if raw[pos] == _QUOTE:
            return pos
        yield


def _put_back(data: Any, sk: _Skeleton) -> Steps:
    """Replace the markers in the parsed skeleton by the values cut out, decoded."""
    marker = sk.marker

    def value(placeholder: str) -> Steps:
        is_string, start, end = sk.spans[int(placeholder[len(marker) :])]
        if is_string:
            return (yield from _decode_string(sk.raw, start + 1, end - 1))
        return (yield from _decode_array(sk.raw, start + 1, end - 1))

    if isinstance(data, str):
        return (yield from value(data)) if data.startswith(marker) else data
    stack: list[Any] = [data]
    while stack:
        node = stack.pop()
        yield
        if isinstance(node, list):
            for index, item in enumerate(node):
                if isinstance(item, str):
                    if item.startswith(marker):
                        node[index] = yield from value(item)
                        yield
                elif isinstance(item, (list, dict)):
                    stack.append(item)
                if not index % 1024:
                    yield
            continue
        if sk.key_cut and any(key.startswith(marker) for key in node):
            pairs = []
            for key, item in node.items():
                pairs.append(((yield from value(key)) if key.startswith(marker) else key, item))
            node.clear()
            node.update(pairs)
        for key, item in node.items():
            if isinstance(item, str):
                if item.startswith(marker):
                    node[key] = yield from value(item)
                    yield
            elif isinstance(item, (list, dict)):
                stack.append(item)
    return data


def _decode_array(raw: bytes | bytearray, start: int, end: int) -> Steps:
    # No strings or brackets inside: every comma separates two values, so any comma cuts.
    values: list[Any] = []
    while True:
        cut = raw.find(b",", start + SLICE_BYTES, end) if end - start > SLICE_BYTES else -1
        try:
            values.extend(orjson.loads(b"[" + raw[start : end if cut < 0 else cut] + b"]"))
        except orjson.JSONDecodeError as exc:
            raise _not_json(exc) from None
        if cut < 0:
            return values
        start = cut + 1
        yield


def _decode_string(raw: bytes | bytearray, start: int, end: int) -> Steps:
    pieces: list[str] = []
    while True:
        cut = end if end - start <= SLICE_BYTES else _string_cut(raw, start, end)
        try:
            pieces.append(orjson.loads(b'"' + raw[start:cut] + b'"'))
        except orjson.JSONDecodeError as exc:
            raise _not_json(exc) from None
        if cut >= end:
            break
        start = cut
        yield
    yield
    return pieces[0] if len(pieces) == 1 else "".join(pieces)


def _string_cut(raw: bytes | bytearray, start: int, end: int) -> int:
    """A place near `start + SLICE_BYTES` where a string's content can be cut in two that
    decode to its two halves: not inside a UTF-8 sequence, nor inside an escape, nor between
    the two escapes of a surrogate pair. `start` is such a place."""
    at = start + SLICE_BYTES
    for cut in range(at, min(end, at + 32)):
        byte = raw[cut]
        if 0x80 <= byte < 0xC0:
            continue  # inside a UTF-8 sequence
        if byte != _BACKSLASH:
            # Not in an escape: no escape (at most 6 bytes) began in the 6 bytes before.
            if raw.find(b"\\", max(start, cut - 6), cut) < 0:
                return cut
        elif _backslashes_before(raw, start, cut) % 2 == 0 and not _HIGH_SURROGATE.fullmatch(
            raw, cut - 6, cut
        ):
            # An escape starts here (an even run of backslashes before it are escapes of
            # their own), and it is not the second half of a surrogate pair.
            return cut
    return end


def _backslashes_before(raw: bytes | bytearray, start: int, end: int) -> int:
    window = raw[max(start, end - 64) : end]
    run = len(window) - len(window.rstrip(b"\\"))
    if run == len(window) and end - 64 > start:
        window = raw[start:end]
        run = len(window) - len(window.rstrip(b"\\"))
    return run


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
            await tokens.prepare_texts(body.texts(), budget=_smallest_budget(router, body))
            routed = await router.embed(body)
    request[ROUTE] = routed.route
    headers = route_headers(routed.route, started)
    if _answer_size(routed.value) <= INLINE_ANSWER_NUMBERS:
        payload = responses.embeddings(routed.value, routed.route.model_id, body.encoding_format)
        return json_response(payload, headers)
    return await _stream_embeddings(
        request, routed.value, routed.route.model_id, body.encoding_format, headers
    )


def _smallest_budget(router: Router, body: EmbeddingsRequest) -> int:
    """The smallest token budget among the request's model and its fallbacks: an input with
    more bytes than this has its tokens counted (the router's rule)."""
    model = router.registry.resolve(body.model, ProviderModelRole.EMBEDDINGS)
    budgets = [token_budget(router.config, model)]
    for fallback_id in model.fallbacks:
        fallback = router.registry.get(fallback_id)
        if fallback is not None:
            budgets.append(token_budget(router.config, fallback))
    return min(budgets)


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
    body = await _read_transcription(request)
    routed = await request.app[GATEWAY].router.transcribe(body)
    request[ROUTE] = routed.route
    headers = route_headers(routed.route, started)
    if body.response_format == "text":
        return web.Response(text=routed.value.text, content_type="text/plain", headers=headers)
    return json_response(responses.transcription(routed.value, body.response_format), headers)


# --- multipart bodies -----------------------------------------------------------------

_PART_CHUNK = 64 * 1024

# aiohttp reports a malformed Content-Disposition as a warning, printed on stderr outside
# the structured log, and goes on with the part unnamed. `_read_form` turns it into a 400;
# everywhere else (aiohttp's own look at the first part) it is noise.
warnings.filterwarnings("ignore", category=BadContentDispositionHeader)


def _too_large(what: str, limit: int, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(
        f"{what}: larger than {limit} bytes (the limit)",
        status=413,
        code="request_too_large",
        param=param,
    )


async def _read_transcription(request: web.Request) -> TranscriptionRequest:
    if not request.content_type.startswith("multipart/"):
        raise InvalidRequest("send multipart/form-data with `file` and `model`", param="file")
    boundary = parse_mimetype(request.headers.get("Content-Type", "")).parameters.get("boundary")
    if not boundary:
        raise InvalidRequest(
            "Content-Type: multipart/form-data needs a boundary parameter "
            '(multipart/form-data; boundary="...")'
        )
    # aiohttp bounds each part by client_max_size, not the body: the whole body counts here.
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        raise _too_large("request body", limit)
    try:
        return await _read_form(request, limit)
    except (ValueError, RuntimeError, AssertionError, HttpProcessingError, ConnectionError) as exc:
        # aiohttp's word for a malformed or cut-short body (its own 400s included); a
        # ConnectionError means the client went away, and this answer will not reach it.
        reason = str(exc)[:200] or type(exc).__name__
        raise InvalidRequest(f"multipart body is malformed or cut short: {reason}") from None


async def _read_form(request: web.Request, limit: int) -> TranscriptionRequest:
    fields: dict[str, str] = {}
    audio: bytes | None = None
    audio_name, content_type = "audio", "application/octet-stream"
    reader = await request.multipart()
    parts = 0
    async for part in reader:
        parts += 1
        if parts > MAX_FORM_PARTS:
            raise InvalidRequest(f"multipart body: more than {MAX_FORM_PARTS} parts (the limit)")
        if not isinstance(part, BodyPartReader):
            raise InvalidRequest(f"multipart body: part {parts} is itself multipart")
        with warnings.catch_warnings(record=True) as caught:
            # aiohttp warns (on stderr, outside the log) about a malformed disposition and
            # carries on without a name: a malformed form, to us. No await in this block, so
            # no other request's warnings are caught here.
            warnings.simplefilter("always", BadContentDispositionHeader)
            name, filename = part.name, part.filename
        if any(issubclass(w.category, BadContentDispositionHeader) for w in caught):
            raise InvalidRequest(
                f"multipart body: part {parts} has a malformed Content-Disposition header"
            )
        for header in ("Content-Transfer-Encoding", "Content-Encoding"):
            encoding = part.headers.get(header, "").strip().lower()
            if encoding and encoding not in ALLOWED_TRANSFER_ENCODINGS | {"identity"}:
                raise InvalidRequest(
                    f"{name or f'part {parts}'}: {header} {encoding!r} is not supported "
                    "(send the part as it is, binary)",
                    param=name,
                )
        if name == "file":
            audio = await _read_part(request, part, MAX_AUDIO_BYTES, "file", limit)
            audio_name = filename or audio_name
            content_type = part.headers.get("Content-Type", content_type)
        else:
            value = await _read_part(request, part, MAX_FORM_FIELD_BYTES, name, limit)
            if name is not None:
                fields[name] = value.decode("utf-8", "replace")
    _check_total(request, limit)
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
        filename=audio_name,
        content_type=content_type,
        response_format=response_format,  # type: ignore[arg-type]
        language=fields.get("language") or None,
        prompt=fields.get("prompt") or None,
        temperature=temperature,
    )


async def _read_part(
    request: web.Request, part: BodyPartReader, cap: int, name: str | None, limit: int
) -> bytes:
    """A part's bytes as sent, read a chunk at a time so that neither the part's own cap nor
    the body's total is ever passed by more than a chunk."""
    chunks: list[bytes] = []
    size = 0
    while not part.at_eof():
        chunk = await part.read_chunk(_PART_CHUNK)
        size += len(chunk)
        if size > cap:
            raise _too_large(name or "a multipart part", cap, name)
        _check_total(request, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _check_total(request: web.Request, limit: int) -> None:
    # What has arrived of the body so far, headers and boundaries included.
    if request.content.total_bytes > limit:
        raise _too_large("request body", limit)


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


async def expect_continue(request: web.Request) -> None:
    """`Expect: 100-continue` is answered as aiohttp does; any other expectation is ignored,
    as RFC 9110 allows. aiohttp's own handler refuses it with a 417 built from the header's
    text, which fails on bytes that are not UTF-8: a 500, outside every middleware."""
    expect = request.headers.get("Expect", "")
    if request.version == HttpVersion11 and expect.lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer's own body has not started


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions, expect_handler=expect_continue)
    app.router.add_post("/v1/embeddings", embeddings, expect_handler=expect_continue)
    app.router.add_post("/v1/audio/transcriptions", transcriptions, expect_handler=expect_continue)
    app.router.add_get("/v1/models", list_models, expect_handler=expect_continue)
