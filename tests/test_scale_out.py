"""Several daemons sharing PostgreSQL and Redis behave as one.

Three real `palyrad` processes on different ports share one PostgreSQL schema and one Redis
namespace. Skipped, with the reason, where either server does not answer.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from tests.fakes.upstream import ChatReply, ErrorReply, FakeUpstream
from tests.state.conftest import drop_schema, postgres_schema_url
from tests.support.process import Daemon, clean_env, start_daemon

ADMIN = "scale-out-admin-token"
KEY = "sk-scale-out-upstream"
REDIS_URL = os.environ.get("PALYRA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AUTH = {"Authorization": f"Bearer {ADMIN}"}
# Every daemon of a deployment shares the vault's master key (the secrets live in PostgreSQL).
VAULT_KEY = base64.b64encode(b"k" * 32).decode()


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


def write_config(
    path: Path,
    state_url: str,
    upstream: FakeUpstream,
    provider_id: str,
    extra: str = "",
    key_from_env: bool = True,
) -> None:
    # Without a key of its own the provider uses the default auth profile of its kind.
    credential = 'api_key_env = "UPSTREAM_KEY"\n' if key_from_env else ""
    path.write_text(
        "version = 1\n"
        "[state]\n"
        'backend = "postgres"\n'
        f'url = "{state_url}"\n'
        f'redis_url = "{REDIS_URL}"\n'
        "[cron]\nrun_lease_ms = 3000\n"
        "[model_provider]\n"
        "failover_enabled = false\nmax_retries = 0\n"
        'default_chat_model_id = "deterministic"\n'
        "circuit_breaker_failure_threshold = 2\ncircuit_breaker_cooldown_ms = 60000\n"
        "[[model_provider.providers]]\n"
        f'provider_id = "{provider_id}"\nkind = "openai_compatible"\n'
        f'base_url = "{upstream.openai_base_url}"\n'
        "allow_private_base_url = true\ndiscovery = false\n" + credential + ""
        "[[model_provider.providers]]\n"
        'provider_id = "local"\nkind = "deterministic"\n'
        "[[model_provider.models]]\n"
        f'model_id = "m"\nprovider_id = "{provider_id}"\n'
        "[[model_provider.models]]\n"
        'model_id = "deterministic"\nprovider_id = "local"\n' + extra
    )
    (path.parent / "agents.toml").write_text(
        'version = 1\n[[agents]]\nagent_id = "upstream"\nmodel = "m"\ntimeout_s = 60\n'
    )


async def start_three(
    tmp_path: Path,
    state_url: str,
    upstream: FakeUpstream,
    extra: str = "",
    key_from_env: bool = True,
) -> list[Daemon]:
    # A provider id of its own, so circuit keys left in Redis by other runs cannot interfere.
    provider_id = f"shared-{uuid.uuid4().hex[:8]}"
    daemons = []
    for index in range(3):
        home = tmp_path / f"d{index}"
        home.mkdir()
        config = home / "config.toml"
        write_config(config, state_url, upstream, provider_id, extra, key_from_env)
        daemon_env = clean_env(
            home,
            PALYRA_ADMIN_TOKEN=ADMIN,
            UPSTREAM_KEY=KEY,
            PALYRA_VAULT_KEY=VAULT_KEY,
            PALYRA_VAULT_KEYRING="off",
        )
        daemons.append(await start_daemon(home, ["--config", str(config)], daemon_env))
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
            opened_at = asyncio.get_running_loop().time()
            for daemon in others:
                # "Within a second" (two syncs of 0.25 s and the HTTP round, with room).
                circuit = await until(
                    lambda d=daemon: circuit_of(http, d),
                    lambda c: c["state"] == "open",
                    deadline=opened_at + 1.5,
                )
                assert circuit["retry_after_ms"] > 50_000
                assert await chat(http, daemon) == 503  # refused locally: circuit open
            assert len(upstream.requests_to("/v1/chat/completions")) == sent


T = TypeVar("T")


async def until(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, deadline: float
) -> T:
    """Probe every 50 ms until `done` holds of the answer, failing with the last answer
    past `deadline` (the loop's time): waiting on a condition, never a fixed sleep."""
    loop = asyncio.get_running_loop()
    while True:
        found = await probe()
        if done(found):
            return found
        assert loop.time() < deadline, f"still {found!r}"
        await asyncio.sleep(0.05)


async def circuit_of(http: aiohttp.ClientSession, daemon: Daemon) -> dict[str, Any]:
    async with http.get(daemon.url + "/console/v1/models/status", headers=AUTH) as r:
        status = await r.json()
    circuit: dict[str, Any] = status["providers"][0]["circuit"]
    return circuit


async def api(
    http: aiohttp.ClientSession, daemon: Daemon, method: str, path: str, body: Any = None
) -> Any:
    async with http.request(method, daemon.url + path, json=body, headers=AUTH) as response:
        assert response.status < 300, await response.text()
        return await response.json()


async def test_a_cron_tick_runs_once_across_three_daemons(
    tmp_path: Path, shared_store: str, running: list[Daemon]
) -> None:
    async with FakeUpstream(api_key=KEY) as upstream:
        running += await start_three(tmp_path, shared_store, upstream)
        async with aiohttp.ClientSession() as http:
            job = await api(
                http,
                running[0],
                "POST",
                "/console/v1/cron/jobs",
                {
                    "name": "tick",
                    "agent_id": "default",
                    "prompt": "tick",
                    "schedule": {"every": "1s"},
                },
            )
            runs_path = f"/console/v1/cron/jobs/{job['job_id']}/runs?limit=200"
            loop = asyncio.get_running_loop()
            # Ticks are wall-clock seconds here (three processes); counting them on a clock
            # moved by hand is tests/cron/test_scheduler.py's. Four ticks, then stop.
            await until(
                lambda: api(http, running[2], "GET", runs_path),
                lambda found: len(found["runs"]) >= 4,
                deadline=loop.time() + 20,
            )
            await api(
                http,
                running[1],
                "PATCH",
                f"/console/v1/cron/jobs/{job['job_id']}",
                {"enabled": False},
            )
            runs = (
                await until(
                    lambda: api(http, running[2], "GET", runs_path),
                    lambda found: all(r["status"] != "running" for r in found["runs"]),
                    deadline=loop.time() + 10,
                )
            )["runs"]
    ticks = [r["scheduled_at_ms"] for r in runs]
    assert len(ticks) == len(set(ticks)), "a tick ran more than once"
    assert len(ticks) >= 4, len(ticks)
    assert {r["status"] for r in runs} == {"succeeded"}
    ordered = sorted(ticks)
    assert all(b - a == 1000 for a, b in itertools.pairwise(ordered)), "a tick was lost"


async def test_a_run_of_a_killed_daemon_is_recovered_by_another(
    tmp_path: Path, shared_store: str, running: list[Daemon]
) -> None:
    async with FakeUpstream(api_key=KEY) as upstream:
        running += await start_three(tmp_path, shared_store, upstream)
        victim, survivor, _ = running
        upstream.script("/v1/chat/completions", ChatReply(content="too late", delay_s=60))
        async with aiohttp.ClientSession() as http:
            job = await api(
                http,
                victim,
                "POST",
                "/console/v1/cron/jobs",
                {
                    "name": "slow",
                    "agent_id": "upstream",
                    "prompt": "take your time",
                    "schedule": {"every": "1h"},
                },
            )
            await api(http, victim, "POST", f"/console/v1/cron/jobs/{job['job_id']}/trigger")
            while not upstream.requests_to("/v1/chat/completions"):
                await asyncio.sleep(0.05)
            victim.process.kill()  # no shutdown, no goodbye: its lease just stops being renewed
            await victim.process.wait()
            deadline = asyncio.get_running_loop().time() + 15
            while True:
                runs = (
                    await api(http, survivor, "GET", f"/console/v1/cron/jobs/{job['job_id']}/runs")
                )["runs"]
                if runs and runs[0]["status"] != "running":
                    break
                assert asyncio.get_running_loop().time() < deadline, runs
                await asyncio.sleep(0.5)
    assert runs[0]["status"] == "failed"
    assert runs[0]["error_kind"] == "interrupted" or runs[0]["reason"] == "interrupted"


async def test_concurrent_refreshes_make_one_token_exchange(
    tmp_path: Path, shared_store: str, running: list[Daemon]
) -> None:
    from tests.auth.oauth_server import CLIENT_ID, OAuthTestServer
    from tests.fakes.oauth_upstream import TokenUpstream

    oauth = OAuthTestServer().start()
    try:
        async with TokenUpstream(oauth) as upstream:
            extra = (
                "[auth.openai_oauth]\n"
                f'authorization_endpoint = "{oauth.url}/oauth/authorize"\n'
                f'token_endpoint = "{oauth.url}/oauth/token"\n'
                f'client_id = "{CLIENT_ID}"\n'
            )
            running += await start_three(
                tmp_path, shared_store, upstream, extra, key_from_env=False
            )
            async with aiohttp.ClientSession() as http:
                started = await api(
                    http,
                    running[0],
                    "POST",
                    "/console/v1/auth/providers/openai/bootstrap",
                    {"profile_id": "shared-oauth", "set_default": True},
                )
                async with http.get(started["authorization_url"]) as callback:
                    assert callback.status == 200, await callback.text()
                # A daemon sees a profile made elsewhere within its credential cache's
                # lifetime (5 s), or at once when a change is made through it: marking the
                # profile default again on each, rather than waiting the 5 s out.
                for daemon in running:
                    await api(
                        http, daemon, "POST", "/console/v1/auth/profiles/shared-oauth/default"
                    )
                body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
                for daemon in running:
                    async with http.post(
                        daemon.url + "/v1/chat/completions", json=body, headers=AUTH
                    ) as warm:
                        assert warm.status == 200, await warm.text()
                exchanges = len(oauth.token_requests)
                # The upstream stops taking the token they all hold: every daemon's next call
                # gets a 401 and asks for a refresh, at the same moment.
                upstream.min_index = len(oauth.issued_access_tokens())
                oauth.token_delay_s = 0.3
                statuses = await asyncio.gather(
                    *(
                        http.post(d.url + "/v1/chat/completions", json=body, headers=AUTH)
                        for d in running
                    )
                )
                assert [r.status for r in statuses] == [200, 200, 200]
        assert len(oauth.token_requests) - exchanges == 1
        assert oauth.token_requests[-1]["grant_type"] == "refresh_token"
    finally:
        oauth.stop()
