"""A value valid against a JSON Schema, derived from a seed: what the deterministic provider
answers when a request asks for structured output or makes it call a tool.

Same schema and seed, same value; a different seed changes the strings, numbers, booleans and
enum choices, never the shape. Built for the schemas clients send: those pydantic and zod emit,
and OpenAI's strict subset.

Kept: `type` (one or a list), `enum`, `const`, `properties`, `required`,
`additionalProperties`, `minProperties`, `items`, `prefixItems`, `minItems`, `maxItems`,
`uniqueItems`, `anyOf`, `oneOf` (the first branch), `allOf` (merged), `$ref` into the same
document (`#`, `#/$defs/...`, `#/definitions/...`, any JSON pointer), `minLength`,
`maxLength`, `pattern`, `format` (date-time, date, time, duration, email, hostname, ipv4,
ipv6, uri, uuid and a few more), `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`,
`multipleOf` (integers). Left out: `not`, `if`/`then`/`else`, `contains`, `dependent*`,
`patternProperties`, `propertyNames`, references to other documents, and `oneOf` branches that
overlap (the value may match more than the first). A schema that admits no value this can
build is a `SchemaError` naming where.

Optional properties are filled near the top and left out further down, arrays hold two items
near the top, one lower and their minimum at depth, and a nullable value is null at depth:
recursive models (a tree of nodes) come out finite.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from palyra.limits import MAX_INTEGER

# Nesting of values past which optional parts are left out, and arrays and unions shrink.
_FULL_DEPTH = 3
_SHRINK_DEPTH = 6
# Past these a schema cannot be answered: it is infinitely recursive, or asks for too much.
MAX_DEPTH = 48
MAX_VALUES = 20_000
MAX_STRING_CHARS = 65_536
_MAX_REFS = 64


class SchemaError(ValueError):
    """The schema admits no value this module can build (or one too large to send)."""


def instance(schema: Any, seed: str | bytes) -> Any:
    """A value valid against `schema`, the same for the same `seed`."""
    if isinstance(seed, str):
        seed = seed.encode("utf-8", "replace")
    try:
        return _Builder(schema, hashlib.sha256(seed).digest()).build(schema, "$", 0)
    except SchemaError:
        raise
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        # A keyword holding what it never should (`"minItems": "two"`), or a loop this did
        # not see coming: the schema's fault, said as such, never a crash.
        raise SchemaError(
            f"the schema holds a keyword this cannot read ({type(exc).__name__}: {exc})"
        ) from None


def instance_json(schema: Any, seed: str | bytes) -> str:
    """`instance` as JSON text."""
    value = instance(schema, seed)
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:  # a `const` or `enum` value past 64 bits, say
        raise SchemaError(f"the value cannot be sent as JSON ({exc})") from None


class _Builder:
    def __init__(self, root: Any, seed: bytes) -> None:
        self._root = root
        self._seed = seed
        self._values = 0

    # --- choices ---------------------------------------------------------------------------

    def _digest(self, path: str) -> bytes:
        return hashlib.blake2b(path.encode(), key=self._seed, digest_size=16).digest()

    def _pick(self, path: str, n: int) -> int:
        return int.from_bytes(self._digest(path)[:8], "big") % n

    # --- schemas ---------------------------------------------------------------------------

    def _lookup(self, ref: Any, path: str) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaError(f"{path}: $ref {ref!r} is not a reference into the same schema")
        node = self._root
        pointer = ref[1:]
        if pointer and not pointer.startswith("/"):
            raise SchemaError(f"{path}: $ref {ref!r} is not a JSON pointer")
        for raw in pointer.split("/")[1:] if pointer else ():
            key = raw.replace("%25", "%").replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise SchemaError(f"{path}: $ref {ref!r} points at nothing in the schema")
        return node

    def _resolve(self, schema: Any, path: str, hops: int = 0) -> Any:
        """The schema with its `$ref`s followed and its `allOf` merged in."""
        if hops > _MAX_REFS:
            raise SchemaError(f"{path}: $ref refers to itself without end")
        for _ in range(_MAX_REFS):
            if not isinstance(schema, dict) or "$ref" not in schema:
                break
            target = self._lookup(schema["$ref"], path)
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            merge = siblings and isinstance(target, dict)
            schema = _merge(target, siblings) if merge else target
        else:
            raise SchemaError(f"{path}: $ref refers to itself without end")
        if isinstance(schema, dict) and isinstance(schema.get("allOf"), list):
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                resolved = self._resolve(part, path, hops + 1)
                if resolved is False:
                    return False
                if isinstance(resolved, dict):
                    merged = _merge(merged, resolved)
            return merged
        return schema

    # --- values ----------------------------------------------------------------------------

    def build(self, schema: Any, path: str, depth: int, hops: int = 0) -> Any:
        # `hops`: unions followed without a value built in between ({"anyOf": [{"$ref": "#"}]}).
        if hops > _MAX_REFS:
            raise SchemaError(f"{path}: a union refers to itself without end")
        if depth > MAX_DEPTH:
            raise SchemaError(
                f"{path}: the schema needs a value nested more than {MAX_DEPTH} levels deep "
                "(a required property that refers to itself?)"
            )
        self._values += 1
        if self._values > MAX_VALUES:
            raise SchemaError(f"the schema needs more than {MAX_VALUES} values in one answer")
        schema = self._resolve(schema, path)
        if schema is False:
            raise SchemaError(f"{path}: the schema admits no value (false)")
        if not isinstance(schema, dict):
            schema = {}
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list):
            if not enum:
                raise SchemaError(f"{path}: enum is empty")
            return enum[self._pick(path, len(enum))]
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list):
                if not branches:
                    raise SchemaError(f"{path}: {key} is empty")
                rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
                branch = self._branch(branches, path, depth)
                if isinstance(branch, dict) and _constrains(rest):
                    branch = _merge(rest, branch)
                return self.build(branch, path, depth, hops + 1)
        kind = self._type(schema, depth)
        if kind == "object":
            return self._object(schema, path, depth)
        if kind == "array":
            return self._array(schema, path, depth)
        if kind == "string":
            return self._string(schema, path)
        if kind in ("integer", "number"):
            return self._number(schema, path, integer=kind == "integer")
        if kind == "boolean":
            return self._pick(path, 2) == 0
        if kind == "null":
            return None
        raise SchemaError(f"{path}: unknown type {kind!r}")

    def _branch(self, branches: list[Any], path: str, depth: int) -> Any:
        resolved = [self._resolve(b, path) for b in branches]
        usable = [b for b in resolved if b is not False]
        if not usable:
            raise SchemaError(f"{path}: no branch of the union admits a value")
        if depth >= _SHRINK_DEPTH:
            # Deep down, the branch that ends soonest: null, else a scalar.
            for wanted in ("null", "scalar"):
                for branch in usable:
                    if _shape(branch) == wanted:
                        return branch
        for branch in usable:
            if _shape(branch) != "null":
                return branch
        return usable[0]

    def _type(self, schema: dict[str, Any], depth: int) -> str:
        declared = schema.get("type")
        if isinstance(declared, list):
            others = [t for t in declared if t != "null"]
            if not others or ("null" in declared and depth >= _SHRINK_DEPTH):
                return "null"
            return str(others[0])
        if isinstance(declared, str):
            return declared
        return _implied_type(schema)

    def _object(self, schema: dict[str, Any], path: str, depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = [r for r in schema.get("required") or () if isinstance(r, str)]
        extra = schema.get("additionalProperties", True)
        out: dict[str, Any] = {}
        for name, sub in properties.items():
            if name in required or (depth < _FULL_DEPTH and self._resolve(sub, path) is not False):
                out[name] = self.build(sub, f"{path}.{name}", depth + 1)
        for name in required:
            if name not in out:
                if extra is False:
                    raise SchemaError(f"{path}: {name!r} is required but not allowed")
                out[name] = self.build(
                    extra if extra is not True else {}, f"{path}.{name}", depth + 1
                )
        wanted = int(schema.get("minProperties") or 0)
        if not properties and isinstance(extra, dict) and depth < _FULL_DEPTH:
            wanted = max(wanted, 1)  # a map (dict[str, X]): show an entry
        index = 0
        while len(out) < wanted:
            if extra is False:
                raise SchemaError(f"{path}: minProperties {wanted} but only {len(out)} allowed")
            index += 1
            key = f"key{index}"
            if key not in out:
                value_schema = extra if isinstance(extra, dict) else {}
                out[key] = self.build(value_schema, f"{path}.{key}", depth + 1)
        return out

    def _array(self, schema: dict[str, Any], path: str, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        items = schema.get("items", True)
        if isinstance(items, list):  # draft 4-7 tuples
            prefix, items = items, schema.get("additionalItems", True)
        prefix = prefix if isinstance(prefix, list) else []
        least = int(schema.get("minItems") or 0)
        most = schema.get("maxItems")
        usual = 2 if depth < _FULL_DEPTH else 1 if depth < _SHRINK_DEPTH else 0
        count = max(least, len(prefix) if prefix else usual)
        if isinstance(most, int):
            count = min(count, most)
        if items is False:
            count = min(count, len(prefix))
        if count < least:
            raise SchemaError(f"{path}: minItems {least} cannot be met")
        if count > MAX_VALUES:
            raise SchemaError(f"{path}: minItems {least}; at most {MAX_VALUES} items in an answer")
        unique = schema.get("uniqueItems") is True
        out: list[Any] = []
        seen: set[bytes] = set()
        for i in range(count):
            item_schema = prefix[i] if i < len(prefix) else items
            value = self.build(item_schema, f"{path}[{i}]", depth + 1)
            if unique:
                # Another seed for the item until it differs from those before it.
                for attempt in range(1, 9):
                    key = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
                    if key not in seen:
                        break
                    value = self.build(item_schema, f"{path}[{i}]" + "'" * attempt, depth + 1)
                else:
                    raise SchemaError(f"{path}: cannot find {count} different items (uniqueItems)")
                seen.add(key)
            out.append(value)
        return out

    def _string(self, schema: dict[str, Any], path: str) -> str:
        least = int(schema.get("minLength") or 0)
        most = schema.get("maxLength")
        if least > MAX_STRING_CHARS:
            raise SchemaError(f"{path}: minLength {least}; at most {MAX_STRING_CHARS} here")
        digest = self._digest(path)
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            return _matching(pattern, least, most if isinstance(most, int) else None, path)
        make = _FORMATS.get(str(schema.get("format")))
        if make is not None:
            return make(digest)
        # Named after its property (an array's items after the array's).
        label = _INDEXES.sub("", path).rsplit(".", 1)[-1]
        if not label or label.startswith("$"):
            label = "text"
        text = f"{label} {digest.hex()[:6]}"
        if len(text) < least:
            text += "x" * (least - len(text))
        if isinstance(most, int) and len(text) > most:
            text = text[:most]
        return text

    def _number(self, schema: dict[str, Any], path: str, *, integer: bool) -> int | float:
        low, high = schema.get("minimum"), schema.get("maximum")
        above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        # Draft 4 spelled exclusive bounds as booleans beside minimum/maximum.
        if isinstance(above, bool):
            above, low = (low, None) if above else (None, low)
        if isinstance(below, bool):
            below, high = (high, None) if below else (None, high)
        nums = (int, float)
        lo = low if isinstance(low, nums) and not isinstance(low, bool) else None
        hi = high if isinstance(high, nums) and not isinstance(high, bool) else None
        xlo = above if isinstance(above, nums) and not isinstance(above, bool) else None
        xhi = below if isinstance(below, nums) and not isinstance(below, bool) else None
        fraction = (int.from_bytes(self._digest(path)[:4], "big") % 800 + 100) / 1000
        if integer:
            lows = [math.ceil(v) for v in (lo,) if v is not None]
            lows += [math.floor(v) + 1 for v in (xlo,) if v is not None]
            highs = [math.floor(v) for v in (hi,) if v is not None]
            highs += [math.ceil(v) - 1 for v in (xhi,) if v is not None]
            bottom, top = _span(max(lows, default=None), min(highs, default=None), 100)
            if bottom > MAX_INTEGER or top < -MAX_INTEGER - 1:
                raise SchemaError(f"{path}: no integer within the bounds fits in 64 bits")
            bottom, top = max(bottom, -MAX_INTEGER - 1), min(top, MAX_INTEGER)
            step = schema.get("multipleOf")
            if isinstance(step, int) and not isinstance(step, bool) and step > 0:
                first = -(-bottom // step) * step
                if first > top:
                    raise SchemaError(f"{path}: no multiple of {step} between {bottom} and {top}")
                return int(first + step * self._pick(path, min((top - first) // step + 1, 100)))
            if bottom > top:
                raise SchemaError(f"{path}: no integer between the bounds")
            return int(bottom + self._pick(path, min(top - bottom + 1, 1000)))
        floor_ = max([v for v in (lo, xlo) if v is not None], default=None)
        ceiling = min([v for v in (hi, xhi) if v is not None], default=None)
        start, end = _span(floor_, ceiling, 100.0)
        if start > end or (start == end and (xlo == start or xhi == end)):
            raise SchemaError(f"{path}: no number between the bounds")
        value = float(round(start + (end - start) * fraction, 2))
        if not _within(value, lo, hi, xlo, xhi):
            value = float(start / 2 + end / 2)
        if not math.isfinite(value):
            raise SchemaError(f"{path}: no finite number within the bounds")
        return value


# --- helpers ---------------------------------------------------------------------------------

_INDEXES = re.compile(r"\[\d+\]'*")
_KEYWORD_TYPES = (
    ("object", ("properties", "required", "additionalProperties", "minProperties")),
    ("array", ("items", "prefixItems", "minItems", "maxItems", "uniqueItems")),
    ("string", ("minLength", "maxLength", "pattern", "format")),
    ("number", ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")),
)


def _implied_type(schema: dict[str, Any]) -> str:
    for kind, keywords in _KEYWORD_TYPES:
        if any(k in schema for k in keywords):
            return kind
    return "string"  # anything goes: a string reads best


def _shape(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "scalar"
    if "const" in schema or "enum" in schema:
        return "null" if schema.get("const", 0) is None and "enum" not in schema else "scalar"
    declared = schema.get("type")
    if declared == "null" or declared == ["null"]:
        return "null"
    if "$ref" in schema or "anyOf" in schema or "oneOf" in schema or "allOf" in schema:
        return "nested"
    kind = declared if isinstance(declared, str) else _implied_type(schema)
    return "nested" if kind in ("object", "array") else "scalar"


def _constrains(schema: dict[str, Any]) -> bool:
    return any(k in schema for _, keywords in _KEYWORD_TYPES for k in keywords) or "type" in schema


def _merge(base: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in more.items():
        if key == "properties" and isinstance(value, dict):
            merged[key] = {**(merged.get(key) or {}), **value}
        elif key == "required" and isinstance(value, list):
            merged[key] = list(dict.fromkeys([*(merged.get(key) or []), *value]))
        elif key in ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"):
            merged[key] = max(value, merged[key]) if key in merged else value
        elif key in ("maximum", "exclusiveMaximum", "maxLength", "maxItems"):
            merged[key] = min(value, merged[key]) if key in merged else value
        else:
            merged[key] = value
    return merged


def _span(low: Any, high: Any, width: Any) -> tuple[Any, Any]:
    if low is None and high is None:
        return 0 * width, width
    if low is None:
        return high - width, high
    if high is None:
        return low, low + width
    return low, high


def _within(value: float, lo: Any, hi: Any, xlo: Any, xhi: Any) -> bool:
    return (
        (lo is None or value >= lo)
        and (hi is None or value <= hi)
        and (xlo is None or value > xlo)
        and (xhi is None or value < xhi)
    )


def _date(d: bytes) -> str:
    return f"{2020 + d[0] % 10}-{1 + d[1] % 12:02d}-{1 + d[2] % 28:02d}"


def _time(d: bytes) -> str:
    return f"{d[3] % 24:02d}:{d[4] % 60:02d}:{d[5] % 60:02d}Z"


_FORMATS: dict[str, Callable[[bytes], str]] = {
    "date-time": lambda d: f"{_date(d)}T{_time(d)}",
    "date": _date,
    "time": _time,
    "duration": lambda d: f"P{d[0] % 30}DT{d[1] % 24}H{d[2] % 60}M",
    "email": lambda d: f"user.{d.hex()[:6]}@example.com",
    "idn-email": lambda d: f"user.{d.hex()[:6]}@example.com",
    "hostname": lambda d: f"host-{d.hex()[:6]}.example.com",
    "idn-hostname": lambda d: f"host-{d.hex()[:6]}.example.com",
    "ipv4": lambda d: f"192.0.2.{d[0] % 254 + 1}",
    "ipv6": lambda d: f"2001:db8::{d[0] % 0xFFFF + 1:x}",
    "uri": lambda d: f"https://example.com/{d.hex()[:8]}",
    "url": lambda d: f"https://example.com/{d.hex()[:8]}",
    "iri": lambda d: f"https://example.com/{d.hex()[:8]}",
    "uri-reference": lambda d: f"/{d.hex()[:8]}",
    "iri-reference": lambda d: f"/{d.hex()[:8]}",
    "uri-template": lambda d: "https://example.com/{id}",
    "uuid": lambda d: str(uuid.UUID(bytes=d[:16], version=4)),
    "json-pointer": lambda d: f"/{d.hex()[:4]}",
    "relative-json-pointer": lambda d: f"0/{d.hex()[:4]}",
    "regex": lambda d: "^[a-z]+$",
    "byte": lambda d: base64.b64encode(d[:9]).decode(),
    "base64": lambda d: base64.b64encode(d[:9]).decode(),
    "binary": lambda d: d.hex()[:12],
    "password": lambda d: f"secret-{d.hex()[:8]}",
}


def _matching(pattern: str, least: int, most: int | None, path: str) -> str:
    """A string `pattern` finds (JSON Schema patterns are not anchored) within the lengths."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise SchemaError(
            f"{path}: pattern {pattern!r} is not a regular expression ({exc})"
        ) from None
    candidates: list[str] = []
    for extra in (0, 1, 3, 8):
        try:
            candidates.append(_from_regex(pattern, extra))
        except (SchemaError, re.error, TypeError, ValueError, IndexError):
            break
    candidates += ["a", "0", "A", "a0", "text"]
    for text in candidates:
        if least <= len(text) and (most is None or len(text) <= most) and compiled.search(text):
            return text
    raise SchemaError(f"{path}: cannot build a string that pattern {pattern!r} matches")


