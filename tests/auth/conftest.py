"""Fixtures for the auth tests: a real OAuth server on loopback, and a gateway whose OpenAI
and Anthropic providers point at the fake upstream with no credential of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from palyra.config import PalyraConfig, validate_config
from tests.auth.oauth_server import CLIENT_ID, OAuthTestServer
from tests.conftest import ADMIN_TOKEN, GatewayFactory
from tests.fakes.upstream import FakeUpstream

AUTH_ENV = {"PALYRA_VAULT_KEYRING": "off"}
HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def oauth_server() -> Iterator[OAuthTestServer]:
    server = OAuthTestServer().start()
    yield server
    server.stop()


def auth_config(
    upstream: FakeUpstream, state_dir: Path, oauth: OAuthTestServer | None = None, **extra: Any
) -> PalyraConfig:
    raw: dict[str, Any] = {
        "version": 1,
        "daemon": {"state_dir": str(state_dir)},
        "model_provider": {
            "failover_enabled": False,
            "max_retries": 0,
            "discovery_ttl_ms": 3_600_000,
            "health_ttl_ms": 3_600_000,
            "providers": [
                {
                    "provider_id": "oai",
                    "kind": "openai_compatible",
                    "base_url": upstream.openai_base_url,
                    "allow_private_base_url": True,
                    "discovery": False,
                    **extra.get("oai", {}),
                },
                {
                    "provider_id": "claude",
                    "kind": "anthropic",
                    "base_url": upstream.anthropic_base_url,
                    "allow_private_base_url": True,
                    "discovery": False,
                },
            ],
            "models": [
                {"model_id": "gpt-4o-mini", "provider_id": "oai"},
                {
                    "model_id": "claude",
                    "provider_id": "claude",
                    "upstream_model": "claude-sonnet-4-5",
                    "max_output_tokens": 4096,
                },
            ],
        },
    }
    if oauth is not None:
        raw["auth"] = {
            "openai_oauth": {
                "authorization_endpoint": oauth.url + "/oauth/authorize",
                "token_endpoint": oauth.url + "/oauth/token",
                "client_id": CLIENT_ID,
            }
        }
    return validate_config(raw)


class Console:
    """The daemon's console API over HTTP, as the CLI and the web console use it."""

    def __init__(self, server: TestServer, http: aiohttp.ClientSession) -> None:
        self.server = server
        self.http = http
        self.bodies: list[str] = []  # every response body seen, for secret searches

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def call(
        self, method: str, path: str, body: Any = None, *, auth: bool = True
    ) -> tuple[int, Any]:
        async with self.http.request(
            method, self.url(path), json=body, headers=HEADERS if auth else None
        ) as response:
            text = await response.text()
            self.bodies.append(text)
            if response.content_type == "application/json":
                import json

                return response.status, json.loads(text)
            return response.status, text


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def start_console(
    start_gateway: GatewayFactory, config: PalyraConfig, http: aiohttp.ClientSession
) -> Console:
    server = await start_gateway(config, env=AUTH_ENV)
    return Console(server, http)
