"""Cron over HTTP against the daemon app: validation that names the field, the job life
cycle, a job running an agent end to end against the fake OpenAI upstream (usage recorded),
a short real-time tick, and the RequestContext a cron run carries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from palyra.agents.registry import AgentRegistry, AgentSpec
from palyra.agents.service import AgentService
from palyra.config import AgentsConfig, CronConfig
from palyra.context import SYSTEM_DAEMON_PRINCIPAL, RequestContext, current_context
from palyra.cron.clock import ManualClock
from palyra.cron.runner import AgentJobRunner
from palyra.cron.service import CronService
from palyra.routing import Routed
from palyra.state.db import Database
from palyra.types import ChatRequest, ChatResult, Usage
from tests.conftest import ADMIN_TOKEN, GatewayFactory, gateway_config
from tests.cron.conftest import T0
from tests.fakes.upstream import ChatReply, FakeUpstream

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JOBS = "/console/v1/cron/jobs"
CHAT = "/v1/chat/completions"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, server: TestServer, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, server.make_url(path), json=body) as response:
        return response.status, await response.json()


def job(**extra: Any) -> dict[str, Any]:
    return {"name": "digest", "agent_id": "default", "prompt": "hello", **extra}


async def test_validation_errors_name_the_field(
    tmp_path: Path, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    server = await start_gateway(gateway_config(None, tmp_path / "state"))
    cases = [
        (job(schedule={"cron": "0 25 * * *"}), "schedule.cron", "bad hour field '25'"),
        (job(schedule={"cron": "0 9 * * *", "timezone": "Nowhere/Land"}), "schedule.timezone", ""),
        (job(schedule={"every": "0s"}), "schedule.every", "minimum of one second"),
        (job(schedule={"at": "2001-01-01T00:00:00Z"}), "schedule.at", "not in the future"),
        (job(schedule={"every": "1m", "at": "x"}), "schedule", "exactly one of"),
        (job(schedule={"every": "1m"}, agent_id="ghost"), "agent_id", "no agent 'ghost'"),
        (job(schedule={"every": "1m"}, misfire="later"), "misfire", "catch_up or skip"),
        (
            job(schedule={"every": "1m"}, retry={"max_attempts": 17}),
            "retry.max_attempts",
            "1 to 16",
        ),
        ({"name": "x", "agent_id": "default", "schedule": {"every": "1m"}}, "prompt", "required"),
        (job(schedule={"every": "1m"}, colour="red"), "colour", "unknown field"),
    ]
    for body, param, words in cases:
        status, answer = await call(http, server, "POST", JOBS, body)
        assert status == 400, body
        assert answer["error"]["param"] == param, answer
        assert answer["error"]["message"].startswith(f"{param}: "), answer
        assert words in answer["error"]["message"], answer
    status, created = await call(http, server, "POST", JOBS, job(schedule={"every": "1h"}))
    assert status == 201
    status, answer = await call(
        http, server, "PATCH", f"{JOBS}/{created['job_id']}", {"concurrency": "parallel"}
    )
    assert status == 400 and answer["error"]["param"] == "concurrency"
    status, answer = await call(http, server, "PATCH", f"{JOBS}/job_nope", {"enabled": False})
    assert status == 404


async def test_job_life_cycle(
    tmp_path: Path, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    server = await start_gateway(gateway_config(None, tmp_path / "state"))
    body = job(schedule={"cron": "30 2 * * *", "timezone": "Europe/Prague"}, concurrency="replace")
    status, created = await call(http, server, "POST", JOBS, body)
    assert status == 201, created
    assert created["state"] == "enabled" and created["misfire"] == "catch_up"
    assert created["retry"] == {"max_attempts": 1, "backoff_ms": 10000}
    assert len(created["next_fire_times"]) == 5
    assert all(
        t.endswith(("+01:00", "+02:00")) and "T02:30" in t for t in created["next_fire_times"]
    )
    job_id = created["job_id"]
    status, listed = await call(http, server, "GET", JOBS)
    assert [j["job_id"] for j in listed["jobs"]] == [job_id]
    status, patched = await call(
        http, server, "PATCH", f"{JOBS}/{job_id}", {"enabled": False, "name": "renamed"}
    )
    assert (patched["state"], patched["name"], patched["next_fire_times"]) == (
        "disabled",
        "renamed",
        [],
    )
    status, patched = await call(
        http, server, "PATCH", f"{JOBS}/{job_id}", {"enabled": True, "schedule": {"every": "2h"}}
    )
    assert patched["schedule"]["kind"] == "every" and patched["state"] == "enabled"
    status, triggered = await call(http, server, "POST", f"{JOBS}/{job_id}/trigger")
    assert status == 202 and triggered["outcome"] == "started"
    assert triggered["run"]["trigger"] == "manual"
    runs = await wait_for_runs(http, server, job_id, lambda r: r["status"] != "running")
    assert runs[0]["status"] == "succeeded" and runs[0]["output_excerpt"] == "hello"
    status, _ = await call(http, server, "DELETE", f"{JOBS}/{job_id}")
    assert status == 200
    status, answer = await call(http, server, "GET", f"{JOBS}/{job_id}")
    assert status == 404 and answer["error"]["code"] == "not_found"
    status, answer = await call(http, server, "GET", f"{JOBS}/{job_id}/runs")
    assert status == 404


async def wait_for_runs(
    http: aiohttp.ClientSession,
    server: TestServer,
    job_id: str,
    done: Any,
    timeout_s: float = 5,
) -> list[dict[str, Any]]:
    async with asyncio.timeout(timeout_s):
        while True:
            _, answer = await call(http, server, "GET", f"{JOBS}/{job_id}/runs")
            runs: list[dict[str, Any]] = answer["runs"]
            if runs and all(done(r) for r in runs):
                return runs
            await asyncio.sleep(0.02)


async def test_cron_job_runs_an_agent_against_the_fake_openai_upstream(
    tmp_path: Path,
    upstream: FakeUpstream,
    start_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
) -> None:
    agents = tmp_path / "agents.toml"
    agents.write_text(
        'version = 1\n[[agents]]\nagent_id = "reporter"\nmodel = "gpt-4o-mini"\n'
        'tools = ["calculator"]\n'
    )
    config = gateway_config(upstream, tmp_path / "state", failover_enabled=False)
    config = config.model_copy(update={"agents": AgentsConfig(file=str(agents))})
    server = await start_gateway(config)
    upstream.script(
        CHAT,
        ChatReply(
            content=None,
            tool_calls=[{"name": "calculator", "arguments": {"expression": "40+2"}}],
            usage=(31, 7),
        ),
        ChatReply(content="The answer is 42.", usage=(52, 6)),
    )
    body = job(agent_id="reporter", prompt="What is 40+2?", schedule={"every": "1h"})
    _, created = await call(http, server, "POST", JOBS, body)
    await call(http, server, "POST", f"{JOBS}/{created['job_id']}/trigger")
    runs = await wait_for_runs(http, server, created["job_id"], lambda r: r["status"] != "running")
    run = runs[0]
    assert run["status"] == "succeeded", run
    assert run["usage"] == {"prompt_tokens": 83, "completion_tokens": 13, "total_tokens": 96}
    assert run["tool_calls"] == 1
    assert run["output_excerpt"] == "The answer is 42."
    status, agent_run = await call(http, server, "GET", f"/console/v1/runs/{run['agent_run_id']}")
    assert status == 200
    assert agent_run["origin"] == "cron" and agent_run["principal"] == SYSTEM_DAEMON_PRINCIPAL
    assert agent_run["session_id"] == f"cron:{created['job_id']}"
    tool_result = next(e for e in agent_run["events"] if e["type"] == "tool_result")
    assert tool_result["content"] == "42"
    sent = upstream.requests_to(CHAT)[0]
    assert sent.headers["authorization"] == "Bearer sk-fake-upstream-key"
    assert sent.json["messages"][-1] == {"role": "user", "content": "What is 40+2?"}


async def test_a_due_tick_fires_in_real_time(
    tmp_path: Path, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    server = await start_gateway(gateway_config(None, tmp_path / "state"))
    _, created = await call(http, server, "POST", JOBS, job(schedule={"every": "1s"}))
    due = created["next_fire_at_ms"]
    runs = await wait_for_runs(
        http, server, created["job_id"], lambda r: r["status"] == "succeeded"
    )
    first = runs[-1]
    assert first["trigger"] == "schedule" and first["scheduled_at_ms"] == due
    assert 0 <= first["started_at_ms"] - due < 1000  # fired within a second of its time


async def test_a_cron_run_carries_the_daemon_principal_and_the_job_profile(
    db: Database, clock: ManualClock
) -> None:
    seen: list[RequestContext | None] = []

    async def chat(request: ChatRequest) -> Routed[ChatResult]:
        seen.append(current_context())
        return Routed(ChatResult("ok", "stop", Usage(5, 1)))

    agent = AgentSpec(agent_id="ops", auth_profile_id="agent-profile")
    agents = AgentService(AgentRegistry({"ops": agent}), chat, node_id="node-a")
    await agents.start(db, heartbeat=False)
    cron = CronService(
        CronConfig(),
        AgentJobRunner(agents),
        clock=clock,
        node_id="node-a",
        agent_exists=lambda a: a == "ops",
        heartbeat=False,
    )
    await cron.start(db)
    job_a = await cron.create(
        job(agent_id="ops", schedule={"every": "1m"}, auth_profile_id="job-profile")
    )
    job_b = await cron.create(job(agent_id="ops", schedule={"every": "1m"}))
    await clock.advance(60_000)
    await cron.scheduler.settle()
    await cron.scheduler.wait_runs()
    by_session = {c.session_id: c for c in seen if c is not None}
    first = by_session[f"cron:{job_a.job_id}"]
    assert first.principal == SYSTEM_DAEMON_PRINCIPAL and first.origin == "cron"
    assert first.agent_id == "ops" and first.auth_profile_id == "job-profile"
    assert first.run_id is not None and first.run_id.startswith("run_")
    assert by_session[f"cron:{job_b.job_id}"].auth_profile_id == "agent-profile"
    assert clock.now_ms() == T0 + 60_000
    await cron.aclose()
    await agents.aclose()
