"""Hypothesis strategies for hostile input: JSON text (not only what Python can build: NaN,
1e999, lone surrogates, invalid UTF-8, nesting thousands deep), mutated request bodies, odd
strings, headers, cookies, paths and multipart bodies.

Request templates are Python objects that may hold `Raw` JSON text fragments; `render` turns
them into the bytes sent, so a deep or invalid value can sit exactly where a field expects
something else.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import struct
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import strategies as st

from tests.fuzz.harness import Blob

# Depths around the limits that matter: orjson serialises 255 levels and parses 1024;
# the stdlib json module and Python recursion give up near 1000; then far beyond.
DEPTHS = [
    2,
    64,
    254,
    255,
    256,
    257,
    300,
    600,
    990,
    1000,
    1023,
    1024,
    1100,
    2000,
    3000,
    10000,
    100000,
]
DEEP_DEPTHS = [256, 257, 300, 600, 990, 1000, 1023, 1100, 3000, 100000]


@dataclass(frozen=True)
class Raw:
    """A JSON text fragment placed as it is in a rendered template."""

    text: bytes

    def __repr__(self) -> str:
        return f"Raw({Blob(self.text)!r})"


def _placeholder(index: int) -> str:
    return f"\x00fuzz-raw-{index}\x00"


def render(template: Any) -> Blob:
    """The template as JSON bytes, each `Raw` replaced by its text."""
    fragments: list[bytes] = []

    def swap(value: Any) -> Any:
        if isinstance(value, Raw):
            fragments.append(value.text)
            return _placeholder(len(fragments) - 1)
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    text = orjson.dumps(swap(template))
    for index, fragment in enumerate(fragments):
        text = text.replace(orjson.dumps(_placeholder(index)), fragment, 1)
    return Blob(text)


# --- JSON text --------------------------------------------------------------------------------


def nested(depth: int, kind: str = "list", leaf: bytes = b"0") -> bytes:
    if kind == "list":
        return b"[" * depth + leaf + b"]" * depth
    if kind == "dict":
        return b'{"a":' * depth + leaf + b"}" * depth
    if kind == "schema":  # JSON-Schema-like: {"type":"object","properties":{"a":...}}
        return b'{"type":"object","properties":{"a":' * depth + b'{"type":"string"}' + b"}}" * depth
    if kind == "mixed":
        half = depth // 2 or 1
        return b'[{"a":' * half + leaf + b"}]" * half
    return b"[" * depth  # "open": never closed


NESTING_KINDS = ["list", "dict", "schema", "mixed", "open"]


@st.composite
def deep_json(draw: st.DrawFn, depths: list[int] = DEPTHS, closed: bool = False) -> bytes:
    kinds = NESTING_KINDS[:-1] if closed else NESTING_KINDS
    return Blob(nested(draw(st.sampled_from(depths)), draw(st.sampled_from(kinds))))


ODD_TEXTS = [
    "",
    " ",
    "²",
    "٣",
    "१२३",
    "Ⅻ",
    "𝟘",
    "\u0000",
    "\ufeff",
    "\u202e",
    "e\u0301",
    "Ǆ",
    "ß",
    "İ",
    "💥",
    "\r\n",
    "a\nb",
    "%C2%B2",
    "%00",
    "%ff",
    "../../etc/passwd",
    "NaN",
    "1e999",
    "-0",
    "true",
    "null",
    "\\",
    '"',
    "{}",
    "<script>",
    "x" * 5000,
]

ODD_SCALARS: list[bytes] = [
    b"null",
    b"true",
    b"false",
    b"0",
    b"-0",
    b"1",
    b"-1",
    b"1.5",
    b"0.0",
    b"1e999",
    b"-1e999",
    b"1e-999",
    b"1E400",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"18446744073709551616",
    b"1" + b"0" * 400,
    b"0.1e1",
    b"4.9e-324",
    b"1.7976931348623157e308",
    b'""',
    b'"\\u0000"',
    b'"\\ud800"',
    b'"\\udfff\\ud800"',
    b'"\\ud83d"',
    b'"\xff\xfe"',
    b'"\xc3"',
    b'"\xed\xa0\x80"',
    b'"\x80"',
    '"²"'.encode(),
    b'"\\u00b2"',
    b'"1e999"',
    b'"NaN"',
    b'"true"',
    b"[]",
    b"{}",
    b"[null]",
    b'{"":null}',
    b'"' + b"x" * 100_000 + b'"',
    *[orjson.dumps(text) for text in ODD_TEXTS],
]

JSON_KEYS = st.sampled_from(
    ["a", "", "type", "model", "__proto__", "$ref", "\u0000", "²"]
) | st.text(max_size=8)

python_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(JSON_KEYS, children, max_size=4)
    ),
    max_leaves=10,
)

json_leaf = st.sampled_from(ODD_SCALARS) | python_json.map(orjson.dumps) | deep_json()

json_text = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4).map(lambda xs: b"[" + b",".join(xs) + b"]")
        | st.lists(st.tuples(JSON_KEYS, children), max_size=4).map(
            lambda kvs: b"{" + b",".join(orjson.dumps(k) + b":" + v for k, v in kvs) + b"}"
        )
    ),
    max_leaves=6,
).map(Blob)
"""Any JSON-ish value text: valid, invalid, odd numbers, deep."""

odd_text = st.sampled_from(ODD_TEXTS) | st.text(max_size=40)


def hostile(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value for the field, sometimes anything at all."""
    return st.one_of(valid, valid, json_text.map(Raw))


