"""The Anthropic provider: request/response/stream translation, then against a loopback fake."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from palyra.config import ModelConfig, ProviderConfig, ProviderSettings
from palyra.credentials import EnvCredentials
from palyra.errors import (
    ErrorClass,
    InvalidRequest,
    ProviderError,
    Unsupported,
    UpstreamProtocolError,
    UpstreamUnreachable,
)
from palyra.models.anthropic import AnthropicProvider
from palyra.models.anthropic_honour import HARMLESS_PARAMETERS, CannotHonour, unhonoured
from palyra.models.anthropic_request import build_messages_request
from palyra.models.anthropic_response import StreamTranslator, parse_message
from palyra.sse import SSEDecoder
from palyra.types import (
    ChatDelta,
    ChatRequest,
    EmbeddingsRequest,
    ModelProviderKind,
    TranscriptionRequest,
)
from tests.conftest import ADMIN_TOKEN
from tests.fakes.anthropic_wire import ClaudeReply
from tests.fakes.upstream import ChatReply, DropConnection, ErrorReply, FakeUpstream, Reply

PROVIDER_ID = "anthropic-test"
KEY = "sk-fake-upstream-key"
MODEL = ModelConfig(
    model_id="claude",
    provider_id=PROVIDER_ID,
    upstream_model="claude-sonnet-4-5-20250929",
    max_context_tokens=200000,
    max_output_tokens=4096,
)
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def chat(messages: list[dict[str, Any]], **fields: Any) -> ChatRequest:
    return ChatRequest.model_validate({"model": "claude", "messages": messages, **fields})


def build(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return dict(build_messages_request(chat(messages, **fields), MODEL))


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time"}}


# --- request mapping -------------------------------------------------------------------------


def test_minimal_request_uses_upstream_name_and_model_output_limit() -> None:
    payload = build([user("Hello")])
    assert payload == {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Hello"}],
    }


def test_max_tokens_from_request_prefers_max_completion_tokens() -> None:
    assert build([user("hi")], max_tokens=100)["max_tokens"] == 100
    assert build([user("hi")], max_tokens=100, max_completion_tokens=50)["max_tokens"] == 50


def test_system_and_developer_messages_are_gathered_in_order() -> None:
    payload = build(
        [
            {"role": "system", "content": "You are terse."},
            user("one"),
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            user("two"),
        ]
    )
    assert payload["system"] == "You are terse.\n\nAnswer in French."
    # The two user turns around the developer message are now adjacent: merged into one.
    assert payload["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        }
    ]


def test_no_system_key_without_system_messages() -> None:
    assert "system" not in build([user("hi")])


def test_consecutive_roles_are_merged_and_roles_alternate() -> None:
    payload = build(
        [
            user("a"),
            user("b"),
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": "d"},
            user("e"),
        ]
    )
    roles = [m["role"] for m in payload["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert payload["messages"][1]["content"] == [
        {"type": "text", "text": "c"},
        {"type": "text", "text": "d"},
    ]


def test_only_system_messages_is_not_honoured() -> None:
    # OpenAI answers system messages alone; Anthropic needs a user or assistant turn.
    for messages in ([{"role": "system", "content": "x"}], [{"role": "user", "content": ""}]):
        with pytest.raises(CannotHonour, match="user or assistant") as caught:
            build(messages)
        assert caught.value.param == "messages"


def test_images_data_url_and_http_url() -> None:
    payload = build(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare these"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"},
                    },
                ],
            }
        ]
    )
    assert payload["messages"][0]["content"] == [
        {"type": "text", "text": "Compare these"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("data:image/png,rawbytes", "base64"),
        ("ftp://example.com/cat.png", "http"),
        ("data:nonsense", "data URL"),
    ],
)
def test_bad_images_are_refused_naming_the_part(url: str, complaint: str) -> None:
    image = {"type": "image_url", "image_url": {"url": url}}
    with pytest.raises(InvalidRequest, match=complaint) as caught:
        build(
            [user("x"), {"role": "assistant", "content": "y"}, {"role": "user", "content": [image]}]
        )
    assert caught.value.param == "messages[2].content[0].image_url.url"


def test_an_image_type_anthropic_cannot_read_is_not_honoured() -> None:
    # Not the request's fault (another upstream may read a BMP): Anthropic's limit.
    image = {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}
    with pytest.raises(CannotHonour, match=r"'image/bmp'.*image/png") as caught:
        build([{"role": "user", "content": [image]}])
    assert caught.value.param == "messages[0].content[0].image_url.url"


def test_image_in_system_message_is_refused() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    with pytest.raises(InvalidRequest, match=r"messages\[0\]"):
        build([{"role": "system", "content": [image]}, user("hi")])


def test_tools_and_default_input_schema() -> None:
    payload = build([user("hi")], tools=[WEATHER_TOOL, TIME_TOOL])
    assert payload["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
        },
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in payload


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_time"}},
            {"type": "tool", "name": "get_time"},
        ),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    payload = build([user("hi")], tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=choice)
    assert payload["tool_choice"] == expected


def test_parallel_tool_calls_false_disables_parallel_use() -> None:
    tools = [WEATHER_TOOL]
    assert build([user("hi")], tools=tools, parallel_tool_calls=False)["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }
    assert build([user("hi")], tools=tools, tool_choice="required", parallel_tool_calls=False)[
        "tool_choice"
    ] == {"type": "any", "disable_parallel_tool_use": True}
    assert "tool_choice" not in build([user("hi")], tools=tools, parallel_tool_calls=True)


def test_named_tool_choice_must_name_a_tool() -> None:
    choice = {"type": "function", "function": {"name": "nope"}}
    with pytest.raises(InvalidRequest, match="nope") as caught:
        build([user("hi")], tools=[WEATHER_TOOL], tool_choice=choice)
    assert caught.value.param == "tool_choice"


def test_tool_calls_and_results_round_trip() -> None:
    payload = build(
        [
            user("Weather in Paris and the time?"),
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                    },
                    {
                        "id": "toolu_2",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C, cloudy"},
            {
                "role": "tool",
                "tool_call_id": "toolu_2",
                "content": [{"type": "text", "text": "14:05"}],
            },
            user("Thanks, summarise."),
        ],
        tools=[WEATHER_TOOL, TIME_TOOL],
    )
    assert payload["messages"] == [
        {"role": "user", "content": "Weather in Paris and the time?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"location": "Paris"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, cloudy"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "14:05"}],
                },
                {"type": "text", "text": "Thanks, summarise."},
            ],
        },
    ]


def test_assistant_with_only_tool_calls() -> None:
    payload = build(
        [
            user("time?"),
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "t",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "t", "content": "noon"},
        ]
    )
    assert payload["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t", "name": "get_time", "input": {}}],
    }
    assert payload["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t", "content": "noon"}
    ]


@pytest.mark.parametrize(
    ("arguments", "complaint"), [('{"location": ', "not JSON"), ("[1, 2]", "not a JSON object")]
)
def test_tool_call_arguments_anthropic_cannot_take_name_the_message(
    arguments: str, complaint: str
) -> None:
    # OpenAI takes back whatever arguments its model wrote (a cut-off answer's are not JSON);
    # Anthropic's tool_use input is an object.
    call = {"id": "t", "type": "function", "function": {"name": "get_time", "arguments": arguments}}
    with pytest.raises(CannotHonour, match=complaint) as caught:
        build([user("hi"), {"role": "assistant", "tool_calls": [call]}])
    assert caught.value.param == "messages[1].tool_calls[0].function.arguments"


def test_sampling_stop_and_user() -> None:
    payload = build([user("hi")], temperature=0.3, top_p=0.9, stop="END", user="u-42")
    assert payload["temperature"] == 0.3
    assert payload["top_p"] == 0.9
    assert payload["stop_sequences"] == ["END"]
    assert payload["metadata"] == {"user_id": "u-42"}
    assert build([user("hi")], stop=["a", "b"])["stop_sequences"] == ["a", "b"]
    assert "stop_sequences" not in build([user("hi")], stop=[])


def test_text_response_format_adds_nothing() -> None:
    assert "system" not in build([user("hi")], response_format={"type": "text"})


def test_final_assistant_prefill_loses_trailing_whitespace() -> None:
    payload = build([user("Say a JSON"), {"role": "assistant", "content": "{ \n"}])
    assert payload["messages"][-1] == {"role": "assistant", "content": "{"}


def test_stream_flag() -> None:
    assert build_messages_request(chat([user("hi")]), MODEL, stream=True)["stream"] is True


# --- response mapping ------------------------------------------------------------------------

# The non-streamed example answer of the Messages API reference.
DOCS_MESSAGE = {
    "content": [{"text": "Hi! My name is Claude.", "type": "text"}],
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "model": "claude-sonnet-4-5-20250929",
    "role": "assistant",
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "type": "message",
    "usage": {"input_tokens": 2095, "output_tokens": 503},
}


def test_parse_text_message() -> None:
    result = parse_message(DOCS_MESSAGE, PROVIDER_ID)
    assert result.content == "Hi! My name is Claude."
    assert result.finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (2095, 503)
    assert result.tool_calls == []
    assert result.upstream_model == "claude-sonnet-4-5-20250929"


def test_parse_tool_use_message_with_cache_usage() -> None:
    body = {
        **DOCS_MESSAGE,
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Let me "},
            {"type": "text", "text": "check."},
            {
                "type": "tool_use",
                "id": "toolu_01A09q90qw90lq917835lq9",
                "name": "get_weather",
                "input": {"location": "San Francisco, CA", "unit": "celsius"},
            },
        ],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "output_tokens": 7,
        },
    }
    result = parse_message(body, PROVIDER_ID)
    assert result.content == "Let me check."
    assert result.finish_reason == "tool_calls"
    assert result.usage.prompt_tokens == 1110
    assert result.usage.completion_tokens == 7
    [call] = result.tool_calls
    assert call.id == "toolu_01A09q90qw90lq917835lq9"
    assert call.name == "get_weather"
    assert call.arguments == '{"location":"San Francisco, CA","unit":"celsius"}'


def test_parse_message_without_text_has_no_content() -> None:
    body = {
        **DOCS_MESSAGE,
        "content": [{"type": "tool_use", "id": "t", "name": "get_time", "input": {}}],
        "stop_reason": "tool_use",
    }
    result = parse_message(body, PROVIDER_ID)
    assert result.content is None
    assert result.tool_calls[0].arguments == "{}"


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        ("something_new", "stop"),
        (None, "stop"),
    ],
)
def test_stop_reasons(stop_reason: str | None, finish: str) -> None:
    call = {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}
    body = {**DOCS_MESSAGE, "content": [*DOCS_MESSAGE["content"], call]}
    assert parse_message({**body, "stop_reason": stop_reason}, PROVIDER_ID).finish_reason == finish


def test_parse_non_message_is_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_message({"id": "x"}, PROVIDER_ID)


# --- stream mapping --------------------------------------------------------------------------

# A streamed tool-use answer as the Messages API sends it (shape of the streaming docs'
# example), extended with a second tool_use block. Note `ping` and the opening empty fragment.
TOOL_STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", let's check the weather for San Francisco, CA:"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \\"San Francisc"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"o, CA\\", \\"unit\\": \\"fah"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"renheit\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_02","name":"get_time","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""  # noqa: E501 - wire bytes, kept verbatim


def translate(raw: bytes, chunk: int = 37) -> tuple[list[ChatDelta], StreamTranslator]:
    """Decode the bytes in awkward chunk sizes, as the network would deliver them."""
    decoder = SSEDecoder()
    translator = StreamTranslator(PROVIDER_ID)
    deltas: list[ChatDelta] = []
    for start in range(0, len(raw), chunk):
        for event in decoder.feed(raw[start : start + chunk]):
            delta = translator.feed(event)
            if delta is not None:
                deltas.append(delta)
    return deltas, translator


def assemble(deltas: list[ChatDelta]) -> tuple[str, dict[int, dict[str, str]]]:
    """What an OpenAI client builds from the deltas: the text, and calls keyed by index."""
    text = "".join(d.content or "" for d in deltas)
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        for part in delta.tool_calls or []:
            call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += part.id or ""
            call["name"] += part.name or ""
            call["arguments"] += part.arguments
    return text, calls


def test_stream_tool_use_is_indexed_by_tool_not_block() -> None:
    deltas, translator = translate(TOOL_STREAM)
    translator.finish()
    text, calls = assemble(deltas)
    assert text == "Okay, let's check the weather for San Francisco, CA:"
    assert sorted(calls) == [0, 1]
    assert calls[0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {
        "location": "San Francisco, CA",
        "unit": "fahrenheit",
    }
    # A call streamed without any argument fragment still assembles to valid JSON.
    assert calls[1] == {"id": "toolu_02", "name": "get_time", "arguments": "{}"}
    final = deltas[-1]
    assert final.finish_reason == "tool_calls"
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (472, 89)
    assert all(d.finish_reason is None for d in deltas[:-1])
    # Only the first fragment of each call names it.
    first_parts = [d.tool_calls[0] for d in deltas if d.tool_calls and d.tool_calls[0].name]
    assert [p.index for p in first_parts] == [0, 1]


def test_stream_without_message_stop_is_protocol_error() -> None:
    cut = TOOL_STREAM[: TOOL_STREAM.index(b"event: message_delta")]
    _, translator = translate(cut)
    with pytest.raises(UpstreamProtocolError, match="stream ended early"):
        translator.finish()


def test_stream_usage_from_message_delta_input_counts() -> None:
    raw = (
        b'event: message_start\ndata: {"type":"message_start","message":{"model":"m","usage":'
        b'{"input_tokens":5,"output_tokens":1}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},'
        b'"usage":{"input_tokens":5,"cache_read_input_tokens":20,"output_tokens":16}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    deltas, _ = translate(raw)
    [final] = deltas
    assert final.finish_reason == "length"
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (25, 16)


@pytest.mark.parametrize(
    ("error_type", "status", "error_class"),
    [
        ("overloaded_error", 503, ErrorClass.RETRYABLE),
        ("rate_limit_error", 429, ErrorClass.RETRYABLE),
        ("api_error", 502, ErrorClass.RETRYABLE),
        ("invalid_request_error", 400, ErrorClass.CLIENT),
        ("authentication_error", 502, ErrorClass.CREDENTIAL),
    ],
)
def test_stream_error_event_classification(
    error_type: str, status: int, error_class: ErrorClass
) -> None:
    raw = (
        b'event: error\ndata: {"type": "error", "error": {"type": "'
        + error_type.encode()
        + b'", "message": "Overloaded"}}\n\n'
    )
    with pytest.raises(ProviderError) as caught:
        translate(raw)
    assert caught.value.error_class is error_class
    assert caught.value.status == status
    assert caught.value.provider_id == PROVIDER_ID


def test_stream_garbage_is_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        translate(b"event: content_block_delta\ndata: {not json\n\n")


# --- against the fake upstream ---------------------------------------------------------------


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(models=["claude-sonnet-4-5-20250929", "claude-haiku-4-5"]) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


Factory = Callable[..., AnthropicProvider]


@pytest.fixture
def make_provider(upstream: FakeUpstream, session: aiohttp.ClientSession) -> Factory:
    def make(env: dict[str, str] | None = None, timeout_ms: int = 5000) -> AnthropicProvider:
        config = ProviderConfig(
            provider_id=PROVIDER_ID,
            kind=ModelProviderKind.ANTHROPIC,
            base_url=upstream.anthropic_base_url,
            api_key_env="K",
            allow_private_base_url=True,
        )
        settings = ProviderSettings(
            request_timeout_ms=timeout_ms,
            max_retries=0,
            retry_backoff_ms=0,
            circuit_breaker_failure_threshold=3,
            circuit_breaker_cooldown_ms=30000,
        )
        credentials = EnvCredentials(env={"K": KEY} if env is None else env)
        return AnthropicProvider(
            config, session=session, settings=settings, credentials=credentials
        )

    return make


@pytest.fixture
def provider(make_provider: Factory) -> AnthropicProvider:
    return make_provider()


async def collect(stream: AsyncIterator[ChatDelta]) -> list[ChatDelta]:
    return [delta async for delta in stream]


async def test_whole_chat_sends_anthropic_headers_and_body(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    request = chat([{"role": "system", "content": "Be brief."}, user("hi there")], max_tokens=64)
    result = await provider.chat(request, MODEL)
    assert result.content == "echo: hi there"
    assert result.finish_reason == "stop"
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert result.upstream_model == "claude-sonnet-4-5-20250929"
    [sent] = upstream.requests_to("/v1/messages")
    assert sent.method == "POST"
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.headers["content-type"] == "application/json"
    assert sent.json == {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 64,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi there"}],
    }


async def test_whole_chat_with_tool_calls(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/messages",
        ChatReply(
            content="Checking.",
            tool_calls=[
                {"id": "toolu_9", "name": "get_weather", "arguments": {"location": "Oslo"}}
            ],
        ),
    )
    result = await provider.chat(chat([user("weather?")], tools=[WEATHER_TOOL]), MODEL)
    assert result.content == "Checking."
    assert result.finish_reason == "tool_calls"
    [call] = result.tool_calls
    assert (call.id, call.name, json.loads(call.arguments)) == (
        "toolu_9",
        "get_weather",
        {"location": "Oslo"},
    )


async def test_streamed_text(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    upstream.script("/v1/messages", ChatReply(content="The quick brown fox jumps.", usage=(12, 6)))
    deltas = await collect(provider.stream_chat(chat([user("go")]), MODEL))
    assert "".join(d.content or "" for d in deltas) == "The quick brown fox jumps."
    assert len([d for d in deltas if d.content]) > 1
    final = deltas[-1]
    assert final.finish_reason == "stop"
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (12, 6)
    [sent] = upstream.requests_to("/v1/messages")
    assert sent.json is not None and sent.json["stream"] is True
    await upstream.wait_streams_closed()
    assert upstream.cancelled_streams == 0


async def test_streamed_tool_use_assembled_by_index(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/messages",
        ChatReply(
            content="Let me look both up.",
            tool_calls=[
                {
                    "id": "toolu_a",
                    "name": "get_weather",
                    "arguments": {"location": "Paris, France"},
                },
                {"id": "toolu_b", "name": "get_time", "arguments": {"zone": "Europe/Paris"}},
            ],
        ),
    )
    request = chat(
        [user("weather and time in Paris")], tools=[WEATHER_TOOL, TIME_TOOL], stream=True
    )
    deltas = await collect(provider.stream_chat(request, MODEL))
    text, calls = assemble(deltas)
    assert text == "Let me look both up."
    assert calls == {
        0: {"id": "toolu_a", "name": "get_weather", "arguments": '{"location": "Paris, France"}'},
        1: {"id": "toolu_b", "name": "get_time", "arguments": '{"zone": "Europe/Paris"}'},
    }
    assert deltas[-1].finish_reason == "tool_calls"


async def test_error_event_mid_stream_raises_after_deltas(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    # message_start, content_block_start, ping, then three text deltas: then the error event.
    upstream.script(
        "/v1/messages",
        ChatReply(content="one two three four five six", error_event_after_chunks=6),
    )
    received: list[ChatDelta] = []
    with pytest.raises(ProviderError) as caught:
        async for delta in provider.stream_chat(chat([user("go")]), MODEL):
            received.append(delta)
    assert [d.content for d in received] == ["one ", "two ", "three "]
    assert caught.value.error_class is ErrorClass.RETRYABLE
    assert caught.value.status == 503
    assert "Overloaded" in caught.value.message


async def test_error_event_before_any_delta_raises_on_first_next(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/messages", ChatReply(content="never seen", error_event_after_chunks=3))
    stream = provider.stream_chat(chat([user("go")]), MODEL)
    with pytest.raises(ProviderError) as caught:
        await anext(stream)
    assert caught.value.error_class is ErrorClass.RETRYABLE


async def test_broken_stream_raises_provider_error(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/messages", ChatReply(content="a b c d e f g h", break_after_chunks=5))
    with pytest.raises(ProviderError) as caught:
        await collect(provider.stream_chat(chat([user("go")]), MODEL))
    assert isinstance(caught.value, UpstreamUnreachable | UpstreamProtocolError)
    assert caught.value.error_class is ErrorClass.RETRYABLE


async def test_stream_without_message_stop_raises(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    cut = TOOL_STREAM[: TOOL_STREAM.index(b"event: message_delta")]
    upstream.script("/v1/messages", Reply(body=cut, headers={"Content-Type": "text/event-stream"}))
    with pytest.raises(UpstreamProtocolError, match="stream ended early"):
        await collect(provider.stream_chat(chat([user("go")]), MODEL))


async def test_verbatim_stream_through_http(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/messages", Reply(body=TOOL_STREAM, headers={"Content-Type": "text/event-stream"})
    )
    deltas = await collect(provider.stream_chat(chat([user("go")], tools=[WEATHER_TOOL]), MODEL))
    _, calls = assemble(deltas)
    assert json.loads(calls[0]["arguments"])["unit"] == "fahrenheit"
    assert deltas[-1].finish_reason == "tool_calls"


async def test_529_overloaded_is_retryable_503_with_retry_after(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/messages", ErrorReply(529, retry_after="3"))
    with pytest.raises(ProviderError) as caught:
        await provider.chat(chat([user("hi")]), MODEL)
    error = caught.value
    assert error.error_class is ErrorClass.RETRYABLE
    assert error.upstream_status == 529
    assert error.status == 503
    assert error.retry_after_s == 3
    assert error.headers["Retry-After"] == "3"
    assert "Overloaded" in error.message


async def test_429_rate_limit_on_stream_raises_on_first_next(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/messages", ErrorReply(429, retry_after="7"))
    stream = provider.stream_chat(chat([user("hi")]), MODEL)
    with pytest.raises(ProviderError) as caught:
        await anext(stream)
    error = caught.value
    assert error.error_class is ErrorClass.RETRYABLE
    assert (error.status, error.upstream_status) == (429, 429)
    assert error.code == "rate_limit_exceeded"
    assert error.headers["Retry-After"] == "7"


async def test_upstream_400_keeps_anthropic_message_and_type(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/messages", ErrorReply(400, "max_tokens: must be at most 8192"))
    with pytest.raises(ProviderError) as caught:
        await provider.chat(chat([user("hi")]), MODEL)
    assert caught.value.error_class is ErrorClass.CLIENT
    assert caught.value.status == 400
    assert caught.value.code == "invalid_request_error"
    assert "max_tokens: must be at most 8192" in caught.value.message


async def test_prompt_too_long_is_context_error(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/messages", ErrorReply(400, "prompt is too long: 210000 tokens > 200000 maximum")
    )
    with pytest.raises(ProviderError) as caught:
        await provider.chat(chat([user("hi")]), MODEL)
    assert caught.value.error_class is ErrorClass.CONTEXT
    assert caught.value.code == "context_length_exceeded"


async def test_wrong_key_is_credential_error_without_the_key(make_provider: Factory) -> None:
    provider = make_provider(env={"K": "sk-wrong"})
    with pytest.raises(ProviderError) as caught:
        await provider.chat(chat([user("hi")]), MODEL)
    assert caught.value.error_class is ErrorClass.CREDENTIAL
    assert caught.value.status == 502
    assert "sk-wrong" not in str(caught.value.body())


async def test_missing_key_is_credential_error(
    make_provider: Factory, upstream: FakeUpstream
) -> None:
    provider = make_provider(env={})
    with pytest.raises(ProviderError) as caught:
        await provider.chat(chat([user("hi")]), MODEL)
    assert caught.value.error_class is ErrorClass.CREDENTIAL
    assert upstream.requests == []


async def test_dropped_connection_is_unreachable(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/messages", DropConnection())
    with pytest.raises(UpstreamUnreachable):
        await provider.chat(chat([user("hi")]), MODEL)


async def test_invalid_request_is_raised_before_anything_is_sent(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    with pytest.raises(Unsupported, match="temperature"):
        await collect(provider.stream_chat(chat([user("hi")], temperature=1.7), MODEL))
    with pytest.raises(InvalidRequest, match="tool_choice"):
        named = {"type": "function", "function": {"name": "get_time"}}
        await provider.chat(chat([user("hi")], tool_choice=named), MODEL)
    assert upstream.requests == []


async def test_list_models(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    assert await provider.list_models() == ["claude-sonnet-4-5-20250929", "claude-haiku-4-5"]
    [sent] = upstream.requests_to("/v1/models")
    assert sent.method == "GET"
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "after_id" not in sent.query


def models_page(ids: list[str], has_more: bool) -> Reply:
    data = [
        {"type": "model", "id": i, "display_name": i, "created_at": "2025-01-01T00:00:00Z"}
        for i in ids
    ]
    return Reply(json={"data": data, "has_more": has_more, "first_id": ids[0], "last_id": ids[-1]})


async def test_list_models_follows_pagination(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/models",
        models_page(["a", "b"], has_more=True),
        models_page(["c"], has_more=True),
        models_page(["d"], has_more=False),
    )
    assert await provider.list_models() == ["a", "b", "c", "d"]
    assert [r.query.get("after_id") for r in upstream.requests_to("/v1/models")] == [None, "b", "c"]


async def test_list_models_stops_after_page_cap(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/models", *[models_page([f"m{i}"], has_more=True) for i in range(20)])
    ids = await provider.list_models()
    assert len(ids) == 10
    assert len(upstream.requests_to("/v1/models")) == 10


async def test_embeddings_and_transcription_are_unsupported(provider: AnthropicProvider) -> None:
    with pytest.raises(Unsupported, match="Anthropic API has no embeddings"):
        await provider.embed(EmbeddingsRequest(input="x"), MODEL)
    audio = TranscriptionRequest(
        model=None, file=b"RIFF", filename="a.wav", content_type="audio/wav"
    )
    with pytest.raises(Unsupported, match="transcription"):
        await provider.transcribe(audio, MODEL)


def test_kind() -> None:
    assert AnthropicProvider.kind is ModelProviderKind.ANTHROPIC


async def test_leaving_a_stream_early_releases_the_upstream(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/messages", ChatReply(content="a b c d e f g h i j k l", chunk_delay_s=0.05)
    )
    stream = provider.stream_chat(chat([user("go")]), MODEL)
    first = await anext(stream)
    assert first.content == "a "
    await stream.aclose()  # type: ignore[attr-defined]
    await upstream.wait_streams_closed()
    assert upstream.cancelled_streams == 1


def test_stream_text_block_with_initial_text_and_unknown_events() -> None:
    raw = (
        b'event: message_start\ndata: {"type":"message_start","message":{"model":"m",'
        b'"usage":{"input_tokens":3,"output_tokens":1}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":"Hel"}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"lo"}}\n\n'
        b'event: brand_new_event\ndata: {"type":"brand_new_event"}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
        b'"refusal"},"usage":{"output_tokens":2}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    deltas, translator = translate(raw, chunk=5)
    translator.finish()
    assert [d.content for d in deltas[:-1]] == ["Hel", "lo"]
    assert deltas[-1].finish_reason == "content_filter"


# --- malformed upstream answers: each a 502 naming what was wrong ---------------------------


def message_with(**fields: Any) -> dict[str, Any]:
    return {**DOCS_MESSAGE, **fields}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (message_with(usage={"input_tokens": "abc", "output_tokens": 1}), "usage.input_tokens"),
        (message_with(usage={"input_tokens": 1, "output_tokens": [2]}), "usage.output_tokens"),
        (message_with(usage={"input_tokens": 1, "cache_read_input_tokens": True}), "cache_read"),
        (message_with(usage="plenty"), "usage"),
        # Fits 64 bits, but three of them summed would not (nor could any real count).
        (message_with(usage={"input_tokens": 2**64 - 1, "output_tokens": 1}), "input_tokens"),
        (message_with(content=[{"type": "text", "text": 5}]), "content[0].text"),
        (message_with(content=["hello"]), "content[0]"),
        (
            message_with(content=[{"type": "tool_use", "id": "t", "name": "f", "input": "x"}]),
            "content[0].input",
        ),
        (message_with(content=[{"type": "tool_use", "input": {}}]), "content[0]"),
        ({"content": "hello"}, "content"),
    ],
)
async def test_malformed_messages_are_protocol_errors_naming_the_fault(
    provider: AnthropicProvider, upstream: FakeUpstream, body: Any, named: str
) -> None:
    upstream.script("/v1/messages", Reply(json=body))
    with pytest.raises(UpstreamProtocolError) as caught:
        await provider.chat(chat([user("hi")]), MODEL)
    assert caught.value.status == 502 and caught.value.error_class is ErrorClass.RETRYABLE
    assert named in caught.value.message


async def test_a_tool_input_nested_too_deep_to_pass_on_is_a_protocol_error(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    # Found by the fuzz suite: orjson will not encode past 255 levels, so re-encoding the
    # input for the client raised out of the parser (a 500).
    deep = b"[" * 300 + b"]" * 300
    body = (
        b'{"id":"msg_1","type":"message","role":"assistant","model":"m","content":'
        b'[{"type":"tool_use","id":"t1","name":"f","input":{"a":' + deep + b"}}],"
        b'"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":1}}'
    )
    upstream.script("/v1/messages", Reply(body=body, headers={"Content-Type": "application/json"}))
    with pytest.raises(UpstreamProtocolError) as caught:
        await provider.chat(chat([user("hi")]), MODEL)
    assert "nested too deep" in caught.value.message


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"not json", "not JSON"),
        (b'{"type": "message", "content": [', "not JSON"),
        (b"\x89PNG\r\n\x1a\n\x00\x00garbage", "not JSON"),
        (b"", "empty"),
    ],
)
async def test_whole_answers_that_are_not_json_are_protocol_errors(
    provider: AnthropicProvider, upstream: FakeUpstream, body: bytes, named: str
) -> None:
    upstream.script("/v1/messages", Reply(body=body, headers={"Content-Type": "application/json"}))
    with pytest.raises(UpstreamProtocolError) as caught:
        await provider.chat(chat([user("hi")]), MODEL)
    assert named in caught.value.message


START = TOOL_STREAM[: TOOL_STREAM.index(b"event: ping")]
TEXT_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Okay"}}\n\n'
)


@pytest.mark.parametrize(
    ("frames", "named"),
    [
        (
            START + TEXT_DELTA + b'event: message_delta\ndata: {"type":"message_delta",'
            b'"delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":"many"}}\n\n',
            "usage.output_tokens",
        ),
        (
            START + b'event: content_block_delta\ndata: {"type":"content_block_delta",'
            b'"index":0,"delta":{"type":"text_delta","text":{"t":1}}}\n\n',
            "delta.text",
        ),
        (START + TEXT_DELTA + b"event: content_block_delta\ndata: \xff\xfe\x80\n\n", "not JSON"),
        (START + TEXT_DELTA + b'event: content_block_delta\ndata: {"type"\n\n', "not JSON"),
        (START + TEXT_DELTA, "ended early"),
    ],
)
async def test_malformed_streams_are_protocol_errors_naming_the_fault(
    provider: AnthropicProvider, upstream: FakeUpstream, frames: bytes, named: str
) -> None:
    upstream.script(
        "/v1/messages", Reply(body=frames, headers={"Content-Type": "text/event-stream"})
    )
    with pytest.raises(UpstreamProtocolError) as caught:
        await collect(provider.stream_chat(chat([user("go")]), MODEL))
    assert caught.value.status == 502
    assert named in caught.value.message


async def test_a_stream_answered_with_an_html_page_is_a_protocol_error(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/messages",
        Reply(body=b"<html><h1>502 Bad Gateway</h1></html>", headers={"Content-Type": "text/html"}),
    )
    with pytest.raises(UpstreamProtocolError) as caught:
        await collect(provider.stream_chat(chat([user("go")]), MODEL))
    assert "HTML" in caught.value.message and "text/html" in caught.value.message


async def test_gateway_answers_502_for_a_malformed_anthropic_body_whole_and_streamed(
    gateway: TestServer, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/messages", Reply(json=message_with(usage={"input_tokens": "abc", "output_tokens": 1}))
    )
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"model": "claude", "messages": [user("hi")]}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            gateway.make_url("/v1/chat/completions"), json=body, headers=headers
        ) as response:
            assert response.status == 502
            error = (await response.json())["error"]
        assert error["code"] == "upstream_protocol_error"
        assert "usage.input_tokens" in error["message"]

        upstream.script(
            "/v1/messages",
            Reply(
                body=START + TEXT_DELTA + b"event: content_block_delta\ndata: \xff\x80\n\n",
                headers={"Content-Type": "text/event-stream"},
            ),
        )
        async with http.post(
            gateway.make_url("/v1/chat/completions"), json={**body, "stream": True}, headers=headers
        ) as response:
            assert response.status == 200
            text = (await response.read()).decode()
    assert '"content":"Okay"' in text
    events = [frame for frame in text.split("\n\n") if frame.startswith('data: {"error"')]
    assert len(events) == 1 and "upstream_protocol_error" in events[0]
    assert "[DONE]" not in text


# --- issue 13: what Anthropic can honour, translated; what it cannot, named -------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logprobs": True, "top_logprobs": 3}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        (
            {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
            "modalities",
        ),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"presence_penalty": -1}, "presence_penalty"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"verbosity": "low"}, "verbosity"),
        ({"web_search_options": {}}, None),  # empty options ask for nothing
        ({"moderation": {"model": "omni-moderation-latest"}}, "moderation"),
        ({"frobnicate": 1}, "frobnicate"),  # unknown: may change the answer
        ({"frobnicate": False}, "frobnicate"),  # (what false means, only its upstream knows)
        ({"frobnicate": None}, None),  # null is absent
        ({"top_k": "5"}, "top_k"),
        ({"top_k": -1}, "top_k"),
        ({"temperature": 1.5}, "temperature"),
        ({"reasoning_effort": "xhigh"}, "reasoning_effort"),
        (
            {"reasoning_effort": "low", "tools": [WEATHER_TOOL], "tool_choice": "required"},
            "tool_choice",
        ),
        (
            {"reasoning_effort": "high", "response_format": {"type": "json_object"}},
            "response_format",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "list", "schema": {"type": "array"}},
                }
            },
            "response_format",
        ),
        ({"tools": [{"type": "custom", "custom": {"name": "grep"}}]}, "tools[0]"),
    ],
)
def test_what_anthropic_cannot_honour_is_named(fields: dict[str, Any], param: str | None) -> None:
    found = unhonoured(chat([user("hi")], **fields))
    if param is None:
        assert found is None
    else:
        assert found is not None and found[0] == param


def test_the_provider_words_the_refusal_and_the_router_can_skip_it(
    make_provider: Factory,
) -> None:
    refusal = make_provider().unsupported(chat([user("hi")], n=3))
    assert isinstance(refusal, Unsupported)
    assert refusal.status == 400 and refusal.param == "n"
    assert refusal.message.startswith(f"provider {PROVIDER_ID} (anthropic) cannot honour n=3")
    assert make_provider().unsupported(chat([user("hi")])) is None


def test_harmless_parameters_are_dropped_and_zero_penalties_accepted() -> None:
    fields = {
        "seed": 7,
        "service_tier": "flex",
        "prediction": {"type": "content", "content": "x"},
        "store": True,
        "metadata": {"k": "v"},
        "frequency_penalty": 0,
        "presence_penalty": 0.0,
        "stream_options": {"include_usage": True},
        "prompt_cache_key": "k",
        "prompt_cache_retention": "24h",
        "prompt_cache_options": {"mode": "implicit", "ttl": "30m"},
        "logprobs": False,
        "n": 1,
        "modalities": ["text"],
        # What a dumped or defaulted body carries as null means "not given".
        "audio": None,
        "verbosity": None,
        "logit_bias": None,
        "web_search_options": None,
        "moderation": None,
    }
    request = chat([user("hi")], **fields)
    assert unhonoured(request) is None
    payload = build([user("hi")], **fields)
    assert set(payload) == {"model", "max_tokens", "messages"}


def test_every_harmless_parameter_is_a_documented_chat_completions_parameter() -> None:
    # The list drops what OpenAI documents as not changing the answer: nothing we guessed.
    from openai.types.chat.completion_create_params import CompletionCreateParamsBase

    assert set(CompletionCreateParamsBase.__annotations__) >= HARMLESS_PARAMETERS
    request = chat([user("hi")], **dict.fromkeys(HARMLESS_PARAMETERS, "x"))
    assert unhonoured(request) is None


async def test_an_unknown_parameter_is_not_honoured_naming_it(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    request = chat([user("hi")], frobnicate=1)
    refusal = provider.unsupported(request)
    assert isinstance(refusal, Unsupported) and refusal.param == "frobnicate"
    assert refusal.message.startswith(
        f"provider {PROVIDER_ID} (anthropic) cannot honour parameter 'frobnicate'"
    )
    with pytest.raises(Unsupported, match="'frobnicate'"):
        await provider.chat(request, MODEL)
    assert upstream.requests == []


def test_top_k_is_anthropics_top_k() -> None:
    assert build([user("hi")], top_k=5)["top_k"] == 5
    assert build([user("hi")], top_k=0)["top_k"] == 0
    assert "top_k" not in build([user("hi")], top_k=None)


CUT_OFF_CALL = {"id": "t", "type": "function", "function": {"name": "f", "arguments": '{"cut'}}


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "system", "content": "only a system prompt"}], "messages"),
        (
            [user("hi"), {"role": "assistant", "tool_calls": [CUT_OFF_CALL]}],
            "messages[1].tool_calls[0].function.arguments",
        ),
    ],
)
async def test_what_only_translating_finds_is_unsupported_not_a_400_of_its_own(
    provider: AnthropicProvider,
    upstream: FakeUpstream,
    messages: list[dict[str, Any]],
    param: str,
) -> None:
    # Unsupported, on which the fallback skips to a candidate that can serve.
    request = chat(messages)
    for attempt in (provider.chat(request, MODEL), collect(provider.stream_chat(request, MODEL))):
        with pytest.raises(Unsupported) as caught:
            await attempt
        assert caught.value.param == param
        assert caught.value.message.startswith(f"provider {PROVIDER_ID} (anthropic) cannot honour")
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("part", "where"),
    [
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "content[1]"),
        ({"type": "file", "file": {"file_id": "file-abc"}}, "content[1]"),
    ],
)
def test_parts_anthropic_cannot_read_are_named(part: dict[str, Any], where: str) -> None:
    message = {"role": "user", "content": [{"type": "text", "text": "hear this"}, part]}
    found = unhonoured(chat([message]))
    assert found is not None and found[0] == f"messages[0].{where}"


def test_safety_identifier_is_the_user_id() -> None:
    assert build([user("hi")], safety_identifier="h-1")["metadata"] == {"user_id": "h-1"}


# JSON response formats: a forced answer tool, not a prompt sentence.

COLOURS = {
    "type": "object",
    "properties": {"colours": {"type": "array", "items": {"type": "string"}}},
    "required": ["colours"],
}
COLOURS_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "colours", "schema": COLOURS, "strict": True},
}


def test_json_schema_is_a_forced_answer_tool() -> None:
    payload = build(
        [{"role": "system", "content": "Be helpful."}, user("List two colours")],
        response_format=COLOURS_FORMAT,
    )
    assert payload["system"] == "Be helpful."  # no instruction sentence
    [tool] = payload["tools"]
    assert tool["name"] == "colours" and tool["input_schema"] == COLOURS
    assert payload["tool_choice"] == {
        "type": "tool",
        "name": "colours",
        "disable_parallel_tool_use": True,
    }


def test_json_object_is_an_answer_tool_taking_any_object() -> None:
    payload = build([user("List two colours")], response_format={"type": "json_object"})
    [tool] = payload["tools"]
    assert tool["name"] == "json_answer" and tool["input_schema"] == {"type": "object"}
    assert payload["tool_choice"]["name"] == "json_answer"


def test_json_schema_with_the_clients_own_tools() -> None:
    fields = {"response_format": COLOURS_FORMAT, "tools": [WEATHER_TOOL]}
    # auto: the model calls a tool of the client's, or answers through the answer tool.
    payload = build([user("hi")], **fields)
    assert [t["name"] for t in payload["tools"]] == ["get_weather", "colours"]
    assert payload["tool_choice"] == {"type": "any"}
    # none: the answer it must be.
    payload = build([user("hi")], tool_choice="none", **fields)
    assert payload["tool_choice"]["name"] == "colours"
    # required: this turn is a call of the client's; there is no answer to shape.
    payload = build([user("hi")], tool_choice="required", **fields)
    assert [t["name"] for t in payload["tools"]] == ["get_weather"]
    assert payload["tool_choice"] == {"type": "any"}
    # an answer tool never takes the name of a client's tool
    clash = {"type": "function", "function": {"name": "colours"}}
    payload = build([user("hi")], response_format=COLOURS_FORMAT, tools=[clash])
    assert [t["name"] for t in payload["tools"]] == ["colours", "colours_answer"]


def test_the_answer_tool_call_is_the_content_whole() -> None:
    body = {
        **DOCS_MESSAGE,
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "colours", "input": {"colours": ["red"]}}
        ],
        "stop_reason": "tool_use",
    }
    result = parse_message(body, PROVIDER_ID, answer_tool="colours")
    assert result.content == '{"colours":["red"]}'
    assert result.finish_reason == "stop"
    assert result.tool_calls == []


ANSWER_STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":20,"cache_read_input_tokens":300,"cache_creation_input_tokens":40,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"colours","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\\"colours\\": [\\"re"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"d\\"]}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":12}}

event: message_stop
data: {"type":"message_stop"}

"""  # noqa: E501 - wire bytes, kept verbatim


