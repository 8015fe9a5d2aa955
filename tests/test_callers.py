"""Who a model call is for: an agent run's calls are its agent's, started by hand or by cron,
whoever was calling when it started."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from palyra.agents.registry import AgentRegistry, AgentSpec
from palyra.agents.service import AgentService
from palyra.callers import ADMIN, CALLER, Caller
from palyra.config import CronConfig
from palyra.cron.clock import ManualClock
from palyra.cron.runner import AgentJobRunner
from palyra.cron.service import CronService
from palyra.routing import Routed
from palyra.state.db import Database, SqliteDatabase
from palyra.types import ChatRequest, ChatResult, Usage

T0 = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await SqliteDatabase.open(tmp_path / "palyra.db")
    yield database
    await database.close()


def test_the_default_caller_is_the_admin() -> None:
    assert CALLER.get() is ADMIN and ADMIN.kind == "admin" and ADMIN.key is None


async def test_agent_and_cron_runs_are_their_agents(db: Database) -> None:
    seen: list[Caller] = []

    async def chat(request: ChatRequest) -> Routed[ChatResult]:
        seen.append(CALLER.get())
        return Routed(ChatResult("ok", "stop", Usage(5, 1)))

    registry = AgentRegistry({"ops": AgentSpec(agent_id="ops"), "mail": AgentSpec(agent_id="mail")})
    agents = AgentService(registry, chat, node_id="node-a")
    await agents.start(db, heartbeat=False)
    clock = ManualClock(T0)
    cron = CronService(
        CronConfig(),
        AgentJobRunner(agents),
        clock=clock,
        node_id="node-a",
        agent_exists=lambda agent_id: agent_id in ("ops", "mail"),
        heartbeat=False,
    )
    await cron.start(db)
    try:
        # Started while someone else was calling: the run is still the agent's.
        token = CALLER.set(Caller(kind="key", key_id="key_x", key_name="x"))
        try:
            outcome = await agents.run("ops", "hello")
        finally:
            CALLER.reset(token)
        assert outcome.status == "succeeded"
        assert [(c.kind, c.agent_id) for c in seen] == [("agent", "ops")]
        assert seen[0].run_id and seen[0].run_id.startswith("run_")

        await cron.create(
            {"name": "j", "agent_id": "mail", "prompt": "go", "schedule": {"every": "1m"}}
        )
        await clock.advance(60_000)
        await cron.scheduler.settle()
        await cron.scheduler.wait_runs()
        assert [(c.kind, c.agent_id) for c in seen[1:]] == [("agent", "mail")]
        assert CALLER.get() is ADMIN
    finally:
        await cron.aclose()
        await agents.aclose()
