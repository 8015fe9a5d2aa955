"""Reading the JSON body of a request and parsing it, without holding up the event loop.

orjson parses a body in one call that holds the interpreter throughout: 30 MB of prompt took
86 ms, 16 MB of numbers 400 ms, and no other request was served meanwhile, not even from
another thread. So a body of up to `PARSE_INLINE_BYTES` is parsed in one go (a millisecond or
less), and a larger one by pieces no larger than `SLICE_BYTES`: long strings (prompts, images)
and long arrays of numbers (token ids) are cut out of the body and decoded slice by slice,
and only the rest, the skeleton, goes to orjson whole. A scan before any of it charges the
body against MAX_JSON_COST and MAX_JSON_DEPTH, so a body past either is refused before being
parsed. The pieces are parsed in short turns on the event loop itself, not in a worker thread
(`parse_large` says why).

`parse_body` is the way in for a route; `parse_large` is the sliced parse alone."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Generator
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from palyra.errors import InvalidRequest
from palyra.limits import MAX_JSON_COST, MAX_JSON_DEPTH, json_too_deep, may_be_too_deep

_M = TypeVar("_M", bound=BaseModel)

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


async def parse_body(request: web.Request, model: type[_M]) -> tuple[_M, int]:
    """The body validated as `model`, and its size in bytes. A body of up to
    `PARSE_INLINE_BYTES` is parsed in one go (a millisecond or less); a larger one in slices,
    letting other requests run in between (see `parse_large`)."""
    raw = await _read_body(request)
    if len(raw) <= PARSE_INLINE_BYTES:
        return _validate(_parse_small(raw), model), len(raw)
    return _validate(await parse_large(raw), model), len(raw)


async def parse_json(request: web.Request) -> tuple[dict[str, Any], int]:
    """The body as a JSON object, not yet validated, and its size in bytes: for dialects that
    keep the body as the client sent it (to pass it through natively) beside a validated
    model. Parsed as `parse_body` parses."""
    raw = await _read_body(request)
    data = _parse_small(raw) if len(raw) <= PARSE_INLINE_BYTES else await parse_large(raw)
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    return data, len(raw)


def validate(data: dict[str, Any], model: type[_M]) -> _M:
    """`data` validated as `model`; a clear 400 naming the first problem otherwise."""
    return _validate(data, model)


async def _read_body(request: web.Request) -> bytes | bytearray:
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


def _validate(data: Any, model: type[_M]) -> _M:
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def _validation_error(exc: ValidationError) -> InvalidRequest:
    """The first problem, at the path the client wrote (`messages[1].content[0]`), never at
    pydantic's (whose union branches show as `content.str` or `list[tagged-union[...]]`)."""
    errors = [(_client_path(e["loc"]), e) for e in exc.errors()]
    path, first = _most_telling(errors)
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    # `param` keeps the dotted form clients already match on.
    param = ".".join(str(p) for p in path) or None
    message = _reason(first, path)
    kinds = _kinds_expected(errors, path)
    if len(kinds) > 1 and first["type"].endswith("_type"):
        # Every branch of a union refused the value's type: say what it may be, not what
        # one branch wanted.
        message = "must be " + ", ".join(kinds[:-1]) + f" or {kinds[-1]}"
    problems = _count(errors)
    more = (
        f" (and {problems - 1} more problem{'s' if problems > 2 else ''})" if problems > 1 else ""
    )
    return InvalidRequest(f"{where}: {message}{more}" if where else message, param=param)


# What pydantic puts in a location for a union's branch: a type (`str`, `list[...]`,
# `literal['none','auto']`, `function-after[...]`) or a model's class name.
_BRANCH = re.compile(r"^(str|int|float|bool|none|bytes|dict|list)$|[\[(]|^[A-Z]")
# The things a tagged union tells apart, by the field that holds them.
_TAGGED = {
    "content": "content part",
    "tools": "tool",
    "tool_calls": "tool call",
    "tool_choice": "tool choice",
}