def test_the_answer_tool_streams_as_content() -> None:
    decoder = SSEDecoder()
    translator = StreamTranslator(PROVIDER_ID, answer_tool="colours")
    deltas = [d for e in decoder.feed(ANSWER_STREAM) if (d := translator.feed(e)) is not None]
    assert json.loads("".join(d.content or "" for d in deltas)) == {"colours": ["red"]}
    assert not any(d.tool_calls for d in deltas)
    assert deltas[-1].finish_reason == "stop"
    usage = deltas[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_creation_tokens) == (360, 300, 40)
    assert usage.as_openai()["prompt_tokens_details"] == {
        "cached_tokens": 300,
        "cache_write_tokens": 40,
    }


async def test_json_schema_through_the_fake_upstream_whole_and_streamed(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    answer = {"name": "colours", "arguments": {"colours": ["red", "teal"]}}
    upstream.script("/v1/messages", ChatReply(content=None, tool_calls=[answer]))
    request = chat([user("two colours")], response_format=COLOURS_FORMAT)
    result = await provider.chat(request, MODEL)
    assert json.loads(result.content or "") == {"colours": ["red", "teal"]}
    assert (result.finish_reason, result.tool_calls) == ("stop", [])
    upstream.script("/v1/messages", ChatReply(content=None, tool_calls=[answer]))
    deltas = await collect(provider.stream_chat(request, MODEL))
    assert json.loads("".join(d.content or "" for d in deltas)) == {"colours": ["red", "teal"]}
    assert deltas[-1].finish_reason == "stop"
    sent = upstream.requests_to("/v1/messages")[-1].json
    assert sent["tool_choice"]["name"] == "colours"
    # with the client's tools, a call of one of those is a tool call as ever
    call = {"name": "get_weather", "arguments": {"location": "Oslo"}}
    upstream.script("/v1/messages", ChatReply(content=None, tool_calls=[call]))
    both = chat([user("weather?")], response_format=COLOURS_FORMAT, tools=[WEATHER_TOOL])
    result = await provider.chat(both, MODEL)
    assert (result.content, result.finish_reason) == (None, "tool_calls")
    assert result.tool_calls[0].name == "get_weather"


# Usage: cache reads and writes.


def test_cache_tokens_whole() -> None:
    body = {
        **DOCS_MESSAGE,
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "output_tokens": 7,
        },
    }
    usage = parse_message(body, PROVIDER_ID).usage
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_creation_tokens) == (
        1110,
        1000,
        100,
    )
    rendered = usage.as_openai()
    assert rendered["prompt_tokens"] == 1110
    assert rendered["prompt_tokens_details"] == {"cached_tokens": 1000, "cache_write_tokens": 100}


