"""The OpenAI-compatible provider against the fake upstream over loopback."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from palyra.config import ModelConfig, ModelProviderConfig, ProviderConfig
from palyra.credentials import EnvCredentials
from palyra.errors import (
    ErrorClass,
    ProviderError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from palyra.models.http import parse_retry_after
from palyra.models.openai import OpenAIProvider, _array_texts
from palyra.types import (
    ChatDelta,
    ChatRequest,
    EmbeddingsRequest,
    EmbeddingsResult,
    TranscriptionRequest,
)
from tests.conftest import ADMIN_TOKEN, UPSTREAM_KEY
from tests.fakes.upstream import ChatReply, DropConnection, ErrorReply, FakeUpstream, Reply

MODEL = ModelConfig(model_id="alias", provider_id="oai", upstream_model="gpt-4o-mini")


@pytest.fixture
async def provider(upstream: FakeUpstream) -> AsyncIterator[OpenAIProvider]:
    config = ProviderConfig(
        provider_id="oai",
        kind="openai_compatible",
        base_url=upstream.openai_base_url,
        allow_private_base_url=True,
        api_key_env="KEY",
        request_timeout_ms=1500,
    )
    async with aiohttp.ClientSession() as session:
        yield OpenAIProvider(
            config,
            session=session,
            settings=ModelProviderConfig().settings_for(config),
            credentials=EnvCredentials({"KEY": UPSTREAM_KEY}),
        )


def env_keyed(
    upstream: FakeUpstream, session: aiohttp.ClientSession, variable: str, env: dict[str, str]
) -> OpenAIProvider:
    """A provider on the fake whose key is the environment variable `variable` of `env`."""
    config = ProviderConfig(
        provider_id="oai",
        kind="openai_compatible",
        base_url=upstream.openai_base_url,
        allow_private_base_url=True,
        api_key_env=variable,
    )
    return OpenAIProvider(
        config,
        session=session,
        settings=ModelProviderConfig().settings_for(config),
        credentials=EnvCredentials(env),
    )


def chat(text: str = "hello", **extra: object) -> ChatRequest:
    return ChatRequest.model_validate({"messages": [{"role": "user", "content": text}], **extra})


async def collect(stream: AsyncIterator[ChatDelta]) -> list[ChatDelta]:
    return [delta async for delta in stream]


async def test_chat_passes_unknown_parameters_and_renames_model(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    result = await provider.chat(chat("hi", seed=7, logprobs=True, top_logprobs=2), MODEL)
    assert result.content == "echo: hi"
    sent = upstream.requests_to("/v1/chat/completions")[0]
    assert sent.json["model"] == "gpt-4o-mini"
    assert (sent.json["seed"], sent.json["logprobs"], sent.json["top_logprobs"]) == (7, True, 2)
    assert "stream" not in sent.json
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


async def test_stream_asks_for_usage_and_assembles_tool_calls(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/chat/completions",
        ChatReply(
            content=None,
            tool_calls=[
                {"id": "c1", "name": "a", "arguments": '{"x": 1}'},
                {"id": "c2", "name": "b", "arguments": '{"y": 2}'},
            ],
            usage=(11, 5),
        ),
    )
    deltas = await collect(provider.stream_chat(chat("x"), MODEL))
    assert upstream.requests_to("/v1/chat/completions")[0].json["stream_options"] == {
        "include_usage": True
    }
    calls: dict[int, list[str]] = {}
    for delta in deltas:
        for call in delta.tool_calls or ():
            entry = calls.setdefault(call.index, ["", "", ""])
            entry[0] += call.id or ""
            entry[1] += call.name or ""
            entry[2] += call.arguments
    assert calls == {0: ["c1", "a", '{"x": 1}'], 1: ["c2", "b", '{"y": 2}']}
    assert deltas[-1].usage is not None and deltas[-1].usage.prompt_tokens == 11
    assert any(d.finish_reason == "tool_calls" for d in deltas)


async def test_rate_limit_carries_retry_after(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/chat/completions", ErrorReply(429, retry_after="3"))
    with pytest.raises(ProviderError) as caught:
        await provider.chat(chat(), MODEL)
    assert caught.value.error_class is ErrorClass.RETRYABLE
    assert caught.value.status == 429 and caught.value.retry_after_s == 3
    assert caught.value.headers["Retry-After"] == "3"


@pytest.mark.parametrize(
    ("status", "error_class", "client_status"),
    [
        (500, ErrorClass.RETRYABLE, 502),
        (503, ErrorClass.RETRYABLE, 503),
        (504, ErrorClass.RETRYABLE, 504),
        (401, ErrorClass.CREDENTIAL, 502),
        (403, ErrorClass.CREDENTIAL, 502),
        (404, ErrorClass.CLIENT, 404),
    ],
)
async def test_status_classes(
    provider: OpenAIProvider,
    upstream: FakeUpstream,
    status: int,
    error_class: ErrorClass,
    client_status: int,
) -> None:
    upstream.script("/v1/chat/completions", ErrorReply(status))
    with pytest.raises(ProviderError) as caught:
        await provider.chat(chat(), MODEL)
    assert (caught.value.error_class, caught.value.status) == (error_class, client_status)


async def test_context_length_error_is_its_own_class(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/chat/completions",
        ErrorReply(
            400,
            "This model's maximum context length is 128000 tokens.",
            code="context_length_exceeded",
        ),
    )
    with pytest.raises(ProviderError) as caught:
        await provider.chat(chat(), MODEL)
    assert caught.value.error_class is ErrorClass.CONTEXT
    assert caught.value.code == "context_length_exceeded"


async def test_timeout_unreachable_and_garbage(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/chat/completions", ChatReply(content="late", delay_s=3))
    with pytest.raises(UpstreamTimeout):
        await provider.chat(chat(), MODEL)
    upstream.script("/v1/chat/completions", DropConnection())
    with pytest.raises(UpstreamUnreachable):
        await provider.chat(chat(), MODEL)
    upstream.script("/v1/chat/completions", Reply(body=b"<html>proxy error</html>"))
    with pytest.raises(UpstreamProtocolError):
        await provider.chat(chat(), MODEL)
    upstream.script("/v1/chat/completions", Reply(json={"choices": []}))
    with pytest.raises(UpstreamProtocolError):
        await provider.chat(chat(), MODEL)


async def test_stream_without_finish_is_a_protocol_error(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/chat/completions", ChatReply(content="a b c d", break_after_chunks=2))
    with pytest.raises(ProviderError):
        await collect(provider.stream_chat(chat(), MODEL))


async def test_missing_credential_sends_nothing(upstream: FakeUpstream) -> None:
    async with aiohttp.ClientSession() as session:
        provider = env_keyed(upstream, session, "NOT_SET", {})
        with pytest.raises(ProviderError) as caught:
            await provider.chat(chat(), MODEL)
    assert caught.value.error_class is ErrorClass.CREDENTIAL
    assert "NOT_SET" in caught.value.message
    assert upstream.requests == []


@pytest.mark.parametrize("key", ["sk-abc\r\nX-Injected: 1", "sk-abc\n", "sk-\x00abc"])
async def test_a_key_a_header_cannot_carry_is_a_credential_error(
    upstream: FakeUpstream, key: str
) -> None:
    # A key pasted with its line break into an environment variable: aiohttp refuses the
    # header as an injection with a ValueError, which was a 500 naming nothing.
    async with aiohttp.ClientSession() as session:
        provider = env_keyed(upstream, session, "KEY", {"KEY": key})
        with pytest.raises(ProviderError) as caught:
            await provider.chat(chat(), MODEL)
    assert caught.value.error_class is ErrorClass.CREDENTIAL
    assert caught.value.code == "invalid_credential"
    assert "sk-abc" not in str(caught.value)
    assert upstream.requests == []


async def test_embeddings_transcription_and_models(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    embed_model = ModelConfig(model_id="e", provider_id="oai", role="embeddings")
    result = await provider.embed(
        EmbeddingsRequest(input=["a", "b", "c"], dimensions=5), embed_model
    )
    assert [len(v) for v in result.vectors] == [5, 5, 5]
    assert upstream.requests_to("/v1/embeddings")[0].json["encoding_format"] == "float"

    audio_model = ModelConfig(
        model_id="w", provider_id="oai", role="audio_transcription", upstream_model="whisper-1"
    )
    transcript = await provider.transcribe(
        TranscriptionRequest(
            model="w",
            file=b"RIFFdata",
            filename="a.wav",
            content_type="audio/wav",
            response_format="verbose_json",
            language="en",
        ),
        audio_model,
    )
    assert transcript.text == "transcript of 8 bytes"
    form = upstream.requests_to("/v1/audio/transcriptions")[0].form
    assert form is not None
    assert (form["model"], form["response_format"], form["language"]) == (
        "whisper-1",
        "verbose_json",
        "en",
    )
    assert "gpt-4o-mini" in await provider.list_models()


async def test_embeddings_base64_is_asked_for_and_relayed_as_it_came(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    embed_model = ModelConfig(model_id="e", provider_id="oai", role="embeddings")
    request = EmbeddingsRequest(input=["a", "b"], dimensions=6, encoding_format="base64")
    packed = await provider.embed(request, embed_model)
    assert upstream.requests_to("/v1/embeddings")[-1].json["encoding_format"] == "base64"
    assert all(isinstance(v, str) and len(base64.b64decode(v)) == 24 for v in packed.vectors)
    floats = await provider.embed(EmbeddingsRequest(input=["a", "b"], dimensions=6), embed_model)
    # The fake's vectors are float32 values, so both encodings carry the same numbers.
    assert [
        list(struct.unpack("<6f", base64.b64decode(v)))  # type: ignore[arg-type]
        for v in packed.vectors
    ] == floats.vectors


async def embed_answered_with(
    provider: OpenAIProvider, upstream: FakeUpstream, embedding: object, encoding: str
) -> EmbeddingsResult:
    """Embeddings of "a", asked for in `encoding`, with the upstream answering `embedding`."""
    upstream.script(
        "/v1/embeddings",
        Reply(json={"data": [{"index": 0, "embedding": embedding}], "model": "m", "usage": {}}),
    )
    embed_model = ModelConfig(model_id="e", provider_id="oai", role="embeddings")
    request = EmbeddingsRequest(input="a", encoding_format=encoding)  # type: ignore[arg-type]
    return await provider.embed(request, embed_model)


@pytest.mark.parametrize(
    ("embedding", "expected"),
    [
        # An upstream that ignores encoding_format=base64: packed here, as asked.
        ([1, 0.5, -2], base64.b64encode(struct.pack("<3f", 1, 0.5, -2)).decode()),
        (base64.b64encode(struct.pack("<2f", 0.25, -1.0)).decode(),) * 2,  # relayed as it came
    ],
)
async def test_embeddings_accept_either_encoding_whatever_was_asked(
    provider: OpenAIProvider, upstream: FakeUpstream, embedding: object, expected: object
) -> None:
    result = await embed_answered_with(provider, upstream, embedding, "base64")
    assert result.vectors == [expected]


@pytest.mark.parametrize(
    ("embedding", "encoding"),
    [
        ([0.1, "0.2"], "float"),
        ([0.1, None], "float"),
        ([[0.1]], "float"),
        ([True, False], "float"),
        ([0.5, True], "float"),  # (found in the array's text, not only in the body's)
        ({"x": 1}, "float"),
        ("not base64!", "float"),
        ("AAAAAAA=", "float"),  # five bytes: not whole float32s
        ("AAAA\nAAAA", "base64"),
        ("AA==AAAA", "base64"),
        ("AAA", "base64"),
        ([1e300], "base64"),  # no float32 holds it
    ],
)
async def test_embeddings_that_are_not_vectors_are_protocol_errors(
    provider: OpenAIProvider, upstream: FakeUpstream, embedding: object, encoding: str
) -> None:
    with pytest.raises(UpstreamProtocolError) as caught:
        await embed_answered_with(provider, upstream, embedding, encoding)
    assert "data[].embedding" in caught.value.message


@pytest.mark.parametrize(
    ("body", "rows", "texts"),
    [
        # Values spelt "embedding" are no keys; each key's array, in the body's order.
        (
            b'{"data":[{"object":"embedding","embedding":[1,2]},{"embedding" :\n[3]}]}',
            2,
            [b"[1,2]", b"[3]"],
        ),
        (b'{"data":[{"embedding":[]}]}', 1, [b"[]"]),
        # Not one array a row: the floats are printed again.
        (b'{"data":[{"embedding":[1]}],"usage":{"embedding":[2]}}', 1, None),
        (b'{"data":[{"embedding":[1]},{"embedding":"AAAAAA=="}]}', 2, None),
        (b'{"data":[{"embedding":[1]}]}', 2, None),
        # A key whose name ends in an escaped quote is not the key "embedding".
        (b'{"data":[{"a\\"embedding":[9],"embedding":[1]}]}', 1, None),
    ],
)
def test_embedding_array_texts(body: bytes, rows: int, texts: list[bytes] | None) -> None:
    json.loads(body)  # each is JSON
    assert _array_texts(body, rows) == texts


async def test_an_upstream_that_refuses_base64_is_asked_for_floats_from_then_on(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/embeddings", ErrorReply(400, "base64 encoding is not currently supported"))
    embed_model = ModelConfig(model_id="e", provider_id="oai", role="embeddings")
    request = EmbeddingsRequest(input="a", dimensions=4, encoding_format="base64")
    first = await provider.embed(request, embed_model)
    second = await provider.embed(request, embed_model)
    asked = [r.json["encoding_format"] for r in upstream.requests_to("/v1/embeddings")]
    assert asked == ["base64", "float", "float"]  # refused once, then floats only
    # The client still gets base64, packed here, the same numbers as the upstream's floats.
    assert first.vectors == second.vectors
    assert isinstance(first.vectors[0], str) and len(base64.b64decode(first.vectors[0])) == 16
    # Another 400 (the request's own fault) is the client's error, asked once.
    upstream.script("/v1/embeddings", ErrorReply(400, "input is too long"))
    with pytest.raises(ProviderError) as caught:
        await provider.embed(EmbeddingsRequest(input="a"), embed_model)
    assert caught.value.upstream_status == 400
    assert len(upstream.requests_to("/v1/embeddings")) == 4


class RefreshingCredentials:
    """A stale key first; once it is rejected, the refreshed one (as an OAuth profile does)."""

    def __init__(self) -> None:
        self.key = "stale-token"
        self.rejections = 0

    async def api_key(self, provider: ProviderConfig) -> str | None:
        return self.key

    async def credential_rejected(self, provider: ProviderConfig, api_key: str | None) -> bool:
        self.rejections += 1
        self.key = UPSTREAM_KEY
        return True


async def test_a_rejected_key_is_refreshed_and_retried_once_multipart_included(
    upstream: FakeUpstream,
) -> None:
    config = ProviderConfig(
        provider_id="oai",
        kind="openai_compatible",
        base_url=upstream.openai_base_url,
        allow_private_base_url=True,
    )
    credentials = RefreshingCredentials()
    async with aiohttp.ClientSession() as session:
        provider = OpenAIProvider(
            config,
            session=session,
            settings=ModelProviderConfig().settings_for(config),
            credentials=credentials,
        )
        audio_model = ModelConfig(
            model_id="w", provider_id="oai", role="audio_transcription", upstream_model="whisper-1"
        )
        transcript = await provider.transcribe(
            TranscriptionRequest(
                model="w", file=b"RIFFdata", filename="a.wav", content_type="audio/wav"
            ),
            audio_model,
        )
    assert transcript.text == "transcript of 8 bytes"
    assert credentials.rejections == 1
    sent = upstream.requests_to("/v1/audio/transcriptions")
    assert len(sent) == 2  # the refused one, then the retry with the whole form again
    assert sent[1].form is not None and sent[1].form["file"] == b"RIFFdata"
    assert sent[1].form["model"] == "whisper-1"


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    when = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after({"retry-after": when}, now=1445412470.0) == pytest.approx(10)
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    # No finite number: as if there were no header (inf made the error's own header a 500).
    assert parse_retry_after({"retry-after": "1e999"}) is None
    assert parse_retry_after({"retry-after-ms": "nan", "retry-after": "inf"}) is None
    assert parse_retry_after({"retry-after-ms": "-inf", "retry-after": "2"}) == 2


# --- malformed upstream answers: each a 502 naming what was wrong ---------------------------

GOOD_CHOICE = {
    "index": 0,
    "message": {"role": "assistant", "content": "hi"},
    "finish_reason": "stop",
}


@pytest.mark.parametrize(
    ("reply", "named"),
    [
        (Reply(json={"choices": [GOOD_CHOICE], "usage": {"prompt_tokens": "abc"}}), "usage"),
        (Reply(json={"choices": [GOOD_CHOICE], "usage": {"completion_tokens": [1]}}), "usage"),
        (Reply(json={"choices": [GOOD_CHOICE], "usage": "lots"}), "usage"),
        # Past 64 bits (parsed as a float), and a float past what any count could be.
        (
            Reply(
                body=b'{"choices": [{"message": {"content": "x"}}], '
                b'"usage": {"prompt_tokens": 18446744073709551616}}'
            ),
            "usage.prompt_tokens",
        ),
        (Reply(json={"choices": [GOOD_CHOICE], "usage": {"prompt_tokens": -1}}), "usage"),
        (Reply(json={"choices": [GOOD_CHOICE], "usage": {"prompt_tokens": 2.5}}), "usage"),
        (Reply(json={"choices": "none"}), "choices"),
        (Reply(json=[GOOD_CHOICE]), "JSON object"),
        (Reply(json={"choices": [{"message": {"content": 5}}]}), "content"),
        (
            Reply(json={"choices": [{"message": {"content": "x"}, "finish_reason": ["stop"]}]}),
            "finish_reason",
        ),
        (Reply(json={"choices": [{"message": {"tool_calls": "call it"}}]}), "tool_calls"),
        (
            Reply(json={"choices": [{"message": {"tool_calls": [{"id": 7, "function": {}}]}}]}),
            "tool_calls[0]",
        ),
        (Reply(json={"choices": [{"message": {"tool_calls": [3]}}]}), "tool_calls[0]"),
        (Reply(body=b"not json at all"), "not JSON"),
        (Reply(body=b'{"choices": [{"message": {"con'), "not JSON"),
        (Reply(body=b"\xff\xfe\x00garbage\x80"), "not JSON"),
        (Reply(body=b""), "empty"),
        (
            Reply(
                body=b"<!DOCTYPE html><html>502 Bad Gateway</html>",
                headers={"Content-Type": "text/html"},
            ),
            "HTML",
        ),
    ],
)
async def test_malformed_chat_answers_are_protocol_errors_naming_the_fault(
    provider: OpenAIProvider, upstream: FakeUpstream, reply: Reply, named: str
) -> None:
    upstream.script("/v1/chat/completions", reply)
    with pytest.raises(UpstreamProtocolError) as caught:
        await provider.chat(chat(), MODEL)
    assert caught.value.status == 502
    assert caught.value.error_class is ErrorClass.RETRYABLE
    assert named in caught.value.message


def sse(*frames: bytes) -> Reply:
    return Reply(body=b"".join(frames), headers={"Content-Type": "text/event-stream"})


def chunk(delta: object = None, **fields: object) -> bytes:
    body: dict[str, object] = {"id": "c", "object": "chat.completion.chunk", **fields}
    if delta is not None:
        body["choices"] = [{"index": 0, "delta": delta, "finish_reason": None}]
    return b"data: " + json.dumps(body).encode() + b"\n\n"


@pytest.mark.parametrize(
    ("reply", "named"),
    [
        (sse(chunk({"content": "a"}), chunk(usage={"prompt_tokens": "abc"})), "usage"),
        (sse(chunk({"content": 5})), "content"),
        (sse(chunk({"content": "a"}), b"data: {not json\n\n"), "not JSON"),
        (sse(chunk({"content": "a"}), b'data: {"error": 5}\n\n'), "error"),
        (sse(chunk({"content": "a"}), b"data: \xff\xfe\x80garbage\n\n"), "not JSON"),
        (sse(b"data: [1, 2]\n\n"), "JSON object"),
        (sse(chunk({"content": "a"})), "ended"),
        (Reply(body=b"<html>Bad Gateway</html>", headers={"Content-Type": "text/html"}), "HTML"),
        (Reply(json={"choices": [GOOD_CHOICE]}), "JSON"),
        # Found by the fuzz suite: an index past 64 bits failed our own chunk's encoding.
        (sse(chunk({"tool_calls": [{"index": 2**64 + 1, "id": "c"}]})), "index"),
        (sse(chunk({"tool_calls": [{"index": 1e300, "id": "c"}]})), "index"),
        (sse(chunk({"tool_calls": [{"index": "first", "id": "c"}]})), "index"),
        (sse(chunk({"tool_calls": ["not a call"]})), "tool_calls[0]"),
    ],
)
async def test_malformed_streams_are_protocol_errors_naming_the_fault(
    provider: OpenAIProvider, upstream: FakeUpstream, reply: Reply, named: str
) -> None:
    upstream.script("/v1/chat/completions", reply)
    with pytest.raises(UpstreamProtocolError) as caught:
        await collect(provider.stream_chat(chat(), MODEL))
    assert caught.value.status == 502
    assert named in caught.value.message


async def test_an_error_answered_with_200_to_a_stream_is_the_upstream_error(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/chat/completions", Reply(json={"error": {"message": "the engine is overloaded"}})
    )
    with pytest.raises(ProviderError) as caught:
        await collect(provider.stream_chat(chat(), MODEL))
    assert caught.value.status == 502 and caught.value.error_class is ErrorClass.RETRYABLE
    assert "the engine is overloaded" in caught.value.message


@pytest.mark.parametrize(
    "body",
    [
        {"data": [{"index": 0, "embedding": [0.1]}], "usage": {"prompt_tokens": "abc"}},
        {"data": ["not a row"]},
        {"data": [{"index": "first", "embedding": [0.1]}]},
        [1, 2],
    ],
)
async def test_malformed_embeddings_are_protocol_errors(
    provider: OpenAIProvider, upstream: FakeUpstream, body: object
) -> None:
    upstream.script("/v1/embeddings", Reply(json=body))
    embed_model = ModelConfig(model_id="e", provider_id="oai", role="embeddings")
    with pytest.raises(UpstreamProtocolError):
        await provider.embed(EmbeddingsRequest(input="a"), embed_model)


@pytest.mark.parametrize(
    "body",
    [
        {"text": "hi", "segments": ["not a segment"]},
        {"text": "hi", "usage": "some"},
        ["hi"],
        {"text": "hi", "duration": "long"},
    ],
)
async def test_malformed_transcriptions_are_protocol_errors(
    provider: OpenAIProvider, upstream: FakeUpstream, body: object
) -> None:
    upstream.script("/v1/audio/transcriptions", Reply(json=body))
    audio_model = ModelConfig(model_id="w", provider_id="oai", role="audio_transcription")
    request = TranscriptionRequest(
        model="w", file=b"RIFF", filename="a.wav", content_type="audio/wav"
    )
    with pytest.raises(UpstreamProtocolError):
        await provider.transcribe(request, audio_model)


async def test_gateway_answers_502_for_a_malformed_upstream_body_whole_and_streamed(
    gateway: TestServer, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/chat/completions",
        Reply(json={"choices": [GOOD_CHOICE], "usage": {"prompt_tokens": "abc"}}),
    )
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            gateway.make_url("/v1/chat/completions"), json=body, headers=headers
        ) as response:
            assert response.status == 502
            error = (await response.json())["error"]
        assert error["code"] == "upstream_protocol_error"
        assert "usage.prompt_tokens" in error["message"]

        # Streamed, broken after the first token: the headers are gone, so an error event.
        upstream.script(
            "/v1/chat/completions",
            sse(chunk({"role": "assistant", "content": "first"}), b"data: \xff\x80{oops\n\n"),
        )
        async with http.post(
            gateway.make_url("/v1/chat/completions"), json={**body, "stream": True}, headers=headers
        ) as response:
            assert response.status == 200
            text = (await response.read()).decode()
    assert '"content":"first"' in text
    events = [line for line in text.split("\n\n") if line.startswith('data: {"error"')]
    assert len(events) == 1 and "upstream_protocol_error" in events[0]
    assert text.rstrip().endswith("}")  # the error is the last event, no [DONE] after it
