"""The OpenAI-compatible routes, driven by the official `openai` SDK, on all three kinds."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI

from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY, GatewayFactory
from tests.fakes.upstream import ChatReply, ErrorReply, FakeUpstream, Reply

CHAT_MODELS = ["deterministic", "gpt-4o-mini", "claude"]
PROVIDER_OF = {"deterministic": "det", "gpt-4o-mini": "oai", "claude": "claude"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def png_data_url(width: int, height: int) -> str:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
    return "data:image/png;base64," + base64.b64encode(png + chunk(b"IEND", b"")).decode()


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_chat_whole_with_route_headers(client: AsyncOpenAI, model: str) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello gateway"}]
    )
    completion = raw.parse()
    assert "hello gateway" in (completion.choices[0].message.content or "")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == model
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert raw.headers["x-palyra-provider-id"] == PROVIDER_OF[model]
    assert raw.headers["x-palyra-model-id"] == model
    assert raw.headers["x-palyra-failover-count"] == "0"
    assert raw.headers["x-palyra-retry-count"] == "0"
    assert float(raw.headers["x-palyra-overhead-ms"]) >= 0


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_chat_stream_with_usage(client: AsyncOpenAI, model: str) -> None:
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "stream these several words back to me please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, content_chunks = "", None, None, 0
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                text += choice.delta.content
                content_chunks += 1
            finish = choice.finish_reason or finish
    assert "stream these several words back to me please" in text
    assert content_chunks > 1
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


async def test_stream_without_include_usage_has_no_usage(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="deterministic", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks)


async def test_deterministic_tool_command(client: AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="deterministic",
        messages=[{"role": "user", "content": '/tool get_weather {"city": "Paris"}'}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]


async def test_openai_streamed_parallel_tool_calls(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/chat/completions",
        ChatReply(
            content=None,
            tool_calls=[
                {"id": "call_a", "name": "get_weather", "arguments": '{"city": "Paris"}'},
                {"id": "call_b", "name": "get_weather", "arguments": '{"city": "Rome"}'},
            ],
        ),
    )
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "weather in Paris and Rome"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="auto",
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or ():
                entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += delta.id or ""
                entry["name"] += (delta.function.name if delta.function else None) or ""
                entry["arguments"] += (delta.function.arguments if delta.function else None) or ""
    assert finish == "tool_calls"
    assert calls[0] == {"id": "call_a", "name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert calls[1] == {"id": "call_b", "name": "get_weather", "arguments": '{"city": "Rome"}'}
    sent = upstream.requests_to("/v1/chat/completions")[-1].json
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tool_choice"] == "auto"


async def test_anthropic_streamed_tool_use_and_tool_results(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/messages",
        ChatReply(
            content="Let me check.",
            tool_calls=[{"id": "toolu_1", "name": "get_weather", "arguments": {"city": "Oslo"}}],
        ),
    )
    stream = await client.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "weather in Oslo?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        stream=True,
    )
    text, arguments, name, call_id, finish = "", "", "", "", None
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or ():
                assert delta.index == 0
                call_id += delta.id or ""
                name += (delta.function.name if delta.function else None) or ""
                arguments += (delta.function.arguments if delta.function else None) or ""
    assert text == "Let me check."
    assert (call_id, name, json.loads(arguments)) == ("toolu_1", "get_weather", {"city": "Oslo"})
    assert finish == "tool_calls"

    # The answer goes back as a tool result; Anthropic must see tool_use then tool_result.
    await client.chat.completions.create(
        model="claude",
        messages=[
            {"role": "user", "content": "weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "rainy, 4 C"},
        ],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    sent = upstream.requests_to("/v1/messages")[-1].json
    assert sent["tools"][0] == {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
    }
    assistant, tool_result = sent["messages"][1], sent["messages"][2]
    assert assistant["content"][-1] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "get_weather",
        "input": {"city": "Oslo"},
    }
    assert tool_result["role"] == "user"
    assert tool_result["content"][0]["type"] == "tool_result"
    assert tool_result["content"][0]["tool_use_id"] == "toolu_1"


async def test_images_reach_each_provider_in_its_format(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    data_url = png_data_url(64, 32)
    content = [
        {"type": "text", "text": "what is in these?"},
        {"type": "image_url", "image_url": {"url": data_url, "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    for model in CHAT_MODELS:
        completion = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": content}],  # type: ignore[list-item,misc]
        )
        assert "what is in these?" in (completion.choices[0].message.content or "")
    openai_parts = upstream.requests_to("/v1/chat/completions")[-1].json["messages"][0]["content"]
    assert openai_parts[1] == {"type": "image_url", "image_url": {"url": data_url, "detail": "low"}}
    assert openai_parts[2]["image_url"]["url"] == "https://example.com/cat.jpg"
    blocks = upstream.requests_to("/v1/messages")[-1].json["messages"][0]["content"]
    image_blocks = [b for b in blocks if b["type"] == "image"]
    assert image_blocks[0]["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": data_url.split(",", 1)[1],
    }
    assert image_blocks[1]["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}


@pytest.mark.parametrize("model", ["deterministic", "gpt-4o-mini"])
async def test_json_mode(client: AsyncOpenAI, upstream: FakeUpstream, model: str) -> None:
    completion = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "give me json"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(completion.choices[0].message.content or "") == {"echo": "give me json"}
    if model == "gpt-4o-mini":
        sent = upstream.requests_to("/v1/chat/completions")[-1].json
        assert sent["response_format"] == {"type": "json_object"}


async def test_anthropic_json_mode_is_a_forced_answer_tool(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    completion = await client.chat.completions.create(
        model="claude",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "json"}],
        response_format={"type": "json_object"},
    )
    sent = upstream.requests_to("/v1/messages")[-1].json
    assert sent["system"] == "be brief"  # no instruction sentence: a forced tool call instead
    assert sent["tool_choice"]["type"] == "tool"
    assert [tool["name"] for tool in sent["tools"]] == [sent["tool_choice"]["name"]]
    assert sent["max_tokens"] == 4096  # the model's max_output_tokens when the request names none
    # The forced call's input is the answer: message content, finish_reason stop.
    assert completion.choices[0].message.content == "{}"
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"


async def test_embeddings_deterministic_and_openai(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    first = await client.embeddings.create(model="deterministic-embed", input=["same", "other"])
    again = await client.embeddings.create(model="deterministic-embed", input="same")
    assert len(first.data) == 2 and len(first.data[0].embedding) == 64
    assert first.data[0].embedding == again.data[0].embedding
    assert first.data[0].embedding != first.data[1].embedding
    assert abs(sum(x * x for x in first.data[0].embedding) - 1.0) < 1e-5
    sized = await client.embeddings.create(
        model="text-embedding-3-small", input="hello", dimensions=12, encoding_format="float"
    )
    assert len(sized.data[0].embedding) == 12
    assert upstream.requests_to("/v1/embeddings")[-1].json["dimensions"] == 12
    assert sized.usage.prompt_tokens > 0
    # The SDK's default asks for base64: relayed as base64, decoded by the SDK to the same
    # numbers the float encoding gives.
    default = await client.embeddings.create(
        model="text-embedding-3-small", input="hello", dimensions=12
    )
    assert upstream.requests_to("/v1/embeddings")[-1].json["encoding_format"] == "base64"
    assert default.data[0].embedding == sized.data[0].embedding


# Floats as an upstream may spell them: exponents, more digits than a double keeps, a
# negative zero, spaces and a line break inside the array; the rows out of order.
SPELT_EMBEDDINGS = (
    b'{"object": "list", "data": ['
    b'{"object": "embedding", "index": 1, "embedding": [1.0E-5, -0.0,\n 2]},'
    b'{"object": "embedding", "index": 0, "embedding": [ 0.10000000000000001 , 3e2 ]}],'
    b' "model": "text-embedding-3-small", "usage": {"prompt_tokens": 3, "total_tokens": 3}}'
)


async def test_embedding_floats_reach_the_client_as_the_upstream_wrote_them(
    client: AsyncOpenAI, upstream: FakeUpstream, gateway: TestServer
) -> None:
    upstream.script("/v1/embeddings", Reply(body=SPELT_EMBEDDINGS), Reply(body=SPELT_EMBEDDINGS))
    async with aiohttp.ClientSession() as session:
        async with session.post(
            gateway.make_url("/v1/embeddings"),
            json={"model": "text-embedding-3-small", "input": ["a", "b"]},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response:
            raw = await response.read()
    # Each array as it came, in index order; the rest is Palyra's.
    assert b'"index":0,"embedding":[ 0.10000000000000001 , 3e2 ]' in raw
    assert b'"index":1,"embedding":[1.0E-5, -0.0,\n 2]' in raw
    assert json.loads(raw)["model"] == "text-embedding-3-small"
    # The same numbers for the SDK, and as base64 (packed from the floats).
    read = await client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], encoding_format="float"
    )
    assert [d.embedding for d in read.data] == [[0.1, 300.0], [1e-05, -0.0, 2.0]]


async def test_embeddings_parameters_we_do_not_know_reach_the_upstream(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    # Found in review: chat forwarded unknown parameters, embeddings dropped them silently.
    await client.embeddings.create(
        model="text-embedding-3-small",
        input="hello",
        extra_body={"input_type": "query", "truncate_prompt_tokens": 8, "nothing": None},
    )
    sent = upstream.requests_to("/v1/embeddings")[-1].json
    assert sent["input_type"] == "query" and sent["truncate_prompt_tokens"] == 8
    assert "nothing" not in sent


async def test_embeddings_on_anthropic_is_a_clear_error(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.embeddings.create(model="claude-embed", input="x")
    assert "embeddings" in caught.value.message.lower()


async def test_errors_are_openai_shaped(client: AsyncOpenAI, gateway: TestServer) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as wrong_role:
        await client.chat.completions.create(
            model="deterministic-embed", messages=[{"role": "user", "content": "x"}]
        )
    assert "embeddings model" in wrong_role.value.message
    unauthorized = AsyncOpenAI(
        api_key="wrong", base_url=str(gateway.make_url("/v1")), max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        await unauthorized.models.list()
    await unauthorized.close()

    url = gateway.make_url("/v1/chat/completions")
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=b"{not json", headers=auth) as response:
            body = await response.json()
            assert response.status == 400 and body["error"]["code"] == "invalid_json"
        bad = {"messages": [{"role": "user", "content": 5}], "temperature": "hot"}
        async with http.post(url, json=bad, headers=auth) as response:
            body = await response.json()
            assert response.status == 400
            assert body["error"]["param"].startswith(("messages", "temperature"))
        async with http.post(url, data=b"x" * (33 * 1024 * 1024), headers=auth) as response:
            assert response.status == 413
            assert (await response.json())["error"]["code"] == "request_too_large"
        async with http.get(gateway.make_url("/v1/nowhere"), headers=auth) as response:
            assert response.status == 404 and "error" in await response.json()
        async with http.get(gateway.make_url("/healthz")) as response:
            assert response.status == 200


async def test_context_budget_refused_before_upstream(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="small-window", messages=[{"role": "user", "content": "word " * 400}]
        )
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.response.headers["x-palyra-model-id"] == "small-window"
    assert caught.value.response.headers["x-palyra-provider-id"] == "oai"
    assert upstream.requests_to("/v1/chat/completions") == []
    # Small enough: goes through.
    await client.chat.completions.create(
        model="small-window", messages=[{"role": "user", "content": "word " * 20}]
    )
    assert len(upstream.requests_to("/v1/chat/completions")) == 1


async def test_upstream_client_error_passes_through(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/chat/completions", ErrorReply(400, "temperature is wrong", code="bad_temp")
    )
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert "temperature is wrong" in caught.value.message
    assert caught.value.code == "bad_temp"


async def test_upstream_credential_failure_names_no_secret(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/chat/completions", ErrorReply(401, f"Incorrect API key {UPSTREAM_KEY}"))
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 502
    assert UPSTREAM_KEY not in caught.value.response.text
    assert ADMIN_TOKEN not in caught.value.response.text


async def test_broken_stream_before_first_token_is_an_error_response(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/chat/completions", ChatReply(content="abc", break_after_chunks=0))
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True
        )
    assert caught.value.status_code == 502


async def test_broken_stream_after_tokens_ends_with_error_event(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/chat/completions",
        ChatReply(content="one two three four five six", break_after_chunks=3),
    )
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True
    )
    seen = ""
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            for choice in chunk.choices:
                seen += choice.delta.content or ""
    assert seen and "six" not in seen


async def test_stream_is_relayed_as_it_arrives(gateway: TestServer, upstream: FakeUpstream) -> None:
    upstream.script("/v1/chat/completions", ChatReply(content="a b c d e f", chunk_delay_s=0.15))
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    started = time.monotonic()
    first_content_at = None
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gateway.make_url("/v1/chat/completions"),
            json=body,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response,
    ):
        async for line in response.content:
            if b'"content":"a' in line and first_content_at is None:
                first_content_at = time.monotonic() - started
    total = time.monotonic() - started
    assert first_content_at is not None
    assert total - first_content_at > 0.4, (first_content_at, total)


async def test_client_disconnect_cancels_upstream(
    gateway: TestServer, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/chat/completions", ChatReply(content=" ".join(["word"] * 200), chunk_delay_s=0.05)
    )
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            gateway.make_url("/v1/chat/completions"),
            json=body,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        await response.content.readline()
        assert upstream.open_streams == 1
        response.close()  # drop the connection mid-stream
    await upstream.wait_streams_closed(timeout_s=5)
    assert upstream.cancelled_streams == 1


async def test_request_id_echoed(gateway: TestServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.make_url("/healthz"), headers={"x-request-id": "abc-123"}) as r:
            assert r.headers["x-request-id"] == "abc-123"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/responses", {"input": "hi"}),
        ("/v1/messages", {"max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
    ],
)
async def test_streamed_answers_name_their_request_too(
    gateway: TestServer, path: str, body: dict[str, Any]
) -> None:
    # Found: a stream's headers left before the middleware set x-request-id on its way out,
    # so streamed answers carried none.
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    payload = {"model": "gpt-4o-mini", "stream": True, **body}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            gateway.make_url(path), json=payload, headers={**headers, "x-request-id": "req-7"}
        ) as sent:
            assert sent.status == 200 and sent.headers["x-request-id"] == "req-7"
            await sent.read()
        async with http.post(gateway.make_url(path), json=payload, headers=headers) as made:
            assert re.fullmatch(r"[0-9a-f]{32}", made.headers.get("x-request-id", ""))
            await made.read()


class _SlowClient:
    """Stands in for a StreamResponse whose client reads only when told to."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.read = asyncio.Event()

    async def write(self, data: bytes) -> None:
        await self.read.wait()
        self.read.clear()
        self.writes.append(data)