async def test_cache_tokens_through_the_fake_upstream_whole_and_streamed(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    reply = ClaudeReply("Hi.", usage=(5, 3), cache_read_tokens=900, cache_creation_tokens=60)
    upstream.script("/v1/messages", reply, reply)
    whole = (await provider.chat(chat([user("hi")]), MODEL)).usage
    deltas = await collect(provider.stream_chat(chat([user("hi")]), MODEL))
    streamed = deltas[-1].usage
    assert streamed is not None
    for usage in (whole, streamed):
        assert (usage.prompt_tokens, usage.completion_tokens) == (965, 3)
        assert (usage.cached_tokens, usage.cache_creation_tokens) == (900, 60)


# Thinking: reasoning out, reasoning_effort in.


def test_thinking_blocks_are_reasoning_and_given_back_whole_with_signatures() -> None:
    blocks = [
        {"type": "thinking", "thinking": "First, ", "signature": "sig"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
        {"type": "thinking", "thinking": "then.", "signature": "sig2"},
    ]
    body = {**DOCS_MESSAGE, "content": [*blocks, {"type": "text", "text": "Done."}]}
    result = parse_message(body, PROVIDER_ID)
    # The redacted block has no text for reasoning, but goes back to Anthropic with the rest.
    assert (result.reasoning, result.content) == ("First, then.", "Done.")
    assert result.message_extra == {"thinking_blocks": blocks}
    plain = parse_message({**DOCS_MESSAGE, "content": [{"type": "text", "text": "x"}]}, "p")
    assert plain.message_extra is None


@pytest.mark.parametrize(
    ("block", "fault"),
    [
        ({"type": "thinking", "thinking": "a", "signature": 7}, "content[0].signature is"),
        ({"type": "redacted_thinking"}, "content[0].data is"),
        ({"type": "thinking", "signature": "s"}, "content[0].thinking is"),
    ],
)
def test_malformed_thinking_blocks_are_protocol_errors(block: dict[str, Any], fault: str) -> None:
    with pytest.raises(UpstreamProtocolError, match=re.escape(fault)):
        parse_message({**DOCS_MESSAGE, "content": [block]}, PROVIDER_ID)


async def test_thinking_through_the_fake_upstream_whole_and_streamed(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    reply = ClaudeReply("Four.", thinking="Two and two make four.", redacted_thinking=True)
    upstream.script("/v1/messages", reply, reply)
    request = chat([user("2+2?")], reasoning_effort="medium")
    result = await provider.chat(request, MODEL)
    assert (result.reasoning, result.content) == ("Two and two make four.", "Four.")
    deltas = await collect(provider.stream_chat(request, MODEL))
    assert "".join(d.reasoning or "" for d in deltas) == "Two and two make four."
    assert len([d for d in deltas if d.reasoning]) > 1
    assert "".join(d.content or "" for d in deltas) == "Four."
    first_reasoning = next(i for i, d in enumerate(deltas) if d.reasoning)
    first_content = next(i for i, d in enumerate(deltas) if d.content)
    assert first_reasoning < first_content
    sent = upstream.requests_to("/v1/messages")[-1].json
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert sent["max_tokens"] == MODEL.max_output_tokens + 4096
    # The blocks, whole, beside the text: the same whole and streamed.
    whole = (result.message_extra or {})["thinking_blocks"]
    assert [b["type"] for b in whole] == ["thinking", "redacted_thinking"]
    assert whole[0]["thinking"] == "Two and two make four." and whole[0]["signature"]
    streamed = [b for d in deltas for b in (d.delta_extra or {}).get("thinking_blocks", [])]
    assert streamed == whole


# The thinking blocks of a streamed answer: each given once, whole, when its block stops.
THINKING_STREAM = [
    ("message_start", {"type": "message_start", "message": {**DOCS_MESSAGE, "content": []}}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Let me "},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "see."},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "redacted_thinking", "data": "EmwKAhgB"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_9", "name": "get_time", "input": {}},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 2}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 9},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]


def test_stream_gives_each_thinking_block_whole_when_it_stops() -> None:
    raw = b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in THINKING_STREAM
    )
    deltas, _ = translate(raw)
    assert "".join(d.reasoning or "" for d in deltas) == "Let me see."
    given = [d.delta_extra["thinking_blocks"] for d in deltas if d.delta_extra]
    assert given == [
        [{"type": "thinking", "thinking": "Let me see.", "signature": "EqQBCgIYAhIM"}],
        [{"type": "redacted_thinking", "data": "EmwKAhgB"}],
    ]
    # Each after the reasoning it carries, before the call that follows.
    first_block = next(i for i, d in enumerate(deltas) if d.delta_extra)
    assert all(not d.reasoning for d in deltas[first_block:])
    assert first_block < next(i for i, d in enumerate(deltas) if d.tool_calls)
    assert all(d.shows_something for d in deltas if d.delta_extra)