def _from_regex(pattern: str, extra: int) -> str:
    """The shortest-ish string `pattern` matches, with each open repetition taken `extra`
    more times than its minimum."""
    from re import _constants as c  # type: ignore[attr-defined]
    from re import _parser  # type: ignore[attr-defined]

    groups: dict[int, str] = {}

    def one(items: Any) -> str:
        out: list[str] = []
        for op, arg in items:
            if op is c.LITERAL:
                out.append(chr(arg))
            elif op is c.NOT_LITERAL:
                out.append("a" if arg != ord("a") else "b")
            elif op is c.ANY:
                out.append("a")
            elif op is c.IN:
                out.append(_in_class(arg, c))
            elif op is c.BRANCH:
                out.append(one(arg[1][0]))
            elif op is c.SUBPATTERN:
                group, _, _, sub = arg
                text = one(sub)
                if group is not None:
                    groups[group] = text
                out.append(text)
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
                low, high, sub = arg
                times = min(low + extra, high) if extra else low
                out.append("".join(one(sub) for _ in range(times)))
            elif op is c.GROUPREF:
                out.append(groups.get(arg, ""))
            elif op is c.CATEGORY:
                out.append(_CATEGORY_CHARS.get(str(arg), "a"))
            elif op in (c.AT, c.ASSERT, c.ASSERT_NOT):
                continue
            elif op is getattr(c, "ATOMIC_GROUP", None):
                out.append(one(arg))
            else:
                raise SchemaError(f"pattern construct {op} is not supported")
            if sum(map(len, out)) > MAX_STRING_CHARS:
                raise SchemaError("pattern asks for too long a string")
        return "".join(out)

    return one(_parser.parse(pattern))


_CATEGORY_CHARS = {
    "CATEGORY_DIGIT": "0",
    "CATEGORY_NOT_DIGIT": "a",
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_SPACE": "a",
    "CATEGORY_WORD": "a",
    "CATEGORY_NOT_WORD": "-",
}


def _in_class(items: Any, c: Any) -> str:
    negated = bool(items) and items[0][0] is c.NEGATE
    if not negated:
        op, arg = items[0]
        if op is c.LITERAL:
            return chr(arg)
        if op is c.RANGE:
            return chr(arg[0])
        if op is c.CATEGORY:
            return _CATEGORY_CHARS.get(str(arg), "a")
        raise SchemaError(f"character class item {op} is not supported")
    excluded: set[str] = set()
    for op, arg in items[1:]:
        if op is c.LITERAL:
            excluded.add(chr(arg))
        elif op is c.RANGE:
            excluded.update(chr(x) for x in range(arg[0], min(arg[1], arg[0] + 256) + 1))
    for candidate in "aZ0_-x!~ ":
        if candidate not in excluded:
            return candidate
    raise SchemaError("negated character class excludes every candidate")