async def test_relay_batches_frames_and_holds_the_handler_past_its_limit() -> None:
    from palyra.dialects.common import Relay as _Relay

    client = _SlowClient()
    relay = _Relay(client)  # type: ignore[arg-type]
    frame = b"x" * 1024
    # Frames pushed without the handler waiting go out in one write, in order.
    assert not relay.push(b"a") and not relay.push(b"b")
    await asyncio.sleep(0)  # the writer takes them and waits on the client
    pushed = 0
    while not relay.push(frame):
        pushed += 1
        assert pushed < 1000, "the backlog never said wait"
    assert pushed == _Relay.LIMIT // len(frame)  # the push past the limit says wait
    waiting = asyncio.create_task(relay.taken())
    await asyncio.sleep(0.01)
    assert not waiting.done()  # the handler (and its upstream reads) wait for the client
    client.read.set()  # the client reads "ab"; the writer takes the backlog
    await asyncio.wait_for(waiting, 1)
    client.read.set()
    closing = asyncio.create_task(relay.close())
    await asyncio.sleep(0.01)
    client.read.set()
    await asyncio.wait_for(closing, 1)
    assert client.writes[0] == b"ab"
    assert b"".join(client.writes[1:]) == frame * (pushed + 1)


def test_embeddings_render_either_form_in_the_encoding_asked() -> None:
    from palyra.dialects import openai_embeddings
    from palyra.types import EmbeddingsResult, Usage

    b64 = base64.b64encode(struct.pack("<2f", 0.25, -1.0)).decode()
    result = EmbeddingsResult([b64, [0.5, 2.0]], Usage(3, 0))
    floats = openai_embeddings.render_embeddings(result, "m", "float")
    assert [row["embedding"] for row in floats["data"]] == [[0.25, -1.0], [0.5, 2.0]]
    packed = openai_embeddings.render_embeddings(result, "m", "base64")
    assert [row["embedding"] for row in packed["data"]] == [
        b64,  # as the upstream sent it
        base64.b64encode(struct.pack("<2f", 0.5, 2.0)).decode(),
    ]