def test_a_streamed_thinking_block_without_a_signature_is_given_as_it_came() -> None:
    # (Some Anthropic-compatible servers do not sign; the whole answer leaves it out too.)
    unsigned = [e for e in THINKING_STREAM if "signature_delta" not in json.dumps(e[1])]
    raw = b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in unsigned
    )
    deltas, _ = translate(raw)
    given = [d.delta_extra["thinking_blocks"] for d in deltas if d.delta_extra]
    assert given[0] == [{"type": "thinking", "thinking": "Let me see."}]


THOUGHT = {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQBsig"}
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgB"}


def tool_loop(blocks: Any) -> list[dict[str, Any]]:
    """A tool loop's history: the assistant turn that called the tool carries `blocks`."""
    call = {
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": "{}"},
    }
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [call],
        "reasoning_content": "The user wants weather.",
        "thinking_blocks": blocks,
    }
    return [
        user("Weather?"),
        assistant,
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
    ]


def test_thinking_blocks_in_history_open_the_assistant_turn_when_thinking() -> None:
    payload = build(tool_loop([THOUGHT, REDACTED]), tools=[WEATHER_TOOL], reasoning_effort="low")
    assistant = payload["messages"][1]
    assert assistant["content"] == [
        THOUGHT,
        REDACTED,
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
    ]
    # Only the blocks' own fields are sent, whatever else a client kept beside them.
    kept = build(
        tool_loop([{**THOUGHT, "index": 0, "cache_control": None}]),
        tools=[WEATHER_TOOL],
        reasoning_effort="low",
    )
    assert kept["messages"][1]["content"][0] == THOUGHT


