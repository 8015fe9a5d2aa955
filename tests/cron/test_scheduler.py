"""The scheduler on a hand-moved clock and a real SQLite store: firing, misfires across a
restart, crash recovery, concurrency policies, retries, two schedulers on one store, purge."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from palyra.cron.clock import ManualClock
from palyra.cron.store import CronStore, Fire
from palyra.errors import InvalidRequest
from palyra.state.db import Database, SqliteDatabase
from tests.cron.conftest import HOUR, MINUTE, T0, GateRunner, job_body, runs_of, start_cron
from tests.state.conftest import drop_schema, postgres_schema_url


async def wait_records(store: CronStore, job_id: str, count: int) -> None:
    async with asyncio.timeout(5):
        while len(await store.list_runs(job_id)) < count:
            await asyncio.sleep(0.001)


async def advance(clock: ManualClock, cron: object, ms: int) -> None:
    await clock.advance(ms)
    await cron.scheduler.settle()  # type: ignore[attr-defined]


async def test_a_due_job_fires_at_its_time_and_not_before(db: Database, clock: ManualClock) -> None:
    runner = GateRunner()
    cron = await start_cron(db, runner, clock)
    job = await cron.create(job_body({"every": "1m"}))
    assert job.next_fire_at == T0 + MINUTE
    await advance(clock, cron, MINUTE - 1)
    assert runner.calls == []
    await advance(clock, cron, 1)
    await cron.scheduler.wait_runs()
    await advance(clock, cron, MINUTE)
    await cron.scheduler.wait_runs()
    runs = await runs_of(cron.store, job.job_id)
    assert [(r["scheduled_at"], r["trigger"], r["status"]) for r in runs] == [
        (T0 + MINUTE, "schedule", "succeeded"),
        (T0 + 2 * MINUTE, "schedule", "succeeded"),
    ]
    assert runs[0]["prompt_tokens"] == 3 and runs[0]["output_excerpt"] == "done"
    assert runs[0]["agent_run_id"] == f"run_for_{runs[0]['cron_run_id']}"
    assert cron.scheduler.fire_lag_ms == [0, 0]
    assert (await cron.get(job.job_id)).next_fire_at == T0 + 3 * MINUTE
    await cron.aclose()


async def test_restart_with_missed_ticks_catch_up(db: Database, clock: ManualClock) -> None:
    runner = GateRunner()
    cron = await start_cron(db, runner, clock)
    job = await cron.create(job_body({"every": "1h"}))
    await cron.aclose()  # the daemon stops; five ticks pass
    await clock.set(T0 + 5 * HOUR + 30 * MINUTE)
    cron = await start_cron(db, runner, clock)
    await cron.scheduler.settle()
    await cron.scheduler.wait_runs()
    runs = await runs_of(cron.store, job.job_id)
    assert [(r["scheduled_at"], r["trigger"], r["status"]) for r in runs] == [
        (T0 + 1 * HOUR, "schedule", "missed"),
        (T0 + 2 * HOUR, "schedule", "missed"),
        (T0 + 3 * HOUR, "schedule", "missed"),
        (T0 + 4 * HOUR, "schedule", "missed"),
        (T0 + 5 * HOUR, "catch_up", "succeeded"),
    ]
    assert len(runner.calls) == 1
    assert (await cron.get(job.job_id)).next_fire_at == T0 + 6 * HOUR
    await cron.aclose()


async def test_restart_with_missed_ticks_skip(db: Database, clock: ManualClock) -> None:
    runner = GateRunner()
    cron = await start_cron(db, runner, clock)
    job = await cron.create(job_body({"every": "1h"}, misfire="skip"))
    await cron.aclose()
    await clock.set(T0 + 5 * HOUR + 30 * MINUTE)
    cron = await start_cron(db, runner, clock)
    await cron.scheduler.settle()
    runs = await runs_of(cron.store, job.job_id)
    assert [r["status"] for r in runs] == ["missed"] * 5
    assert "misfire = skip" in runs[0]["reason"]
    assert runner.calls == []
    # Back on schedule afterwards.
    await advance(clock, cron, 30 * MINUTE)
    await cron.scheduler.wait_runs()
    assert [c["scheduled_at"] for c in runner.calls] == [T0 + 6 * HOUR]
    await cron.aclose()


async def test_catch_up_only_within_the_window(db: Database, clock: ManualClock) -> None:
    runner = GateRunner()
    cron = await start_cron(db, runner, clock, catch_up_window_ms=10 * MINUTE)
    job = await cron.create(job_body({"cron": "0 * * * *"}))
    await cron.aclose()
    await clock.set(T0 + 2 * HOUR + 30 * MINUTE)  # latest tick is 30 min old > 10 min window
    cron = await start_cron(db, runner, clock, catch_up_window_ms=10 * MINUTE)
    await cron.scheduler.settle()
    runs = await runs_of(cron.store, job.job_id)
    assert [r["status"] for r in runs] == ["missed", "missed"]
    assert "catch_up_window_ms" in runs[-1]["reason"]
    assert runner.calls == []
    await cron.aclose()


async def test_runs_left_running_by_a_crash_are_interrupted(
    db: Database, clock: ManualClock
) -> None:
    runner = GateRunner()
    cron = await start_cron(db, runner, clock)
    store = cron.store

    async def running_record(node: str, lease_until: int) -> str:
        job = await cron.create(job_body({"every": "1h"}))
        claim = await store.claim(
            job,
            expected_at=None,
            next_at=None,
            missed=[],
            missed_more=0,
            missed_reason="",
            fire=Fire(clock.now_ms(), "manual"),
            now_ms=clock.now_ms(),
            node=node,
            lease_until=lease_until,
        )
        assert claim is not None and claim.started is not None
        return str(claim.started["cron_run_id"])

    await cron.aclose()
    # Left behind as if each daemon had died mid-run (no shutdown path ran for them):
    mine = await running_record("node-a", T0 + HOUR)  # this daemon, before its restart
    dead = await running_record("node-b", T0 - 1)  # another daemon whose lease ran out
    alive = await running_record("node-c", T0 + HOUR)  # another daemon, still renewing
    cron = await start_cron(db, runner, clock)
    statuses = {
        r["cron_run_id"]: r
        for job in await cron.list_jobs()
        for r in await runs_of(cron.store, job.job_id)
    }
    assert statuses[mine]["status"] == "failed"
    assert statuses[mine]["error_kind"] == "interrupted"
    assert statuses[dead]["error_kind"] == "interrupted"
    assert statuses[alive]["status"] == "running"
    await cron.aclose()


async def test_forbid_skips_the_tick_with_the_reason(db: Database, clock: ManualClock) -> None:
    runner = GateRunner(auto=False)
    cron = await start_cron(db, runner, clock)
    job = await cron.create(job_body({"every": "1m"}))
    await advance(clock, cron, MINUTE)
    await runner.wait_calls(1)
    await advance(clock, cron, MINUTE)
    runner.gates[0].set()
    await cron.scheduler.wait_runs()
    runs = await runs_of(cron.store, job.job_id)
    assert [(r["scheduled_at"], r["status"]) for r in runs] == [
        (T0 + MINUTE, "succeeded"),
        (T0 + 2 * MINUTE, "skipped"),
    ]
    assert "concurrency = forbid" in runs[1]["reason"]
    assert len(runner.calls) == 1
    await cron.aclose()


async def test_queue_one_keeps_one_waiting_tick(db: Database, clock: ManualClock) -> None:
    runner = GateRunner(auto=False)
    cron = await start_cron(db, runner, clock)
    job = await cron.create(job_body({"every": "1m"}, concurrency="queue_one"))
    await advance(clock, cron, MINUTE)
    await runner.wait_calls(1)
    await advance(clock, cron, MINUTE)  # waits
    await advance(clock, cron, MINUTE)  # a second waiting tick: skipped
    assert (await cron.get(job.job_id)).queued_fire_at == T0 + 2 * MINUTE
    runner.gates[0].set()
    await runner.wait_calls(2)
    assert runner.calls[1]["scheduled_at"] == T0 + 2 * MINUTE
    runner.gates[1].set()
    await cron.scheduler.wait_runs()
    runs = await runs_of(cron.store, job.job_id)
    assert sorted((r["scheduled_at"], r["status"]) for r in runs) == [
        (T0 + MINUTE, "succeeded"),
        (T0 + 2 * MINUTE, "succeeded"),
        (T0 + 3 * MINUTE, "skipped"),
    ]
    skipped = next(r for r in runs if r["status"] == "skipped")
    assert "queue_one" in skipped["reason"]
    assert (await cron.get(job.job_id)).queued_fire_at is None
    await cron.aclose()


async def test_replace_cancels_the_running_one(db: Database, clock: ManualClock) -> None:
    runner = GateRunner(auto=False)
    cron = await start_cron(db, runner, clock)
    job = await cron.create(job_body({"every": "1m"}, concurrency="replace"))
    await advance(clock, cron, MINUTE)
    await runner.wait_calls(1)
    await advance(clock, cron, MINUTE)
    await runner.wait_calls(2)
    assert runner.cancelled == 1
    runner.gates[1].set()
    await cron.scheduler.wait_runs()
    runs = await runs_of(cron.store, job.job_id)
    assert [(r["scheduled_at"], r["status"]) for r in runs] == [
        (T0 + MINUTE, "cancelled"),
        (T0 + 2 * MINUTE, "succeeded"),
    ]
    assert "replaced" in runs[0]["reason"]
    await cron.aclose()


async def test_retries_back_off_and_each_attempt_is_a_record(
    db: Database, clock: ManualClock
) -> None:
    runner = GateRunner(script=["failed", "failed", "succeeded"])
    cron = await start_cron(db, runner, clock)
    job = await cron.create(
        job_body({"every": "1d"}, retry={"max_attempts": 3, "backoff_ms": 1000})
    )
    result = await cron.trigger(job.job_id)
    assert result.started is not None
    # The clock moves only once each failed attempt has recorded its retry.
    await wait_records(cron.store, job.job_id, 2)
    await advance(clock, cron, 999)
    assert len(runner.calls) == 1  # still backing off
    await advance(clock, cron, 1)
    await wait_records(cron.store, job.job_id, 3)
    await advance(clock, cron, 1999)
    assert len(runner.calls) == 2  # the backoff doubled
    await advance(clock, cron, 1)
    await cron.scheduler.wait_runs()
    runs = await runs_of(cron.store, job.job_id)
    assert [(r["trigger"], r["attempt"], r["status"]) for r in runs] == [
        ("manual", 1, "failed"),
        ("manual", 2, "failed"),
        ("manual", 3, "succeeded"),
    ]
    assert runs[0]["error_kind"] == "provider_error"
    assert {r["scheduled_at"] for r in runs} == {T0}
    assert [r["started_at"] for r in runs] == [T0, T0 + 1000, T0 + 3000]
    await cron.aclose()


async def test_two_schedulers_on_one_store_run_each_tick_once(
    tmp_path: Path, clock: ManualClock
) -> None:
    # Two connections to one SQLite file: as two daemons sharing a store.
    db_a = await SqliteDatabase.open(tmp_path / "shared.db")
    db_b = await SqliteDatabase.open(tmp_path / "shared.db")
    runner = GateRunner()
    a = await start_cron(db_a, runner, clock, node="node-a")
    jobs = [await a.create(job_body({"every": "1m"}, name=f"job {i}")) for i in range(20)]
    b = await start_cron(db_b, runner, clock, node="node-b")
    for _ in range(5):
        await clock.advance(MINUTE)
        await a.scheduler.settle()
        await b.scheduler.settle()
        await a.scheduler.wait_runs()
        await b.scheduler.wait_runs()
    ticks = [(c["job_id"], c["scheduled_at"]) for c in runner.calls]
    assert len(ticks) == 100
    assert len(set(ticks)) == 100
    assert a.scheduler.fired + b.scheduler.fired == 100
    for job in jobs:
        runs = await runs_of(a.store, job.job_id)
        assert [r["status"] for r in runs] == ["succeeded"] * 5
    await a.aclose()
    await b.aclose()
    await db_a.close()
    await db_b.close()


async def test_three_schedulers_on_postgres_run_each_tick_once(clock: ManualClock) -> None:
    # As three daemons sharing PostgreSQL (tests/test_scale_out.py starts the processes):
    # twenty one-second ticks on a clock moved by hand, each run once, none lost.
    from palyra.state.postgres import PostgresDatabase

    url, schema = await postgres_schema_url()
    dbs = [await PostgresDatabase.open(url) for _ in range(3)]
    runner = GateRunner()
    try:
        services = [
            await start_cron(db, runner, clock, node=f"node-{i}") for i, db in enumerate(dbs)
        ]
        job = await services[0].create(job_body({"every": "1s"}))
        for _ in range(20):
            await clock.advance(1000)
            for service in services:
                await service.scheduler.settle()
            for service in services:
                await service.scheduler.wait_runs()
        ticks = [c["scheduled_at"] for c in runner.calls]
        assert len(ticks) == len(set(ticks)) == 20
        assert all(b - a == 1000 for a, b in itertools.pairwise(sorted(ticks))), ticks
        assert sum(s.scheduler.fired for s in services) == 20
        runs = await runs_of(services[2].store, job.job_id)
        assert [r["status"] for r in runs] == ["succeeded"] * 20
        for service in services:
            await service.aclose()
    finally:
        for db in dbs:
            await db.close()
        await drop_schema(schema)


async def test_history_older_than_retention_is_purged(db: Database, clock: ManualClock) -> None:
    runner = GateRunner()
    cron = await start_cron(db, runner, clock, history_retention_days=1)
    job = await cron.create(job_body({"every": "1h"}))
    await advance(clock, cron, HOUR)
    await cron.scheduler.wait_runs()
    await advance(clock, cron, 24 * HOUR)
    await cron.scheduler.wait_runs()
    assert len(await runs_of(cron.store, job.job_id)) == 25
    await clock.advance(1)  # the first record is now a day and a millisecond old
    await cron.scheduler.purge()
    runs = await runs_of(cron.store, job.job_id)
    assert runs[0]["scheduled_at"] >= clock.now_ms() - 24 * HOUR
    assert len(runs) == 24
    await cron.aclose()


async def test_disabled_time_is_skipped_on_purpose(db: Database, clock: ManualClock) -> None:
    runner = GateRunner()
    cron = await start_cron(db, runner, clock)
    job = await cron.create(job_body({"every": "1h"}))
    await cron.update(job.job_id, {"enabled": False})
    await advance(clock, cron, 3 * HOUR + MINUTE)
    job = await cron.update(job.job_id, {"enabled": True})
    assert job.next_fire_at == T0 + 4 * HOUR
    await cron.scheduler.settle()
    assert await runs_of(cron.store, job.job_id) == []
    await cron.aclose()


async def test_an_at_job_fires_once_and_is_done(db: Database, clock: ManualClock) -> None:
    runner = GateRunner()
    cron = await start_cron(db, runner, clock)
    with pytest.raises(InvalidRequest, match="not in the future") as refused:
        await cron.create(job_body({"at": "2026-01-05T01:00:00+01:00"}))  # T0 itself
    assert refused.value.param == "schedule.at"
    job = await cron.create(job_body({"at": "2026-01-05T02:00:00+01:00"}))  # T0 + 1h
    assert cron.upcoming(job) == [T0 + HOUR]
    await advance(clock, cron, 2 * HOUR)
    await cron.scheduler.wait_runs()
    job = await cron.get(job.job_id)
    assert job.state == "done" and cron.upcoming(job) == []
    await advance(clock, cron, 24 * HOUR)
    assert [c["scheduled_at"] for c in runner.calls] == [T0 + HOUR]
    await cron.aclose()


async def test_store_refuses_a_stale_claim(db: Database, clock: ManualClock) -> None:
    cron = await start_cron(db, GateRunner(), clock)
    job = await cron.create(job_body({"every": "1m"}))
    store: CronStore = cron.store
    kwargs = dict(
        missed=[],
        missed_more=0,
        missed_reason="",
        fire=None,
        now_ms=T0,
        node="x",
        lease_until=T0,
    )
    assert await store.claim(job, expected_at=T0 + MINUTE, next_at=T0 + 2 * MINUTE, **kwargs)
    assert (
        await store.claim(job, expected_at=T0 + MINUTE, next_at=T0 + 2 * MINUTE, **kwargs) is None
    )
    await cron.aclose()
