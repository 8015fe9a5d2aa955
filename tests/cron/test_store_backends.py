"""The cron and agent-run stores on every state backend (PostgreSQL skips where no server
answers): the SQL is portable, claims are compare-and-set, records round-trip."""

from __future__ import annotations

from palyra.agents.store import RunFinish, RunStore
from palyra.cron.jobs import Job
from palyra.cron.schedule import Schedule
from palyra.cron.store import CronStore, Fire
from palyra.state.db import Database
from tests.cron.conftest import MINUTE, T0
from tests.state.conftest import database

__all__ = ["database"]  # the fixture, run once per backend


async def test_cron_store_claims_and_history(database: Database) -> None:
    store = CronStore(database)
    await store.migrate()
    job = Job(
        job_id="job_1",
        name="n",
        agent_id="default",
        prompt="p",
        schedule=Schedule("every", every_ms=MINUTE, anchor_ms=T0),
        created_at=T0,
        updated_at=T0,
        next_fire_at=T0 + MINUTE,
    )
    await store.insert_job(job)
    claim = {
        "expected_at": T0 + MINUTE,
        "next_at": T0 + 3 * MINUTE,
        "missed": [T0 + MINUTE],
        "missed_more": 0,
        "missed_reason": "missed",
        "fire": Fire(T0 + 2 * MINUTE, "catch_up"),
        "now_ms": T0 + 2 * MINUTE,
        "node": "node-a",
        "lease_until": T0 + 10 * MINUTE,
    }
    first, second = await store.claim_many([(job, claim), (job, claim)])
    assert first is not None and first.started is not None and first.missed == 1
    assert second is None  # the same tick, claimed again: the compare-and-set refuses
    retry = await store.finish_run(
        first.started["cron_run_id"],
        status="failed",
        now_ms=T0 + 2 * MINUTE,
        error_kind="provider_error",
        retry_at=T0 + 2 * MINUTE + 1000,
        node="node-a",
        lease_until=T0 + 10 * MINUTE,
    )
    assert retry is not None and retry["attempt"] == 2
    forbid = await store.claim(job, **{**claim, "expected_at": T0 + 3 * MINUTE, "missed": []})
    assert forbid is not None and forbid.skipped is not None
    assert await store.interrupt_orphans("node-a", T0 + 3 * MINUTE, at_start=True) == 1
    runs = await store.list_runs("job_1")
    assert sorted((r["status"], r["attempt"]) for r in runs) == [
        ("failed", 1),
        ("failed", 2),
        ("missed", 1),
        ("skipped", 1),
    ]
    fresh = await store.get_job("job_1")
    assert fresh is not None and fresh.next_fire_at == T0 + 3 * MINUTE
    assert await store.update_job(fresh, expected_next=T0) is False
    assert await store.update_job(fresh, expected_next=T0 + 3 * MINUTE) is True
    assert await store.purge(T0 + 100 * MINUTE) == 4
    assert await store.delete_job("job_1") is True


async def test_agent_run_store(database: Database) -> None:
    store = RunStore(database)
    await store.migrate()
    await store.create(
        run_id="run_1",
        agent_id="default",
        origin="api",
        principal="admin",
        session_id="s",
        auth_profile_id=None,
        model="",
        input="hi",
        started_at=T0,
        owner_node="node-a",
        lease_expires_at=T0 + MINUTE,
        first_event={"input": "hi"},
    )
    await store.append("run_1", 2, "model_text", T0 + 1, {"text": "hello"})
    finish = RunFinish("succeeded", None, None, 5, 2, 0, 1, "hello")
    assert await store.finish("run_1", 3, T0 + 2, finish, {"status": "succeeded"})
    assert not await store.finish("run_1", 4, T0 + 3, finish, {"status": "succeeded"})
    row = await store.get("run_1")
    assert row is not None and row["status"] == "succeeded" and row["prompt_tokens"] == 5
    events = await store.events("run_1")
    assert [e["type"] for e in events] == ["run_started", "model_text", "run_finished"]
    assert await store.purge(T0 + 1) == 1