def test_thinking_blocks_in_history_are_left_out_without_thinking() -> None:
    for fields in ({}, {"reasoning_effort": "minimal"}):
        payload = build(tool_loop([THOUGHT, REDACTED]), tools=[WEATHER_TOOL], **fields)
        wire = json.dumps(payload)
        assert "thinking" not in wire and "EqQBsig" not in wire
        assert [b["type"] for b in payload["messages"][1]["content"]] == ["tool_use"]
        # (Nor are they judged: what is not sent cannot be wrong.)
        build(tool_loop("not a list"), tools=[WEATHER_TOOL], **fields)


@pytest.mark.parametrize(
    ("blocks", "where"),
    [
        ("a string", "messages[1].thinking_blocks: must be a list"),
        ([{"type": "thinking", "signature": "s"}], "messages[1].thinking_blocks[0].thinking:"),
        ([{"type": "thinking", "thinking": "t", "signature": 5}], "thinking_blocks[0].signature:"),
        ([THOUGHT, {"type": "redacted_thinking"}], "messages[1].thinking_blocks[1].data:"),
        ([{"type": "text", "text": "x"}], "messages[1].thinking_blocks[0]: must be a block of"),
        (["thinking"], "messages[1].thinking_blocks[0]: must be a block of"),
    ],
)
def test_bad_thinking_blocks_are_a_400_naming_where(blocks: Any, where: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        build(tool_loop(blocks), tools=[WEATHER_TOOL], reasoning_effort="low")
    assert caught.value.status == 400 and where in caught.value.message
    assert caught.value.param is not None and caught.value.param.startswith("messages[1]")


@pytest.mark.parametrize(
    ("fields", "max_tokens", "budget"),
    [
        ({"reasoning_effort": "low"}, 4096 + 1024, 1024),
        ({"reasoning_effort": "high"}, 4096 + 16384, 16384),
        ({"reasoning_effort": "high", "max_tokens": 10000}, 10000, 5000),
        ({"reasoning_effort": "low", "max_completion_tokens": 1025}, 1025, 1024),
        ({"reasoning_effort": "medium", "max_tokens": 40000}, 40000, 4096),
        ({"reasoning_effort": "low", "temperature": 1, "top_p": 0.95}, 4096 + 1024, 1024),
    ],
)
def test_reasoning_effort_is_a_thinking_budget_under_max_tokens(
    fields: dict[str, Any], max_tokens: int, budget: int
) -> None:
    payload = build([user("hi")], **fields)
    assert payload["max_tokens"] == max_tokens
    assert payload["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert payload["thinking"]["budget_tokens"] < payload["max_tokens"]
    assert "reasoning_effort" not in payload


@pytest.mark.parametrize("effort", ["minimal", "none"])
def test_minimal_reasoning_effort_is_no_thinking(effort: str) -> None:
    payload = build([user("hi")], reasoning_effort=effort, temperature=0.2)
    assert "thinking" not in payload and payload["max_tokens"] == 4096


THINKING_LIMITS = [
    ({"max_tokens": 1024}, "max_tokens", ["reasoning_effort 'low'", "max_tokens 1024", "1024"]),
    (
        {"max_completion_tokens": 500},
        "max_completion_tokens",
        ["reasoning_effort 'low'", "max_completion_tokens 500"],
    ),
    ({"temperature": 0.2}, "temperature", ["reasoning_effort 'low'", "temperature 0.2", "1"]),
    ({"top_p": 0.5}, "top_p", ["reasoning_effort 'low'", "top_p 0.5", "0.95"]),
]


@pytest.mark.parametrize(("fields", "param", "words"), THINKING_LIMITS)
async def test_thinking_limits_are_not_honoured_not_changed(
    provider: AnthropicProvider,
    upstream: FakeUpstream,
    fields: dict[str, Any],
    param: str,
    words: list[str],
) -> None:
    # What Anthropic's thinking does not go with is named before any attempt (the router
    # then skips to a candidate that can serve it), not a 400 of the request's own.
    request = chat([user("hi")], reasoning_effort="low", **fields)
    found = unhonoured(request)
    assert found is not None and found[0] == param
    for word in words:
        assert word in found[1]
    with pytest.raises(CannotHonour):
        build_messages_request(request, MODEL)
    unsupported = provider.unsupported(request)
    assert isinstance(unsupported, Unsupported) and unsupported.param == param
    assert unsupported.message.startswith(f"provider {PROVIDER_ID} (anthropic) cannot honour ")
    # Served anyway (a caller that did not ask): the same refusal, nothing sent.
    with pytest.raises(Unsupported) as caught:
        await provider.chat(request, MODEL)
    assert caught.value.message == unsupported.message
    with pytest.raises(Unsupported):
        await collect(provider.stream_chat(request, MODEL))
    assert upstream.requests == []


# Content parts and history.

PDF_B64 = (  # a minimal PDF
    "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoKdHJhaWxlcgo8PC9Sb290IDEgMCBSPj4K"
    "JSVFT0YK"
)


def test_file_parts_become_document_blocks() -> None:
    text_b64 = base64.b64encode(b"Minutes: all agreed.").decode()
    message = {
        "role": "user",
        "content": [
            {"type": "text", "text": "Summarise"},
            {
                "type": "file",
                "file": {
                    "filename": "r.pdf",
                    "file_data": f"data:application/pdf;base64,{PDF_B64}",
                },
            },
            {"type": "file", "file": {"file_data": f"data:text/plain;base64,{text_b64}"}},
            {"type": "file", "file": {"filename": "bare.pdf", "file_data": PDF_B64}},
        ],
    }
    blocks = build([message])["messages"][0]["content"]
    assert blocks[1] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64},
        "title": "r.pdf",
    }
    assert blocks[2] == {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "Minutes: all agreed."},
    }
    assert blocks[3]["source"]["data"] == PDF_B64 and blocks[3]["title"] == "bare.pdf"
    # In a tool result too.
    tool_result = {"role": "tool", "tool_call_id": "toolu_1", "content": message["content"][1:2]}
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_time", "arguments": ""}}
    history = [user("go"), {"role": "assistant", "tool_calls": [call]}, tool_result]
    result_block = build(history)["messages"][2]["content"][0]
    assert result_block["content"][0]["type"] == "document"


