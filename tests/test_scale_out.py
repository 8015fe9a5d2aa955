"""Several daemons sharing PostgreSQL and Redis behave as one.

Three real `palyrad` processes on different ports share one PostgreSQL schema and one Redis
namespace. Skipped, with the reason, where either server does not answer.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.upstream import ErrorReply, FakeUpstream
from tests.state.conftest import drop_schema, postgres_schema_url
from tests.test_daemon import Daemon, clean_env, start_daemon

ADMIN = "scale-out-admin-token"
KEY = "sk-scale-out-upstream"
REDIS_URL = os.environ.get("PALYRA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AUTH = {"Authorization": f"Bearer {ADMIN}"}


async def redis_or_skip() -> None:
    redis = pytest.importorskip("redis.asyncio")
    client = redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    finally:
        await client.aclose()


@pytest.fixture
async def shared_store() -> AsyncIterator[str]:
    await redis_or_skip()
    url, schema = await postgres_schema_url()
    yield url
    await drop_schema(schema)


def write_config(path: Path, state_url: str, upstream: FakeUpstream, provider_id: str) -> None:
    path.write_text(
        "version = 1\n"
        "[state]\n"
        'backend = "postgres"\n'
        f'url = "{state_url}"\n'
        f'redis_url = "{REDIS_URL}"\n'
        "[model_provider]\n"
        "failover_enabled = false\nmax_retries = 0\n"
        "circuit_breaker_failure_threshold = 2\ncircuit_breaker_cooldown_ms = 60000\n"
        "[[model_provider.providers]]\n"
        f'provider_id = "{provider_id}"\nkind = "openai_compatible"\n'
        f'base_url = "{upstream.openai_base_url}"\n'
        'allow_private_base_url = true\napi_key_env = "UPSTREAM_KEY"\ndiscovery = false\n'
        "[[model_provider.models]]\n"
        f'model_id = "m"\nprovider_id = "{provider_id}"\n'
    )


async def start_three(tmp_path: Path, state_url: str, upstream: FakeUpstream) -> list[Daemon]:
    # A provider id of its own, so circuit keys left in Redis by other runs cannot interfere.
    provider_id = f"shared-{uuid.uuid4().hex[:8]}"
    daemons = []
    for index in range(3):
        home = tmp_path / f"d{index}"
        home.mkdir()
        config = home / "config.toml"
        write_config(config, state_url, upstream, provider_id)
        env = clean_env(home, PALYRA_ADMIN_TOKEN=ADMIN, UPSTREAM_KEY=KEY)
        daemons.append(await start_daemon(home, ["--config", str(config)], env))
    return daemons


async def chat(http: aiohttp.ClientSession, daemon: Daemon) -> int:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    async with http.post(daemon.url + "/v1/chat/completions", json=body, headers=AUTH) as r:
        return r.status


@pytest.fixture
async def running() -> AsyncIterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.process.returncode is None:
            daemon.process.kill()
            await daemon.process.wait()


async def test_a_circuit_opened_behind_one_daemon_opens_on_all(
    tmp_path: Path, shared_store: str, running: list[Daemon]
) -> None:
    async with FakeUpstream(api_key=KEY) as upstream:
        running += await start_three(tmp_path, shared_store, upstream)
        first, *others = running
        upstream.script("/v1/chat/completions", ErrorReply(500), ErrorReply(500))
        async with aiohttp.ClientSession() as http:
            assert [await chat(http, first), await chat(http, first)] == [502, 502]
            sent = len(upstream.requests_to("/v1/chat/completions"))
            assert sent == 2
            await asyncio.sleep(1.0)  # "within one second", plus a little for the HTTP round
            for daemon in others:
                assert await chat(http, daemon) == 503  # refused locally: circuit open
                async with http.get(daemon.url + "/console/v1/models/status", headers=AUTH) as r:
                    status = await r.json()
                circuit = status["providers"][0]["circuit"]
                assert circuit["state"] == "open" and circuit["retry_after_ms"] > 50_000
            assert len(upstream.requests_to("/v1/chat/completions")) == sent
