"""Cron jobs and their run history in the state store (portable SQL only).

Claiming a tick is one transaction: a compare-and-set of the job's stored `next_fire_at`
(only the daemon whose UPDATE changed the row runs the tick), the `missed` records of ticks
passed over, and the run record that the concurrency policy decides on. Either all of it is
written or none; two daemons sharing the store never run the same tick twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from palyra.cron.jobs import Job
from palyra.cron.schedule import Schedule
from palyra.state.db import Database, Row

MIGRATIONS = [
    "CREATE TABLE cron_jobs ("
    " job_id TEXT PRIMARY KEY, name TEXT NOT NULL, agent_id TEXT NOT NULL,"
    " prompt TEXT NOT NULL, schedule_kind TEXT NOT NULL, schedule_expr TEXT NOT NULL,"
    " timezone TEXT NOT NULL, every_ms BIGINT NOT NULL, at_ms BIGINT NOT NULL,"
    " enabled BIGINT NOT NULL, misfire TEXT NOT NULL, concurrency TEXT NOT NULL,"
    " max_attempts BIGINT NOT NULL, backoff_ms BIGINT NOT NULL, auth_profile_id TEXT,"
    " next_fire_at BIGINT, queued_fire_at BIGINT,"
    " created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);"
    "CREATE INDEX cron_jobs_due ON cron_jobs (enabled, next_fire_at);"
    "CREATE TABLE cron_runs ("
    " cron_run_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, scheduled_at BIGINT NOT NULL,"
    " trigger TEXT NOT NULL, attempt BIGINT NOT NULL, status TEXT NOT NULL, reason TEXT,"
    " started_at BIGINT, finished_at BIGINT,"
    " prompt_tokens BIGINT NOT NULL DEFAULT 0, completion_tokens BIGINT NOT NULL DEFAULT 0,"
    " tool_calls BIGINT NOT NULL DEFAULT 0, error_kind TEXT, error_message TEXT,"
    " output_excerpt TEXT, agent_run_id TEXT, owner_node TEXT, lease_expires_at BIGINT,"
    " cancel_requested BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL);"
    "CREATE INDEX cron_runs_job ON cron_runs (job_id, created_at);"
    "CREATE INDEX cron_runs_status ON cron_runs (status, owner_node)",
]

_JOB_COLUMNS = (
    "job_id, name, agent_id, prompt, schedule_kind, schedule_expr, timezone, every_ms, at_ms,"
    " enabled, misfire, concurrency, max_attempts, backoff_ms, auth_profile_id, next_fire_at,"
    " queued_fire_at, created_at, updated_at"
)
_RUN_COLUMNS = (
    "cron_run_id, job_id, scheduled_at, trigger, attempt, status, reason, started_at,"
    " finished_at, prompt_tokens, completion_tokens, tool_calls, error_kind, error_message,"
    " output_excerpt, agent_run_id, owner_node, lease_expires_at, cancel_requested, created_at"
)
# Missed ticks recorded one by one, at most this many per claim; the rest are counted in one
# more record, so a year-long outage of an every-second job does not write 31 million rows.
MAX_MISSED_RECORDS = 100


def new_run_id() -> str:
    return "crun_" + uuid.uuid4().hex


def job_from_row(row: Row) -> Job:
    schedule = Schedule(
        row["schedule_kind"],
        expr=row["schedule_expr"],
        timezone=row["timezone"],
        every_ms=row["every_ms"],
        at_ms=row["at_ms"],
        anchor_ms=row["created_at"],
    )
    return Job(
        job_id=row["job_id"],
        name=row["name"],
        agent_id=row["agent_id"],
        prompt=row["prompt"],
        schedule=schedule,
        enabled=bool(row["enabled"]),
        misfire=row["misfire"],
        concurrency=row["concurrency"],
        max_attempts=row["max_attempts"],
        backoff_ms=row["backoff_ms"],
        auth_profile_id=row["auth_profile_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        next_fire_at=row["next_fire_at"],
        queued_fire_at=row["queued_fire_at"],
    )


def _job_params(job: Job) -> tuple[Any, ...]:
    s = job.schedule
    return (
        job.name,
        job.agent_id,
        job.prompt,
        s.kind,
        s.expr,
        s.timezone,
        s.every_ms,
        s.at_ms,
        1 if job.enabled else 0,
        job.misfire,
        job.concurrency,
        job.max_attempts,
        job.backoff_ms,
        job.auth_profile_id,
        job.next_fire_at,
        job.queued_fire_at,
        job.created_at,
        job.updated_at,
    )


@dataclass(slots=True)
class Fire:
    """A tick to run: when it was due and why it runs."""

    scheduled_at: int
    trigger: str  # schedule | manual | catch_up


@dataclass(slots=True)
class ClaimResult:
    started: Row | None = None  # the new `running` record
    skipped: Row | None = None  # the `skipped` record, when the policy refused the tick
    queued: bool = False  # queue_one parked the tick
    replaced: list[str] = field(default_factory=list)  # cron runs asked to cancel
    missed: int = 0


_INSERT_JOB = (
    f"INSERT INTO cron_jobs ({_JOB_COLUMNS}) VALUES "
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class CronStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def migrate(self) -> None:
        await self.db.migrate("cron", MIGRATIONS)

    # --- jobs -------------------------------------------------------------------------

    async def insert_job(self, job: Job) -> None:
        await self.db.execute(_INSERT_JOB, job.job_id, *_job_params(job))

    async def insert_jobs(self, jobs: list[Job]) -> None:
        """Many jobs in one transaction (imports, benchmarks): all or none."""
        async with self.db.transaction() as tx:
            for job in jobs:
                await tx.execute(_INSERT_JOB, job.job_id, *_job_params(job))

    async def update_job(self, job: Job, *, expected_next: int | None) -> bool:
        """Write the job's fields if its next fire time is still `expected_next`; False when
        a claim moved it meanwhile (the caller re-reads and tries again). The queued tick
        is the scheduler's and is never written here."""
        params = _job_params(job)
        changed = await self.db.execute(
            "UPDATE cron_jobs SET name = ?, agent_id = ?, prompt = ?, schedule_kind = ?,"
            " schedule_expr = ?, timezone = ?, every_ms = ?, at_ms = ?, enabled = ?,"
            " misfire = ?, concurrency = ?, max_attempts = ?, backoff_ms = ?,"
            " auth_profile_id = ?, next_fire_at = ?, updated_at = ?"
            " WHERE job_id = ? AND COALESCE(next_fire_at, -1) = ?",
            # Every field but queued_fire_at (the scheduler's) and created_at (fixed).
            *params[:15],
            params[17],
            job.job_id,
            -1 if expected_next is None else expected_next,
        )
        return changed == 1

    async def delete_job(self, job_id: str) -> bool:
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM cron_runs WHERE job_id = ?", job_id)
            return bool(await tx.execute("DELETE FROM cron_jobs WHERE job_id = ?", job_id) == 1)

    async def get_job(self, job_id: str) -> Job | None:
        row = await self.db.fetch_one(
            f"SELECT {_JOB_COLUMNS} FROM cron_jobs WHERE job_id = ?", job_id
        )
        return None if row is None else job_from_row(row)

    async def get_jobs(self, job_ids: list[str]) -> dict[str, Job]:
        if not job_ids:
            return {}
        marks = ", ".join("?" for _ in job_ids)
        rows = await self.db.fetch_all(
            f"SELECT {_JOB_COLUMNS} FROM cron_jobs WHERE job_id IN ({marks})", *job_ids
        )
        return {row["job_id"]: job_from_row(row) for row in rows}

    async def list_jobs(self) -> list[Job]:
        rows = await self.db.fetch_all(
            f"SELECT {_JOB_COLUMNS} FROM cron_jobs ORDER BY created_at, job_id"
        )
        return [job_from_row(row) for row in rows]

    async def due_index(self) -> list[tuple[str, int]]:
        """(job_id, next_fire_at) of every enabled job with a tick ahead: the heap's seed."""
        rows = await self.db.fetch_all(
            "SELECT job_id, next_fire_at FROM cron_jobs"
            " WHERE enabled = 1 AND next_fire_at IS NOT NULL"
        )
        return [(row["job_id"], int(row["next_fire_at"])) for row in rows]

    async def queued_jobs(self) -> list[str]:
        rows = await self.db.fetch_all(
            "SELECT job_id FROM cron_jobs WHERE queued_fire_at IS NOT NULL"
        )
        return [row["job_id"] for row in rows]

    # --- claims -----------------------------------------------------------------------

    async def claim(self, job: Job, **claim: Any) -> ClaimResult | None:
        """Atomically: move the job's next fire time from `expected_at` to `next_at` (skipped
        when `expected_at` is None: a manual trigger), record the missed ticks, and apply the
        concurrency policy to `fire`. None when another scheduler claimed the tick first."""
        async with self.db.transaction() as tx:
            return await _claim_in(tx, job, **claim)

    async def claim_many(
        self, claims: list[tuple[Job, dict[str, Any]]]
    ) -> list[ClaimResult | None]:
        """Several claims in one transaction: ticks due together cost one commit (one fsync),
        not one each. Each claim still succeeds or loses on its own compare-and-set."""
        async with self.db.transaction() as tx:
            return [await _claim_in(tx, job, **claim) for job, claim in claims]

    async def take_queued(
        self, job_id: str, *, now_ms: int, node: str, lease_until: int
    ) -> Row | None:
        """Start the tick queue_one parked, if any and if nothing of the job runs now."""
        async with self.db.transaction() as tx:
            row = await tx.fetch_one(
                "SELECT queued_fire_at FROM cron_jobs WHERE job_id = ?", job_id
            )
            if row is None or row["queued_fire_at"] is None:
                return None
            running = await tx.fetch_one(
                "SELECT cron_run_id FROM cron_runs WHERE job_id = ? AND status = 'running'",
                job_id,
            )
            if running is not None:
                return None
            at = int(row["queued_fire_at"])
            taken = await tx.execute(
                "UPDATE cron_jobs SET queued_fire_at = NULL"
                " WHERE job_id = ? AND queued_fire_at = ?",
                job_id,
                at,
            )
            if not taken:
                return None
            return await _insert_run(
                tx, job_id, at, "schedule", 1, "running", now_ms, node=node, lease_until=lease_until
            )

    async def set_agent_run(self, cron_run_id: str, agent_run_id: str) -> None:
        await self.db.execute(
            "UPDATE cron_runs SET agent_run_id = ? WHERE cron_run_id = ?",
            agent_run_id,
            cron_run_id,
        )

    async def finish_run(
        self,
        cron_run_id: str,
        *,
        status: str,
        now_ms: int,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        tool_calls: int = 0,
        error_kind: str | None = None,
        error_message: str | None = None,
        output_excerpt: str | None = None,
        reason: str | None = None,
        retry_at: int | None = None,
        node: str | None = None,
        lease_until: int | None = None,
    ) -> Row | None:
        """Close a running record. With `retry_at`, the next attempt's record is written in
        the same transaction (status `running`, starting at `retry_at`): the job counts as
        busy during the backoff, and a crash in it leaves a record that start-up marks
        interrupted instead of a retry that silently never happens. Returns that record."""
        async with self.db.transaction() as tx:
            current = await tx.fetch_one(
                f"SELECT {_RUN_COLUMNS} FROM cron_runs WHERE cron_run_id = ?", cron_run_id
            )
            changed = await tx.execute(
                "UPDATE cron_runs SET status = ?, finished_at = ?, prompt_tokens = ?,"
                " completion_tokens = ?, tool_calls = ?, error_kind = ?, error_message = ?,"
                " output_excerpt = ?, reason = COALESCE(?, reason), lease_expires_at = NULL"
                " WHERE cron_run_id = ? AND status = 'running'",
                status,
                now_ms,
                prompt_tokens,
                completion_tokens,
                tool_calls,
                error_kind,
                error_message,
                output_excerpt,
                reason,
                cron_run_id,
            )
            if not changed or current is None or retry_at is None:
                return None
            return await _insert_run(
                tx,
                current["job_id"],
                current["scheduled_at"],
                current["trigger"],
                int(current["attempt"]) + 1,
                "running",
                retry_at,
                reason=f"retry of attempt {current['attempt']}",
                node=node,
                lease_until=lease_until,
            )

    # --- leases, orphans, history -----------------------------------------------------

    async def renew_leases(self, node: str, until_ms: int) -> None:
        await self.db.execute(
            "UPDATE cron_runs SET lease_expires_at = ? WHERE owner_node = ? AND status = 'running'",
            until_ms,
            node,
        )

    async def cancel_requests(self, node: str) -> list[str]:
        rows = await self.db.fetch_all(
            "SELECT cron_run_id FROM cron_runs"
            " WHERE owner_node = ? AND status = 'running' AND cancel_requested = 1",
            node,
        )
        return [row["cron_run_id"] for row in rows]

    async def interrupt_orphans(self, node: str, now_ms: int, *, at_start: bool) -> int:
        """`failed` / `interrupted` for running records whose daemon is gone: this node's own
        at start-up, and any whose lease ran out."""
        return await self.db.execute(
            "UPDATE cron_runs SET status = 'failed', error_kind = 'interrupted',"
            " error_message = 'the daemon running this job stopped before it finished',"
            " finished_at = ?, lease_expires_at = NULL"
            " WHERE status = 'running' AND ((owner_node = ? AND ? = 1) OR lease_expires_at < ?)",
            now_ms,
            node,
            1 if at_start else 0,
            now_ms,
        )

    async def list_runs(self, job_id: str, limit: int = 50) -> list[Row]:
        return await self.db.fetch_all(
            f"SELECT {_RUN_COLUMNS} FROM cron_runs WHERE job_id = ?"
            " ORDER BY created_at DESC, scheduled_at DESC, attempt DESC LIMIT ?",
            job_id,
            limit,
        )

    async def get_run(self, cron_run_id: str) -> Row | None:
        return await self.db.fetch_one(
            f"SELECT {_RUN_COLUMNS} FROM cron_runs WHERE cron_run_id = ?", cron_run_id
        )

    async def purge(self, before_ms: int) -> int:
        # A retention longer than the time since 1970 puts the cutoff so far back that it
        # overflows a 64-bit column; nothing is that old, so the cutoff is 0 instead.
        return await self.db.execute(
            "DELETE FROM cron_runs WHERE created_at < ? AND status <> 'running'",
            max(before_ms, 0),
        )