@pytest.mark.parametrize(
    ("file", "complaint"),
    [
        ({"file_data": "data:application/zip;base64,UEsDBA=="}, "application/zip"),
        ({"filename": "x.docx", "file_data": "UEsDBA=="}, "x.docx"),
        ({"file_data": "data:text/plain;base64,//79"}, "UTF-8"),
    ],
)
def test_files_anthropic_cannot_read_are_not_honoured_naming_the_part(
    file: dict[str, Any], complaint: str
) -> None:
    message = {"role": "user", "content": [{"type": "file", "file": file}]}
    with pytest.raises(CannotHonour, match=complaint) as caught:
        build([message])
    assert caught.value.param == "messages[0].content[0].file.file_data"


def test_a_malformed_file_data_url_is_the_requests_own_400() -> None:
    message = {"role": "user", "content": [{"type": "file", "file": {"file_data": "data:x"}}]}
    with pytest.raises(InvalidRequest, match="not a valid data URL"):
        build([message])


def test_refusals_and_audio_transcripts_in_history_are_text() -> None:
    history = [
        user("one"),
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help."}]},
        user("two"),
        {"role": "assistant", "content": None, "refusal": "Still no."},
        user("three"),
        {"role": "assistant", "audio": {"id": "audio_1", "transcript": "Said aloud."}},
        user("four"),
    ]
    said = [m["content"] for m in build(history)["messages"] if m["role"] == "assistant"]
    assert said == ["I can't help.", "Still no.", "Said aloud."]
    only_id = [user("one"), {"role": "assistant", "audio": {"id": "audio_1"}}, user("two")]
    found = unhonoured(chat(only_id))
    assert found is not None and found[0] == "messages[1].audio"