# --- mutation ---------------------------------------------------------------------------------


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            found.append((*path, key))
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.append((*path, index))
            found += _paths(child, (*path, index))
    return found


def _containers(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = [path] if isinstance(value, dict) else []
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            found += _containers(child, (*path, key))
    return found


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


@st.composite
def mutated(
    draw: st.DrawFn, template: st.SearchStrategy[dict[str, Any]], fields: list[str]
) -> Blob:
    """A request body: the template as drawn, or with 1-3 values replaced or added (wrong
    types, odd numbers, deep nesting), or not a usable body at all."""
    body = copy.deepcopy(draw(template))
    how = draw(st.sampled_from(["mutate", "mutate", "valid", "mutate", "garbage"]))
    if how == "garbage":
        return draw(garbage_body(body))
    if how == "mutate":
        paths = _paths(body)
        containers = _containers(body)
        for _ in range(draw(st.integers(1, 3))):
            if paths and draw(st.booleans()):
                path = draw(st.sampled_from(paths))
                with contextlib.suppress(KeyError, IndexError, TypeError):
                    _at(body, path[:-1])[path[-1]] = Raw(draw(json_text))
            else:
                where = draw(st.sampled_from(containers))
                key = draw(st.sampled_from(fields) | JSON_KEYS)
                with contextlib.suppress(KeyError, IndexError, TypeError):
                    _at(body, where)[key] = Raw(draw(json_text))
    return render(body)


@st.composite
def garbage_body(draw: st.DrawFn, template: Any) -> Blob:
    valid = bytes(render(template))
    kind = draw(
        st.sampled_from(
            ["cut", "empty", "bytes", "bom", "utf16", "scalar", "deep", "trailing", "dup", "latin1"]
        )
    )
    if kind == "cut":
        return Blob(valid[: draw(st.integers(0, max(0, len(valid) - 1)))])
    if kind == "empty":
        return Blob(draw(st.sampled_from([b"", b" ", b"\n", b"\x00", b"{", b"}", b"null"])))
    if kind == "bytes":
        return Blob(draw(st.binary(max_size=200)))
    if kind == "bom":
        return Blob(b"\xef\xbb\xbf" + valid)
    if kind == "utf16":
        return Blob(valid.decode("utf-8").encode("utf-16"))
    if kind == "scalar":
        return Blob(draw(json_text))
    if kind == "deep":
        return Blob(draw(deep_json()))
    if kind == "trailing":
        return Blob(valid + draw(st.sampled_from([b"x", b",", b"\x00", b"{}", b"\xff"])))
    if kind == "dup":
        return Blob(b"{" + valid[1:-1] + b"," + valid[1:] if len(valid) > 2 else valid)
    return Blob(valid.decode("utf-8").encode("latin-1", "replace").replace(b'"', b'"\xe9', 1))


# --- headers ----------------------------------------------------------------------------------

ODD_HEADER_VALUES: list[bytes] = [
    b"",
    b" ",
    b"\xff",
    b"\xc3\xa9",
    b"\xe2\x82\xac",
    "²".encode(),
    b"\x80\x81",
    b"\xed\xa0\x80",
    b"\t",
    b"a" * 8000,
    b"null",
    b"%ff",
    b'"',
    b";",
    b"=",
    b",",
]

# Bytes the HTTP parser takes in a header value (obs-text included): what the application
# sees. Control characters are the parser's business, fuzzed apart in test_http_fuzz.
_VALUE_BYTES = [9, *range(0x20, 0x7F), *range(0x80, 0x100)]
odd_header_value = st.sampled_from(ODD_HEADER_VALUES) | st.lists(
    st.sampled_from(_VALUE_BYTES), max_size=40
).map(lambda values: bytes(values).strip(b" \t"))

CONTENT_TYPES = [
    b"application/json",
    b"application/json; charset=utf-8",
    b"application/json; charset=latin-1",
    b"application/json; charset=\xff",
    b"application/json; charset=utf-16",
    b"text/plain",
    b"multipart/form-data",
    b"multipart/form-data; boundary=",
    b"multipart/form-data; boundary=x",
    b"application/x-www-form-urlencoded",
    b"application/\xff",
    b";;;",
    b"",
]


@st.composite
def odd_headers(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    """Extra headers a request may carry (never Content-Type: the tests set that one, and a
    second one is the HTTP parser's to refuse)."""
    names = st.sampled_from(
        [
            b"X-Request-Id",
            b"X-CSRF-Token",
            b"Cookie",
            b"Accept",
            b"Accept-Encoding",
            b"Content-Encoding",
            b"Origin",
            b"Referer",
            b"X-Forwarded-For",
            b"X-Forwarded-Proto",
            b"If-None-Match",
            b"Range",
            b"Expect",
        ]
    )
    values = st.sampled_from(CONTENT_TYPES) | odd_header_value
    return draw(st.lists(st.tuples(names, values), max_size=3))


# --- cookies ----------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


SESSION_PAYLOADS = [
    b'{"sid":"x","exp":1e999}',
    b'{"sid":"x","exp":-1e999}',
    b'{"sid":"x","exp":NaN}',
    b'{"sid":"x","exp":Infinity}',
    b'{"sid":"x","exp":' + b"9" * 5000 + b"}",
    b'{"sid":"x","exp":"\xc2\xb2"}',
    b'{"sid":"x","exp":"1e999"}',
    b'{"sid":"\\ud800","exp":4102444800}',
    b'{"sid":["a"],"exp":4102444800}',
    b'{"sid":{"a":1},"exp":4102444800}',
    b'{"sid":"x","exp":[1]}',
    b'{"sid":"x","exp":true}',
    b'{"sid":"x","exp":4102444800.5}',
    b'{"sid":"x"}',
    b"[]",
    b'"x"',
    b"\xff\xfe",
    b"",
]


@st.composite
def session_payload(draw: st.DrawFn) -> bytes:
    return Blob(
        draw(
            st.sampled_from(SESSION_PAYLOADS)
            | st.builds(
                lambda sid, exp: b'{"sid":' + sid + b',"exp":' + exp + b"}",
                st.sampled_from(ODD_SCALARS) | deep_json(),
                st.sampled_from(ODD_SCALARS) | deep_json(),
            )
            | deep_json([*DEEP_DEPTHS, 3000, 3000])
            | json_text
        )
    )


# --- multipart --------------------------------------------------------------------------------

TRANSFER_ENCODINGS = [
    b"base64",
    b"quoted-printable",
    b"binary",
    b"8bit",
    b"7bit",
    b"gzip",
    b"x-uuencode",
    b"BASE64",
    b"\xff",
    b"",
]
CONTENT_ENCODINGS = [b"gzip", b"deflate", b"br", b"identity", b"zstd", b"x-gzip", b"\xff", b""]


def wav(
    rate: int, channels: int, width: int, frames_bytes: bytes, declared: int | None = None
) -> bytes:
    """A WAV header (fields wrapped to their widths, so any combination packs) and frames."""
    u16, u32 = 0xFFFF, 0xFFFFFFFF
    fmt = struct.pack(
        "<HHIIHH",
        1,
        channels & u16,
        rate & u32,
        (rate * channels * width) & u32,
        (channels * width) & u16,
        (width * 8) & u16,
    )
    data_len = len(frames_bytes) if declared is None else declared
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_len)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + len(chunks) + len(frames_bytes))
        + b"WAVE"
        + chunks
        + frames_bytes
    )


