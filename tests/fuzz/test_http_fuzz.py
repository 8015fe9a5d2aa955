"""Fuzzing the HTTP surface as a whole: odd methods, paths and query strings on every route
prefix, `/healthz` and `/metrics`, malformed HTTP framing sent byte for byte, bodies at and
past the size limit (compressed ones among them), and clients that go away mid-answer."""

from __future__ import annotations

import functools
import gzip
import zlib
from urllib.parse import quote

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz.conftest import fuzz_settings
from tests.fuzz.harness import (
    ADMIN_TOKEN,
    Fuzz,
    anthropic_frames,
    build_request,
    compact,
    json_reply,
    openai_frames,
    sse_reply,
)
from tests.fuzz.strategies import json_text, odd_headers, odd_text

pytestmark = pytest.mark.timeout(600)

PREFIXES = [
    "/",
    "/v1/",
    "/v1/chat/completions/",
    "/v1/models/",
    "/console/",
    "/console/v1/",
    "/console/v1/cron/jobs/",
    "/console/v1/runs/",
    "/console/v1/agents/",
    "/console/v1/auth/profiles/",
    "/console/v1/auth/providers/",
    "/console/static/",
    "/healthz/",
    "/metrics/",
]
SEGMENTS = [
    "",
    ".",
    "..",
    "%2e%2e",
    "%2F",
    "%00",
    "%ff",
    "%C2%B2",
    "%",
    "%zz",
    "a" * 300,
    "a" * 5000,
    "x;y=z",
    "@",
    "~",
    "(",
    "*",
]
# Taken by the HTTP parser as they are (bytes it refuses are in FRAMINGS below).
RAW_SEGMENTS = [b"//", b"\\", b"#frag", b"?", b"&", b"'", b"!$&'()*+,;="]
QUERIES = [
    "",
    "?",
    "?&&",
    "?a",
    "?a=%ff",
    "?%C2%B2=%C2%B2",
    "?a=1&a=2",
    "?" + "a=1&" * 300,
    "?=",
    "?%00",
]
METHODS = [
    "GET",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "HEAD",
    "OPTIONS",
    "TRACE",
    "PROPFIND",
    "get",
    "G-E_T",
]


@st.composite
def odd_target(draw: st.DrawFn) -> bytes:
    path = draw(st.sampled_from(PREFIXES)).encode()
    for _ in range(draw(st.integers(0, 3))):
        segment = draw(
            st.sampled_from(SEGMENTS).map(str.encode)
            | st.sampled_from(RAW_SEGMENTS)
            | odd_text.map(lambda t: quote(t, safe="").encode())
        )
        path += segment + draw(st.sampled_from([b"/", b""]))
    return path + draw(st.sampled_from(QUERIES)).encode()


@fuzz_settings(scale=5)
@given(
    method=st.sampled_from(METHODS),
    target=odd_target(),
    body=st.just(b"") | json_text,
    headers=odd_headers(),
    authorized=st.booleans(),
)
def test_odd_paths(
    fz: Fuzz,
    method: str,
    target: bytes,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    authorized: bool,
) -> None:
    fz.send(
        method,
        target,
        [*headers, (b"Content-Type", b"application/json")],
        body,
        authorized=authorized,
    )


@fuzz_settings(scale=1)
@given(
    path=st.sampled_from(["/healthz", "/metrics"]),
    query=st.sampled_from(QUERIES),
    method=st.sampled_from(["GET", "HEAD", "POST", "OPTIONS"]),
    headers=odd_headers(),
    authorized=st.booleans(),
)
def test_healthz_and_metrics(
    fz: Fuzz,
    path: str,
    query: str,
    method: str,
    headers: list[tuple[bytes, bytes]],
    authorized: bool,
) -> None:
    fz.send(method, path + query, headers, authorized=authorized)


# --- framing --------------------------------------------------------------------------------

AUTH = b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n"
CHAT = b'{"model":"deterministic","messages":[{"role":"user","content":"hi"}]}'

