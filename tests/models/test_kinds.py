"""Provider kinds: one spec per kind in one registry, and no silent fallback for the others."""

from __future__ import annotations

import dataclasses

import aiohttp
import pytest

from palyra import tokens
from palyra.auth.api_key import check_provider_credential, credential_check
from palyra.config import ModelProviderConfig, ProviderConfig, validate_config
from palyra.credentials import EnvCredentials
from palyra.discovery import discovered_model
from palyra.errors import InvalidRequest
from palyra.models import build_provider, kinds
from palyra.models.anthropic import AnthropicProvider
from palyra.models.deterministic import DeterministicProvider
from palyra.models.kinds import (
    DEFAULT_BASE_URLS,
    KINDS,
    ProviderKinds,
    UnknownProviderKind,
    spec_for,
)
from palyra.models.openai import OpenAIProvider
from palyra.types import ChatRequest, ModelProviderKind
from tests.fakes.upstream import FakeUpstream

OPENAI = ModelProviderKind.OPENAI_COMPATIBLE
ANTHROPIC = ModelProviderKind.ANTHROPIC
DETERMINISTIC = ModelProviderKind.DETERMINISTIC


def test_every_kind_has_one_spec_naming_its_own_provider_class() -> None:
    assert {spec.kind for spec in KINDS} == set(ModelProviderKind)
    classes = {kind: spec_for(kind).provider() for kind in ModelProviderKind}
    assert classes == {
        OPENAI: OpenAIProvider,
        ANTHROPIC: AnthropicProvider,
        DETERMINISTIC: DeterministicProvider,
    }
    for kind, cls in classes.items():
        assert cls.kind is kind


def test_a_kind_without_a_spec_is_an_error_naming_it_and_the_known_kinds() -> None:
    registry = ProviderKinds(spec_for(OPENAI), spec_for(DETERMINISTIC))
    with pytest.raises(UnknownProviderKind) as caught:
        registry.spec(ANTHROPIC)
    message = str(caught.value)
    assert "'anthropic'" in message
    assert "known kinds: openai_compatible, deterministic" in message
    assert ANTHROPIC not in registry and OPENAI in registry


def test_two_specs_for_one_kind_are_refused() -> None:
    with pytest.raises(ValueError, match="'anthropic' has two specs"):
        ProviderKinds(spec_for(ANTHROPIC), spec_for(ANTHROPIC))


async def test_build_provider_never_falls_back_to_the_openai_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = ModelProviderConfig.model_validate(
        {
            "providers": [{"provider_id": "claude", "kind": "anthropic"}],
            "models": [{"model_id": "claude", "provider_id": "claude"}],
        }
    )
    provider_config = config.providers[0]
    async with aiohttp.ClientSession() as session:
        built = build_provider(
            provider_config,
            settings_from=config,
            session=session,
            credentials=EnvCredentials({}),
        )
        assert isinstance(built, AnthropicProvider)
        # The registry as it would be had someone added the enum member and not its spec.
        monkeypatch.setattr(
            kinds, "KINDS", ProviderKinds(spec_for(OPENAI), spec_for(DETERMINISTIC))
        )
        with pytest.raises(UnknownProviderKind, match="'anthropic' has no spec"):
            build_provider(
                provider_config,
                settings_from=config,
                session=session,
                credentials=EnvCredentials({}),
            )


def test_config_takes_default_base_urls_from_the_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DEFAULT_BASE_URLS == {
        OPENAI: "https://api.openai.com/v1",
        ANTHROPIC: "https://api.anthropic.com",
    }
    for kind in (OPENAI, ANTHROPIC):
        config = ProviderConfig(provider_id="p", kind=kind)
        assert config.base_url == spec_for(kind).default_base_url
    # A kind with no upstream keeps no base URL.
    assert ProviderConfig(provider_id="d", kind=DETERMINISTIC).base_url == ""
    monkeypatch.setattr(kinds, "KINDS", ProviderKinds(spec_for(OPENAI)))
    with pytest.raises(Exception, match="'anthropic' has no spec") as caught:
        validate_config(
            {
                "version": 1,
                "model_provider": {
                    "providers": [{"provider_id": "claude", "kind": "anthropic"}],
                    "models": [{"model_id": "claude", "provider_id": "claude"}],
                },
            }
        )
    assert "model_provider.providers" in str(caught.value)


def test_discovered_models_take_their_kinds_defaults() -> None:
    for kind, provider_id in ((OPENAI, "oai"), (ANTHROPIC, "claude")):
        cls = spec_for(kind).provider()
        config = ProviderConfig(provider_id=provider_id, kind=kind)
        provider = cls(
            config,
            session=None,  # type: ignore[arg-type]  # never used: nothing is sent
            settings=ModelProviderConfig().settings_for(config),
            credentials=EnvCredentials({}),
        )
        model = discovered_model("some-chat-model", provider)
        defaults = spec_for(kind).discovery
        assert model.max_context_tokens == defaults.max_context_tokens
        assert model.max_output_tokens == defaults.max_output_tokens
    assert spec_for(ANTHROPIC).discovery.max_context_tokens == 200000


def test_token_rules_come_from_the_kinds_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    request = ChatRequest.model_validate(
        {
            "messages": [{"role": "user", "content": "a few words of text " * 50}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        }
    )
    openai = tokens.estimate_token_count(request, OPENAI)
    anthropic = tokens.estimate_token_count(request, ANTHROPIC)
    assert anthropic > openai + spec_for(ANTHROPIC).tokens.tools_prompt
    # The estimate follows the spec: Anthropic's rules given to the OpenAI kind count alike.
    swapped = dataclasses.replace(spec_for(OPENAI), tokens=spec_for(ANTHROPIC).tokens)
    monkeypatch.setattr(kinds, "KINDS", ProviderKinds(swapped, spec_for(ANTHROPIC)))
    assert tokens.estimate_token_count(request, OPENAI) == anthropic


async def test_credential_check_follows_the_spec() -> None:
    with pytest.raises(InvalidRequest, match="'deterministic' takes no credential"):
        credential_check(DETERMINISTIC)
    assert credential_check(OPENAI).profile_id == "openai-api-key"
    assert credential_check(ANTHROPIC).profile_id == "anthropic-api-key"
    key = "sk-kinds-test-key"
    async with FakeUpstream(api_key=key) as upstream, aiohttp.ClientSession() as http:
        # Each kind's check reaches its own models path with its own header, and passes.
        await check_provider_credential(http, OPENAI, upstream.openai_base_url, key)
        await check_provider_credential(http, ANTHROPIC, upstream.anthropic_base_url, key)
