"""Cron test parts: a store on a real SQLite file, a hand-moved clock, and a job runner whose
attempts end when the test says so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from palyra.config import CronConfig, PalyraConfig, StateConfig
from palyra.cron.clock import ManualClock
from palyra.cron.jobs import Job
from palyra.cron.scheduler import AttemptResult
from palyra.cron.service import CronService
from palyra.cron.store import CronStore
from palyra.state.db import Database, Row, SqliteDatabase
from tests.conftest import gateway_config
from tests.state.conftest import drop_schema, postgres_schema_url

T0 = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)
MINUTE = 60_000
HOUR = 3_600_000


class GateRunner:
    """Each attempt waits for its gate (unless `auto`), then ends as scripted."""

    def __init__(self, *, auto: bool = True, script: list[str] | None = None) -> None:
        self.auto = auto
        self.script = list(script or [])
        self.calls: list[Row] = []
        self.gates: list[asyncio.Event] = []
        self.cancelled = 0

    async def __call__(
        self, job: Job, record: Row, link: Callable[[str], Awaitable[None]]
    ) -> AttemptResult:
        self.calls.append(record)
        gate = asyncio.Event()
        self.gates.append(gate)
        await link(f"run_for_{record['cron_run_id']}")
        if not self.auto:
            try:
                await gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        status = self.script.pop(0) if self.script else "succeeded"
        if status == "failed":
            return AttemptResult("failed", "provider_error", "upstream answered 503")
        return AttemptResult(status, prompt_tokens=3, completion_tokens=2, output="done")

    async def wait_calls(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.calls) < count:
                await asyncio.sleep(0.001)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await SqliteDatabase.open(tmp_path / "palyra.db")
    yield database
    await database.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


async def start_cron(
    db: Database, runner: Any, clock: ManualClock, node: str = "node-a", **config: Any
) -> CronService:
    service = CronService(
        CronConfig(**config),
        runner,
        clock=clock,
        node_id=node,
        agent_exists=lambda agent_id: agent_id != "nobody",
        heartbeat=False,
    )
    await service.start(db)
    return service


def job_body(schedule: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"name": "job", "agent_id": "default", "prompt": "go", "schedule": schedule, **extra}


async def runs_of(store: CronStore, job_id: str) -> list[Row]:
    """Oldest first."""
    return list(reversed(await store.list_runs(job_id, 1000)))


@pytest.fixture(params=["sqlite", "postgres"])
async def backend_config(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[PalyraConfig]:
    """A daemon config on each state backend (PostgreSQL skips where no server answers):
    some input is fine in SQLite and an error in PostgreSQL (a NUL in text)."""
    config = gateway_config(None, tmp_path / "state")
    if request.param == "sqlite":
        yield config
        return
    url, schema = await postgres_schema_url()
    yield config.model_copy(update={"state": StateConfig(backend="postgres", url=url)})
    await drop_schema(schema)
