"""Shared fixtures: a fake upstream on loopback, and the daemon's app served on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI

from palyra.config import PalyraConfig, validate_config
from palyra.daemon import build_app
from tests.fakes.upstream import FakeUpstream
from tests.support.process import Daemon

ADMIN_TOKEN = "test-admin-token-0123456789"
UPSTREAM_KEY = "sk-fake-upstream-key"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(api_key=UPSTREAM_KEY) as fake:
        yield fake


def gateway_config(
    upstream: FakeUpstream | None, state_dir: Path, **model_provider: Any
) -> PalyraConfig:
    """Three providers side by side: OpenAI-compatible and Anthropic on the fake, deterministic."""
    providers: list[dict[str, Any]] = [{"provider_id": "det", "kind": "deterministic"}]
    models: list[dict[str, Any]] = [
        {"model_id": "deterministic", "provider_id": "det"},
        {
            "model_id": "deterministic-embed",
            "provider_id": "det",
            "role": "embeddings",
            "max_context_tokens": 8192,
            "max_output_tokens": 1,
        },
        {
            "model_id": "deterministic-transcribe",
            "provider_id": "det",
            "role": "audio_transcription",
        },
    ]
    if upstream is not None:
        providers += [
            {
                "provider_id": "oai",
                "kind": "openai_compatible",
                "base_url": upstream.openai_base_url,
                "allow_private_base_url": True,
                "api_key_env": "PALYRA_TEST_UPSTREAM_KEY",
            },
            {
                "provider_id": "claude",
                "kind": "anthropic",
                "base_url": upstream.anthropic_base_url,
                "allow_private_base_url": True,
                "api_key_env": "PALYRA_TEST_UPSTREAM_KEY",
            },
        ]
        models += [
            {"model_id": "gpt-4o-mini", "provider_id": "oai"},
            {
                "model_id": "small-window",
                "provider_id": "oai",
                "upstream_model": "gpt-4o-mini",
                "max_context_tokens": 300,
                "max_output_tokens": 100,
            },
            {
                "model_id": "claude",
                "provider_id": "claude",
                "upstream_model": "claude-sonnet-4-5",
                "max_context_tokens": 200000,
                "max_output_tokens": 4096,
            },
            {"model_id": "text-embedding-3-small", "provider_id": "oai", "role": "embeddings"},
            {"model_id": "whisper-1", "provider_id": "oai", "role": "audio_transcription"},
            {"model_id": "claude-embed", "provider_id": "claude", "role": "embeddings"},
        ]
    raw = {
        "version": 1,
        "daemon": {"state_dir": str(state_dir)},
        "model_provider": {"providers": providers, "models": models, **model_provider},
    }
    return validate_config(raw)


# A model on an OpenAI-compatible provider that passes /v1/responses through.
PASS = "gpt-pass"


def responses_config(
    upstream: FakeUpstream, state_dir: Path, **model_provider: Any
) -> PalyraConfig:
    """The shared test gateway's providers, and one more on the fake with pass-through."""
    base = gateway_config(upstream, state_dir, **model_provider)
    raw = base.model_dump(mode="json")
    providers = raw["model_provider"]["providers"]
    oai = next(p for p in providers if p["provider_id"] == "oai")
    providers.append({**oai, "provider_id": "oai-pass", "responses_passthrough": True})
    raw["model_provider"]["models"].append(
        {"model_id": PASS, "provider_id": "oai-pass", "upstream_model": "gpt-4o-mini"}
    )
    return validate_config(raw)


GatewayFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    servers: list[TestServer] = []

    async def start(config: PalyraConfig, env: dict[str, str] | None = None) -> TestServer:
        full_env = {"PALYRA_ADMIN_TOKEN": ADMIN_TOKEN, "PALYRA_TEST_UPSTREAM_KEY": UPSTREAM_KEY}
        full_env.update(env or {})
        server = TestServer(build_app(config, env=full_env), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def gateway(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> TestServer:
    # Translation tests: one provider per request, so what comes back is that provider's.
    config = gateway_config(
        upstream,
        tmp_path / "state",
        failover_enabled=False,
        max_retries=0,
        discovery_ttl_ms=3_600_000,
    )
    return await start_gateway(config)


@pytest.fixture
async def client(gateway: TestServer) -> AsyncIterator[AsyncOpenAI]:
    sdk = AsyncOpenAI(
        api_key=ADMIN_TOKEN, base_url=str(gateway.make_url("/v1")), max_retries=0, timeout=20
    )
    yield sdk
    await sdk.close()


@pytest.fixture
async def daemons() -> AsyncIterator[list[Daemon]]:
    """palyrad processes a test starts (tests.support.process.start_daemon), killed at its end."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.process.returncode is None:
            daemon.process.kill()
            await daemon.process.wait()