async def test_requests_touch_no_database(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    """The brief's hot-path rule, kept: with the state store failing every call, whole and
    streamed chats and embeddings go on being served, before and after the credential
    cache's refresh (which the daemon runs every 5 s; the test runs that pass itself rather
    than wait for it)."""
    from palyra.config import validate_config
    from palyra.credentials import StoreCredentials
    from palyra.server.keys import RUNTIME

    config = validate_config(
        {
            "version": 1,
            "daemon": {"state_dir": str(tmp_path / "state")},
            "model_provider": {
                "discovery_ttl_ms": 3_600_000,
                "health_ttl_ms": 3_600_000,
                "providers": [
                    {
                        "provider_id": "oai",
                        "kind": "openai_compatible",
                        "base_url": upstream.openai_base_url,
                        "allow_private_base_url": True,
                        "api_key_vault_ref": "global/upstream",
                    }
                ],
                "models": [
                    {"model_id": "gpt-4o-mini", "provider_id": "oai"},
                    {"model_id": "emb", "provider_id": "oai", "role": "embeddings"},
                ],
            },
        }
    )
    server = await start_gateway(config)
    runtime = server.app[RUNTIME]
    await runtime.auth.vault.put("global/upstream", UPSTREAM_KEY)
    sdk = AsyncOpenAI(
        api_key=ADMIN_TOKEN, base_url=str(server.make_url("/v1")), max_retries=0, timeout=20
    )
    messages: Any = [{"role": "user", "content": "hi"}]
    await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)  # reads the key

    # The credential cache's refresh pass is run below by hand, at a known moment, where the
    # test waited 6 s for its loop's. That loop and the key ring's stop, so that every store
    # call recorded is a request's (and must be none).
    credentials = runtime.gateway._credentials
    assert isinstance(credentials, StoreCredentials)
    await credentials.aclose()
    await runtime.keys.aclose()

    touched: list[str] = []

    def failing(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            touched.append(name)
            raise ConnectionError("the state store was touched")

        return call

    names = ("execute", "fetch_one", "fetch_all", "transaction")
    for name in names:
        setattr(runtime.db, name, failing(name))

    async def serve() -> None:
        for _ in range(3):
            whole = await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
            assert whole.choices[0].message.content == "echo: hi"
            stream = await sdk.chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=True
            )
            assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            vectors = await sdk.embeddings.create(model="emb", input="x")
            assert vectors.data[0].embedding

    try:
        await serve()
        assert touched == []
        await credentials.refresh()
        # The refresh tried the store, failed quietly, and kept the values last read.
        assert touched and set(touched) <= {"fetch_one", "fetch_all"}
        touched.clear()
        await serve()
        assert touched == []
    finally:
        for name in names:
            delattr(runtime.db, name)
        await sdk.close()


async def test_relay_past_its_limit_raises_when_the_client_is_gone() -> None:
    from palyra.dialects.common import Relay as _Relay

    class GoneClient:
        def __init__(self) -> None:
            self.fail = asyncio.Event()

        async def write(self, data: bytes) -> None:
            await self.fail.wait()
            raise ConnectionResetError("client went away")

    client = GoneClient()
    relay = _Relay(client)  # type: ignore[arg-type]
    relay.push(b"first")
    await asyncio.sleep(0)  # the writer is inside write()
    while not relay.push(b"x" * 4096):
        pass
    waiting = asyncio.create_task(relay.taken())
    await asyncio.sleep(0.01)
    client.fail.set()  # the write fails while the handler waits for the backlog to go
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(waiting, 1)
    relay.abandon()
