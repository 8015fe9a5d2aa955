"""Chat completions without loss: what clients send reaches the upstream, and what the
upstream answers reaches the client, whole and streamed (the official `openai` SDK against
the gateway, on the fake upstream)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI

from palyra.types import REPLY_ONLY_MESSAGE_FIELDS
from tests.conftest import ADMIN_TOKEN
from tests.fakes import openai_wire
from tests.fakes.upstream import ChatReply, FakeUpstream, Reply

CHAT = "/v1/chat/completions"
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
# An assistant turn as a history saved from another run holds it: every reply-only field,
# an earlier audio answer (whole, as dumped), nulls.
SAVED_ASSISTANT: dict[str, Any] = {
    "role": "assistant",
    "content": "It is sunny in Paris.",
    "refusal": None,
    "annotations": [
        {
            "type": "url_citation",
            "url_citation": {
                "start_index": 0,
                "end_index": 5,
                "title": "Weather",
                "url": "https://example.com/",
            },
        }
    ],
    "audio": {"id": "audio_abc", "data": "UklGRg==", "expires_at": 1, "transcript": "Sunny."},
    "function_call": None,
    "tool_calls": None,
    "reasoning_content": "The user asked about weather.",
    "reasoning": "The user asked about weather.",
}


async def post(gateway: TestServer, body: dict[str, Any]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gateway.make_url(CHAT),
            json=body,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response,
    ):
        raw = await response.read()
        if response.content_type == "text/event-stream":
            return response.status, [
                orjson.loads(line[6:]) for line in raw.split(b"\n\n") if line.startswith(b"data: {")
            ]
        return response.status, orjson.loads(raw)


def sent_messages(upstream: FakeUpstream) -> list[list[dict[str, Any]]]:
    return [r.json["messages"] for r in upstream.requests_to(CHAT)]


# --- what clients send -----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-4o-mini", "deterministic", "claude"])
async def test_a_history_of_dumped_replies_round_trips_five_turns(
    client: AsyncOpenAI, upstream: FakeUpstream, model: str
) -> None:
    history: list[Any] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what was the weather?"},
        SAVED_ASSISTANT,
    ]
    extra: dict[str, Any] = {"reasoning_effort": "low"} if model == "gpt-4o-mini" else {}
    for turn in range(5):
        asks_tool = turn % 2 == 0
        prompt = f'/tool get_weather {{"city": "city {turn}"}}' if asks_tool else f"turn {turn}"
        history.append({"role": "user", "content": prompt})
        reply = await client.chat.completions.create(
            model=model, messages=history, tools=[WEATHER_TOOL], **extra
        )
        message = reply.choices[0].message
        dumped = message.model_dump()
        # What the SDK's reply object carries, nulls included, goes back as it is.
        assert {"annotations", "audio", "function_call", "refusal"} <= dumped.keys()
        history.append(dumped)
        if asks_tool:
            assert message.tool_calls, (turn, dumped)
            call = message.tool_calls[0]
            history.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
        elif model == "gpt-4o-mini":
            assert dumped["reasoning_content"] == f"thinking about: turn {turn}"
    assert len([m for m in history if m["role"] == "assistant"]) == 6
    if model != "gpt-4o-mini":
        return
    # Reply-only fields and nulls never went upstream; an earlier audio answer by its id.
    for messages in sent_messages(upstream):
        for message in messages:
            assert not (message.keys() & REPLY_ONLY_MESSAGE_FIELDS), message
            assert None not in message.values(), message
        assert messages[2]["audio"] == {"id": "audio_abc"}
        assert messages[2]["content"] == "It is sunny in Paris."


async def test_what_parse_adds_to_a_reply_is_not_sent_back_upstream(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    # Found in review: `parsed` (the message) and `parsed_arguments` (each tool call's
    # function), which openai-python's parse() adds to the reply it gives, went upstream when
    # the reply was sent back; a strict upstream refuses fields it does not know.
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather"}}
    call["function"]["arguments"] = '{"city": "Rome"}'
    call["function"]["parsed_arguments"] = {"city": "Rome"}
    history: list[Any] = [
        {"role": "user", "content": "weather in Rome, and a city"},
        {"role": "assistant", "content": '{"name": "Oslo"}', "parsed": {"name": "Oslo"}},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    await client.chat.completions.create(
        model="gpt-4o-mini", messages=history, tools=[WEATHER_TOOL]
    )
    sent = sent_messages(upstream)[-1]
    assert "parsed" not in sent[1] and sent[1]["content"] == '{"name": "Oslo"}'
    assert sent[2]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Rome"}',
    }


async def test_a_json_schema_format_without_its_schema_is_refused(client: AsyncOpenAI) -> None:
    # Found in review: accepted, and answered as if no schema had been asked for.
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema"},
        )
    assert "json_schema" in refused.value.message


async def test_unknown_parameters_reach_the_upstream_as_sent(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    unknown = {
        "prediction": {"type": "content", "content": "the same text"},
        "verbosity": "low",
        "web_search_options": {"search_context_size": "low", "user_location": None},
        "x_parameter_from_next_month": {"nested": [1, None, {"deep": True}]},
        "store": False,
        "logit_bias": {"1234": -100},
    }
    for stream in (False, True):
        upstream.clear()
        response = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=stream,
            stream_options={"include_obfuscation": False} if stream else openai.omit,
            service_tier=None,
            extra_body=unknown,
        )
        if stream:
            [chunk async for chunk in response]  # type: ignore[union-attr]
        sent = upstream.requests_to(CHAT)[0].json
        for name, value in unknown.items():
            assert sent[name] == value, name
        assert "service_tier" not in sent  # a null is no parameter
        if stream:
            assert sent["stream_options"] == {"include_obfuscation": False, "include_usage": True}


async def test_deprecated_functions_work_on_every_kind(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    function = WEATHER_TOOL["function"]
    for model in ("gpt-4o-mini", "deterministic", "claude"):
        history: list[Any] = [
            {"role": "user", "content": '/tool get_weather {"city": "Oslo"}'},
        ]
        reply = await client.chat.completions.create(
            model=model, messages=history, functions=[function], function_call="auto"
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "function_call", model
        assert choice.message.tool_calls is None
        assert choice.message.function_call is not None
        assert choice.message.function_call.name == "get_weather"
        assert json.loads(choice.message.function_call.arguments) == {"city": "Oslo"}
        # The answer goes back as a function message, and the conversation goes on.
        history += [
            choice.message.model_dump(),
            {"role": "function", "name": "get_weather", "content": "sunny"},
            {"role": "user", "content": "thanks"},
        ]
        again = await client.chat.completions.create(
            model=model, messages=history, functions=[function]
        )
        assert again.choices[0].finish_reason == "stop", model
        # Streamed, the call comes as function_call deltas.
        stream = await client.chat.completions.create(
            model=model, messages=history[:1], functions=[function], stream=True
        )
        name, arguments, finish = "", "", None
        async for chunk in stream:
            for c in chunk.choices:
                assert c.delta.tool_calls is None
                if c.delta.function_call:
                    name += c.delta.function_call.name or ""
                    arguments += c.delta.function_call.arguments or ""
                finish = c.finish_reason or finish
        assert (name, json.loads(arguments), finish) == (
            "get_weather",
            {"city": "Oslo"},
            "function_call",
        ), model
    sent = upstream.requests_to(CHAT)[0].json
    assert sent["functions"] == [function] and sent["function_call"] == "auto"
    assert "tools" not in sent
    assert upstream.requests_to(CHAT)[1].json["messages"][2] == {
        "role": "function",
        "name": "get_weather",
        "content": "sunny",
    }


async def test_a_bad_content_part_is_named_as_the_client_wrote_it(gateway: TestServer) -> None:
    for part, expected in [
        (
            {"type": "foo"},
            "messages[1].content[0]: unknown content part type 'foo'; expected text, "
            "image_url, input_audio, file or refusal",
        ),
        ({"type": "text"}, "messages[1].content[0].text: Field required"),
        ({"text": "no type"}, "messages[1].content[0]: a content part needs a 'type'"),
    ]:
        status, body = await post(
            gateway,
            {
                "model": "deterministic",
                "messages": [
                    {"role": "system", "content": "hi"},
                    {"role": "user", "content": [part]},
                ],
            },
        )
        assert status == 400
        assert body["error"]["message"] == expected
    status, body = await post(
        gateway,
        {
            "model": "deterministic",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "zap"}],
        },
    )
    assert status == 400
    assert (
        body["error"]["message"] == "tools[0]: unknown tool type 'zap'; expected function or custom"
    )


# --- what upstreams answer -------------------------------------------------------------------

RICH = ChatReply(
    content="the whole answer",
    reasoning="first I thought it over",
    refusal="one part I will not say",
    annotations=[
        {
            "type": "url_citation",
            "url_citation": {
                "start_index": 0,
                "end_index": 3,
                "title": "Source",
                "url": "https://example.com/",
            },
        }
    ],
    cached_tokens=3,
    reasoning_tokens=5,
    body_extra={"x_body_field": {"kept": [1, None]}},
    choice_extra={"x_choice_field": "as sent"},
    message_extra={"x_message_field": 7},
)
RICH_REQUEST = {"n": 2, "logprobs": True, "top_logprobs": 1, "service_tier": "flex"}
# Ours, not the upstream's: the completion's id, time, and model as the client named it.
OURS = {"id", "created", "model"}


@pytest.mark.parametrize("reasoning_key", ["reasoning_content", "reasoning"])
async def test_a_whole_answer_comes_back_as_the_upstream_sent_it(
    gateway: TestServer, upstream: FakeUpstream, reasoning_key: str
) -> None:
    reply = ChatReply(**{**RICH.__dict__, "reasoning_key": reasoning_key})
    sent = openai_wire.chat_completion(reply, model="gpt-4o-mini", prompt=4, request=RICH_REQUEST)
    upstream.script(CHAT, Reply(json=sent))
    status, body = await post(
        gateway,
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **RICH_REQUEST},
    )
    assert status == 200, body
    assert {k: v for k, v in body.items() if k not in OURS} == {
        k: v for k, v in sent.items() if k not in OURS
    }
    assert len(body["choices"]) == 2 and body["choices"][0]["logprobs"]["content"]
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 3
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5
    assert body["system_fingerprint"] == openai_wire.SYSTEM_FINGERPRINT
    assert body["service_tier"] == "flex"
    assert upstream.requests_to(CHAT)[0].json["logprobs"] is True


async def test_an_audio_answer_comes_back_whole(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    reply = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "say it"}],
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "wav"},
    )
    audio = reply.choices[0].message.audio
    assert audio is not None and audio.transcript == "echo: say it" and audio.data


def _events(chunks: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What a stream's chunks say, however they are framed: each choice's non-empty delta
    fields, logprobs, finish and choice fields, in order."""
    events = []
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = {
                k: v for k, v in choice["delta"].items() if k != "role" and v not in (None, "")
            }
            rest = {k: v for k, v in choice.items() if k not in ("delta", "index")}
            if delta or rest.get("finish_reason") or rest.get("logprobs"):
                events.append((choice["index"], delta, rest))
    return events


