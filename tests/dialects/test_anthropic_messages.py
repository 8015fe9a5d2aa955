"""The Anthropic Messages API (`/v1/messages`, `/v1/messages/count_tokens`), driven by the
official `anthropic` SDK and raw HTTP, on all three provider kinds: the deterministic
provider and an OpenAI-compatible one on the fake (translated), and Anthropic on the fake
(passed through: the upstream gets the client's body, the client the upstream's answer)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import orjson
import pytest
from aiohttp.test_utils import TestServer
from anthropic import AsyncAnthropic

from palyra.dialects.anthropic_messages import anthropic_status
from palyra.dialects.anthropic_render import render_message
from palyra.dialects.anthropic_stream import EventWriter
from palyra.dialects.anthropic_translate import to_chat_request
from palyra.errors import InvalidRequest
from palyra.types import ChatDelta, ChatResult, ToolCallDelta, ToolCallResult, Usage
from tests.conftest import ADMIN_TOKEN, GatewayFactory, gateway_config
from tests.fakes import anthropic_wire, openai_wire
from tests.fakes.upstream import ChatReply, ErrorReply, FakeUpstream, Reply

MODELS = ["deterministic", "gpt-4o-mini", "claude"]
PROVIDER_OF = {"deterministic": "det", "gpt-4o-mini": "oai", "claude": "claude"}
WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
PDF = base64.b64encode(b"%PDF-1.4 a tiny document").decode()


def sdk(gateway: TestServer, **kwargs: Any) -> AsyncAnthropic:
    kwargs.setdefault("api_key", ADMIN_TOKEN)
    return AsyncAnthropic(base_url=str(gateway.make_url("")), max_retries=0, timeout=20, **kwargs)


@pytest.fixture
async def claude(gateway: TestServer) -> AsyncIterator[AsyncAnthropic]:
    client = sdk(gateway)
    yield client
    await client.close()


async def post(
    gateway: TestServer, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    sent = {"x-api-key": ADMIN_TOKEN, "anthropic-version": "2023-06-01", **(headers or {})}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gateway.make_url(path), json=body, headers=sent) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The (event name, data) of each SSE frame."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name, data = "", []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        out.append((name, json.loads("\n".join(data))))
    return out


def check_event_order(names: list[str]) -> None:
    """Anthropic's grammar: message_start, blocks (start, deltas, stop), message_delta,
    message_stop; pings anywhere after the start."""
    names = [n for n in names if n != "ping"]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    open_block = False
    for name in names[1:-2]:
        if name == "content_block_start":
            assert not open_block
            open_block = True
        elif name == "content_block_delta":
            assert open_block
        else:
            assert name == "content_block_stop" and open_block
            open_block = False
    assert not open_block


# --- whole answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
async def test_create_whole(claude: AsyncAnthropic, model: str) -> None:
    raw = await claude.messages.with_raw_response.create(
        model=model,
        max_tokens=200,
        system=[{"type": "text", "text": "be brief"}],
        messages=[
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "hello gateway"}]},
        ],
    )
    message = await raw.parse()
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.stop_reason == "end_turn"
    (block,) = message.content
    assert block.type == "text" and "hello gateway" in block.text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["x-palyra-provider-id"] == PROVIDER_OF[model]
    assert raw.headers["x-palyra-model-id"] == model
    assert raw.headers["x-palyra-failover-count"] == "0"


async def test_translated_request_reaches_an_openai_upstream(
    claude: AsyncAnthropic, upstream: FakeUpstream
) -> None:
    await claude.messages.create(
        model="gpt-4o-mini",
        max_tokens=300,
        system="be brief",
        stop_sequences=["END"],
        metadata={"user_id": "user-7"},
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 5},
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/a.png"},
                    },
                    {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                        "title": "a.pdf",
                    },
                    {
                        "type": "document",
                        "source": {
                            "type": "text",
                            "media_type": "text/plain",
                            "data": "plain words",
                        },
                        "title": "Notes",
                    },
                ],
            }
        ],
    )
    sent = upstream.requests_to("/v1/chat/completions")[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    parts = sent["messages"][1]["content"]
    assert parts[0] == {"type": "text", "text": "look"}
    assert parts[1]["image_url"]["url"] == f"data:image/png;base64,{PNG}"
    assert parts[2]["image_url"]["url"] == "https://example.com/a.png"
    assert parts[3] == {
        "type": "file",
        "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "a.pdf"},
    }
    assert parts[4] == {"type": "text", "text": "Notes\n\nplain words"}
    assert (sent["temperature"], sent["top_p"], sent["top_k"]) == (0.5, 0.9, 5)
    assert sent["stop"] == ["END"] and sent["user"] == "user-7"
    assert 300 in (sent.get("max_tokens"), sent.get("max_completion_tokens"))


async def test_pass_through_whole(gateway: TestServer, upstream: FakeUpstream) -> None:
    answer = {
        "id": "msg_upstream_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "let me see", "signature": "sig-abc"},
            {"type": "text", "text": "hi", "citations": None},
        ],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 11,
            "output_tokens": 2,
            "cache_creation_input_tokens": 3,
            "cache_read_input_tokens": 40,
            "service_tier": "standard",
        },
        "an_upstream_field": {"kept": True},
    }
    upstream.script("/v1/messages", Reply(json=answer))
    # What only Anthropic can take (a document by URL, a server tool, a parameter Palyra does
    # not know) goes through untouched.
    body: dict[str, Any] = {
        "model": "claude",
        "max_tokens": 2000,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "source": {"type": "url", "url": "https://example.com/a.pdf"},
                    },
                    {"type": "text", "text": "summarise"},
                ],
            }
        ],
        "tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        "an_unknown_parameter": [1, 2],
    }
    beta = {"anthropic-beta": "files-api-2025-04-14"}
    status, headers, raw = await post(gateway, "/v1/messages", body, beta)
    assert status == 200, raw
    assert orjson.loads(raw) == answer  # the upstream's answer, unchanged
    assert headers["x-palyra-provider-id"] == "claude"
    received = upstream.requests_to("/v1/messages")[-1]
    assert received.json == {**body, "model": "claude-sonnet-4-5"}  # the client's, but model
    assert received.headers["anthropic-beta"] == "files-api-2025-04-14"


async def test_what_the_translation_could_not_serve_on_anthropic_still_passes_through(
    gateway: TestServer, upstream: FakeUpstream
) -> None:
    # Structured output while thinking, and an effort above "high": Anthropic takes both in
    # its own format, though the chat shape's Anthropic translation could not express them.
    for extra in (
        {
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        },
        {"output_config": {"effort": "max"}},
    ):
        body = {
            "model": "claude",
            "max_tokens": 2000,
            "messages": [{"role": "user", "content": "hi"}],
            **extra,
        }
        status, _, raw = await post(gateway, "/v1/messages", body)
        assert status == 200, raw
        assert upstream.requests_to("/v1/messages")[-1].json == {
            **body,
            "model": "claude-sonnet-4-5",
        }


@pytest.mark.parametrize("model", ["deterministic", "gpt-4o-mini"])
async def test_what_only_anthropic_takes_is_a_400_elsewhere(
    gateway: TestServer, upstream: FakeUpstream, model: str
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "document",
                                "source": {"type": "url", "url": "https://example.com/a.pdf"},
                            }
                        ],
                    }
                ]
            },
            "messages.0.content.0",
        ),
        ({"container": "container_1"}, "container"),
    ]
    for extra, where in cases:
        body = {
            "model": model,
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}],
            **extra,
        }
        status, _, raw = await post(gateway, "/v1/messages", body)
        assert status == 400, raw
        error = orjson.loads(raw)
        assert error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["message"].startswith(f"{where}: ")
        assert f"provider {PROVIDER_OF[model]}" in error["error"]["message"]
    assert upstream.requests_to("/v1/chat/completions") == []


# --- streams ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
async def test_stream_events_in_order(
    claude: AsyncAnthropic, gateway: TestServer, model: str
) -> None:
    words = "stream these several words back to me please"
    async with claude.messages.stream(
        model=model, max_tokens=200, messages=[{"role": "user", "content": words}]
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert words in final.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    assert final.usage.input_tokens > 0
    assert kinds.count("text") > 1
    # The raw frames: names match the data's type, pings included, in Anthropic's order.
    body = {
        "model": model,
        "max_tokens": 200,
        "stream": True,
        "messages": [{"role": "user", "content": words}],
    }
    status, headers, raw = await post(gateway, "/v1/messages", body)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert headers["x-palyra-provider-id"] == PROVIDER_OF[model]
    frames = events(raw)
    assert all(name == data["type"] for name, data in frames)
    names = [name for name, _ in frames]
    assert "ping" in names
    check_event_order(names)
    delta = next(data for name, data in frames if name == "message_delta")
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] > 0


async def test_pass_through_stream_is_relayed_unchanged(
    gateway: TestServer, upstream: FakeUpstream
) -> None:
    start = {
        "id": "msg_up",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 5},
    }
    script: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "hmm"},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": "sig-1"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "text_delta", "text": "Hello"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 9},
                "an_extra": 1,
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    sse = b"".join(anthropic_wire.event(name, data) for name, data in script)
    upstream.script("/v1/messages", Reply(body=sse, headers={"Content-Type": "text/event-stream"}))
    body = {
        "model": "claude",
        "max_tokens": 2000,
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "hi"}],
    }
    status, _headers, raw = await post(gateway, "/v1/messages", body)
    assert status == 200
    assert events(raw) == script  # every upstream event, as it came
    assert upstream.requests_to("/v1/messages")[-1].json == {**body, "model": "claude-sonnet-4-5"}
    # And the SDK reads it as Anthropic's own stream.
    upstream.script("/v1/messages", Reply(body=sse, headers={"Content-Type": "text/event-stream"}))
    client = sdk(gateway)
    async with client.messages.stream(
        model="claude",
        max_tokens=2000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "hi"}],
    ) as stream:
        final = await stream.get_final_message()
    await client.close()
    thinking, text = final.content
    assert thinking.type == "thinking" and thinking.signature == "sig-1"
    assert text.type == "text" and text.text == "Hello"
    assert final.usage.output_tokens == 9 and final.usage.cache_read_input_tokens == 5


# --- tools -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
async def test_tool_use_round_trip(
    claude: AsyncAnthropic, upstream: FakeUpstream, model: str
) -> None:
    asked: list[Any] = [{"role": "user", "content": '/tool get_weather {"city": "Paris"}'}]
    call = await claude.messages.create(
        model=model, max_tokens=300, tools=[WEATHER], tool_choice={"type": "any"}, messages=asked
    )
    assert call.stop_reason == "tool_use"
    use = next(block for block in call.content if block.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    # (The fake's OpenAI side would call the tool again: told to answer instead.)
    upstream.script("/v1/chat/completions", ChatReply(content="sunny in Paris"))
    answered = await claude.messages.create(
        model=model,
        max_tokens=300,
        tools=[WEATHER],
        messages=[
            *asked,
            {"role": "assistant", "content": call.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}
                ],
            },
        ],
    )
    assert answered.stop_reason == "end_turn"
    assert answered.content and answered.content[0].type == "text"


@pytest.mark.parametrize("model", MODELS)
async def test_streamed_tool_use(claude: AsyncAnthropic, model: str) -> None:
    async with claude.messages.stream(
        model=model,
        max_tokens=300,
        tools=[WEATHER],
        messages=[{"role": "user", "content": '/tool get_weather {"city": "Oslo"}'}],
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert "input_json" in kinds
    use = next(block for block in final.content if block.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Oslo"}
    assert final.stop_reason == "tool_use"


async def test_tool_results_and_choice_reach_an_openai_upstream(
    claude: AsyncAnthropic, upstream: FakeUpstream
) -> None:
    await claude.messages.create(
        model="gpt-4o-mini",
        max_tokens=100,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "checking"},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Rome"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": "down",
                        "is_error": True,
                    },
                    {"type": "text", "text": "try again"},
                ],
            },
        ],
    )
    sent = upstream.requests_to("/v1/chat/completions")[-1].json
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False
    assistant, tool, user = sent["messages"][1:]
    assert assistant["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
        }
    ]
    assert tool == {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: down"}
    assert user == {"role": "user", "content": [{"type": "text", "text": "try again"}]}


# --- thinking --------------------------------------------------------------------------------


async def test_thinking_from_an_openai_compatible_upstream(
    claude: AsyncAnthropic, upstream: FakeUpstream
) -> None:
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "42", "reasoning_content": "6 x 7"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 64},
        },
    }
    upstream.script("/v1/chat/completions", Reply(json=answer))
    message = await claude.messages.create(
        model="gpt-4o-mini",
        max_tokens=10000,
        thinking={"type": "enabled", "budget_tokens": 8000},
        messages=[{"role": "user", "content": "the answer?"}],
    )
    assert upstream.requests_to("/v1/chat/completions")[-1].json["reasoning_effort"] == "medium"
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking == "6 x 7"
    assert text.type == "text" and text.text == "42"
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (36, 64, 20)


async def test_streamed_thinking_from_an_openai_compatible_upstream(
    claude: AsyncAnthropic, upstream: FakeUpstream
) -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else []
        return openai_wire.sse(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": choices,
                "usage": usage,
            }
        )

    frames = [
        chunk({"role": "assistant", "reasoning_content": "six "}),
        chunk({"reasoning_content": "times seven"}),
        chunk({"content": "4"}),
        chunk({"content": "2"}),
        chunk({}, "stop"),
        chunk({}, None, {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}),
        openai_wire.DONE,
    ]
    upstream.script(
        "/v1/chat/completions",
        Reply(body=b"".join(frames), headers={"Content-Type": "text/event-stream"}),
    )
    async with claude.messages.stream(
        model="gpt-4o-mini",
        max_tokens=30000,
        thinking={"type": "enabled", "budget_tokens": 20000},
        messages=[{"role": "user", "content": "the answer?"}],
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert upstream.requests_to("/v1/chat/completions")[-1].json["reasoning_effort"] == "high"
    assert "thinking" in kinds
    thinking, text = final.content
    assert thinking.type == "thinking" and thinking.thinking == "six times seven"
    assert text.type == "text" and text.text == "42"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (10, 5)


async def test_thinking_on_the_deterministic_provider(claude: AsyncAnthropic) -> None:
    message = await claude.messages.create(
        model="deterministic",
        max_tokens=4000,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": "think about it"}],
    )
    assert message.stop_reason == "end_turn"
    assert [b.text for b in message.content if b.type == "text"] == ["think about it"]


@pytest.mark.parametrize(
    ("thinking", "error"),
    [
        ({"type": "enabled", "budget_tokens": 512}, "thinking.budget_tokens: must be from 1024"),
        (
            {"type": "enabled", "budget_tokens": 5000},
            "thinking.budget_tokens: must be less than max_tokens",
        ),
        ({"type": "sometimes"}, "thinking.type: must be"),
    ],
)
async def test_bad_thinking_is_a_400(
    claude: AsyncAnthropic, thinking: dict[str, Any], error: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        await claude.messages.create(
            model="claude",
            max_tokens=4000,
            thinking=thinking,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "x"}],
        )
    assert bad.value.body["error"]["message"].startswith(error)  # type: ignore[index]


# --- count_tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["deterministic", "gpt-4o-mini"])
async def test_count_tokens_estimated(
    claude: AsyncAnthropic, upstream: FakeUpstream, model: str
) -> None:
    plain = await claude.messages.count_tokens(
        model=model, messages=[{"role": "user", "content": "how many tokens is this?"}]
    )
    with_tools = await claude.messages.count_tokens(
        model=model,
        system="be brief",
        tools=[WEATHER],
        messages=[{"role": "user", "content": "how many tokens is this?"}],
    )
    assert 0 < plain.input_tokens < with_tools.input_tokens
    assert [r.path for r in upstream.requests if r.method == "POST"] == []


async def test_count_tokens_for_a_disabled_provider_is_the_404_a_request_gets(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    # Found in review: count_tokens answered 200 (with OpenAI's token rules) for a model
    # whose provider is disabled, where /v1/messages answers 404.
    config = gateway_config(upstream, tmp_path / "state")
    providers = [
        p.model_copy(update={"enabled": False}) if p.provider_id == "claude" else p
        for p in config.model_provider.providers
    ]
    config.model_provider.providers = providers
    gateway = await start_gateway(config)
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": ADMIN_TOKEN, "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as http:
        for path, extra in (("/v1/messages", {"max_tokens": 8}), ("/v1/messages/count_tokens", {})):
            async with http.post(
                gateway.make_url(path), json={**body, **extra}, headers=headers
            ) as answer:
                assert answer.status == 404, path
                error = (await answer.json())["error"]
                assert error["type"] == "not_found_error" and "disabled" in error["message"]
    assert upstream.requests_to("/v1/messages/count_tokens") == []


async def test_count_tokens_passed_through(claude: AsyncAnthropic, upstream: FakeUpstream) -> None:
    upstream.script("/v1/messages/count_tokens", Reply(json={"input_tokens": 1234}))
    raw = await claude.messages.with_raw_response.count_tokens(
        model="claude",
        system="be brief",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": "token-counting-2024-11-01"},
    )
    assert (await raw.parse()).input_tokens == 1234
    assert raw.headers["x-palyra-provider-id"] == "claude"
    received = upstream.requests_to("/v1/messages/count_tokens")[-1]
    assert received.json == {
        "model": "claude-sonnet-4-5",
        "system": "be brief",
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert received.headers["anthropic-beta"] == "token-counting-2024-11-01"
    # Unscripted, the fake counts as it does for its own answers.
    counted = await claude.messages.count_tokens(
        model="claude", messages=[{"role": "user", "content": "four words right here"}]
    )
    assert counted.input_tokens == 4


# --- errors ----------------------------------------------------------------------------------


async def test_errors_are_the_sdks_own(
    claude: AsyncAnthropic, gateway: TestServer, upstream: FakeUpstream
) -> None:
    hi: list[Any] = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.NotFoundError) as missing:
        await claude.messages.create(model="no-such-model", max_tokens=8, messages=hi)
    assert missing.value.body == {  # type: ignore[comparison-overlap]
        "type": "error",
        "error": {"type": "not_found_error", "message": "model 'no-such-model' does not exist"},
    }
    with pytest.raises(anthropic.BadRequestError) as bad:
        await claude.messages.create(
            model="deterministic",
            max_tokens=8,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/bmp", "data": "AA"},
                        }
                    ],
                }
            ],  # type: ignore[list-item,typeddict-item]
        )
    assert bad.value.body["error"]["message"].startswith(  # type: ignore[index]
        "messages.0.content.0.source.media_type: must be one of image/gif, image/jpeg"
    )
    upstream.script("/v1/chat/completions", ErrorReply(500))
    with pytest.raises(anthropic.InternalServerError) as failed:
        await claude.messages.create(model="gpt-4o-mini", max_tokens=8, messages=hi)
    assert failed.value.status_code == 500
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    # (After this 429 the deployment rests for its Retry-After: nothing more goes there.)
    upstream.script("/v1/chat/completions", ErrorReply(429, retry_after="7"))
    with pytest.raises(anthropic.RateLimitError) as limited:
        await claude.messages.create(model="gpt-4o-mini", max_tokens=8, messages=hi)
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert limited.value.response.headers["retry-after"] == "7"
    upstream.script("/v1/messages", ErrorReply(529))
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        await claude.messages.create(model="claude", max_tokens=8, messages=hi)
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    # Without max_tokens (the SDK will not send such a request: raw HTTP does).
    status, _, raw = await post(gateway, "/v1/messages", {"model": "deterministic", "messages": hi})
    assert status == 400
    assert orjson.loads(raw)["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
async def test_error_mid_stream_is_an_error_event(
    claude: AsyncAnthropic, gateway: TestServer, upstream: FakeUpstream, model: str
) -> None:
    path = "/v1/messages" if model == "claude" else "/v1/chat/completions"
    # The fake's Anthropic stream has a ping among its first frames: one more to show text.
    broken = ChatReply(content="one two three four five six", error_event_after_chunks=4)
    upstream.script(path, broken)
    body = {
        "model": model,
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    status, _, raw = await post(gateway, "/v1/messages", body)
    assert status == 200
    frames = events(raw)
    names = [n for n, _ in frames]
    assert names[0] == "message_start" and "content_block_delta" in names
    name, data = frames[-1]
    assert name == "error" and data["type"] == "error"
    # The fake's in-band error is overloaded_error (Anthropic) or a server error (OpenAI).
    assert data["error"]["type"] in ("overloaded_error", "api_error")
    assert "message_stop" not in names
    upstream.script(path, broken)
    with pytest.raises(anthropic.APIStatusError):
        async with claude.messages.stream(
            model=model, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            async for _ in stream:
                pass


# --- keys ------------------------------------------------------------------------------------


async def test_x_api_key_and_bearer_both_work(gateway: TestServer) -> None:
    hi: list[Any] = [{"role": "user", "content": "hi"}]
    # The SDK sends Authorization: Bearer; with a wrong bearer, a right x-api-key still does.
    keyed = sdk(gateway, api_key="not-the-token", default_headers={"x-api-key": ADMIN_TOKEN})
    message = await keyed.messages.create(model="deterministic", max_tokens=8, messages=hi)
    assert message.content[0].type == "text"
    await keyed.close()
    status, _, raw = await post(
        gateway, "/v1/messages", {"model": "deterministic", "max_tokens": 8, "messages": hi}
    )
    assert status == 200, raw  # x-api-key alone


async def test_a_wrong_key_is_an_anthropic_401_that_never_echoes_it(gateway: TestServer) -> None:
    wrong = "sk-ant-wrong-key-0123456789abcdef"
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        status, headers, raw = await post(
            gateway,
            path,
            {"model": "deterministic", "max_tokens": 8, "messages": []},
            {"x-api-key": wrong},
        )
        assert status == 401
        error = orjson.loads(raw)
        assert error["type"] == "error" and error["error"]["type"] == "authentication_error"
        assert wrong not in raw.decode() and wrong not in str(headers)
    client = sdk(gateway, api_key=wrong)
    with pytest.raises(anthropic.AuthenticationError):
        await client.messages.create(
            model="deterministic", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    await client.close()


# --- failover --------------------------------------------------------------------------------


@pytest.fixture
async def failover_gateway(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> TestServer:
    config = gateway_config(upstream, tmp_path / "state", max_retries=0)
    return await start_gateway(config)


@pytest.mark.parametrize("stream", [False, True])
async def test_failover_from_anthropic_to_a_translated_provider(
    failover_gateway: TestServer, upstream: FakeUpstream, stream: bool
) -> None:
    upstream.script("/v1/messages", ErrorReply(529))
    body = {
        "model": "claude",
        "max_tokens": 100,
        "stream": stream,
        "messages": [{"role": "user", "content": "who answers?"}],
    }
    status, headers, raw = await post(failover_gateway, "/v1/messages", body)
    assert status == 200, raw
    assert headers["x-palyra-failover-count"] == "1"
    assert headers["x-palyra-provider-id"] != "claude"
    if stream:
        frames = events(raw)
        check_event_order([name for name, _ in frames])
        text = "".join(d["delta"].get("text", "") for n, d in frames if n == "content_block_delta")
    else:
        text = orjson.loads(raw)["content"][0]["text"]
    assert "who answers?" in text
    assert len(upstream.requests_to("/v1/messages")) == 1


@pytest.mark.parametrize(
    ("model", "path"), [("claude", "/v1/messages"), ("gpt-4o-mini", "/v1/chat/completions")]
)
async def test_retried_like_chat(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: GatewayFactory, model: str, path: str
) -> None:
    config = gateway_config(
        upstream, tmp_path / "state", failover_enabled=False, max_retries=1, retry_backoff_ms=0
    )
    gateway = await start_gateway(config)
    upstream.script(path, ErrorReply(529 if model == "claude" else 500))
    for stream in (False, True):
        if stream:
            upstream.script(path, ErrorReply(529 if model == "claude" else 500))
        body = {
            "model": model,
            "max_tokens": 50,
            "stream": stream,
            "messages": [{"role": "user", "content": "again"}],
        }
        status, headers, raw = await post(gateway, "/v1/messages", body)
        assert status == 200, raw
        assert headers["x-palyra-retry-count"] == "1"
        assert headers["x-palyra-provider-id"] == PROVIDER_OF[model]
        assert b"again" in raw  # the answer (streamed in pieces, whole in one)


async def test_failover_to_anthropic_passes_through(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    config = gateway_config(upstream, tmp_path / "state", max_retries=0)
    for model in config.model_provider.models:
        if model.model_id == "gpt-4o-mini":
            model.fallbacks = ["claude"]
    gateway = await start_gateway(config)
    upstream.script("/v1/chat/completions", ErrorReply(503))
    client = sdk(gateway)
    raw = await client.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=100, messages=[{"role": "user", "content": "anyone?"}]
    )
    await client.close()
    assert raw.headers["x-palyra-failover-count"] == "1"
    assert raw.headers["x-palyra-provider-id"] == "claude"
    message = await raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == "echo: anyone?"
    sent = upstream.requests_to("/v1/messages")[-1].json
    assert sent == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "anyone?"}],
    }


async def test_a_large_request(claude: AsyncAnthropic) -> None:
    # Past tokens.COUNT_INLINE_BYTES, counted off the event loop.
    words = "many words " * 20_000
    message = await claude.messages.create(
        model="deterministic", max_tokens=50, messages=[{"role": "user", "content": words}]
    )
    assert message.stop_reason == "max_tokens" and message.usage.input_tokens > 20_000
    counted = await claude.messages.count_tokens(
        model="deterministic", messages=[{"role": "user", "content": words}]
    )
    assert counted.input_tokens == message.usage.input_tokens


async def test_a_method_the_route_does_not_take_is_in_anthropics_shape(
    gateway: TestServer,
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(gateway.make_url("/v1/messages"), headers={"x-api-key": ADMIN_TOKEN}) as r,
    ):
        assert r.status == 405
        body = await r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


# --- the translation, without a server -------------------------------------------------------


def test_translation_of_a_full_request() -> None:
    translation = to_chat_request(
        {
            "model": "m",
            "max_tokens": 50,
            "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "s"},
                        {"type": "redacted_thinking", "data": "xx"},
                        {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "r"}],
                        }
                    ],
                },
            ],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
            "cache_control": {"type": "ephemeral"},
        }
    )
    request = translation.request
    assert translation.untranslatable == []
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "tool"]
    assert request.messages[2].reasoning_content == "hmm"
    assert request.messages[2].tool_calls[0].function.arguments == "{}"  # type: ignore[index]
    assert request.messages[3].text() == "r"
    assert request.tool_choice == "required" and request.max_tokens == 50


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "max_tokens: Field required"),
        ({"max_tokens": 5}, "messages: Field required"),
        ({"max_tokens": 5, "messages": []}, "messages: at least one message"),
        (
            {"max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]},
            "messages.0.role: must be 'user' or 'assistant'",
        ),
        (
            {"max_tokens": 5, "messages": [{"role": "user", "content": 7}]},
            "messages.0.content: must be a string or an array of content blocks, not a number",
        ),
        (
            {"max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]},
            "temperature: must be from 0 to 1, got 1.5",
        ),
        (
            {
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_use", "id": "a", "name": "b", "input": {}}],
                    }
                ],
            },
            "messages.0.content.0.type: a tool_use block belongs in an assistant turn",
        ),
        (
            {
                "max_tokens": 5,
                "tools": [{"name": "f", "input_schema": {}}],
                "tool_choice": {"type": "tool", "name": "g"},
                "messages": [{"role": "user", "content": "x"}],
            },
            "tool_choice.name: no tool named 'g' in tools",
        ),
        (
            {
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "tool_use", "id": "a", "name": "b", "input": {"n": 2**70}}
                        ],
                    }
                ],
            },
            "messages.0.content.0.input: cannot be passed on as JSON",
        ),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as bad:
        to_chat_request(body)
    assert bad.value.message.startswith(message)


def test_tool_choice_without_tools() -> None:
    hi = [{"role": "user", "content": "x"}]
    for kind in ("auto", "none"):
        body = {"max_tokens": 5, "tool_choice": {"type": kind}, "messages": hi}
        assert to_chat_request(body).request.tool_choice is None
    with pytest.raises(InvalidRequest, match="tool_choice: 'any' needs tools"):
        to_chat_request({"max_tokens": 5, "tool_choice": {"type": "any"}, "messages": hi})
    # Choosing a server tool: nothing to translate, and only Anthropic can serve it.
    server_tool = {"type": "web_search_20250305", "name": "web_search"}
    translation = to_chat_request(
        {
            "max_tokens": 5,
            "tools": [server_tool],
            "tool_choice": {"type": "tool", "name": "web_search"},
            "messages": hi,
        }
    )
    assert translation.request.tool_choice is None
    assert [where for where, _ in translation.untranslatable] == ["tools.0"]


def test_rendered_message_maps_what_came_back() -> None:
    result = ChatResult(
        content=None,
        finish_reason="tool_calls",
        usage=Usage(
            prompt_tokens=100, completion_tokens=7, cached_tokens=60, cache_creation_tokens=10
        ),
        tool_calls=[ToolCallResult("call_1", "f", '{"a": 1}')],
        reasoning="why",
    )
    message = render_message(result, "m", "p")
    assert [b["type"] for b in message["content"]] == ["thinking", "tool_use"]
    assert message["content"][1]["input"] == {"a": 1}  # type: ignore[typeddict-item]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 30,
        "output_tokens": 7,
        "cache_creation_input_tokens": 10,
        "cache_read_input_tokens": 60,
    }
    stopped = ChatResult("x", "stop", Usage(), choice_extra={"stop_reason": "END"})
    rendered = render_message(stopped, "m", "p", ("END",))
    assert (rendered["stop_reason"], rendered["stop_sequence"]) == ("stop_sequence", "END")
    assert (
        render_message(ChatResult("x", "length", Usage()), "m", "p")["stop_reason"] == "max_tokens"
    )
    refused = render_message(ChatResult(None, "stop", Usage(), refusal="no"), "m", "p")
    assert refused["stop_reason"] == "refusal" and refused["content"][0]["text"] == "no"  # type: ignore[typeddict-item]


def test_event_writer_blocks() -> None:
    writer = EventWriter("m")
    raw = writer.start()
    raw += writer.delta(ChatDelta(reasoning="think"))
    raw += writer.delta(ChatDelta(content="say"))
    raw += writer.delta(ChatDelta(tool_calls=[ToolCallDelta(0, "c1", "f", "")]))
    raw += writer.delta(ChatDelta(tool_calls=[ToolCallDelta(0, arguments='{"a"')]))
    raw += writer.delta(ChatDelta(tool_calls=[ToolCallDelta(0, arguments=": 1}")]))
    raw += writer.delta(ChatDelta(finish_reason="tool_calls"))
    raw += writer.delta(ChatDelta(usage=Usage(5, 3)))
    raw += writer.end()
    frames = events(raw)
    check_event_order([n for n, _ in frames])
    starts = [d["content_block"]["type"] for n, d in frames if n == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use"]
    deltas = [(d["index"], d["delta"]["type"]) for n, d in frames if n == "content_block_delta"]
    assert deltas == [
        (0, "thinking_delta"),
        (1, "text_delta"),
        (2, "input_json_delta"),
        (2, "input_json_delta"),
    ]
    (delta,) = [d for n, d in frames if n == "message_delta"]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] == 3 and delta["usage"]["input_tokens"] == 5


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, (400, "invalid_request_error")),
        (401, (401, "authentication_error")),
        (403, (403, "permission_error")),
        (404, (404, "not_found_error")),
        (413, (413, "request_too_large")),
        (429, (429, "rate_limit_error")),
        (500, (500, "api_error")),
        (502, (500, "api_error")),
        (503, (529, "overloaded_error")),
        (504, (504, "timeout_error")),
    ],
)
def test_statuses_are_anthropics(status: int, expected: tuple[int, str]) -> None:
    assert anthropic_status(status) == expected


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_only_anthropic_can_carry_skips_to_an_anthropic_candidate(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: GatewayFactory, stream: bool
) -> None:
    # Found in review: a server tool refused by the translating primary ended the request with
    # a 400, although its Anthropic fallback takes the body natively.
    config = gateway_config(upstream, tmp_path / "state", max_retries=0)
    for model in config.model_provider.models:
        if model.model_id == "gpt-4o-mini":
            model.fallbacks = ["claude"]
    gateway = await start_gateway(config)
    tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 100,
        "stream": stream,
        "tools": [tool],
        "messages": [{"role": "user", "content": "search"}],
    }
    status, headers, raw = await post(gateway, "/v1/messages", body)
    assert status == 200, raw
    assert headers["x-palyra-provider-id"] == "claude"
    assert headers["x-palyra-failover-count"] == "0"  # skipped before anything was sent
    assert not upstream.requests_to("/v1/chat/completions")
    assert upstream.requests_to("/v1/messages")[-1].json["tools"] == [tool]
    # No Anthropic candidate: the 400 names the tool, in Anthropic's shape.
    for model in config.model_provider.models:
        if model.model_id == "gpt-4o-mini":
            model.fallbacks = ["deterministic"]
    gateway = await start_gateway(config)
    status, _, raw = await post(gateway, "/v1/messages", {**body, "stream": False})
    assert status == 400, raw
    error = orjson.loads(raw)
    assert error["type"] == "error" and "web_search" in error["error"]["message"], error


async def test_a_request_only_a_cooling_candidate_can_carry_is_a_503_to_retry(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    # Found in review: with the one candidate that can carry it cooling down, the answer was
    # the translating candidate's 400, which a client does not retry; it is the 503 with
    # Retry-After that every-candidate-cooling gives.
    config = gateway_config(
        upstream,
        tmp_path / "state",
        max_retries=0,
        circuit_breaker_failure_threshold=1,
        circuit_breaker_cooldown_ms=60_000,
    )
    for model in config.model_provider.models:
        if model.model_id == "gpt-4o-mini":
            model.fallbacks = ["claude"]
    gateway = await start_gateway(config)
    upstream.script("/v1/messages", ErrorReply(529))
    hi = {"max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    await post(gateway, "/v1/messages", {"model": "claude", **hi})  # claude's circuit opens
    tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}
    status, headers, raw = await post(
        gateway, "/v1/messages", {"model": "gpt-4o-mini", "tools": [tool], **hi}
    )
    assert status == 529, raw  # (Anthropic spells unavailable as overloaded)
    assert int(headers["Retry-After"]) > 0
    assert not upstream.requests_to("/v1/chat/completions")
