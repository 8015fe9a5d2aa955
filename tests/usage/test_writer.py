"""The ledger's writer on a hand-moved clock and a real SQLite store: batches by time and by
size, a bounded buffer that drops the newest and says so once per burst, a failing store that
neither blocks nor loses what it is retried with, and a shutdown that writes what is left."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from palyra.cron.clock import ManualClock
from palyra.metrics import Metrics
from palyra.state.db import Database, Row, SqliteDatabase
from palyra.usage.store import UsageStore
from palyra.usage.writer import UsageWriter
from tests.usage.conftest import T0, until, usage_record


class FlakyDatabase(Database):
    """A real SQLite store whose batch writes fail while `broken`."""

    def __init__(self, inner: Database) -> None:
        self.inner = inner
        self.broken = False
        self.attempts = 0

    async def execute(self, sql: str, *params: Any) -> int:
        return await self.inner.execute(sql, *params)

    async def fetch_one(self, sql: str, *params: Any) -> Row | None:
        return await self.inner.fetch_one(sql, *params)

    async def fetch_all(self, sql: str, *params: Any) -> list[Row]:
        return await self.inner.fetch_all(sql, *params)

    def transaction(self) -> Any:
        return self.inner.transaction()

    async def migrate(self, component: str, migrations: Sequence[str]) -> None:
        await self.inner.migrate(component, migrations)

    async def execute_many(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        self.attempts += 1
        if self.broken:
            raise ConnectionError("store down")
        await self.inner.execute_many(sql, rows)

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[FlakyDatabase]:
    inner = await SqliteDatabase.open(tmp_path / "palyra.db")
    yield FlakyDatabase(inner)
    await inner.close()


async def stored(db: Database) -> list[str]:
    """The request ids in the ledger, sorted."""
    rows = await db.fetch_all("SELECT request_id FROM usage_records ORDER BY request_id")
    return [r["request_id"] for r in rows]


async def test_batches_by_time_and_by_size(db: FlakyDatabase) -> None:
    clock = ManualClock(T0)
    writer = UsageWriter(clock=clock)
    await writer.start(db, retention_days=None)
    for i in range(3):
        writer.record(usage_record(request_id=f"a{i}"))
    await clock.advance(499)  # the batch waits half a second for company
    assert (writer.queued, writer.written) == (3, 0)
    await clock.advance(1)
    await until(lambda: writer.written == 3)
    assert db.attempts == 1  # one transaction for the three

    # 1,200 at once: two full batches go without waiting, the rest after half a second.
    for i in range(1200):
        writer.record(usage_record(request_id=f"b{i:04d}"))
    await until(lambda: writer.written == 1003)
    await clock.advance(0)
    assert (writer.queued, db.attempts) == (200, 3)
    await clock.advance(500)
    await until(lambda: writer.written == 1203)
    assert db.attempts == 4
    assert len(await stored(db)) == 1203
    await writer.aclose()


async def test_a_full_buffer_drops_the_newest_and_says_so_once(db: FlakyDatabase) -> None:
    metrics = Metrics()
    writer = UsageWriter(metrics, max_queue=5, clock=ManualClock(T0))
    with capture_logs() as logs:
        for i in range(8):  # the store is not open yet: records wait in the buffer
            writer.record(usage_record(request_id=f"r{i}"))
    assert (writer.queued, writer.dropped) == (5, 3)
    assert [e["event"] for e in logs].count("usage_records_dropping") == 1
    assert b"palyra_usage_records_dropped_total 3.0" in metrics.render()
    with capture_logs() as logs:
        await writer.start(db, retention_days=None)
        await writer.flush()
    assert await stored(db) == ["r0", "r1", "r2", "r3", "r4"]  # the first ones kept
    dropped = [e for e in logs if e["event"] == "usage_records_dropped"]
    assert [(e["records"], e["total"]) for e in dropped] == [(3, 3)]
    await writer.aclose()


async def test_record_never_raises(db: FlakyDatabase) -> None:
    writer = UsageWriter(Metrics(), clock=ManualClock(T0))
    broken = usage_record()
    broken.input_tokens = "lots"  # type: ignore[assignment]
    writer.record(broken)  # the metrics trip over it: dropped and counted, not raised
    assert (writer.queued, writer.dropped) == (0, 1)


async def test_a_failing_store_delays_nothing_and_loses_nothing(db: FlakyDatabase) -> None:
    clock = ManualClock(T0)
    writer = UsageWriter(clock=clock)
    await writer.start(db, retention_days=None)
    db.broken = True
    for i in range(3):
        writer.record(usage_record(request_id=f"x{i}"))
    with capture_logs() as logs:
        await clock.advance(500)
        await until(lambda: writer.failures == 1)
        # While the store is down, records keep being taken at once.
        for i in range(3, 6):
            writer.record(usage_record(request_id=f"x{i}"))
        assert writer.queued == 3
        await clock.advance(500)  # the first retry fails too
        await until(lambda: writer.failures == 2)
    assert [e["event"] for e in logs].count("usage_store_failed") == 1  # not once per retry
    db.broken = False
    await clock.advance(1000)  # the backoff has doubled
    await until(lambda: writer.written == 6)
    assert await stored(db) == [f"x{i}" for i in range(6)]  # each once
    assert writer.dropped == 0
    await writer.aclose()


async def test_aclose_writes_what_is_left_then_refuses(db: FlakyDatabase) -> None:
    clock = ManualClock(T0)
    writer = UsageWriter(clock=clock)
    await writer.start(db, retention_days=None)
    for i in range(7):
        writer.record(usage_record(request_id=f"c{i}"))
    await writer.aclose()  # without the clock moving
    assert len(await stored(db)) == 7
    writer.record(usage_record(request_id="late"))
    assert (writer.queued, writer.dropped) == (0, 1)


async def test_aclose_on_a_dead_store_is_bounded_and_counts_the_loss(db: FlakyDatabase) -> None:
    clock = ManualClock(T0)
    metrics = Metrics()
    writer = UsageWriter(metrics, clock=clock)
    await writer.start(db, retention_days=None)
    db.broken = True
    for i in range(4):
        writer.record(usage_record(request_id=f"d{i}"))
    await clock.advance(500)
    await until(lambda: writer.failures == 1)
    writer.record(usage_record(request_id="d4"))
    await writer.aclose(timeout_s=5)  # the backoff is cut short; one last try, then given up
    assert writer.dropped == 5
    assert b"palyra_usage_records_dropped_total 5.0" in metrics.render()


async def test_retention_purge_runs_at_start(db: FlakyDatabase) -> None:
    clock = ManualClock(T0 + 10 * 86_400_000)
    writer = UsageWriter(clock=clock)
    writer.record(usage_record(request_id="old", at_ms=T0))
    writer.record(usage_record(request_id="new", at_ms=T0 + 9 * 86_400_000))
    await writer.start(db, retention_days=None)
    await writer.flush()
    await writer.aclose()
    writer = UsageWriter(clock=clock)
    await writer.start(db, retention_days=5)
    async with asyncio.timeout(5):  # the purge runs as the writer starts
        while "old" in await stored(db):
            await asyncio.sleep(0.001)
    assert await stored(db) == ["new"]
    await writer.aclose()


async def test_payloads_are_kept_only_when_asked(db: FlakyDatabase) -> None:
    clock = ManualClock(T0)
    quiet = UsageWriter(clock=clock)
    loud = UsageWriter(clock=clock, log_payloads=True)
    quiet.record(usage_record(request_id="q", prompt="secret question", answer="secret answer"))
    loud.record(usage_record(request_id="l", prompt="hello", answer="x" * 40_000))
    for writer in (quiet, loud):
        await writer.start(db, retention_days=None)
        await writer.flush()
        await writer.aclose()
    rows = {r["request_id"]: r for r in await UsageStore(db).requests()}
    assert (rows["q"]["prompt"], rows["q"]["answer"]) == (None, None)
    assert rows["l"]["prompt"] == "hello" and len(rows["l"]["answer"]) == 32_768


async def test_disabled_ledger_still_counts_metrics(db: FlakyDatabase) -> None:
    metrics = Metrics()
    writer = UsageWriter(metrics, enabled=False, clock=ManualClock(T0))
    writer.record(usage_record(key_name="alpha", input_tokens=7, output_tokens=3, cost_usd=0.25))
    writer.record(usage_record(model="ghost", input_tokens=0, output_tokens=0, cost_usd=None))
    assert writer.queued == 0
    text = metrics.render().decode()
    assert 'palyra_usage_tokens_total{key="alpha",kind="input",model="gpt-4o"} 7.0' in text
    assert 'palyra_usage_tokens_total{key="alpha",kind="output",model="gpt-4o"} 3.0' in text
    assert 'palyra_usage_cost_usd_total{key="alpha",model="gpt-4o"} 0.25' in text
    assert 'model="ghost"' not in text  # nothing counted, no series
