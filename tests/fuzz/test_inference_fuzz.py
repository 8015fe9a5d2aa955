"""Fuzzing the OpenAI-compatible routes: `/v1/chat/completions` (whole and streamed),
`/v1/embeddings`, `/v1/audio/transcriptions` (multipart), `GET /v1/models`.

Requests go to the deterministic models and to the OpenAI-compatible and Anthropic providers
on the fake upstream, which answers well here: whatever goes wrong is the client's input."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz.conftest import fuzz_settings
from tests.fuzz.harness import Blob, Fuzz
from tests.fuzz.strategies import (
    CONTENT_TYPES,
    DEEP_DEPTHS,
    Raw,
    deep_json,
    hostile,
    json_text,
    multipart_request,
    mutated,
    nested,
    odd_headers,
    odd_text,
    render,
)

pytestmark = pytest.mark.timeout(600)

CHAT_MODELS = ["deterministic", "deterministic", "gpt-4o-mini", "claude", "small-window"]
ODD_MODELS = ["deterministic-embed", "whisper-1", "nope", "", "DETERMINISTIC", "²", "a" * 300]
TOOL_NAMES = ["f", "get_weather", "calculator"]
CHAT_FIELDS = [
    "model",
    "messages",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "n",
    "seed",
    "user",
    "metadata",
    "logit_bias",
    "extra_body",
]

PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


def data_url(payload: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(payload).decode()


image_urls = st.one_of(
    st.sampled_from(
        [
            data_url(PNG_HEAD + b"\xff\xff\xff\xff\xff\xff\xff\xff"),
            data_url(PNG_HEAD + b"\x00\x00\x00\x00\x00\x00\x00\x00"),
            data_url(b"GIF89a\xff\xff\xff\xff", "image/gif"),
            data_url(b"\xff\xd8\xff\xc0\x00\x11\x08\xff\xff\xff\xff", "image/jpeg"),
            "data:image/png;base64,!!!notbase64",
            "data:image/png;base64,",
            "data:,",
            "data:image/png;base64," + "A" * 10001,
            "http://127.0.0.1:1/x.png",
            "file:///etc/passwd",
            "",
        ]
    ),
    st.binary(max_size=40).map(data_url),
)

tool_command = st.builds(
    lambda name, args: f"/tool {name} " + args.decode("utf-8", "replace"),
    st.sampled_from(TOOL_NAMES),
    json_text | deep_json(DEEP_DEPTHS),
)

content_text = st.one_of(odd_text, odd_text, tool_command)
content_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": content_text}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.fixed_dictionaries(
                {"url": image_urls},
                optional={"detail": st.sampled_from(["auto", "low", "high", "max"])},
            ),
        }
    ),
)
tool_call = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["call_1", "", "²"]),
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {
                "name": st.sampled_from(TOOL_NAMES),
                "arguments": st.one_of(
                    odd_text, json_text.map(lambda b: b.decode("utf-8", "replace"))
                ),
            }
        ),
    }
)
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "user", "system", "assistant", "tool", "developer"]),
        "content": st.one_of(content_text, st.lists(content_part, max_size=3), st.none()),
    },
    optional={
        "name": odd_text,
        "tool_call_id": st.sampled_from(["call_1", ""]),
        "tool_calls": st.lists(tool_call, max_size=2),
    },
)
tool = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": st.sampled_from(TOOL_NAMES)},
            optional={
                "description": odd_text,
                "parameters": hostile(st.just({"type": "object", "properties": {}})),
                "strict": st.booleans(),
            },
        ),
    }
)
chat_template = st.fixed_dictionaries(
    {
        "model": st.sampled_from(CHAT_MODELS + ODD_MODELS),
        "messages": st.lists(message, min_size=1, max_size=3),
    },
    optional={
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "tools": st.lists(tool, max_size=2),
        "tool_choice": st.sampled_from(
            ["auto", "none", "required", {"type": "function", "function": {"name": "f"}}]
        ),
        "response_format": st.sampled_from(
            [
                {"type": "json_object"},
                {"type": "text"},
                {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
            ]
        ),
        "temperature": st.sampled_from([0, 0.5, 2, 2.0000001, -0.0]),
        "max_tokens": st.sampled_from([1, 2, 16, 2**31, 2**63 - 1]),
        "stop": st.one_of(odd_text, st.lists(odd_text, max_size=3)),
        "seed": st.integers(-(2**63), 2**63 - 1),
        "user": odd_text,
    },
)


JSON = [("Content-Type", "application/json")]


def is_stream(body: bytes) -> bool:
    return b'"stream":true' in body


@fuzz_settings(scale=4)
@given(body=mutated(chat_template, CHAT_FIELDS))
def test_chat_completions(fz: Fuzz, body: Blob) -> None:
    fz.send("POST", "/v1/chat/completions", JSON, body, stream=is_stream(body))


DEEP_SLOTS = [
    "parameters",
    "json_schema",
    "schema",
    "unknown_field",
    "tool_args",
    "content",
    "message",
    "tool_call_arguments",
    "stop",
    "body",
]


@st.composite
def deep_chat(draw: st.DrawFn) -> Blob:
    """A valid request but for one value nested hundreds to thousands deep, in a field where
    depth travels far: tool parameters and JSON schemas (sent upstream, estimated for
    tokens), unknown fields (passed to OpenAI upstreams), /tool arguments (the deterministic
    model parses and re-encodes them)."""
    slot = draw(st.sampled_from(DEEP_SLOTS))
    depth = draw(st.sampled_from(DEEP_DEPTHS))
    text = nested(depth, draw(st.sampled_from(["list", "dict", "schema", "mixed"])))
    deep = Raw(text)
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(["deterministic", "gpt-4o-mini", "claude"])),
        "messages": [{"role": "user", "content": "/tool f {}"}],
    }
    if draw(st.booleans()):
        body["stream"] = True
    f_tool = {"type": "function", "function": {"name": "f"}}
    if slot == "parameters":
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": deep}}]
    elif slot == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": deep}
    elif slot == "schema":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": deep},
        }
    elif slot == "unknown_field":
        body[draw(st.sampled_from(["metadata", "extra", "logit_bias", "prediction"]))] = deep
    elif slot == "tool_args":
        body["tools"] = [f_tool]
        body["messages"] = [{"role": "user", "content": "/tool f " + text.decode()}]
    elif slot == "content":
        body["messages"] = [{"role": "user", "content": deep}]
    elif slot == "message":
        body["messages"].append(deep)
    elif slot == "tool_call_arguments":
        body["tools"] = [f_tool]
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "f", "arguments": text.decode()},
        }
        body["messages"] = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": text.decode()},
        ]
    elif slot == "stop":
        body["stop"] = deep
    else:
        return Blob(text)
    return render(body)


@fuzz_settings(scale=3)
@given(body=deep_chat())
@example(
    body=render(
        {
            "model": "deterministic",
            "messages": [{"role": "user", "content": "/tool f " + nested(300, "list").decode()}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
        }
    )
)
@example(
    body=render(
        {
            "model": "deterministic",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": Raw(nested(990, "dict"))},
                }
            ],
        }
    )
)
@example(
    body=render(
        {
            "model": "deterministic",
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": Raw(nested(990, "dict"))},
        }
    )
)
@example(
    body=render(
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "metadata": Raw(nested(300, "list")),
        }
    )
)
def test_chat_deep_nesting(fz: Fuzz, body: Blob) -> None:
    fz.send("POST", "/v1/chat/completions", JSON, body, stream=is_stream(body))


@fuzz_settings(scale=2)
@given(
    body=st.sampled_from(
        [
            render({"model": "deterministic", "messages": [{"role": "user", "content": "hi"}]}),
            render(
                {
                    "model": "gpt-4o-mini",
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                }
            ),
        ]
    ),
    content_type=st.sampled_from(CONTENT_TYPES),
    headers=odd_headers(),
    target=st.sampled_from(
        [
            "/v1/chat/completions",
            "/v1/chat/completions?stream=true",
            "/v1/chat/completions/",
            "/v1//chat/completions",
            "/v1/chat/completions?%ff=%C2%B2",
        ]
    ),
)
@example(
    body=render({"model": "deterministic", "messages": [{"role": "user", "content": "hi"}]}),
    content_type=b"application/json",
    headers=[(b"Expect", b"\xff")],
    target="/v1/chat/completions",
)
def test_chat_odd_headers(
    fz: Fuzz, body: Blob, content_type: bytes, headers: list[tuple[bytes, bytes]], target: str
) -> None:
    fz.send(
        "POST", target, [(b"Content-Type", content_type), *headers], body, stream=is_stream(body)
    )


EMBED_MODELS = [
    "deterministic-embed",
    "deterministic-embed",
    "text-embedding-3-small",
    "claude-embed",
    "deterministic",
    "nope",
]
token_ids = st.integers(-(2**63), 2**64 - 1) | st.sampled_from([0, -1, 2**31, 100_000_000])
embed_template = st.fixed_dictionaries(
    {
        "model": st.sampled_from(EMBED_MODELS),
        "input": st.one_of(
            odd_text,
            st.lists(odd_text, max_size=4),
            st.lists(token_ids, max_size=6),
            st.lists(st.lists(token_ids, max_size=4), max_size=3),
        ),
    },
    optional={
        "dimensions": st.sampled_from([1, 2, 64, 8192, 8193, 0, -1, 2**63, 1.5]),
        "encoding_format": st.sampled_from(["float", "base64", "", "²", "FLOAT"]),
        "user": odd_text,
    },
)


@fuzz_settings(scale=3)
@given(body=mutated(embed_template, ["model", "input", "dimensions", "encoding_format", "user"]))
def test_embeddings(fz: Fuzz, body: Blob) -> None:
    fz.send("POST", "/v1/embeddings", JSON, body)


# (inputs, dimensions): up to 4M floats in the answer, ~900 MB in a daemon that builds it
# all at once; larger would endanger the machine the suite runs on rather than find more.
SIZES = [(n, d) for n in (1, 16, 512, 2048) for d in (8, 1024, 8192) if n * d <= 512 * 8192]
SIZES += [(512, 8192), (2048, 1024), (512, 8192)]  # the heavy end, more often


@st.composite
def big_embeddings(draw: st.DrawFn) -> Blob:
    """Many inputs times many dimensions: the answer is their product in floats."""
    count, dims = draw(st.sampled_from(SIZES))
    items: Any = [[1, 2, 3]] * count if draw(st.booleans()) else ["x"] * count
    model = draw(st.sampled_from(["deterministic-embed", "text-embedding-3-small"]))
    body = {"model": model, "input": items, "dimensions": dims}
    if draw(st.booleans()):
        body["encoding_format"] = "base64"
    return render(body)


@fuzz_settings(scale=0.5, shrink=False)
@given(body=big_embeddings())
@example(body=render({"model": "deterministic-embed", "input": ["x"] * 512, "dimensions": 8192}))
def test_embeddings_huge(fz: Fuzz, body: Blob) -> None:
    """However large the answer, other clients are served meanwhile."""
    fz.send("POST", "/v1/embeddings", JSON, body, probe=True)


FILE_PART = b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nabc'


@fuzz_settings(scale=4)
@given(form=multipart_request(), headers=odd_headers())
@example(
    form=(
        b"multipart/form-data",
        Blob(b"--x\r\n" + FILE_PART + b"\r\n--x--\r\n"),
    ),
    headers=[],
)
@example(
    form=(
        b"multipart/form-data; boundary=x",
        Blob(b"--x\r\n" + FILE_PART),
    ),
    headers=[],
)
@example(
    form=(
        b"multipart/form-data; boundary=x",
        Blob(
            b"--x\r\n" + FILE_PART + b"\r\n--x\r\n"
            b'Content-Disposition: form-data; name="model"\r\n'
            b"Content-Transfer-Encoding: gzip\r\n\r\ndeterministic-transcribe\r\n--x--\r\n"
        ),
    ),
    headers=[],
)
def test_transcriptions_multipart(
    fz: Fuzz, form: tuple[bytes, Blob], headers: list[tuple[bytes, bytes]]
) -> None:
    content_type, body = form
    fz.send("POST", "/v1/audio/transcriptions", [*headers, (b"Content-Type", content_type)], body)


@fuzz_settings(scale=1)
@given(
    query=st.sampled_from(["", "?", "?limit=%C2%B2", "?a=%ff", "?" + "a=1&" * 500, "?%00"]),
    headers=odd_headers(),
    method=st.sampled_from(["GET", "HEAD", "POST", "DELETE", "OPTIONS"]),
)
def test_models_list(fz: Fuzz, query: str, headers: list[tuple[bytes, bytes]], method: str) -> None:
    fz.send(method, "/v1/models" + query, headers)