FRAMINGS: list[bytes] = [
    # duplicated singleton headers
    b"GET /v1/models HTTP/1.1\r\nHost: a\r\nHost: b\r\n" + AUTH + b"\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n"
    + AUTH
    + b"Content-Type: application/json\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
    % len(CHAT)
    + CHAT,
    # Content-Length and Transfer-Encoding both, or wrong
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n"
    + AUTH
    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n" + AUTH + b"Content-Length: -1\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n" + AUTH + b"Content-Length: 1e3\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n"
    + AUTH
    + "Content-Length: ²\r\n\r\n".encode(),
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n"
    + AUTH
    + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n"
    + AUTH
    + b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n"
    + AUTH
    + b"Content-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n"
    + AUTH
    + b"Content-Encoding: br\r\nContent-Length: 4\r\n\r\nnope",
    # control characters and non-tokens where the grammar has no room for them
    b"GET /v1/models HTTP/1.1\r\nHost: a\r\n" + AUTH + b"X-Bad\x00: v\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: a\r\n" + AUTH + b"X-Bad: a\x00b\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: a\r\n" + AUTH + b"X-\xff: v\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: a\r\n" + AUTH + b"X-Bad: a\x7fb\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: a\r\n" + AUTH + b" folded: header\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: a\r\n" + AUTH + b"X-Long: " + b"a" * 9000 + b"\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: a\r\n" + AUTH + b"X-Bare-LF: v\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /v1/models\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
    # bytes no request target may hold raw
    b"GET /\xff/ HTTP/1.1\r\nHost: a\r\n" + AUTH + b"\r\n",
    b"GET /console/v1/auth/profiles/\xc2\xb2 HTTP/1.1\r\nHost: a\r\n" + AUTH + b"\r\n",
    b"GET /v1/models?a=\xff HTTP/1.1\r\nHost: a\r\n" + AUTH + b"\r\n",
    b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /v1/models HTTP/9.9\r\nHost: a\r\n\r\n",
    b"GET /v1/models HTTP/1.1 extra\r\nHost: a\r\n\r\n",
    b"GET http://[::1/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"GET /healthz HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n"
    + AUTH
    + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(CHAT)
    + CHAT,
]


@pytest.mark.parametrize("index", range(len(FRAMINGS)))
def test_malformed_http(fz: Fuzz, index: int) -> None:
    """Bytes a client library would not send, each of them every run. The parser's 400 is
    fine; a 500, or a traceback in the log (aiohttp logs its parser errors with one unless
    told otherwise), is not."""
    fz.send_bytes(FRAMINGS[index], allow_no_answer=True)


@fuzz_settings(scale=1)
@given(
    data=st.builds(lambda prefix, cut: prefix[:cut], st.sampled_from(FRAMINGS), st.integers(1, 80))
)
def test_malformed_http_cut(fz: Fuzz, data: bytes) -> None:
    """The same, cut short: the daemon sees the end of the connection mid-request."""
    fz.send_bytes(data, allow_no_answer=True, half_close=True)


# --- size and compression -------------------------------------------------------------------

MiB = 1024 * 1024
BODY_ROUTES = [
    "/v1/chat/completions",
    "/v1/embeddings",
    "/console/v1/runs",
    "/console/v1/cron/jobs",
]


@functools.cache
def gzip_bomb() -> bytes:
    """64 MiB of JSON whitespace in ~64 KB: twice the daemon's default request limit."""
    return gzip.compress(b"{" + b" " * (64 * MiB) + b"}", compresslevel=9)


def _body(route: str, text: str) -> bytes:
    if route == "/v1/chat/completions":
        return orjson.dumps(
            {"model": "deterministic", "messages": [{"role": "user", "content": text}]}
        )
    if route == "/v1/embeddings":
        return orjson.dumps({"model": "deterministic-embed", "input": text})
    if route == "/console/v1/runs":
        return orjson.dumps({"input": text})
    return orjson.dumps(
        {
            "name": "n",
            "agent_id": "default",
            "prompt": text,
            "schedule": {"every": "1h"},
            "enabled": False,
        }
    )