async def _claim_in(
    tx: Database,
    job: Job,
    *,
    expected_at: int | None,
    next_at: int | None,
    missed: list[int],
    missed_more: int,
    missed_reason: str,
    fire: Fire | None,
    now_ms: int,
    node: str,
    lease_until: int,
) -> ClaimResult | None:
    """One claim inside the caller's transaction (see `CronStore.claim`)."""
    result = ClaimResult(missed=len(missed) + missed_more)
    if expected_at is not None:
        changed = await tx.execute(
            "UPDATE cron_jobs SET next_fire_at = ?"
            " WHERE job_id = ? AND enabled = 1 AND next_fire_at = ?",
            next_at,
            job.job_id,
            expected_at,
        )
        if changed != 1:
            return None
    for index, at in enumerate(missed):
        reason = missed_reason
        if index == 0 and missed_more:
            reason += f"; {missed_more} earlier ticks were missed too"
        await _insert_run(tx, job.job_id, at, "schedule", 1, "missed", now_ms, reason=reason)
    if fire is None:
        return result
    running = await tx.fetch_all(
        "SELECT cron_run_id FROM cron_runs WHERE job_id = ? AND status = 'running'",
        job.job_id,
    )
    if running and job.concurrency == "forbid":
        result.skipped = await _insert_run(
            tx,
            job.job_id,
            fire.scheduled_at,
            fire.trigger,
            1,
            "skipped",
            now_ms,
            reason="the previous run was still running (concurrency = forbid)",
        )
        return result
    if running and job.concurrency == "queue_one":
        parked = await tx.execute(
            "UPDATE cron_jobs SET queued_fire_at = ? WHERE job_id = ? AND queued_fire_at IS NULL",
            fire.scheduled_at,
            job.job_id,
        )
        if parked:
            result.queued = True
        else:
            result.skipped = await _insert_run(
                tx,
                job.job_id,
                fire.scheduled_at,
                fire.trigger,
                1,
                "skipped",
                now_ms,
                reason="a tick was already waiting (concurrency = queue_one)",
            )
        return result
    if running:  # replace
        result.replaced = [row["cron_run_id"] for row in running]
        await tx.execute(
            "UPDATE cron_runs SET cancel_requested = 1 WHERE job_id = ? AND status = 'running'",
            job.job_id,
        )
    result.started = await _insert_run(
        tx,
        job.job_id,
        fire.scheduled_at,
        fire.trigger,
        1,
        "running",
        now_ms,
        node=node,
        lease_until=lease_until,
    )
    return result


