"""Redaction: key shapes, remembered credentials, and provider errors built clean."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from palyra.config import ModelConfig, ModelProviderConfig, ProviderConfig
from palyra.credentials import EnvCredentials
from palyra.errors import ProviderError
from palyra.models.anthropic import AnthropicProvider
from palyra.models.http import HttpProvider
from palyra.models.openai import OpenAIProvider
from palyra.redact import REDACTED, forget_secrets, redact_secrets, remember_secret
from palyra.types import ChatRequest
from tests.fakes.upstream import ErrorReply, FakeUpstream, Reply


@pytest.fixture(autouse=True)
def clean_slate() -> Iterator[None]:
    # What other tests' providers remembered would hide whether these remember anything.
    forget_secrets()
    yield
    forget_secrets()


def test_known_secret_of_any_shape_is_scrubbed() -> None:
    assert redact_secrets("key was plain-Secret-Value!", ["plain-Secret-Value"]) == (
        f"key was {REDACTED}!"
    )


def test_key_shapes_are_scrubbed_without_being_known() -> None:
    text = (
        "Incorrect API key provided: sk-proj-abcdefgh12345678. Authorization: Bearer abc.def.ghi123"
    )
    scrubbed = redact_secrets(text)
    assert "sk-proj" not in scrubbed and "abc.def.ghi123" not in scrubbed
    assert scrubbed.count(REDACTED) == 2


@pytest.mark.parametrize(
    "secret",
    [
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXBhcnQ",  # an OAuth JWT
        "AIzaSyA1234567890abcdefghijklmnopqrstu",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "AKIAIOSFODNN7EXAMPLE",
    ],
)
def test_more_token_shapes_are_scrubbed(secret: str) -> None:
    assert secret not in redact_secrets(f"upstream saw {secret} and refused it")


@pytest.mark.parametrize(
    "text",
    [
        'x-api-key: "abcdefgh12345678" was refused',
        "access_token=abcdefgh12345678&scope=all",
        '{"refresh_token": "abcdefgh12345678"}',
        "client_secret: abcdefgh12345678",
    ],
)
def test_named_secrets_are_scrubbed(text: str) -> None:
    assert "abcdefgh12345678" not in redact_secrets(text)


def test_ordinary_text_is_left_alone() -> None:
    text = "model gpt-4o-mini does not exist; task-force is not a key; secret_ref: global/x"
    assert redact_secrets(text) == text


def test_provider_errors_never_carry_a_key() -> None:
    error = ProviderError("Incorrect API key sk-ant-api03-secretsecret", provider_id="claude")
    assert "secretsecret" not in error.message
    assert "secretsecret" not in str(error.body())


def test_remembered_secrets_are_scrubbed_longest_first_and_short_ones_are_not_kept() -> None:
    remember_secret("plain-value-0001")
    remember_secret("plain-value-0001-and-more")
    remember_secret("short")  # would scrub ordinary words
    text = redact_secrets("a plain-value-0001-and-more b plain-value-0001 c short")
    assert text == f"a {REDACTED} b {REDACTED} c short"


def test_a_remembered_secret_is_scrubbed_from_every_part_of_a_provider_error() -> None:
    remember_secret("plain-secret-in-the-param")
    error = ProviderError(
        "bad", provider_id="p", param="plain-secret-in-the-param", code="plain-secret-in-the-param"
    )
    assert "plain-secret" not in repr(error.body())


# --- through a provider, against the fake upstream ----------------------------------------

MODEL = ModelConfig(model_id="m", provider_id="p", upstream_model="gpt-4o-mini")
ANTHROPIC_MODEL = ModelConfig(model_id="c", provider_id="a", upstream_model="claude-sonnet-4-5")


def chat() -> ChatRequest:
    return ChatRequest.model_validate({"messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(api_key=None) as fake:  # takes any key: what it echoes is scripted
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def openai_provider(
    upstream: FakeUpstream, session: aiohttp.ClientSession, env: dict[str, str]
) -> OpenAIProvider:
    config = ProviderConfig(
        provider_id="p",
        kind="openai_compatible",
        base_url=upstream.openai_base_url,
        allow_private_base_url=True,
        api_key_env="KEY",
    )
    settings = ModelProviderConfig().settings_for(config)
    return OpenAIProvider(
        config, session=session, settings=settings, credentials=EnvCredentials(env)
    )


def leaks(error: ProviderError, *secrets: str) -> list[str]:
    """Where any of `secrets` still shows in the error, as anything could print it."""
    views = {
        "str": str(error),
        "repr": repr(error),
        "args": repr(error.args),
        "message": error.message,
        "body": repr(error.body()),
    }
    return [name for name, text in views.items() for secret in secrets if secret in text]


@pytest.mark.parametrize("key", ["plain-secret-value-42", "abc123"])
async def test_the_key_sent_is_not_in_str_repr_args_or_message(
    upstream: FakeUpstream, session: aiohttp.ClientSession, key: str
) -> None:
    provider = openai_provider(upstream, session, {"KEY": key})
    upstream.script("/v1/chat/completions", ErrorReply(400, f"The key {key} is not valid here"))
    with pytest.raises(ProviderError) as caught:
        await provider.chat(chat(), MODEL)
    assert leaks(caught.value, key) == []
    assert REDACTED in str(caught.value)


async def test_an_older_key_echoed_later_is_scrubbed(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    env = {"KEY": "first-plain-key-0001"}
    provider = openai_provider(upstream, session, env)
    await provider.chat(chat(), MODEL)
    env["KEY"] = "second-plain-key-0002"  # rotated
    upstream.script(
        "/v1/chat/completions",
        ErrorReply(400, "key first-plain-key-0001 was revoked; second-plain-key-0002 is new"),
    )
    with pytest.raises(ProviderError) as caught:
        await provider.chat(chat(), MODEL)
    assert leaks(caught.value, "first-plain-key-0001", "second-plain-key-0002") == []


async def test_another_providers_key_echoed_is_scrubbed_whole_and_in_a_stream(
    upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    config = ProviderConfig(
        provider_id="a",
        kind="anthropic",
        base_url=upstream.anthropic_base_url,
        allow_private_base_url=True,
        api_key_env="OTHER",
    )
    other: HttpProvider = AnthropicProvider(
        config,
        session=session,
        settings=ModelProviderConfig().settings_for(config),
        credentials=EnvCredentials({"OTHER": "anthropic-plain-key-0003"}),
    )
    await other.chat(chat(), ANTHROPIC_MODEL)
    provider = openai_provider(upstream, session, {"KEY": "openai-plain-key-0004"})
    upstream.script(
        "/v1/chat/completions", ErrorReply(500, "saw anthropic-plain-key-0003 in a header")
    )
    with pytest.raises(ProviderError) as caught:
        await provider.chat(chat(), MODEL)
    assert leaks(caught.value, "anthropic-plain-key-0003") == []
    # The same inside a stream, where the error arrives as an event after a 200.
    echo = b'data: {"error": {"message": "saw anthropic-plain-key-0003, openai-plain-key-0004"}}'
    upstream.script(
        "/v1/chat/completions",
        Reply(body=echo + b"\n\n", headers={"Content-Type": "text/event-stream"}),
    )
    with pytest.raises(ProviderError) as streamed:
        async for _ in provider.stream_chat(chat(), MODEL):
            pass
    assert leaks(streamed.value, "anthropic-plain-key-0003", "openai-plain-key-0004") == []