audio_bytes = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.builds(
        wav,
        st.sampled_from([0, 1, 8000, 2**31 - 1, 2**32 - 1]),
        st.sampled_from([0, 1, 2, 65535]),
        st.sampled_from([0, 1, 2, 3, 5, 65535]),
        st.binary(max_size=32),
        st.none() | st.sampled_from([0, 1, 2**32 - 1]),
    ),
    st.builds(lambda tail: b"RIFF\x00\x00\x00\x00WAVE" + tail, st.binary(max_size=40)),
)

FORM_FIELDS = ["file", "model", "response_format", "temperature", "language", "prompt", "x", ""]
FIELD_VALUES = [
    b"deterministic-transcribe",
    b"whisper-1",
    b"deterministic",
    b"json",
    b"text",
    b"verbose_json",
    b"srt",
    b"nan",
    b"inf",
    b"-inf",
    b"1e999",
    "²".encode(),
    b"0.5",
    b"\xff\xfe",
    b"",
]


@st.composite
def multipart_part(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(FORM_FIELDS))
    headers: list[bytes] = []
    disposition = b'form-data; name="' + name.encode() + b'"'
    if name == "file" or draw(st.booleans()):
        filename = draw(
            st.sampled_from([b"a.wav", b"", b"\xff.wav", "é.wav".encode(), b"../../x", b"a" * 300])
        )
        disposition += b'; filename="' + filename + b'"'
        if draw(st.booleans()):
            disposition += b"; filename*=UTF-8''%C3%A9%ZZ.wav"
    if draw(st.integers(0, 9)):
        headers.append(b"Content-Disposition: " + disposition)
    if draw(st.booleans()):
        headers.append(
            b"Content-Type: "
            + draw(
                st.sampled_from(
                    [b"audio/wav", b"text/plain; charset=\xff", b"", b"multipart/mixed"]
                )
            )
        )
    if draw(st.integers(0, 2)) == 0:
        headers.append(b"Content-Transfer-Encoding: " + draw(st.sampled_from(TRANSFER_ENCODINGS)))
    if draw(st.integers(0, 2)) == 0:
        headers.append(b"Content-Encoding: " + draw(st.sampled_from(CONTENT_ENCODINGS)))
    value = (
        draw(audio_bytes)
        if name == "file"
        else draw(st.sampled_from(FIELD_VALUES) | st.binary(max_size=20))
    )
    return b"\r\n".join(headers) + b"\r\n\r\n" + value