# Lists whose items are told apart by a function of their `type` (types.py): pydantic puts
# the chosen tag right after the item's index, with no label before it.
_TAG_AFTER_INDEX = frozenset({"tools", "tool_calls"})


def _client_path(loc: tuple[int | str, ...]) -> list[int | str]:
    path: list[int | str] = []
    tagged = False
    for part in loc:
        if isinstance(part, str) and _BRANCH.search(part):
            tagged = tagged or "tagged-union[" in part
            continue
        if isinstance(part, int) and path and path[-1] in _TAG_AFTER_INDEX:
            tagged = True
        elif tagged and isinstance(part, str):
            tagged = False  # the tag a tagged union chose: no field of the client's
            continue
        path.append(part)
    return path


_TYPE_NOUNS = {
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
}


def _kinds_expected(errors: list[tuple[list[int | str], Any]], path: list[int | str]) -> list[str]:
    """What the union branches at exactly `path` would each have taken, when each refused
    the value for its type (`content: 5`: a string or a list)."""
    kinds: list[str] = []
    for where, error in errors:
        noun = _TYPE_NOUNS.get(error["type"])
        if where == path and noun is not None and noun not in kinds:
            kinds.append(noun)
    return kinds


def _rank(kind: str) -> int:
    if kind.startswith("union_tag"):
        return 2
    # One branch of a union saying the value is not of its type is noise beside the others.
    return 0 if kind.endswith("_type") or kind == "literal_error" else 1


def _most_telling(errors: list[tuple[list[int | str], Any]]) -> tuple[list[int | str], Any]:
    """Of the errors at the first place that has any, the one that says most: a union's
    branches each report, and `should be a valid string` of one branch is noise beside the
    deeper problem of the branch the value had the shape of."""
    path = errors[0][0]
    same_place = [(p, e) for p, e in errors if p[: len(path)] == path]
    return max(same_place, key=lambda pe: (_rank(pe[1]["type"]), len(pe[0])))


def _count(errors: list[tuple[list[int | str], Any]]) -> int:
    # A union's branches reporting on one value are one problem.
    places = {tuple(p) for p, e in errors}
    noise = {
        place
        for place in places
        if any(other != place and other[: len(place)] == place for other in places)
    }
    return max(1, len(places - noise))


def _reason(error: Any, path: list[int | str]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    field = next((p for p in reversed(path) if isinstance(p, str)), "")
    what = _TAGGED.get(field, "type")
    if kind == "union_tag_invalid":
        expected = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        listed = ", ".join(expected[:-1]) + f" or {expected[-1]}" if len(expected) > 1 else ""
        return f"unknown {what} type {ctx.get('tag')!r}; expected {listed or expected[0]}"
    if kind == "union_tag_not_found":
        return f"a {what} needs a 'type'"
    noun = _TYPE_NOUNS.get(kind)
    if noun is not None:
        # (pydantic's words name its own classes: "instance of ImageURL".)
        return f"must be {noun}"
    return str(error["msg"]).removeprefix("Value error, ")


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
    # The brackets alone say "not too deep" far more cheaply than a walk (see
    # may_be_too_deep); the parsed value is walked only when they cannot.
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

_Steps = Generator[None, None, Any]


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


def _parse_large(raw: bytes | bytearray) -> _Steps:
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


def _scan_structure(sk: _Skeleton, start: int, stop: int) -> _Steps:
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


def _put_back(data: Any, sk: _Skeleton) -> _Steps:
    """Replace the markers in the parsed skeleton by the values cut out, decoded."""
    marker = sk.marker

    def value(placeholder: str) -> _Steps:
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


def _decode_array(raw: bytes | bytearray, start: int, end: int) -> _Steps:
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


def _decode_string(raw: bytes | bytearray, start: int, end: int) -> _Steps:
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