async def _insert_run(
    tx: Database,
    job_id: str,
    scheduled_at: int,
    trigger: str,
    attempt: int,
    status: str,
    now_ms: int,
    *,
    reason: str | None = None,
    node: str | None = None,
    lease_until: int | None = None,
) -> Row:
    running = status == "running"
    row: Row = {
        "cron_run_id": new_run_id(),
        "job_id": job_id,
        "scheduled_at": scheduled_at,
        "trigger": trigger,
        "attempt": attempt,
        "status": status,
        "reason": reason,
        "started_at": now_ms if running else None,
        "finished_at": None if running else now_ms,
        "owner_node": node,
        "lease_expires_at": lease_until if running else None,
        "created_at": now_ms,
    }
    await tx.execute(
        "INSERT INTO cron_runs (cron_run_id, job_id, scheduled_at, trigger, attempt, status,"
        " reason, started_at, finished_at, owner_node, lease_expires_at, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        *row.values(),
    )
    return row


def run_view(row: Row) -> dict[str, Any]:
    prompt = row.get("prompt_tokens") or 0
    completion = row.get("completion_tokens") or 0
    return {
        "cron_run_id": row["cron_run_id"],
        "job_id": row["job_id"],
        "scheduled_at_ms": row["scheduled_at"],
        "trigger": row["trigger"],
        "attempt": row["attempt"],
        "status": row["status"],
        "reason": row.get("reason"),
        "started_at_ms": row.get("started_at"),
        "finished_at_ms": row.get("finished_at"),
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
        "tool_calls": row.get("tool_calls") or 0,
        "error_kind": row.get("error_kind"),
        "error_message": row.get("error_message"),
        "output_excerpt": row.get("output_excerpt"),
        "agent_run_id": row.get("agent_run_id"),
    }
