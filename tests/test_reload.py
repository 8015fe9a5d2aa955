"""Config reload on a real `palyrad`: SIGHUP and `POST /console/v1/config/reload` (what
`palyra config reload` calls) serve the changed config.toml and agents.toml; a request in
flight finishes on the config it started with; a config with problems is refused with every
problem named, and the old one keeps serving; settings that need a restart are named.

Nothing here sleeps to wait: each wait polls for its condition, with a deadline."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from openai import AsyncOpenAI

from palyra.config import validate_config
from palyra.credentials import EnvCredentials
from palyra.gateway import Gateway
from palyra.reload import effective, pending_restart
from tests.fakes.upstream import ChatReply, FakeUpstream
from tests.support.process import (
    ADMIN_TOKEN,
    UPSTREAM_KEY,
    Daemon,
    clean_env,
    start_daemon,
)

PALYRA = str(Path(sys.executable).with_name("palyra"))
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def config_text(upstream: FakeUpstream | None, model_on: str, *, extra: str = "") -> str:
    """A config with a deterministic provider `det` and (given an upstream) an OpenAI-
    compatible `oai`; model `m` is served by `model_on`."""
    text = (
        'version = 1\n[[model_provider.providers]]\nprovider_id = "det"\nkind = "deterministic"\n'
    )
    if upstream is not None:
        text += (
            '[[model_provider.providers]]\nprovider_id = "oai"\nkind = "openai_compatible"\n'
            f'base_url = "{upstream.openai_base_url}"\nallow_private_base_url = true\n'
            'api_key_env = "UPSTREAM_KEY"\ndiscovery = false\n'
        )
    text += f'[[model_provider.models]]\nmodel_id = "m"\nprovider_id = "{model_on}"\n'
    return text + extra


async def eventually(check: Callable[[], Any], what: str, timeout_s: float = 10) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = await check() if asyncio.iscoroutinefunction(check) else check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.02)


async def model_ids(daemon: Daemon) -> set[str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(daemon.url + "/v1/models", headers=AUTH) as response,
    ):
        return {m["id"] for m in (await response.json())["data"]}


async def reload(daemon: Daemon) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(daemon.url + "/console/v1/config/reload", headers=AUTH, json={}) as response,
    ):
        return response.status, await response.json()


def log_events(daemon: Daemon, event: str) -> list[dict[str, Any]]:
    return [line for line in daemon.log_lines() if line.get("event") == event]


async def start(tmp_path: Path, text: str, daemons: list[Daemon]) -> tuple[Daemon, Path]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    env = clean_env(tmp_path, PALYRA_ADMIN_TOKEN=ADMIN_TOKEN, UPSTREAM_KEY=UPSTREAM_KEY)
    daemon = await start_daemon(tmp_path, ["--config", str(path)], env)
    daemons.append(daemon)
    return daemon, path


async def test_sighup_serves_a_changed_model_and_provider(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    async with FakeUpstream(api_key=UPSTREAM_KEY) as upstream:
        daemon, path = await start(tmp_path, config_text(None, "det"), daemons)
        client = AsyncOpenAI(api_key=ADMIN_TOKEN, base_url=daemon.url + "/v1", max_retries=0)
        before = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "echo me"}]
        )
        assert before.choices[0].message.content == "echo me"  # the deterministic provider
        # A provider that was not there, and the model moved onto it; a second model too.
        path.write_text(
            config_text(upstream, "oai")
            + '[[model_provider.models]]\nmodel_id = "added"\nprovider_id = "det"\n'
        )
        upstream.script("/v1/chat/completions", ChatReply(content="from the new provider"))
        daemon.process.send_signal(signal.SIGHUP)

        async def served() -> bool:
            return "added" in await model_ids(daemon)

        await eventually(served, "the reloaded models listed")
        after = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "echo me"}]
        )
        assert after.choices[0].message.content == "from the new provider"
        assert [e["origin"] for e in log_events(daemon, "config_reloaded")] == ["sighup"]
        assert daemon.process.returncode is None
        await client.close()


async def test_a_stream_in_flight_finishes_on_the_provider_a_reload_removed(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    async with FakeUpstream(api_key=UPSTREAM_KEY) as upstream:
        daemon, path = await start(tmp_path, config_text(upstream, "oai"), daemons)
        words = [f"word{i}" for i in range(12)]
        # Long enough (about a second upstream) that the reload lands in its middle.
        upstream.script(
            "/v1/chat/completions", ChatReply(content=" ".join(words), chunk_delay_s=0.08)
        )
        client = AsyncOpenAI(api_key=ADMIN_TOKEN, base_url=daemon.url + "/v1", max_retries=0)
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "go"}], stream=True
        )
        chunks = aiter(stream)
        text = ""
        while not text:
            text += (await anext(chunks)).choices[0].delta.content or ""
        # Now `oai` goes: `m` is the deterministic provider's from the next request on.
        path.write_text(config_text(None, "det"))
        status, answer = await reload(daemon)
        assert status == 200, answer
        assert upstream.open_streams == 1, "the stream ended before the reload"
        async for chunk in chunks:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        assert text == " ".join(words)
        after = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "now local"}]
        )
        assert after.choices[0].message.content == "now local"
        assert len(upstream.requests_to("/v1/chat/completions")) == 1
        await client.close()


BROKEN = """
[daemon]
prot = 8000
[[model_provider.models]]
model_id = "x"
provider_id = "nowhere"
api_key = "sk-never-echo-this-0123456789"
"""


async def test_a_config_with_problems_is_refused_whole_and_the_old_one_serves(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    daemon, path = await start(tmp_path, config_text(None, "det"), daemons)
    path.write_text(config_text(None, "det").replace('"m"', '"renamed"') + BROKEN)
    status, answer = await reload(daemon)
    assert status == 400, answer
    error = answer["error"]
    assert error["code"] == "invalid_config"
    assert error["problems"] == [
        "model_provider.models[1].api_key: plain API keys are not allowed in config; store "
        "the key with `palyra auth openai|anthropic api-key` or `palyra vault set` and "
        "reference it with api_key_vault_ref (or api_key_env)",
        "daemon.prot: unknown key",
        "model_provider.models[1].provider_id: no provider 'nowhere' is configured",
    ], error["problems"]
    assert error["message"].splitlines()[1:] == error["problems"]
    assert "sk-never-echo-this" not in json.dumps(answer)
    assert await model_ids(daemon) == {"m"}  # nothing of the new one applied
    # SIGHUP: the same refusal, in the log, and the daemon serves on.
    daemon.process.send_signal(signal.SIGHUP)
    refused = await eventually(
        lambda: [e for e in log_events(daemon, "config_reload_refused") if e["origin"] == "sighup"],
        "the SIGHUP refusal logged",
    )
    assert refused[0]["problems"] == error["problems"]
    assert await model_ids(daemon) == {"m"}
    assert "sk-never-echo-this" not in daemon.log_path.read_text()
    # The CLI: every problem on a line of its own, exit 1.
    result = await asyncio.to_thread(
        subprocess.run,
        [PALYRA, "--url", daemon.url, "config", "reload"],
        env=clean_env(tmp_path, PALYRA_ADMIN_TOKEN=ADMIN_TOKEN),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("palyra: error: 400: config not reloaded, the old one keeps")
    assert lines[1:] == [f"palyra: error: {p}" for p in error["problems"]]


async def test_agents_toml_is_reloaded_and_restart_only_settings_are_named(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    daemon, path = await start(tmp_path, config_text(None, "det"), daemons)
    agents = tmp_path / "agents.toml"
    agents.write_text('version = 1\n[[agents]]\nagent_id = "helper"\nmodel = "m"\n')
    path.write_text(
        config_text(
            None, "det", extra='[cron]\ntimezone = "Europe/Prague"\n[daemon]\nworkers = 2\n'
        )
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [PALYRA, "--url", daemon.url, "config", "reload"],
        env=clean_env(tmp_path, PALYRA_ADMIN_TOKEN=ADMIN_TOKEN),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"reloaded: {path}\n"
    assert result.stderr == (
        "palyra: warning: these settings changed but keep their old values until palyrad "
        "restarts: cron.timezone, daemon.workers\n"
    )
    async with (
        aiohttp.ClientSession() as http,
        http.get(daemon.url + "/console/v1/agents", headers=AUTH) as response,
    ):
        listed = await response.json()
    ids = {a["agent_id"] for a in listed["agents"]}
    assert ids == {"default", "helper"}, listed
    (warning,) = log_events(daemon, "config_reload_needs_restart")
    assert warning["keys"] == ["cron.timezone", "daemon.workers"]


def test_a_reload_keeps_what_needs_a_restart_and_names_it() -> None:
    old = validate_config({"version": 1, "daemon": {"port": 8000}})
    new = validate_config(
        {
            "version": 1,
            "daemon": {"port": 9000, "public_base_url": "https://gw.example.com"},
            "state": {"redis_url": "redis://localhost"},
            "model_provider": {"load_balancing": "latency"},
        }
    )
    assert pending_restart(old, new) == ["daemon.port", "state.redis_url"]
    served = effective(old, new)
    assert served.daemon.port == 8000
    assert served.daemon.public_base_url == "https://gw.example.com"
    assert served.state.redis_url == ""
    assert served.model_provider.load_balancing == "latency"


async def test_gateway_reload_swaps_routing_and_keeps_breakers_with_new_settings() -> None:
    def det(threshold: int, *models: str) -> Any:
        return validate_config(
            {
                "version": 1,
                "model_provider": {
                    "circuit_breaker_failure_threshold": threshold,
                    "discovery_ttl_ms": 3_600_000,
                    "health_ttl_ms": 3_600_000,
                    "providers": [{"provider_id": "det", "kind": "deterministic"}],
                    "models": [{"model_id": m, "provider_id": "det"} for m in models],
                },
            }
        ).model_provider

    gateway = Gateway(det(3, "a"), credentials=EnvCredentials({}))
    await gateway.start()
    try:
        old_router = gateway.router
        breaker = gateway.breaker("det")
        breaker.record_failure()
        await gateway.reload(det(7, "b"))
        assert gateway.router is not old_router
        assert [m.model_id for m in gateway.registry.configured()] == ["b"]
        # The router a request already holds still routes by the config it started with.
        assert old_router.registry.get("a") is not None
        # The breaker, and what it has counted, carries over; its settings are the new ones.
        assert gateway.breaker("det") is breaker
        assert breaker.failures == 1
        assert breaker.failure_threshold == 7
        assert [d["model_id"] for d in gateway.status()["models"]] == ["b"]
    finally:
        await gateway.aclose()