@fuzz_settings(scale=0.5, shrink=False)
@given(
    kind=st.sampled_from(
        [
            "gzip",
            "deflate",
            "gzip-broken",
            "gzip-garbage",
            "deflate-garbage",
            "gzip-bomb",
            "8mb-text",
            "many-messages",
            "over-limit",
        ]
    ),
    route=st.sampled_from(BODY_ROUTES),
)
@example(kind="gzip-bomb", route="/v1/chat/completions")
@example(kind="8mb-text", route="/v1/chat/completions")
@example(kind="gzip-garbage", route="/console/v1/runs")
def test_large_and_compressed_bodies(fz: Fuzz, kind: str, route: str) -> None:
    """Bodies at and past the size limit, compressed ones among them: a 4xx or an answer,
    quickly, with the daemon serving others meanwhile."""
    headers: list[tuple[bytes, bytes]] = [(b"Content-Type", b"application/json")]
    small = _body(route, "hi")
    if kind == "gzip":
        body, headers = gzip.compress(small), [*headers, (b"Content-Encoding", b"gzip")]
    elif kind == "deflate":
        body, headers = zlib.compress(small), [*headers, (b"Content-Encoding", b"deflate")]
    elif kind == "gzip-broken":
        body, headers = gzip.compress(small)[:-9], [*headers, (b"Content-Encoding", b"gzip")]
    elif kind == "gzip-garbage":
        body, headers = b"not gzip", [*headers, (b"Content-Encoding", b"gzip")]
    elif kind == "deflate-garbage":
        body, headers = b"not deflate", [*headers, (b"Content-Encoding", b"deflate")]
    elif kind == "gzip-bomb":
        body, headers = gzip_bomb(), [*headers, (b"Content-Encoding", b"gzip")]
    elif kind == "8mb-text":
        body = _body(route, "ab " * (8 * MiB // 3))
    elif kind == "many-messages":
        message = {"role": "user", "content": "x"}
        body = orjson.dumps(
            {"model": "deterministic", "messages": [message] * 200_000, "input": "x"}
        )
    else:
        body = _body(route, "a" * (33 * MiB))
    fz.send("POST", route, headers, body, probe=True)


# --- clients that go away -------------------------------------------------------------------

CHAT_STREAM = {"messages": [{"role": "user", "content": "tell me " * 50}], "stream": True}
AWAY_REQUESTS: dict[str, tuple[str, bytes]] = {
    "chat-deterministic": (
        "/v1/chat/completions",
        orjson.dumps({"model": "deterministic", **CHAT_STREAM}),
    ),
    "chat-openai": ("/v1/chat/completions", orjson.dumps({"model": "gpt-4o-mini", **CHAT_STREAM})),
    "chat-anthropic": ("/v1/chat/completions", orjson.dumps({"model": "claude", **CHAT_STREAM})),
    "chat-whole": (
        "/v1/chat/completions",
        orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
    ),
    "run-stream": ("/console/v1/runs", orjson.dumps({"input": "hi there", "stream": True})),
    "run-whole": (
        "/console/v1/runs",
        orjson.dumps({"agent_id": "tools", "input": "/tool current_time {}"}),
    ),
    "embeddings": (
        "/v1/embeddings",
        orjson.dumps({"model": "text-embedding-3-small", "input": "x"}),
    ),
}


@fuzz_settings(scale=1, shrink=False)
@given(
    name=st.sampled_from(sorted(AWAY_REQUESTS)),
    after_bytes=st.sampled_from([0, 1, 200, 1000]),
    reset=st.booleans(),
    body_cut=st.sampled_from([None, None, 10]),
)
@example(name="run-stream", after_bytes=200, reset=True, body_cut=None)
@example(name="chat-openai", after_bytes=1000, reset=True, body_cut=None)
def test_client_goes_away(
    fz: Fuzz, name: str, after_bytes: int, reset: bool, body_cut: int | None
) -> None:
    """A client that closes or resets its connection mid-answer (or mid-body), while the
    upstream trickles its answer out: the handler is cancelled, quietly."""
    path, body = AWAY_REQUESTS[name]
    slow = 0.02
    if name == "chat-openai":
        reply = sse_reply(openai_frames(), mode="chunked")
    elif name == "chat-anthropic":
        reply = sse_reply(anthropic_frames(), mode="chunked")
    else:
        reply = json_reply(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        )
    reply.trickle_s = slow
    headers = [("Authorization", f"Bearer {ADMIN_TOKEN}"), ("Content-Type", "application/json")]
    data = build_request(fz.port, "POST", path, headers, body)
    if body_cut is not None:
        data = data[: len(data) - body_cut]
    route = "embeddings" if name == "embeddings" else "chat"
    with fz.upstream.replying(route, reply):
        fz.abandon(data, after_bytes, reset=reset, what=f"  POST {path} ({name}): {compact(body)}")
