"""Proves FakeUpstream speaks the real wire formats: the official SDKs are its clients.

Both SDK clients run with `_strict_response_validation=True`, so a body that does not match
the SDK's pydantic models fails the test instead of being constructed leniently.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from collections.abc import AsyncIterator

import aiohttp
import anthropic
import httpx2
import openai
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import (
    Message,
    MessageParam,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ThinkingConfigEnabledParam,
    ToolParam,
    ToolUseBlock,
)
from openai import AsyncOpenAI
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionContentPartTextParam,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
)
from openai.types.responses import FunctionToolParam, ResponseFunctionToolCall

from tests.fakes.anthropic_wire import REDACTED_THINKING_TRIGGER, ClaudeReply
from tests.fakes.upstream import (
    ChatReply,
    DropConnection,
    ErrorReply,
    FakeUpstream,
    RateLimits,
    Reply,
)

KEY = "sk-fake-upstream-key"
USER_HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CLAUDE_WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "Weather by city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
AUDIO = ("clip.wav", b"RIFF" + bytes(63_996), "audio/wav")  # 64,000 bytes: 2.0 s by the fake


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


def _openai(upstream: FakeUpstream, *, strict: bool = True) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key=KEY,
        base_url=upstream.openai_base_url,
        max_retries=0,
        _strict_response_validation=strict,
    )


@pytest.fixture
async def oai(upstream: FakeUpstream) -> AsyncIterator[AsyncOpenAI]:
    client = _openai(upstream)
    yield client
    await client.close()


@pytest.fixture
async def oai_lenient(upstream: FakeUpstream) -> AsyncIterator[AsyncOpenAI]:
    # Strict validation checks a body before the SDK decodes base64 embeddings
    # (Embedding.embedding is List[float]), so it would refuse the real API's answer too.
    client = _openai(upstream, strict=False)
    yield client
    await client.close()


@pytest.fixture
async def claude(upstream: FakeUpstream) -> AsyncIterator[AsyncAnthropic]:
    client = AsyncAnthropic(
        api_key=KEY,
        base_url=upstream.anthropic_base_url,
        max_retries=0,
        _strict_response_validation=True,
    )
    yield client
    await client.close()


# --- OpenAI --------------------------------------------------------------------------------


async def test_openai_chat_whole(oai: AsyncOpenAI, upstream: FakeUpstream) -> None:
    parts: list[ChatCompletionContentPartTextParam] = [
        {"type": "text", "text": "hello "},
        {"type": "text", "text": "world"},
    ]
    completion = await oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": parts},
        ],
    )
    assert isinstance(completion, ChatCompletion)
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.system_fingerprint == "fp_fake0001"
    assert completion.service_tier == "default"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "echo: hello world"
    assert choice.message.refusal is None
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 8  # words in all messages
    assert completion.usage.completion_tokens == 3
    assert completion.usage.total_tokens == 11
    assert upstream.requests_to("/v1/chat/completions")[0].json["model"] == "gpt-4o-mini"


async def test_openai_chat_stream_with_usage(oai: AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "the quick brown fox jumps"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 2
    assert "".join(pieces) == "echo: the quick brown fox jumps"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 6)
    assert all(c.usage is None for c in chunks[:-1])


async def test_openai_stream_without_include_usage_has_no_usage_chunk(oai: AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(model="m", messages=USER_HELLO, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(c.choices and c.usage is None for c in chunks)


async def test_openai_streamed_parallel_tool_calls(
    oai: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    calls = [
        {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"id": "call_2", "name": "get_time", "arguments": '{"zone": "Europe/Berlin"}'},
    ]
    upstream.script("/v1/chat/completions", ChatReply(content=None, tool_calls=calls))
    stream = await oai.chat.completions.create(
        model="gpt-4o-mini", messages=USER_HELLO, tools=[WEATHER_TOOL], stream=True
    )
    assembled: dict[int, dict[str, str]] = {}
    fragments: dict[int, int] = {}
    finish = None
    async for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            entry = assembled.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            if delta.id:
                assert delta.type == "function"
                entry["id"] = delta.id
            if delta.function and delta.function.name:
                entry["name"] = delta.function.name
            if delta.function and delta.function.arguments:
                entry["arguments"] += delta.function.arguments
                fragments[delta.index] = fragments.get(delta.index, 0) + 1
    assert finish == "tool_calls"
    assert assembled[0] == {
        "id": "call_1",
        "name": "get_weather",
        "arguments": calls[0]["arguments"],
    }
    assert assembled[1] == {"id": "call_2", "name": "get_time", "arguments": calls[1]["arguments"]}
    assert fragments[0] > 1 and fragments[1] > 1

    # The SDK's own accumulator must agree.
    upstream.script("/v1/chat/completions", ChatReply(content=None, tool_calls=calls))
    async with oai.chat.completions.stream(
        model="gpt-4o-mini", messages=USER_HELLO, tools=[WEATHER_TOOL]
    ) as helper:
        final = await helper.get_final_completion()
    tool_calls = final.choices[0].message.tool_calls or []
    assert [(t.id, t.function.name, json.loads(t.function.arguments)) for t in tool_calls] == [
        ("call_1", "get_weather", {"city": "Paris"}),
        ("call_2", "get_time", {"zone": "Europe/Berlin"}),
    ]


async def test_openai_whole_tool_calls_and_tool_command(oai: AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": '/tool get_weather {"city": "Oslo"}'}],
        tools=[WEATHER_TOOL],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}


async def test_openai_json_object(oai: AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "give json"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(completion.choices[0].message.content or "") == {"echo": "give json"}


async def test_openai_chat_validation(oai: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await oai.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert info.value.status_code == 400
    assert info.value.type == "invalid_request_error"
    assert info.value.param == "messages"


async def test_openai_embeddings_base64_default(
    oai: AsyncOpenAI, oai_lenient: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    result = await oai_lenient.embeddings.create(
        model="text-embedding-3-small", input=["alpha", "beta"]
    )
    # The SDK asks for base64 unless told otherwise and decodes it itself.
    assert upstream.requests[-1].json["encoding_format"] == "base64"
    assert [d.index for d in result.data] == [0, 1]
    vectors = [d.embedding for d in result.data]
    assert all(len(v) == 8 and all(isinstance(x, float) for x in v) for v in vectors)
    assert vectors[0] != vectors[1]
    assert math.isclose(math.sqrt(sum(x * x for x in vectors[0])), 1.0, rel_tol=1e-5)
    assert result.usage.prompt_tokens == 2 and result.usage.total_tokens == 2
    assert result.model == "text-embedding-3-small"

    floats = await oai.embeddings.create(
        model="text-embedding-3-small", input="alpha", encoding_format="float"
    )
    assert floats.data[0].embedding == vectors[0]  # deterministic, same values both encodings


async def test_openai_embeddings_dimensions_and_tokens(oai_lenient: AsyncOpenAI) -> None:
    result = await oai_lenient.embeddings.create(model="e", input="some text", dimensions=16)
    assert len(result.data[0].embedding) == 16
    tokens = await oai_lenient.embeddings.create(model="e", input=[[1, 2, 3], [4, 5]])
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 5


async def test_openai_embeddings_raw_base64_is_little_endian_float32(
    upstream: FakeUpstream,
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            upstream.openai_base_url + "/embeddings",
            json={"model": "e", "input": "x", "encoding_format": "base64", "dimensions": 4},
            headers={"Authorization": f"Bearer {KEY}"},
        ) as response,
    ):
        body = await response.json()
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert len(raw) == 16
    assert all(-1.0 <= x <= 1.0 for x in struct.unpack("<4f", raw))


async def test_openai_transcriptions(oai: AsyncOpenAI) -> None:
    as_json = await oai.audio.transcriptions.create(model="whisper-1", file=AUDIO)
    assert as_json.text == "transcript of 64000 bytes"
    as_text = await oai.audio.transcriptions.create(
        model="whisper-1", file=AUDIO, response_format="text"
    )
    assert as_text == "transcript of 64000 bytes"
    verbose = await oai.audio.transcriptions.create(
        model="whisper-1", file=AUDIO, response_format="verbose_json"
    )
    assert verbose.language == "english"
    assert verbose.duration == 2.0
    assert verbose.text == "transcript of 64000 bytes"
    assert verbose.segments is not None and verbose.segments[0].end == 2.0


async def test_openai_transcription_subtitles_words_and_fields(
    oai: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    srt = await oai.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=AUDIO, response_format="srt"
    )
    assert srt.headers["content-type"] == "text/plain; charset=utf-8"
    assert srt.parse() == ("1\n00:00:00,000 --> 00:00:02,000\ntranscript of 64000 bytes\n\n")
    vtt = await oai.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=AUDIO, response_format="vtt"
    )
    assert vtt.headers["content-type"] == "text/vtt; charset=utf-8"
    assert vtt.parse().startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.000\n")
    words = await oai.audio.transcriptions.create(
        model="whisper-1",
        file=AUDIO,
        response_format="verbose_json",
        timestamp_granularities=["word"],
        chunking_strategy="auto",
        known_speaker_names=["agent", "customer"],
    )
    assert words.words is not None and [w.word for w in words.words][:1] == ["transcript"]
    assert words.segments is None  # words alone were asked for
    sent = upstream.requests_to("/v1/audio/transcriptions")[-1].form_items
    assert ("timestamp_granularities[]", "word") in sent
    assert ("chunking_strategy", "auto") in sent
    names = [value for name, value in sent if name == "known_speaker_names[]"]
    assert names == ["agent", "customer"]
    diarized = await oai.audio.transcriptions.create(
        model="whisper-1", file=AUDIO, response_format="diarized_json"
    )
    assert diarized.segments[0].speaker == "A"
    with pytest.raises(openai.BadRequestError) as refused:
        await oai.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=AUDIO, response_format="srt"
        )
    assert refused.value.body["param"] == "response_format"  # type: ignore[index]


async def test_openai_transcription_stream(oai: AsyncOpenAI) -> None:
    stream = await oai.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=AUDIO, stream=True, include=["logprobs"]
    )
    events = [event async for event in stream]
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    done = events[-1]
    assert done.type == "transcript.text.done"
    assert "".join(d.delta for d in deltas) == done.text == "transcript of 64000 bytes"
    assert deltas[0].logprobs is not None and done.usage is not None
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    # whisper-1 ignores `stream`, as the API does: a whole answer, which no stream parses.
    async with aiohttp.ClientSession() as http:
        form = aiohttp.FormData()
        form.add_field("file", AUDIO[1], filename="clip.wav")
        form.add_field("model", "whisper-1")
        form.add_field("stream", "true")
        url = upstream_url(oai, "/audio/transcriptions")
        async with http.post(url, data=form, headers={"Authorization": f"Bearer {KEY}"}) as r:
            assert r.content_type == "application/json"


def upstream_url(client: AsyncOpenAI, path: str) -> str:
    return str(client.base_url).rstrip("/") + path


async def test_openai_translations(oai: AsyncOpenAI, upstream: FakeUpstream) -> None:
    as_json = await oai.audio.translations.create(model="whisper-1", file=AUDIO)
    assert as_json.text == "English translation of 64000 bytes"
    verbose = await oai.audio.translations.create(
        model="whisper-1", file=AUDIO, response_format="verbose_json"
    )
    assert verbose.language == "english" and verbose.segments is not None
    srt = await oai.audio.translations.create(model="whisper-1", file=AUDIO, response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:02,000\nEnglish translation")
    assert upstream.requests_to("/v1/audio/translations")[0].form["model"] == "whisper-1"  # type: ignore[index]


async def test_openai_models_list(oai: AsyncOpenAI) -> None:
    page = await oai.models.list()
    models = [m async for m in page]
    assert [m.id for m in models] == ["gpt-4o-mini", "text-embedding-3-small", "whisper-1"]
    assert {m.object for m in models} == {"model"}


async def test_openai_rate_limit_error(oai: AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.script("/v1/chat/completions", ErrorReply(429, retry_after="1", retry_after_ms=1000))
    with pytest.raises(openai.RateLimitError) as info:
        await oai.chat.completions.create(model="gpt-4o-mini", messages=USER_HELLO)
    err = info.value
    assert err.status_code == 429
    assert err.response.headers["retry-after"] == "1"
    assert err.response.headers["retry-after-ms"] == "1000"
    assert err.code == "rate_limit_exceeded"
    assert err.type == "requests"
    # The script is used up: the next request gets the default answer.
    completion = await oai.chat.completions.create(model="gpt-4o-mini", messages=USER_HELLO)
    assert completion.choices[0].message.content == "echo: hello there"


async def test_openai_server_errors(oai: AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.script(
        "/v1/chat/completions",
        ErrorReply(503),
        ErrorReply(500, "boom", code="custom_code", error_type="custom_type"),
    )
    with pytest.raises(openai.InternalServerError) as info:
        await oai.chat.completions.create(model="gpt-4o-mini", messages=USER_HELLO)
    assert info.value.status_code == 503
    assert info.value.type == "server_error"
    with pytest.raises(openai.APIStatusError) as second:
        await oai.chat.completions.create(model="gpt-4o-mini", messages=USER_HELLO)
    assert (second.value.status_code, second.value.code, second.value.type) == (
        500,
        "custom_code",
        "custom_type",
    )
    assert "boom" in second.value.message


async def test_openai_wrong_key(upstream: FakeUpstream) -> None:
    client = AsyncOpenAI(api_key="sk-wrong", base_url=upstream.openai_base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        await client.models.list()
    await client.close()
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert "sk-wrong" not in info.value.message


async def test_openai_error_event_mid_stream(oai: AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.script(
        "/v1/chat/completions", ChatReply("one two three four", error_event_after_chunks=2)
    )
    stream = await oai.chat.completions.create(model="m", messages=USER_HELLO, stream=True)
    received: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 2
    assert not isinstance(info.value, openai.APIStatusError)
    assert info.value.type == "server_error"


async def test_openai_break_after_chunks(oai: AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.script("/v1/chat/completions", ChatReply("one two three four", break_after_chunks=3))
    stream = await oai.chat.completions.create(model="m", messages=USER_HELLO, stream=True)
    received: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 3
    assert upstream.cancelled_streams == 0  # a deliberate break is not a client disconnect


async def test_openai_whole_answer_cut_short(oai: AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.script("/v1/chat/completions", ChatReply("cut", break_after_chunks=0))
    with pytest.raises(openai.APIConnectionError):
        await oai.chat.completions.create(model="m", messages=USER_HELLO)


RICH = ChatReply(
    content="the answer",
    reasoning="first I thought",
    refusal="part of it I will not say",
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
    cached_tokens=2,
    reasoning_tokens=4,
    body_extra={"x_body_note": {"kept": True}},
    choice_extra={"x_choice_note": 1},
    message_extra={"x_message_note": "as sent"},
)


async def test_openai_answers_carry_every_field_the_sdk_reads(
    oai: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    # Whole: strict SDK models take every field, n > 1, logprobs and audio included.
    upstream.script("/v1/chat/completions", RICH)
    completion = await oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER_HELLO,
        n=2,
        logprobs=True,
        top_logprobs=1,
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "wav"},
    )
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.system_fingerprint == "fp_fake0001"
    assert completion.model_extra == {"x_body_note": {"kept": True}}
    choice = completion.choices[0]
    assert choice.model_extra == {"x_choice_note": 1}
    message = choice.message
    assert message.content is None and message.audio is not None
    assert message.audio.transcript == "the answer"
    assert completion.choices[1].message.audio.transcript == "the answer (choice 1)"  # type: ignore[union-attr]
    assert message.refusal == "part of it I will not say"
    assert message.annotations and message.annotations[0].url_citation.url == "https://example.com/"
    assert message.model_extra == {
        "reasoning_content": "first I thought",
        "x_message_note": "as sent",
    }
    assert choice.logprobs is not None and choice.logprobs.content
    assert "".join(t.token for t in choice.logprobs.content) == "the answer"
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens_details and usage.completion_tokens_details
    assert usage.prompt_tokens_details.cached_tokens == 2
    assert usage.completion_tokens_details.reasoning_tokens == 4

    # Streamed: the same fields, per chunk; the choices interleaved.
    upstream.script("/v1/chat/completions", RICH)
    stream = await oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER_HELLO,
        n=2,
        logprobs=True,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.system_fingerprint == "fp_fake0001" for c in chunks)
    assert all(c.model_extra == {"x_body_note": {"kept": True}} for c in chunks)
    text: dict[int, str] = {0: "", 1: ""}
    reasoning, refusal, tokens = "", "", ""
    for chunk in chunks:
        for c in chunk.choices:
            assert c.model_extra == {"x_choice_note": 1}
            text[c.index] += c.delta.content or ""
            refusal += c.delta.refusal or "" if c.index == 0 else ""
            if c.index == 0 and c.delta.model_extra:
                reasoning += c.delta.model_extra.get("reasoning_content", "")
            if c.index == 0 and c.logprobs and c.logprobs.content:
                tokens += "".join(t.token for t in c.logprobs.content)
    assert text == {0: "the answer", 1: "the answer (choice 1)"}
    assert (reasoning, refusal, tokens) == (
        "first I thought",
        "part of it I will not say",
        "the answer",
    )
    final = chunks[-1].usage
    assert final is not None and final.prompt_tokens_details is not None
    assert final.prompt_tokens_details.cached_tokens == 2


async def test_openai_functions_are_answered_with_function_call(oai: AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": '/tool get_weather {"city": "Oslo"}'}],
        functions=[WEATHER_TOOL["function"]],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.function_call is not None
    assert choice.message.function_call.name == "get_weather"
    assert json.loads(choice.message.function_call.arguments) == {"city": "Oslo"}


# --- Anthropic -----------------------------------------------------------------------------


async def test_anthropic_create_whole(claude: AsyncAnthropic, upstream: FakeUpstream) -> None:
    message = await claude.messages.create(
        model="claude-test",
        max_tokens=64,
        system="be brief",
        messages=[
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "hi claude"}]},
        ],
    )
    assert isinstance(message, Message)
    assert message.id.startswith("msg_")
    assert (message.type, message.role, message.model) == ("message", "assistant", "claude-test")
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    (block,) = message.content
    assert isinstance(block, TextBlock) and block.text == "echo: hi claude"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (6, 3)
    request = upstream.requests_to("/v1/messages")[0]
    assert request.headers["authorization"] == f"Bearer {KEY}"  # anthropic 2.14 uses Bearer
    assert "anthropic-version" in request.headers


async def test_anthropic_stream_text(claude: AsyncAnthropic) -> None:
    async with claude.messages.stream(
        model="claude-test",
        max_tokens=64,
        messages=[{"role": "user", "content": "stream these few words"}],
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) > 2
    assert "".join(pieces) == "echo: stream these few words"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (4, 5)

    raw = await claude.messages.create(
        model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "x"}], stream=True
    )
    types = [event.type async for event in raw]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    assert types.count("content_block_start") == types.count("content_block_stop") == 1


async def test_anthropic_streamed_tool_use(claude: AsyncAnthropic, upstream: FakeUpstream) -> None:
    arguments = '{"city": "Paris", "units": "celsius", "days": 3}'
    upstream.script(
        "/v1/messages",
        ChatReply(
            "Let me check.",
            tool_calls=[{"id": "toolu_1", "name": "get_weather", "arguments": arguments}],
        ),
    )
    partials: list[str] = []
    async with claude.messages.stream(
        model="claude-test",
        max_tokens=64,
        tools=[CLAUDE_WEATHER_TOOL],
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        async for event in stream:
            if event.type == "input_json":
                partials.append(event.partial_json)
        final = await stream.get_final_message()
    assert len([p for p in partials if p]) >= 3
    assert final.stop_reason == "tool_use"
    text, tool = final.content
    assert isinstance(text, TextBlock) and text.text == "Let me check."
    assert isinstance(tool, ToolUseBlock)
    assert (tool.id, tool.name) == ("toolu_1", "get_weather")
    assert tool.input == {"city": "Paris", "units": "celsius", "days": 3}


async def test_anthropic_tool_command(claude: AsyncAnthropic) -> None:
    message = await claude.messages.create(
        model="claude-test",
        max_tokens=64,
        tools=[CLAUDE_WEATHER_TOOL],
        messages=[{"role": "user", "content": '/tool get_weather {"city": "Rome"}'}],
    )
    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert isinstance(block, ToolUseBlock) and block.id.startswith("toolu_")
    assert (block.name, block.input) == ("get_weather", {"city": "Rome"})


async def test_anthropic_forced_tool_choice(claude: AsyncAnthropic) -> None:
    message = await claude.messages.create(
        model="claude-test",
        max_tokens=64,
        tools=[CLAUDE_WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "anything"}],
    )
    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert isinstance(block, ToolUseBlock) and (block.name, block.input) == ("get_weather", {})


async def test_anthropic_thinking_and_cache_usage_whole(
    claude: AsyncAnthropic, upstream: FakeUpstream
) -> None:
    reply = ClaudeReply(
        "Four.",
        thinking="Two plus two is four.",
        redacted_thinking=True,
        usage=(5, 9),
        cache_read_tokens=1000,
        cache_creation_tokens=200,
    )
    upstream.script("/v1/messages", reply)
    message = await claude.messages.create(
        model="claude-test",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "2+2?"}],
    )
    thinking, redacted, text = message.content
    assert isinstance(thinking, ThinkingBlock) and thinking.thinking == "Two plus two is four."
    assert thinking.signature
    assert isinstance(redacted, RedactedThinkingBlock) and redacted.data
    assert isinstance(text, TextBlock) and text.text == "Four."
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (5, 9)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (1000, 200)


async def test_anthropic_thinking_and_cache_usage_streamed(
    claude: AsyncAnthropic, upstream: FakeUpstream
) -> None:
    reply = ClaudeReply(
        "Four.", thinking="Two plus two is four.", usage=(5, 9), cache_read_tokens=1000
    )
    upstream.script("/v1/messages", reply)
    async with claude.messages.stream(
        model="claude-test",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "2+2?"}],
    ) as stream:
        kinds = [event.type async for event in stream]
        message = await stream.get_final_message()
    assert "thinking" in kinds and "signature" in kinds
    thinking, text = message.content
    assert isinstance(thinking, ThinkingBlock) and thinking.thinking == "Two plus two is four."
    assert thinking.signature
    assert isinstance(text, TextBlock) and text.text == "Four."
    assert message.usage.cache_read_input_tokens == 1000
    assert message.usage.output_tokens == 9


THINKING: ThinkingConfigEnabledParam = {"type": "enabled", "budget_tokens": 1024}


async def test_anthropic_thinking_tool_loop_needs_the_signed_thinking_back(
    claude: AsyncAnthropic,
) -> None:
    # As the real API: with thinking enabled, the assistant turn a request continues after a
    # tool result starts with the thinking that led to the call, exactly as it was issued.
    asked: MessageParam = {"role": "user", "content": '/tool get_weather {"city": "Paris"}'}
    first = await claude.messages.create(
        model="claude-test",
        max_tokens=2048,
        thinking=THINKING,
        tools=[CLAUDE_WEATHER_TOOL],
        messages=[asked],
    )
    thinking, call = first.content
    assert isinstance(thinking, ThinkingBlock) and thinking.signature
    assert thinking.thinking == 'thinking about: /tool get_weather {"city": "Paris"}'
    assert isinstance(call, ToolUseBlock) and first.stop_reason == "tool_use"
    result: MessageParam = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
    }

    async def send(assistant: MessageParam, *, thinking: bool = True) -> Message:
        return await claude.messages.create(
            model="claude-test",
            max_tokens=2048,
            tools=[CLAUDE_WEATHER_TOOL],
            messages=[asked, assistant, result],
            **({"thinking": THINKING} if thinking else {}),
        )

    second = await send(first.to_param())
    assert isinstance(second.content[-1], TextBlock)
    assert second.content[-1].text == "echo: sunny"

    without: MessageParam = {"role": "assistant", "content": [call]}
    with pytest.raises(anthropic.BadRequestError) as missing:
        await send(without)
    assert missing.value.status_code == 400 and missing.value.type == "invalid_request_error"
    assert missing.value.body["error"]["message"].startswith(  # type: ignore[index]
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
        "`tool_use`. When `thinking` is enabled, a final `assistant` message must start with "
        "a thinking block"
    )
    # Text first is no better; a thinking block that was changed is refused too.
    with pytest.raises(anthropic.BadRequestError, match="but found `text`"):
        await send({"role": "assistant", "content": [TextBlock(type="text", text="hm"), call]})
    forged = thinking.model_copy(update={"thinking": "something else"})
    with pytest.raises(anthropic.BadRequestError, match="Invalid `signature` in `thinking`"):
        await send({"role": "assistant", "content": [forged, call]})

    # Without thinking nothing is required, and earlier thinking is taken; only a final
    # assistant message may not hold thinking then.
    assert (await send(without, thinking=False)).content[-1].type == "text"
    assert (await send(first.to_param(), thinking=False)).content[-1].type == "text"
    with pytest.raises(anthropic.BadRequestError, match="in the final position cannot contain"):
        await claude.messages.create(
            model="claude-test", max_tokens=64, messages=[asked, first.to_param()]
        )
    # A new turn of the user's own needs no earlier thinking.
    fresh = await claude.messages.create(
        model="claude-test",
        max_tokens=2048,
        thinking=THINKING,
        tools=[CLAUDE_WEATHER_TOOL],
        messages=[
            asked,
            without,
            result,
            {"role": "assistant", "content": "Sunny."},
            {"role": "user", "content": "thanks"},
        ],
    )
    assert fresh.content[-1].type == "text"


async def test_anthropic_redacted_thinking_is_sent_back_whole(claude: AsyncAnthropic) -> None:
    asked: MessageParam = {"role": "user", "content": "/tool get_weather {}"}
    async with claude.messages.stream(
        model="claude-test",
        max_tokens=2048,
        system=REDACTED_THINKING_TRIGGER,
        thinking=THINKING,
        tools=[CLAUDE_WEATHER_TOOL],
        messages=[asked],
    ) as stream:
        first = await stream.get_final_message()
    thinking, redacted, call = first.content
    assert isinstance(thinking, ThinkingBlock) and isinstance(redacted, RedactedThinkingBlock)
    assert isinstance(call, ToolUseBlock)
    result: MessageParam = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "cloudy"}],
    }
    # Only the redacted block first is a thinking block first, as the rule asks.
    for content in ([thinking, redacted, call], [redacted, call]):
        second = await claude.messages.create(
            model="claude-test",
            max_tokens=2048,
            thinking=THINKING,
            tools=[CLAUDE_WEATHER_TOOL],
            messages=[asked, {"role": "assistant", "content": content}, result],
        )
        assert second.content[-1].type == "text"
    changed = redacted.model_copy(update={"data": "AAAA"})
    with pytest.raises(anthropic.BadRequestError, match="Invalid `data`"):
        await claude.messages.create(
            model="claude-test",
            max_tokens=2048,
            thinking=THINKING,
            messages=[asked, {"role": "assistant", "content": [thinking, changed, call]}, result],
        )


async def test_anthropic_errors(claude: AsyncAnthropic, upstream: FakeUpstream) -> None:
    upstream.script("/v1/messages", ErrorReply(529), ErrorReply(429, retry_after="7"))
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        await claude.messages.create(
            model="c", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert overloaded.value.status_code == 529
    assert overloaded.value.type == "overloaded_error"
    assert overloaded.value.request_id is not None and overloaded.value.request_id.startswith(
        "req_"
    )
    with pytest.raises(anthropic.RateLimitError) as limited:
        await claude.messages.create(
            model="c", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert limited.value.status_code == 429
    assert limited.value.type == "rate_limit_error"
    assert limited.value.response.headers["retry-after"] == "7"


async def test_anthropic_validation_and_auth(
    claude: AsyncAnthropic, upstream: FakeUpstream
) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        await claude.messages.create(
            model="c", max_tokens=8, messages=[], extra_body={"max_tokens": None}
        )
    assert bad.value.type == "invalid_request_error"
    wrong = AsyncAnthropic(api_key="sk-wrong", base_url=upstream.anthropic_base_url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as denied:
        await wrong.messages.create(
            model="c", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    await wrong.close()
    assert denied.value.type == "authentication_error"

    # The daemon's style: x-api-key, and the version header is mandatory.
    url = upstream.anthropic_base_url + "/v1/messages"
    body = {"model": "c", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as session:
        headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        async with session.post(url, json=body, headers=headers) as ok:
            assert ok.status == 200 and (await ok.json())["content"][0]["text"] == "echo: x"
        async with session.post(url, json=body, headers={"x-api-key": KEY}) as missing:
            assert missing.status == 400
            assert (await missing.json())["error"]["type"] == "invalid_request_error"


async def test_anthropic_error_event_mid_stream(
    claude: AsyncAnthropic, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/messages", ChatReply("one two three", error_event_after_chunks=3))
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        async with claude.messages.stream(
            model="c", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            async for event in stream:
                seen.append(event.type)
    # The error arrives after a 200, so the SDK reports the HTTP status it had: 200.
    assert info.value.type == "overloaded_error"
    assert info.value.status_code == 200
    assert seen[0] == "message_start"


async def test_anthropic_break_after_chunks(claude: AsyncAnthropic, upstream: FakeUpstream) -> None:
    upstream.script("/v1/messages", ChatReply("one two three", break_after_chunks=4))
    # Unlike openai (APIConnectionError), anthropic 2.14 lets the transport error escape as is.
    with pytest.raises(httpx2.RemoteProtocolError):
        async with claude.messages.stream(
            model="c", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            await stream.get_final_message()


async def test_anthropic_models_list(claude: AsyncAnthropic) -> None:
    page = await claude.models.list()
    models = [m async for m in page]
    assert [m.id for m in models] == ["gpt-4o-mini", "text-embedding-3-small", "whisper-1"]
    assert {m.type for m in models} == {"model"}
    assert models[0].display_name == "Gpt 4O Mini"


async def test_anthropic_count_tokens(claude: AsyncAnthropic, upstream: FakeUpstream) -> None:
    counted = await claude.messages.count_tokens(
        model="claude-test",
        system="be brief",
        messages=[{"role": "user", "content": "count these four words"}],
    )
    assert counted.input_tokens == 6  # the same count `message` reports for this body
    with pytest.raises(anthropic.BadRequestError) as bad:
        await claude.messages.count_tokens(model="claude-test", messages=[])
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert len(upstream.requests_to("/v1/messages/count_tokens")) == 2


# --- the fake's own controls ---------------------------------------------------------------


async def test_records_requests(oai: AsyncOpenAI, upstream: FakeUpstream) -> None:
    await oai.chat.completions.create(
        model="gpt-4o-mini", messages=USER_HELLO, extra_query={"q": "1"}
    )
    await oai.audio.transcriptions.create(model="whisper-1", file=AUDIO, response_format="text")
    chat, audio = upstream.requests
    assert (chat.method, chat.path, chat.query) == ("POST", "/v1/chat/completions", {"q": "1"})
    assert chat.headers["authorization"] == f"Bearer {KEY}"
    assert all(name == name.lower() for name in chat.headers)
    assert chat.json == {"model": "gpt-4o-mini", "messages": USER_HELLO}
    assert json.loads(chat.body) == chat.json
    assert chat.form is None and chat.file_name is None
    assert audio.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert audio.json is None and audio.form is not None
    assert audio.form["model"] == "whisper-1" and audio.form["response_format"] == "text"
    assert audio.form["file"] == AUDIO[1] and audio.file_name == "clip.wav"
    upstream.clear()
    assert upstream.requests == []


async def test_client_disconnect_cancels_stream(oai: AsyncOpenAI, upstream: FakeUpstream) -> None:
    words = " ".join(f"w{i}" for i in range(200))
    upstream.script("/v1/chat/completions", ChatReply(words, chunk_delay_s=0.02))
    stream = await oai.chat.completions.create(model="m", messages=USER_HELLO, stream=True)
    async for _ in stream:
        if upstream.open_streams == 1:
            break
    await stream.close()
    await upstream.wait_streams_closed()
    assert upstream.cancelled_streams == 1

    stream = await oai.chat.completions.create(model="m", messages=USER_HELLO, stream=True)
    assert [c async for c in stream]
    await upstream.wait_streams_closed()
    assert upstream.cancelled_streams == 1  # a stream read to the end is not cancelled


async def test_down_and_drop(oai: AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.set_down(True)
    with pytest.raises(openai.APIConnectionError):
        await oai.models.list()
    assert len(upstream.requests_to("/v1/models")) == 1  # recorded even though dropped
    upstream.set_down(False)
    assert [m.id async for m in await oai.models.list()] == ["gpt-4o-mini", *upstream.models[1:]]

    upstream.script("/v1/models", DropConnection())
    with pytest.raises(openai.APIConnectionError):
        await oai.models.list()


async def test_raw_reply_and_delay(oai: AsyncOpenAI, upstream: FakeUpstream) -> None:
    custom = {
        "object": "list",
        "data": [{"id": "x", "object": "model", "created": 1, "owned_by": "me"}],
    }
    upstream.script(
        "/v1/models",
        Reply(json=custom, headers={"x-custom": "yes"}),
        Reply(status=200, json=custom, delay_s=1.0),
    )
    response = await oai.models.with_raw_response.list()
    assert response.headers["x-custom"] == "yes"
    assert [m.id async for m in response.parse()] == ["x"]
    with pytest.raises(openai.APITimeoutError):
        await oai.models.list(timeout=0.2)


async def test_raw_sse_framing(upstream: FakeUpstream) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            upstream.openai_base_url + "/chat/completions",
            json={"model": "m", "messages": USER_HELLO, "stream": True},
            headers={"Authorization": f"Bearer {KEY}"},
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            openai_raw = await response.text()
        async with session.post(
            upstream.anthropic_base_url + "/v1/messages",
            json={"model": "c", "max_tokens": 8, "stream": True, "messages": USER_HELLO},
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        ) as response:
            anthropic_raw = await response.text()
    assert openai_raw.endswith("data: [DONE]\n\n")
    assert all(f.startswith("data: ") for f in openai_raw.strip().split("\n\n"))
    frames = anthropic_raw.strip().split("\n\n")
    assert 'event: ping\ndata: {"type":"ping"}' in frames
    for frame in frames:
        name, data = frame.split("\n")
        assert json.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")


async def test_start_close_idempotent_url() -> None:
    fake = FakeUpstream(api_key=None, models=["only"])
    with pytest.raises(RuntimeError):
        _ = fake.url
    await fake.start()
    try:
        assert fake.openai_base_url == fake.url + "/v1"
        client = AsyncOpenAI(api_key="anything", base_url=fake.openai_base_url, max_retries=0)
        assert [m.id async for m in await client.models.list()] == ["only"]
        await client.close()
    finally:
        await fake.close()
    await asyncio.sleep(0)


# --- OpenAI Responses ----------------------------------------------------------------------

RESPONSES_WEATHER_TOOL: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": None,
}


async def test_responses_whole(oai: AsyncOpenAI, upstream: FakeUpstream) -> None:
    answer = await oai.responses.create(
        model="gpt-4o-mini", input="hello there", instructions="be brief", store=False
    )
    assert answer.object == "response" and answer.status == "completed"
    assert answer.output_text == "echo: hello there"
    assert answer.usage is not None and answer.usage.total_tokens > 0
    assert answer.instructions == "be brief"
    assert upstream.requests_to("/v1/responses")[0].json["input"] == "hello there"


async def test_responses_tool_call_and_its_output(oai: AsyncOpenAI) -> None:
    called = await oai.responses.create(
        model="m", input='/tool get_weather {"city": "Oslo"}', tools=[RESPONSES_WEATHER_TOOL]
    )
    call = called.output[0]
    assert isinstance(call, ResponseFunctionToolCall)
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Oslo"})
    answered = await oai.responses.create(
        model="m",
        input=[
            {"role": "user", "content": '/tool get_weather {"city": "Oslo"}'},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
        tools=[RESPONSES_WEATHER_TOOL],
    )
    assert answered.output_text == "tool returned: sunny"


async def test_responses_stream_events_in_order(oai: AsyncOpenAI) -> None:
    kinds: list[str] = []
    sequence: list[int] = []
    async with oai.responses.stream(
        model="m", input='/tool get_weather {"city": "Oslo"}', tools=[RESPONSES_WEATHER_TOOL]
    ) as stream:
        async for event in stream:
            kinds.append(event.type)
            sequence.append(event.sequence_number)
        final = await stream.get_final_response()
    assert sequence == list(range(len(kinds)))
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    call = final.output[0]
    assert isinstance(call, ResponseFunctionToolCall) and json.loads(call.arguments) == {
        "city": "Oslo"
    }
    async with oai.responses.stream(model="m", input="one two three") as text_stream:
        async for _ in text_stream:
            pass
        assert (await text_stream.get_final_response()).output_text == "echo: one two three"


async def test_responses_error_event_and_unknown_previous_response(
    oai: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/responses", ChatReply("one two three four", error_event_after_chunks=4))
    kinds = []
    stream = await oai.responses.create(model="m", input="hi", stream=True)
    async for event in stream:
        kinds.append(event.type)
    assert kinds[-1] == "error" and "response.completed" not in kinds
    with pytest.raises(openai.BadRequestError) as info:
        await oai.responses.create(model="m", input="hi", previous_response_id="resp_gone")
    assert info.value.param == "previous_response_id"


# --- rate-limit headers ----------------------------------------------------------------------


async def test_openai_sdk_reads_the_rate_limit_headers(
    oai: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    raw = await oai.chat.completions.with_raw_response.create(model="m", messages=USER_HELLO)
    assert "x-ratelimit-remaining-requests" not in raw.headers  # none until a test asks
    upstream.set_rate_limits(
        requests_remaining=41, tokens_remaining=9000, requests_reset_s=0.02, tokens_reset_s=90.5
    )
    raw = await oai.chat.completions.with_raw_response.create(model="m", messages=USER_HELLO)
    assert raw.parse().choices[0].message.content
    assert {k: v for k, v in raw.headers.items() if k.startswith("x-ratelimit-")} == {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-remaining-requests": "41",
        "x-ratelimit-remaining-tokens": "9000",
        "x-ratelimit-reset-requests": "20ms",
        "x-ratelimit-reset-tokens": "1m30.5s",
    }
    streamed = await oai.chat.completions.with_raw_response.create(
        model="m", messages=USER_HELLO, stream=True
    )
    assert streamed.headers["x-ratelimit-remaining-requests"] == "41"
    async for _ in streamed.parse():
        pass
    embedded = await oai.embeddings.with_raw_response.create(model="e", input="x")
    assert embedded.headers["x-ratelimit-reset-tokens"] == "1m30.5s"


async def test_openai_sdk_meets_an_enforced_limit(oai: AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.set_rate_limits(RateLimits(requests_remaining=1, requests_reset_s=6.5, enforce=True))
    raw = await oai.chat.completions.with_raw_response.create(model="m", messages=USER_HELLO)
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as info:
        await oai.chat.completions.create(model="m", messages=USER_HELLO)
    headers = info.value.response.headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "6.5s"
    assert headers["retry-after"] == "7"
    assert info.value.code == "rate_limit_exceeded"


async def test_anthropic_sdk_reads_the_rate_limit_headers(
    claude: AsyncAnthropic, upstream: FakeUpstream
) -> None:
    upstream.set_rate_limits(
        requests_remaining=1,
        requests_reset_s=30,
        output_tokens_remaining=77,
        enforce=True,
        clock=lambda: 1_755_780_049.0,  # 2025-08-21T12:40:49Z
    )
    raw = await claude.messages.with_raw_response.create(
        model="claude-x", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    assert (await raw.parse()).content
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert raw.headers["anthropic-ratelimit-requests-reset"] == "2025-08-21T12:41:19Z"
    assert raw.headers["anthropic-ratelimit-output-tokens-remaining"] == "77"
    assert raw.headers["anthropic-ratelimit-tokens-remaining"] == "199000"
    with pytest.raises(anthropic.RateLimitError) as info:
        await claude.messages.create(
            model="claude-x", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert info.value.response.headers["retry-after"] == "30"