async def test_a_streamed_answer_comes_back_as_the_upstream_sent_it(
    gateway: TestServer, upstream: FakeUpstream
) -> None:
    frames = openai_wire.chat_chunks(
        RICH, model="gpt-4o-mini", prompt=4, include_usage=True, request=RICH_REQUEST
    )
    upstream.script(
        CHAT,
        Reply(
            body=b"".join(frames) + openai_wire.DONE,
            headers={"Content-Type": "text/event-stream"},
        ),
    )
    sent = [orjson.loads(frame[6:]) for frame in frames]
    status, chunks = await post(
        gateway,
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            **RICH_REQUEST,
        },
    )
    assert status == 200
    assert _events(chunks) == _events(sent)
    # Every chunk has the upstream's chunk fields, the first (our role chunk) included.
    head = {k: v for k, v in sent[0].items() if k not in (*OURS, "object", "choices", "usage")}
    assert head == {
        "service_tier": "flex",
        "system_fingerprint": openai_wire.SYSTEM_FINGERPRINT,
        "x_body_field": {"kept": [1, None]},
    }
    for chunk in chunks:
        assert {k: chunk[k] for k in head} == head
    assert chunks[-1]["usage"] == sent[-1]["usage"]
    reasoning = "".join(
        c["choices"][0]["delta"].get("reasoning_content", "")
        for c in chunks
        if c["choices"] and c["choices"][0]["index"] == 0
    )
    assert reasoning == "first I thought it over"


async def test_the_sdk_reads_every_field_through_the_gateway_streamed(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.script(CHAT, RICH)
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
        **RICH_REQUEST,  # type: ignore[arg-type]
    )
    texts: dict[int, str] = {0: "", 1: ""}
    refusal, tokens = "", ""
    chunks = [chunk async for chunk in stream]
    for chunk in chunks:
        assert chunk.system_fingerprint == openai_wire.SYSTEM_FINGERPRINT
        assert chunk.service_tier == "flex"
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.index == 0:
                refusal += c.delta.refusal or ""
                if c.logprobs and c.logprobs.content:
                    tokens += "".join(t.token for t in c.logprobs.content)
    assert texts == {0: "the whole answer", 1: "the whole answer (choice 1)"}
    assert refusal == "one part I will not say" and tokens == "the whole answer"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 5
