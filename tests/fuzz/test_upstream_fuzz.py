"""Fuzzing what comes back from upstream: an OpenAI-compatible and an Anthropic provider
pointed at the loopback fake (allow_private_base_url = true), answering with malformed bodies
(wrong types in usage, missing fields, non-JSON, HTML with a 200, garbage), broken streams
(truncated SSE, events that are not JSON, non-UTF-8 bytes, no terminator), odd statuses and
headers (Retry-After: 1e999), cut connections and silence.

The client's requests are well-formed: a 502/504 is the upstream's fault and acceptable, a 503
only for "cooling down" or an upstream that said 503/529 itself; a 500 never."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fakes import anthropic_wire, openai_wire
from tests.fakes.replies import ChatReply
from tests.fuzz.conftest import fuzz_settings
from tests.fuzz.harness import (
    Fuzz,
    Reply,
    anthropic_frames,
    default_embeddings,
    openai_frames,
    sse_reply,
)
from tests.fuzz.strategies import Raw, json_text, odd_text
from tests.fuzz.strategies import render as render_template

pytestmark = pytest.mark.timeout(600)


def json_reply(template: Any, status: int = 200) -> Reply:
    """A JSON answer; the template may hold `Raw` fragments (1e999, 64-bit overflows)."""
    return Reply(status, [(b"Content-Type", b"application/json")], bytes(render_template(template)))


JSON = [("Content-Type", "application/json")]
STATUSES = [200] * 12 + [
    201,
    204,
    400,
    401,
    403,
    404,
    408,
    409,
    413,
    422,
    429,
    500,
    502,
    503,
    504,
    529,
    599,
]
MODES = ["normal"] * 8 + ["eof", "chunked", "chunked-cut", "short", "drop"]
CONTENT_TYPES = [
    b"application/json",
    b"application/json",
    b"application/json; charset=utf-8",
    b"text/html; charset=utf-8",
    b"text/plain",
    b"text/event-stream",
    b"application/octet-stream",
    b"",
]
RETRY_AFTER = [
    b"1",
    b"0",
    b"-1",
    b"1e999",
    b"NaN",
    b"inf",
    b"\xc2\xb2",
    b"99999999999",
    b"Wed, 21 Oct 2015 07:28:00 GMT",
    b"Fri, 31 Dec 9999 23:59:59 GMT",
    b"x",
]
HTML = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


def openai_completion() -> dict[str, Any]:
    reply = ChatReply(content="hi", tool_calls=[{"id": "call_1", "name": "f", "arguments": "{}"}])
    return openai_wire.chat_completion(reply, model="gpt-4o-mini", prompt=3)


def anthropic_message() -> dict[str, Any]:
    reply = ChatReply(content="hi", tool_calls=[{"id": "toolu_1", "name": "f", "arguments": "{}"}])
    return anthropic_wire.message(reply, model="claude-sonnet-4-5", prompt=3)


USAGE_VALUES = [
    "abc",
    "²",
    "12",
    -1,
    1.5,
    Raw(b"18446744073709551616"),
    None,
    [],
    {},
    True,
    Raw(b"1e999"),
    Raw(b"NaN"),
    Raw(b"18446744073709551616" + b"0" * 20),
]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, child in items:
        found.append((*path, key))
        found += _paths(child, (*path, key))
    return found


@st.composite
def broken_json(
    draw: st.DrawFn, valid: dict[str, Any], usage_keys: list[str], garbage: bool = True
) -> bytes:
    """The valid answer with values deleted, replaced by wrong types or odd numbers (usage
    counts first among them), or (`garbage`) not JSON at all."""
    body = copy.deepcopy(valid)
    kinds = ["usage", "mutate", "usage", "delete", "mutate"]
    how = draw(st.sampled_from([*kinds, "garbage", "valid"] if garbage else kinds))
    if how == "usage":
        usage = body.setdefault("usage", {})
        for key in draw(st.lists(st.sampled_from(usage_keys), min_size=1, max_size=2, unique=True)):
            usage[key] = draw(st.sampled_from(USAGE_VALUES))
        if draw(st.integers(0, 4)) == 0:
            body["usage"] = draw(st.sampled_from(USAGE_VALUES))
    elif how in ("mutate", "delete"):
        paths = _paths(body)
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(paths))
            parent: Any = body
            try:
                for key in path[:-1]:
                    parent = parent[key]
                if how == "delete":
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = draw(
                        st.sampled_from(USAGE_VALUES) | json_text.map(Raw) | odd_text
                    )
            except (KeyError, IndexError, TypeError):
                pass
    elif how == "garbage":
        return draw(
            st.sampled_from(
                [HTML, b"", b"null", b"[]", b"{}", b'{"error":', b"\xff\xfe\x00", b"OK"]
            )
            | json_text
            | st.binary(max_size=100)
            | st.just(orjson.dumps(valid)[: draw(st.integers(0, 60))])
        )
    return bytes(render_template(body))


@st.composite
def whole_reply(
    draw: st.DrawFn, valid: dict[str, Any], usage_keys: list[str], transport: bool = True
) -> Reply:
    """An answer to a whole (not streamed) request. Without `transport`: a 200 JSON answer
    whose fields are wrong; with it: odd statuses, content types, Retry-After values, error
    bodies, bodies that are not JSON, cut connections."""
    if not transport:
        body = draw(broken_json(valid, usage_keys, garbage=False))
        return Reply(200, [(b"Content-Type", b"application/json")], body)
    status = draw(st.sampled_from(STATUSES))
    body = draw(broken_json(valid, usage_keys))
    if status >= 400 and draw(st.booleans()):
        body = draw(
            st.sampled_from(
                [
                    orjson.dumps(openai_wire.error_body(status, "nope")),
                    orjson.dumps(anthropic_wire.error_body(status, "nope")),
                    b'{"error":{"message":' + b"[" * 300 + b"]" * 300 + b"}}",
                    b'{"error":"x"}',
                    b'{"error":{"message":null,"code":[1]}}',
                    b'{"error":{"message":"maximum context length exceeded","param":1e999}}',
                    HTML,
                ]
            )
        )
    headers = [(b"Content-Type", draw(st.sampled_from(CONTENT_TYPES)))]
    if draw(st.integers(0, 3)) == 0:
        headers.append(
            (
                draw(st.sampled_from([b"Retry-After", b"retry-after-ms"])),
                draw(st.sampled_from(RETRY_AFTER)),
            )
        )
    return Reply(status, headers, body, draw(st.sampled_from(MODES)))


CHAT_BODY = {"messages": [{"role": "user", "content": "hi"}]}
OPENAI_USAGE = ["prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details"]
ANTHROPIC_USAGE = [
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
]


def _chat(model: str, stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": model, **CHAT_BODY}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


@fuzz_settings(scale=3)
@given(reply=whole_reply(openai_completion(), OPENAI_USAGE, transport=False))
@example(reply=json_reply({**openai_completion(), "usage": {"prompt_tokens": "abc"}}))
def test_openai_answer_fields(fz: Fuzz, reply: Reply) -> None:
    with fz.upstream.replying("chat", reply):
        fz.send(
            "POST",
            "/v1/chat/completions",
            JSON,
            _chat("gpt-4o-mini"),
            upstream_fault=True,
            upstream_reply=reply,
        )


@fuzz_settings(scale=3)
@given(reply=whole_reply(openai_completion(), OPENAI_USAGE))
@example(reply=Reply(200, [(b"Content-Type", b"text/html")], HTML))
@example(reply=Reply(429, [(b"Retry-After", b"1e999")], b"{}"))
@example(reply=Reply(mode="hang"))
def test_openai_answer_transport(fz: Fuzz, reply: Reply) -> None:
    with fz.upstream.replying("chat", reply):
        fz.send(
            "POST",
            "/v1/chat/completions",
            JSON,
            _chat("gpt-4o-mini"),
            upstream_fault=True,
            upstream_reply=reply,
        )


@fuzz_settings(scale=3)
@given(reply=whole_reply(anthropic_message(), ANTHROPIC_USAGE, transport=False))
@example(reply=json_reply({**anthropic_message(), "usage": {"input_tokens": "abc"}}))
@example(
    reply=json_reply(
        {
            **anthropic_message(),
            "usage": {"input_tokens": Raw(b"18446744073709551616"), "output_tokens": 1},
        }
    )
)
def test_anthropic_answer_fields(fz: Fuzz, reply: Reply) -> None:
    with fz.upstream.replying("chat", reply):
        fz.send(
            "POST",
            "/v1/chat/completions",
            JSON,
            _chat("claude"),
            upstream_fault=True,
            upstream_reply=reply,
        )


@fuzz_settings(scale=3)
@given(reply=whole_reply(anthropic_message(), ANTHROPIC_USAGE))
@example(reply=Reply(529, [(b"Retry-After", b"1e999")], b"{}"))
def test_anthropic_answer_transport(fz: Fuzz, reply: Reply) -> None:
    with fz.upstream.replying("chat", reply):
        fz.send(
            "POST",
            "/v1/chat/completions",
            JSON,
            _chat("claude"),
            upstream_fault=True,
            upstream_reply=reply,
        )


# --- streams --------------------------------------------------------------------------------


# A last chunk whose usage no 64-bit integer holds.
HUGE_USAGE_CHUNK = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
    b'"choices":[],"usage":{"prompt_tokens":18446744073709551616,"completion_tokens":1,'
    b'"total_tokens":1}}\n\n'
)


def _frame_data(frame: bytes) -> tuple[bytes, Any]:
    """(the lines before `data:`, the parsed data) of one frame; data None when not JSON."""
    head, _, data = frame.rstrip(b"\n").rpartition(b"data: ")
    try:
        return head, orjson.loads(data)
    except orjson.JSONDecodeError:
        return head, None


FRAME_GARBAGE = [
    b"data: {\n\n",
    b"data: not json\n\n",
    b"data: \xff\xfe\n\n",
    b"data: " + b"[" * 3000 + b"\n\n",
    b"data: " + b"[" * 300 + b"]" * 300 + b"\n\n",
    b"data: null\n\n",
    b"data: []\n\n",
    b"data: 1e999\n\n",
    b'data: {"choices":[{"delta":{"content":1}}]}\n\n',
    b'data: {"choices":"x"}\n\n',
    b'data: {"choices":[{"index":"x","delta":{"tool_calls":[{"index":1e999}]}}]}\n\n',
    b'data: {"choices":[{"delta":{"tool_calls":[{"index":-1,"function":{"arguments":5}}]}}]}\n\n',
    b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n',
    b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"x"}}\n\n',
    b"event: content_block_delta\ndata: "
    b'{"type":"content_block_delta","index":99,"delta":{"type":"text_delta","text":"x"}}\n\n',
    b"event: content_block_delta\ndata: "
    b'{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":7}}'
    b"\n\n",
    b"event: message_delta\ndata: "
    b'{"type":"message_delta","delta":{},"usage":{"output_tokens":"abc"}}\n\n',
    b"event: message_start\ndata: "
    b'{"type":"message_start","message":{"usage":{"input_tokens":"abc"}}}\n\n',
    b"event: \xff\ndata: {}\n\n",
    b": comment\n\n",
    b"retry: x\n\n",
    b"data: " + b"x" * 200_000 + b"\n\n",
    b"\r\n\r\n",
    b"\n",
    HTML,
]


@st.composite
def broken_stream(draw: st.DrawFn, frames: list[bytes], usage_keys: list[str]) -> Reply:
    """The valid stream with frames dropped, mutated, duplicated or replaced by garbage,
    cut short, or answered as something else entirely."""
    frames = list(frames)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(frames) - 1))
        how = draw(st.sampled_from(["garbage", "mutate", "garbage", "usage", "drop", "dup"]))
        if how == "drop":
            frames.pop(index)
        elif how == "garbage":
            frames.insert(index, draw(st.sampled_from(FRAME_GARBAGE)))
        elif how == "dup":
            frames.insert(index, frames[index])
        else:
            head, data = _frame_data(frames[index])
            if not isinstance(data, dict):
                continue
            if how == "usage":
                data["usage"] = {key: draw(st.sampled_from(USAGE_VALUES)) for key in usage_keys[:2]}
            else:
                paths = _paths(data)
                if not paths:
                    continue
                path = draw(st.sampled_from(paths))
                parent: Any = data
                try:
                    for key in path[:-1]:
                        parent = parent[key]
                    parent[path[-1]] = draw(st.sampled_from(USAGE_VALUES) | json_text.map(Raw))
                except (KeyError, IndexError, TypeError):
                    continue
            frames[index] = head + b"data: " + bytes(render_template(data)) + b"\n\n"
        if not frames:
            break
    cut = draw(st.sampled_from(["none", "none", "end", "mid-frame", "crlf"]))
    body = b"".join(frames)
    if cut == "end" and frames:
        body = b"".join(frames[: draw(st.integers(0, len(frames) - 1))])
    elif cut == "mid-frame":
        body = body[: draw(st.integers(0, max(0, len(body) - 1)))]
    elif cut == "crlf":
        body = body.replace(b"\n", b"\r\n")
    reply = sse_reply(
        [body], mode=draw(st.sampled_from(["chunked", "chunked", "eof", "chunked-cut", "normal"]))
    )
    reply.status = draw(st.sampled_from([200] * 8 + [400, 429, 500, 503]))
    if draw(st.integers(0, 5)) == 0:
        reply.headers = [(b"Content-Type", draw(st.sampled_from(CONTENT_TYPES)))]
    return reply


@fuzz_settings(scale=4)
@given(reply=broken_stream(openai_frames(), OPENAI_USAGE))
@example(reply=sse_reply(openai_frames()[:2], mode="chunked-cut"))
@example(reply=sse_reply([b"data: \xff\xfe\n\n", openai_wire.DONE]))
@example(reply=sse_reply([*openai_frames()[:-2], HUGE_USAGE_CHUNK, openai_wire.DONE]))
def test_openai_stream(fz: Fuzz, reply: Reply) -> None:
    with fz.upstream.replying("chat", reply):
        fz.send(
            "POST",
            "/v1/chat/completions",
            JSON,
            _chat("gpt-4o-mini", stream=True),
            upstream_fault=True,
            upstream_reply=reply,
            stream=True,
        )


@fuzz_settings(scale=4)
@given(reply=broken_stream(anthropic_frames(), ANTHROPIC_USAGE))
@example(reply=sse_reply(anthropic_frames()[:3], mode="chunked-cut"))
def test_anthropic_stream(fz: Fuzz, reply: Reply) -> None:
    with fz.upstream.replying("chat", reply):
        fz.send(
            "POST",
            "/v1/chat/completions",
            JSON,
            _chat("claude", stream=True),
            upstream_fault=True,
            upstream_reply=reply,
            stream=True,
        )


# --- embeddings, transcriptions, models, OAuth tokens ----------------------------------------


@fuzz_settings(scale=2)
@given(
    reply=whole_reply(
        default_embeddings({"input": ["a", "b"], "dimensions": 4}),
        ["prompt_tokens", "total_tokens"],
    ),
    encoding=st.sampled_from(["float", "base64"]),
)
@example(
    reply=json_reply(
        {"object": "list", "data": [{"embedding": "!!!"}], "usage": {"prompt_tokens": "abc"}}
    ),
    encoding="float",
)
def test_embeddings_upstream(fz: Fuzz, reply: Reply, encoding: str) -> None:
    body = render_template(
        {"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": encoding}
    )
    with fz.upstream.replying("embeddings", reply):
        fz.send("POST", "/v1/embeddings", JSON, body, upstream_fault=True, upstream_reply=reply)


WAV_FORM = (
    b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
    b"Content-Type: audio/wav\r\n\r\nRIFFxxxx\r\n"
    b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
    b'--b\r\nContent-Disposition: form-data; name="response_format"\r\n\r\n%s\r\n--b--\r\n'
)
TRANSCRIPT = {
    "task": "transcribe",
    "language": "english",
    "duration": 1.0,
    "text": "hi",
    "segments": [{"id": 0, "start": 0.0, "end": 1.0, "text": "hi"}],
    "usage": {"type": "duration", "seconds": 1},
}


@fuzz_settings(scale=2)
@given(
    reply=whole_reply(TRANSCRIPT, ["seconds", "input_tokens", "output_tokens"]),
    response_format=st.sampled_from([b"json", b"verbose_json", b"text"]),
)
def test_transcriptions_upstream(fz: Fuzz, reply: Reply, response_format: bytes) -> None:
    headers = [("Content-Type", "multipart/form-data; boundary=b")]
    with fz.upstream.replying("transcriptions", reply):
        fz.send(
            "POST",
            "/v1/audio/transcriptions",
            headers,
            WAV_FORM % response_format,
            upstream_fault=True,
            upstream_reply=reply,
        )


MODELS_LIST = openai_wire.models_list(["gpt-4o-mini", "text-embedding-3-small"])


@fuzz_settings(scale=2)
@given(
    reply=whole_reply(MODELS_LIST, ["data", "object"]),
    action=st.sampled_from(["discover", "test-connection", "api-key-openai", "api-key-anthropic"]),
)
def test_models_and_credential_checks(fz: Fuzz, reply: Reply, action: str) -> None:
    """Discovery, connection tests and API-key checks read the upstream's models list."""
    with fz.upstream.replying("models", reply):
        if action.startswith("api-key"):
            provider = action.removeprefix("api-key-")
            body = render_template({"api_key": "sk-fuzz-check", "profile_id": "fuzz-check"})
            fz.send(
                "POST",
                f"/console/v1/auth/providers/{provider}/api-key",
                JSON,
                body,
                upstream_fault=True,
                upstream_reply=reply,
            )
        else:
            for provider in ("oai", "claude"):
                body = render_template({"provider_id": provider})
                fz.send(
                    "POST",
                    f"/console/v1/models/{action}",
                    JSON,
                    body,
                    upstream_fault=True,
                    upstream_reply=reply,
                )
        fz.send("GET", "/console/v1/models/status", upstream_fault=True, upstream_reply=reply)
        fz.send("GET", "/v1/models")
    fz.send("DELETE", "/console/v1/auth/profiles/fuzz-check")


