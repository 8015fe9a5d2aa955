"""Providers tell their limits listener what each upstream answer's rate-limit headers say:
whole answers, streams (from the response headers, before the first delta) and 429s alike,
with the upstream's name of the model, against the fake upstream over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp
import pytest

from palyra.config import ModelConfig, ModelProviderConfig, ProviderConfig
from palyra.credentials import EnvCredentials
from palyra.errors import ProviderError
from palyra.models.anthropic import AnthropicProvider
from palyra.models.http import HttpProvider
from palyra.models.kinds import spec_for
from palyra.models.openai import OpenAIProvider
from palyra.ratelimits import UpstreamLimits, from_anthropic_headers, from_openai_headers
from palyra.types import ChatRequest, EmbeddingsRequest, ModelProviderKind, TranscriptionRequest
from tests.conftest import UPSTREAM_KEY
from tests.fakes.upstream import ErrorReply, FakeUpstream, Reply

GPT = ModelConfig(model_id="alias", provider_id="oai", upstream_model="gpt-4o-mini")
EMBEDDER = ModelConfig(
    model_id="vectors", provider_id="oai", upstream_model="text-embedding-3-small"
)
WHISPER = ModelConfig(model_id="ears", provider_id="oai", upstream_model="whisper-1")
CLAUDE = ModelConfig(
    model_id="claude", provider_id="ant", upstream_model="claude-sonnet-4-5-20250929"
)

Seen = list[tuple[str, UpstreamLimits]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def listening(provider: HttpProvider) -> Seen:
    seen: Seen = []
    provider.limits_listener = lambda model, limits: seen.append((model, limits))
    return seen


def openai_provider(upstream: FakeUpstream, session: aiohttp.ClientSession) -> OpenAIProvider:
    config = ProviderConfig(
        provider_id="oai",
        kind="openai_compatible",
        base_url=upstream.openai_base_url,
        allow_private_base_url=True,
        api_key_env="KEY",
    )
    return OpenAIProvider(
        config,
        session=session,
        settings=ModelProviderConfig().settings_for(config),
        credentials=EnvCredentials({"KEY": UPSTREAM_KEY}),
    )


def anthropic_provider(upstream: FakeUpstream, session: aiohttp.ClientSession) -> AnthropicProvider:
    config = ProviderConfig(
        provider_id="ant",
        kind="anthropic",
        base_url=upstream.anthropic_base_url,
        allow_private_base_url=True,
        api_key_env="KEY",
    )
    return AnthropicProvider(
        config,
        session=session,
        settings=ModelProviderConfig().settings_for(config),
        credentials=EnvCredentials({"KEY": UPSTREAM_KEY}),
    )


def chat(text: str = "hello", **extra: object) -> ChatRequest:
    return ChatRequest.model_validate({"messages": [{"role": "user", "content": text}], **extra})


def speech(*, stream: bool = False) -> TranscriptionRequest:
    return TranscriptionRequest(
        model="ears", file=b"RIFFdata", filename="a.wav", content_type="audio/wav", stream=stream
    )


def test_each_kind_reads_its_own_headers_through_the_registry() -> None:
    assert spec_for(ModelProviderKind.OPENAI_COMPATIBLE).rate_limits is from_openai_headers
    assert spec_for(ModelProviderKind.ANTHROPIC).rate_limits is from_anthropic_headers
    assert spec_for(ModelProviderKind.DETERMINISTIC).rate_limits is None


# --- OpenAI-compatible -----------------------------------------------------------------------


async def test_openai_whole_answer(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    provider = openai_provider(upstream, session)
    seen = listening(provider)
    upstream.set_rate_limits(
        requests_remaining=7, tokens_remaining=1234, requests_reset_s=0.02, tokens_reset_s=90.5
    )
    await provider.chat(chat(), GPT)
    assert seen == [("gpt-4o-mini", UpstreamLimits(7, 1234, pytest.approx(0.02), 90.5))]


async def test_openai_stream_is_reported_before_its_first_delta(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    provider = openai_provider(upstream, session)
    seen = listening(provider)
    upstream.set_rate_limits(requests_remaining=0, requests_reset_s=360.0)
    stream = provider.stream_chat(chat(), GPT)
    await anext(stream)
    assert seen == [("gpt-4o-mini", UpstreamLimits(0, 199_000, 360.0, 6.0))]
    async for _ in stream:
        pass
    assert len(seen) == 1
    assert seen[0][1].exhausted_for_s() == 360.0


async def test_openai_429_is_reported_and_still_raised(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    provider = openai_provider(upstream, session)
    seen = listening(provider)
    upstream.set_rate_limits(requests_remaining=0, requests_reset_s=20.0)
    upstream.script("/v1/chat/completions", ErrorReply(429, retry_after="20"))
    with pytest.raises(ProviderError) as caught:
        await provider.chat(chat(), GPT)
    assert caught.value.upstream_status == 429
    assert seen == [("gpt-4o-mini", UpstreamLimits(0, 199_000, 20.0, 6.0))]
    # A stream refused before it began is reported the same.
    upstream.script("/v1/chat/completions", ErrorReply(429))
    with pytest.raises(ProviderError):
        await anext(provider.stream_chat(chat(), GPT))
    assert len(seen) == 2


async def test_openai_counting_down_to_a_refusal(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    provider = openai_provider(upstream, session)
    seen = listening(provider)
    upstream.set_rate_limits(requests_remaining=2, requests_reset_s=1.5, enforce=True)
    await provider.chat(chat(), GPT)
    await provider.chat(chat(), GPT)
    with pytest.raises(ProviderError) as caught:
        await provider.chat(chat(), GPT)
    assert caught.value.upstream_status == 429
    assert [limits.remaining_requests for _, limits in seen] == [1, 0, 0]
    assert [limits.exhausted_for_s() for _, limits in seen] == [None, 1.5, 1.5]


async def test_openai_embeddings_transcriptions_and_responses_name_their_models(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    provider = openai_provider(upstream, session)
    seen = listening(provider)
    upstream.set_rate_limits(requests_remaining=40)
    await provider.embed(EmbeddingsRequest(model="vectors", input=["a"]), EMBEDDER)
    await provider.transcribe(speech(), WHISPER)
    async for _ in provider.stream_transcribe(speech(stream=True), WHISPER):
        pass
    await provider.send_responses({"model": "alias", "input": "hi"}, GPT)
    async for _ in provider.stream_responses({"model": "alias", "input": "hi"}, GPT):
        pass
    assert [model for model, _ in seen] == [
        "text-embedding-3-small",
        "whisper-1",
        "whisper-1",
        "gpt-4o-mini",
        "gpt-4o-mini",
    ]
    assert {limits.remaining_requests for _, limits in seen} == {40}


async def test_no_headers_no_report(upstream: FakeUpstream, session: aiohttp.ClientSession) -> None:
    provider = openai_provider(upstream, session)
    seen = listening(provider)
    await provider.chat(chat(), GPT)
    await provider.list_models()
    assert seen == []


async def test_without_a_listener_nothing_is_parsed(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    provider = openai_provider(upstream, session)
    parsed: list[Mapping[str, str]] = []

    def parse(headers: Mapping[str, str]) -> UpstreamLimits | None:
        parsed.append(headers)
        return from_openai_headers(headers)

    provider._rate_limits = parse
    upstream.set_rate_limits()
    await provider.chat(chat(), GPT)
    assert parsed == []
    seen = listening(provider)
    await provider.chat(chat(), GPT)
    assert len(parsed) == 1
    assert len(seen) == 1


# --- Anthropic -------------------------------------------------------------------------------


async def test_anthropic_whole_and_streamed(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    provider = anthropic_provider(upstream, session)
    seen = listening(provider)
    upstream.set_rate_limits(
        requests_remaining=12,
        requests_reset_s=30.0,
        tokens_remaining=5000,
        output_tokens_remaining=300,
        output_tokens_reset_s=8.0,
    )
    await provider.chat(chat(), CLAUDE)
    stream = provider.stream_chat(chat(), CLAUDE)
    await anext(stream)
    assert len(seen) == 2
    async for _ in stream:
        pass
    for model, limits in seen:
        assert model == "claude-sonnet-4-5-20250929"
        assert (limits.remaining_requests, limits.remaining_tokens) == (12, 300)
        # RFC 3339 whole seconds, rounded up by the fake: within a second and a bit.
        assert limits.requests_reset_s == pytest.approx(30.0, abs=1.5)
        assert limits.tokens_reset_s == pytest.approx(8.0, abs=1.5)
    assert len(seen) == 2


async def test_anthropic_429_is_reported(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    provider = anthropic_provider(upstream, session)
    seen = listening(provider)
    upstream.set_rate_limits(tokens_remaining=0, tokens_reset_s=45.0)
    upstream.script("/v1/messages", ErrorReply(429, retry_after="45"))
    with pytest.raises(ProviderError) as caught:
        await provider.chat(chat(), CLAUDE)
    assert caught.value.upstream_status == 429
    [(model, limits)] = seen
    assert model == "claude-sonnet-4-5-20250929"
    assert limits.remaining_tokens == 0
    assert limits.exhausted_for_s() == pytest.approx(45.0, abs=1.5)


async def test_anthropic_native_calls_and_token_counting(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    provider = anthropic_provider(upstream, session)
    seen = listening(provider)
    upstream.set_rate_limits(requests_remaining=3)
    body = {"model": "claude", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    await provider.send_native(body, CLAUDE)
    async for _ in provider.stream_native(body, CLAUDE):
        pass
    assert [model for model, _ in seen] == ["claude-sonnet-4-5-20250929"] * 2
    # Anthropic limits token counting apart from messages: its headers (here saying none
    # left) are not the model's.
    upstream.script(
        "/v1/messages/count_tokens",
        Reply(
            json={"input_tokens": 9},
            headers={
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": "2099-01-01T00:00:00Z",
            },
        ),
    )
    assert await provider.count_tokens_native(body, CLAUDE) == {"input_tokens": 9}
    assert len(seen) == 2