def test_reply_only_fields_never_reach_anthropic() -> None:
    dumped_reply = {
        "role": "assistant",
        "content": "Paris.",
        "refusal": None,
        "annotations": [{"type": "url_citation", "url_citation": {"url": "https://x.test"}}],
        "audio": None,
        "function_call": None,
        "tool_calls": None,
        "reasoning_content": "SECRET-THOUGHTS",
    }
    payload = build([user("Capital of France?"), dumped_reply, user("And Italy?")])
    wire = json.dumps(payload)
    assert "SECRET-THOUGHTS" not in wire and "url_citation" not in wire
    assert payload["messages"][1] == {"role": "assistant", "content": "Paris."}


def test_deprecated_function_calls_are_tool_use() -> None:
    history = [
        user("weather?"),
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "get_weather", "arguments": '{"location": "Oslo"}'},
        },
        {"role": "function", "name": "get_weather", "content": "sunny"},
    ]
    functions = [WEATHER_TOOL["function"]]
    payload = build(history, functions=functions, function_call="auto")
    [tool] = payload["tools"]
    assert tool["name"] == "get_weather"
    use = payload["messages"][1]["content"][0]
    assert (use["type"], use["name"], use["input"]) == (
        "tool_use",
        "get_weather",
        {"location": "Oslo"},
    )
    result = payload["messages"][2]["content"][0]
    assert result == {"type": "tool_result", "tool_use_id": use["id"], "content": "sunny"}
    named = build([user("hi")], functions=functions, function_call={"name": "get_weather"})
    assert named["tool_choice"] == {"type": "tool", "name": "get_weather"}