TOKENS = {
    "access_token": "fuzz-access",
    "token_type": "Bearer",
    "expires_in": 3600,
    "refresh_token": "r",
    "scope": "openid",
}


@fuzz_settings(scale=2)
@given(reply=whole_reply(TOKENS, ["expires_in", "access_token", "token_type", "refresh_token"]))
@example(reply=json_reply({**TOKENS, "expires_in": "abc"}))
@example(reply=json_reply({**TOKENS, "expires_in": Raw(b"1" + b"0" * 30)}))
def test_oauth_token_endpoint(fz: Fuzz, reply: Reply) -> None:
    """Sign in with OpenAI, the token endpoint answering anything at all."""
    started = fz.send(
        "POST", "/console/v1/auth/providers/openai/bootstrap", JSON, b'{"profile_id":"oauth-fuzz"}'
    )
    attempt_id = started.json()["attempt_id"]
    with fz.upstream.replying("token", reply):
        fz.send(
            "GET",
            f"/console/v1/auth/providers/openai/callback?state={attempt_id}&code=c",
            authorized=False,
            upstream_fault=True,
            upstream_reply=reply,
        )
    fz.send("GET", f"/console/v1/auth/providers/openai/callback-state?attempt_id={attempt_id}")
    fz.send("GET", "/console/v1/auth/profiles")
    fz.send("DELETE", "/console/v1/auth/profiles/oauth-fuzz")