BOUNDARIES = [
    b"fuzzboundary",
    b"x",
    b"a" * 71,
    b"a" * 200,
    b"\xff\xfe",
    b"b\xc3\xa9",
    b'"quoted"',
    b"with space",
    b"--",
    b"",
]


@st.composite
def multipart_request(draw: st.DrawFn) -> tuple[bytes, Blob]:
    """(Content-Type header value, body): mostly near-valid forms, with the boundary missing,
    mismatched or odd, parts with odd headers and encodings, or the body cut short."""
    boundary = draw(st.sampled_from(BOUNDARIES))
    content_type = draw(
        st.sampled_from(
            [
                b"multipart/form-data; boundary=" + boundary,
                b"multipart/form-data; boundary=" + boundary,
                b'multipart/form-data; boundary="' + boundary + b'"',
                b"multipart/form-data",
                b"multipart/form-data; boundary=",
                b"multipart/mixed; boundary=" + boundary,
                b"multipart/form-data; boundary=other",
                b"multipart/form-data; charset=utf-8; boundary=" + boundary,
            ]
        )
    )
    parts = draw(st.lists(multipart_part(), min_size=0, max_size=4))
    if draw(st.booleans()):
        parts.insert(
            0,
            b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
            + draw(audio_bytes),
        )
        parts.insert(
            1,
            b'Content-Disposition: form-data; name="model"\r\n\r\n'
            + draw(st.sampled_from(FIELD_VALUES[:3])),
        )
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    body += b"--" + boundary + b"--\r\n"
    ending = draw(st.sampled_from(["whole", "whole", "cut", "no-close", "preamble", "garbage"]))
    if ending == "cut":
        body = body[: draw(st.integers(0, max(0, len(body) - 1)))]
    elif ending == "no-close":
        body = body[: -len(b"--" + boundary + b"--\r\n")]
    elif ending == "preamble":
        body = b"preamble\r\n" + body + b"epilogue"
    elif ending == "garbage":
        body = draw(st.binary(max_size=100))
    return content_type, Blob(body)