# Refusals and errors.


def test_refusal_stop_is_content_filter_with_a_refusal() -> None:
    result = parse_message({**DOCS_MESSAGE, "stop_reason": "refusal"}, PROVIDER_ID)
    assert result.finish_reason == "content_filter"
    assert result.refusal and "refusal" in result.refusal
    assert result.content == "Hi! My name is Claude."  # what came before the stop is kept


async def test_refusal_stop_streamed(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    upstream.script("/v1/messages", ChatReply("I will not", finish_reason="refusal"))
    deltas = await collect(provider.stream_chat(chat([user("bad")]), MODEL))
    assert deltas[-1].finish_reason == "content_filter"
    assert deltas[-1].refusal


async def test_overloaded_mid_stream_keeps_529_upstream(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/messages", ChatReply("one two three", error_event_after_chunks=3))
    with pytest.raises(ProviderError) as caught:
        await collect(provider.stream_chat(chat([user("hi")]), MODEL))
    error = caught.value
    assert (error.status, error.upstream_status) == (503, 529)
    assert error.error_class is ErrorClass.RETRYABLE
    assert error.code == "upstream_error"


# --- native pass-through (the Anthropic Messages dialect) -------------------------------------

NATIVE_BODY: dict[str, Any] = {
    "model": "claude",
    "max_tokens": 300,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
    "metadata": {"user_id": "u-1"},
    "top_k": 5,
    "stream": True,  # what the client sent; each method decides
}
BETAS = {"anthropic-beta": "prompt-caching-2024-07-31", "x-api-key": "sk-client", "x-other": "1"}


async def test_send_native_passes_the_body_and_keeps_the_answer(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/messages", ClaudeReply("Hi.", usage=(9, 2), cache_read_tokens=4))
    result = await provider.send_native(NATIVE_BODY, MODEL, extra_headers=BETAS)
    [sent] = upstream.requests_to("/v1/messages")
    expected = {k: v for k, v in NATIVE_BODY.items() if k != "stream"}
    assert sent.json == {**expected, "model": MODEL.upstream_name}
    assert sent.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert sent.headers["x-api-key"] == KEY and "x-other" not in sent.headers
    assert result.native is not None
    assert result.native["type"] == "message" and result.native["content"][0]["text"] == "Hi."
    assert result.native["usage"]["cache_read_input_tokens"] == 4
    assert (result.content, result.usage.prompt_tokens, result.usage.cached_tokens) == (
        "Hi.",
        13,
        4,
    )
    assert NATIVE_BODY["model"] == "claude" and NATIVE_BODY["stream"] is True  # not changed


async def test_stream_native_yields_every_event_as_it_came(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/messages", Reply(body=TOOL_STREAM, headers={"Content-Type": "text/event-stream"})
    )
    deltas = await collect(provider.stream_native(NATIVE_BODY, MODEL, extra_headers=BETAS))
    [sent] = upstream.requests_to("/v1/messages")
    assert sent.json["stream"] is True and sent.json["model"] == MODEL.upstream_name
    assert sent.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    events = [e for e in SSEDecoder().feed(TOOL_STREAM)]
    assert [d.native for d in deltas] == [(e.event, e.data) for e in events]
    assert deltas[2].native is not None and deltas[2].native[0] == "ping"
    assert not deltas[2].shows_something
    text, calls = assemble(deltas)
    assert text.startswith("Okay") and calls[0]["name"] == "get_weather"
    assert deltas[-1].native == ("message_stop", '{"type":"message_stop"}')
    assert deltas[-1].finish_reason == "tool_calls"
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 89


async def test_stream_native_thinking_and_errors(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/messages", ClaudeReply("Four.", thinking="Two and two."))
    deltas = await collect(provider.stream_native(NATIVE_BODY, MODEL))
    assert "".join(d.reasoning or "" for d in deltas) == "Two and two."
    kinds = [d.native[0] for d in deltas if d.native]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    upstream.script("/v1/messages", ChatReply("one two three", error_event_after_chunks=2))
    stream = provider.stream_native(NATIVE_BODY, MODEL)
    seen = []
    with pytest.raises(ProviderError) as caught:
        async for delta in stream:
            seen.append(delta)
    assert len(seen) == 2 and caught.value.upstream_status == 529
    upstream.script("/v1/messages", ErrorReply(529))
    with pytest.raises(ProviderError) as before:
        await collect(provider.stream_native(NATIVE_BODY, MODEL))
    assert (before.value.status, before.value.upstream_status) == (503, 529)


async def test_send_native_errors_are_provider_errors(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/messages", ErrorReply(400, "messages: roles must alternate"))
    with pytest.raises(ProviderError) as caught:
        await provider.send_native(NATIVE_BODY, MODEL)
    assert caught.value.status == 400 and caught.value.upstream_status == 400
    assert "roles must alternate" in caught.value.message


async def test_count_tokens_native(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    body = {k: v for k, v in NATIVE_BODY.items() if k not in ("max_tokens", "stream", "metadata")}
    answer = await provider.count_tokens_native(body, MODEL, extra_headers=BETAS)
    assert isinstance(answer["input_tokens"], int) and answer["input_tokens"] > 0
    [sent] = upstream.requests_to("/v1/messages/count_tokens")
    assert sent.json == {**body, "model": MODEL.upstream_name}
    assert sent.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    upstream.script("/v1/messages/count_tokens", Reply(json={"tokens": 3}))
    with pytest.raises(UpstreamProtocolError, match="input_tokens"):
        await provider.count_tokens_native(body, MODEL)
