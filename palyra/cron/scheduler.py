"""The scheduler: sleeps until the next due tick, claims it, runs it, records it.

A min-heap holds (next_fire_at, job_id) of the enabled jobs; the loop sleeps until the top is
due or until `notify` wakes it (a job was added, changed or removed), so 10,000 idle jobs cost
nothing between ticks. A due tick is claimed with a compare-and-set on the stored next fire
time (see `CronStore.claim`); ticks the daemon slept through are recorded as `missed`, and with
`misfire = "catch_up"` the latest one within `catch_up_window_ms` runs once.

Runs are tasks of their own; each attempt is its own record. Running records carry this node's
id and a lease the heartbeat renews, so a daemon that died is noticed: at its own restart, or by
any daemon sharing the store once the lease has run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from palyra.config import CronConfig
from palyra.cron.clock import Clock
from palyra.cron.jobs import Job
from palyra.cron.schedule import Schedule, ScheduleError
from palyra.cron.store import MAX_MISSED_RECORDS, ClaimResult, CronStore, Fire
from palyra.redact import redact_secrets
from palyra.state.db import Row
from palyra.tasks import cancel_and_wait

log = structlog.get_logger("palyra.cron")

# A tick found due later than this is a misfire, not a slightly late run.
MISFIRE_GRACE_MS = 60_000
# Ticks scanned one by one when working out what was missed; past this, only the most recent
# stretch (the catch-up window) is scanned and the rest counted as "more".
SCAN_LIMIT = 10_000
RESYNC_EVERY_S = 60.0  # re-read the due index each minute: other daemons may add jobs
PURGE_EVERY_S = 3600.0
EXCERPT_CHARS = 500
# Ticks due together are claimed in transactions of up to this many (one commit each).
CLAIM_BATCH = 200


@dataclass(slots=True)
class AttemptResult:
    status: str  # succeeded | failed | cancelled
    error_kind: str | None = None
    error_message: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: int = 0
    output: str | None = None


class JobRunner(Protocol):
    """Runs one attempt of a job. `link` records the id of the work it started (the agent
    run). Cancelling the awaiting task must stop that work."""

    async def __call__(
        self, job: Job, record: Row, link: Callable[[str], Awaitable[None]]
    ) -> AttemptResult: ...


@dataclass(eq=False)
class _Sequence:
    """One tick's attempts, run in order by one task."""

    job: Job
    record: Row
    task: asyncio.Task[None] | None = None
    cancel_reason: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class DueTicks:
    ticks: list[int]  # due ticks, oldest first (only the most recent when `more` > 0)
    more: int  # further older ticks that were not listed


def due_ticks(schedule: Schedule, first: int, now: int, window_ms: int) -> DueTicks:
    """The ticks from `first` (a tick) up to `now`."""
    ticks = list(schedule.between(first - 1, now, SCAN_LIMIT))
    if len(ticks) < SCAN_LIMIT:
        return DueTicks(ticks, 0)
    start = max(first, now - max(window_ms, MISFIRE_GRACE_MS))
    recent = list(schedule.between(start, now, SCAN_LIMIT))
    if schedule.kind == "every" and recent:
        skipped = (recent[0] - first) // schedule.every_ms
    else:
        skipped = SCAN_LIMIT  # at least this many; counting them all could take minutes
    return DueTicks(recent, skipped)


class Scheduler:
    def __init__(
        self,
        store: CronStore,
        runner: JobRunner,
        *,
        clock: Clock,
        node_id: str,
        config: CronConfig,
        heartbeat: bool = True,
    ) -> None:
        self.store = store
        self.runner = runner
        self.clock = clock
        self.node_id = node_id
        self.config = config
        self._heartbeat_enabled = heartbeat
        self._heap: list[tuple[int, str]] = []
        self._due: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._sequences: dict[str, _Sequence] = {}  # by the record id currently running
        self._live: set[_Sequence] = set()
        self._slots = asyncio.Semaphore(config.max_concurrent_runs)
        self._tasks: list[asyncio.Task[None]] = []
        self.lease_ms = config.run_lease_ms
        self.fired = 0  # ticks this scheduler claimed and started (benchmarks read it)
        self.fire_lag_ms: list[int] = []  # claim time minus due time, per claimed tick

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.migrate()
        now = self.clock.now_ms()
        interrupted = await self.store.interrupt_orphans(self.node_id, now, at_start=True)
        if interrupted:
            log.warning("cron_runs_interrupted", count=interrupted)
        await self._resync()
        for job_id in await self.store.queued_jobs():
            await self._start_queued(job_id)
        await self.purge()
        self._tasks.append(asyncio.create_task(self._loop(), name="cron-loop"))
        if self._heartbeat_enabled:
            self._tasks.append(asyncio.create_task(self._heartbeat(), name="cron-heartbeat"))

    async def aclose(self) -> None:
        await cancel_and_wait(*self._tasks)
        for sequence in list(self._sequences.values()):
            await self._cancel(sequence, "interrupted")

    def notify(self, job_id: str, next_fire_at: int | None) -> None:
        """A job was created, changed or deleted (None: nothing to schedule)."""
        if next_fire_at is None:
            self._due.pop(job_id, None)
        else:
            self._push(job_id, next_fire_at)
        self._wake.set()

    def _push(self, job_id: str, at: int) -> None:
        self._due[job_id] = at
        heapq.heappush(self._heap, (at, job_id))
        # Stale entries are skipped when popped; rebuild when they outnumber live ones, so
        # a job edited a million times does not grow the heap without bound.
        if len(self._heap) > 2 * len(self._due) + 1024:
            self._heap = [(at, jid) for jid, at in self._due.items()]
            heapq.heapify(self._heap)

    async def _resync(self) -> None:
        index = await self.store.due_index()
        self._due = {}
        self._heap = []
        for job_id, at in index:
            self._due[job_id] = at
        self._heap = [(at, job_id) for job_id, at in self._due.items()]
        heapq.heapify(self._heap)
        self._wake.set()

    # --- the loop -----------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            now = self.clock.now_ms()
            while self._heap and self._heap[0][0] <= now:
                due: list[tuple[str, int]] = []
                while self._heap and self._heap[0][0] <= now and len(due) < CLAIM_BATCH:
                    at, job_id = heapq.heappop(self._heap)
                    if self._due.get(job_id) != at:
                        continue  # stale: the job changed since this entry was pushed
                    del self._due[job_id]
                    due.append((job_id, at))
                try:
                    await self._dispatch(due)
                except Exception:
                    # The ticks stay claimable in the store; the next resync retries them.
                    log.exception("cron_dispatch_failed", jobs=[job_id for job_id, _ in due])
                now = self.clock.now_ms()
            deadline = self._heap[0][0] if self._heap else None
            self._idle.set()
            await self.clock.sleep_until(deadline, self._wake)
            self._idle.clear()

    async def settle(self, timeout_s: float = 5.0) -> None:
        """Wait until nothing is due and the loop sleeps (tests and benchmarks)."""
        async with asyncio.timeout(timeout_s):
            while True:
                now = self.clock.now_ms()
                nothing_due = not self._heap or self._heap[0][0] > now
                if self._idle.is_set() and not self._wake.is_set() and nothing_due:
                    return
                await asyncio.sleep(0.001)

    async def wait_runs(self, timeout_s: float = 5.0) -> None:
        """Wait until no run of this scheduler is in progress (tests)."""
        async with asyncio.timeout(timeout_s):
            while self._live:  # noqa: ASYNC110 - a test helper; runs end on their own
                await asyncio.sleep(0.001)

    async def _dispatch(self, due: list[tuple[str, int]]) -> None:
        """Claim a batch of due ticks in one transaction, then start what was claimed."""
        if not due:
            return
        jobs = await self.store.get_jobs([job_id for job_id, _ in due])
        now = self.clock.now_ms()
        claims: list[tuple[Job, dict[str, Any]]] = []
        for job_id, at in due:
            job = jobs.get(job_id)
            if job is None or not job.enabled or job.next_fire_at is None:
                continue
            if job.next_fire_at != at:
                self._push(job_id, job.next_fire_at)  # changed elsewhere; follow the store
                continue
            try:
                plan = self._plan(job, at, now)
            except ScheduleError as exc:
                # A schedule stored by an older version that no longer loads (a zone gone
                # from tzdata, say): this job stops, with the reason in its history, instead
                # of failing the whole batch of due ticks at every resync.
                log.warning("cron_schedule_unusable", job_id=job.job_id, problem=str(exc))
                plan = self._stop_plan(at, now, f"the schedule cannot be used: {exc}")
            claims.append((job, plan))
        results = await self.store.claim_many(claims)
        for (job, claim), result in zip(claims, results, strict=True):
            if result is None:
                fresh = await self.store.get_job(job.job_id)  # another scheduler won
                if fresh is not None and fresh.enabled and fresh.next_fire_at is not None:
                    self._push(job.job_id, fresh.next_fire_at)
                continue
            if claim["next_at"] is not None:
                self._push(job.job_id, claim["next_at"])
            fire: Fire | None = claim["fire"]
            if fire is not None and result.started is not None:
                self.fire_lag_ms.append(now - fire.scheduled_at)
            await self._apply(job, result)

    def _plan(self, job: Job, at: int, now: int) -> dict[str, Any]:
        """What claiming the tick due at `at` means now: which tick runs (and why), which
        are recorded as missed, and the next fire time."""
        due = due_ticks(job.schedule, at, now, self.config.catch_up_window_ms)
        if not due.ticks:
            # The stored next fire time is not a tick of the schedule (its zone's rules
            # changed since): nothing is due, the schedule says when next.
            return {
                **self._stop_plan(at, now, ""),
                "missed": [],
                "next_at": job.schedule.next_after(now),
            }
        latest = due.ticks[-1]
        missed = due.ticks[:-1]
        fire: Fire | None
        if now - latest <= MISFIRE_GRACE_MS:
            fire, reason = Fire(latest, "schedule"), "not run in time"
        elif job.misfire == "catch_up" and now - latest <= self.config.catch_up_window_ms:
            fire, reason = Fire(latest, "catch_up"), "missed; a later tick was caught up"
        else:
            fire = None
            missed = due.ticks
            reason = (
                "missed while the daemon was not running (misfire = skip)"
                if job.misfire == "skip"
                else "missed; older than catch_up_window_ms"
            )
        more = due.more + max(0, len(missed) - MAX_MISSED_RECORDS)
        return {
            "expected_at": at,
            "next_at": job.schedule.next_after(now),
            "missed": missed[-MAX_MISSED_RECORDS:] if missed else [],
            "missed_more": more,
            "missed_reason": reason,
            "fire": fire,
            "now_ms": now,
            "node": self.node_id,
            "lease_until": now + self.lease_ms,
        }

    def _stop_plan(self, at: int, now: int, reason: str) -> dict[str, Any]:
        """A claim that records the tick due at `at` as missed and schedules nothing more."""
        return {
            "expected_at": at,
            "next_at": None,
            "missed": [at],
            "missed_more": 0,
            "missed_reason": reason,
            "fire": None,
            "now_ms": now,
            "node": self.node_id,
            "lease_until": now + self.lease_ms,
        }

    async def trigger(self, job: Job) -> ClaimResult:
        """Run the job now as a `manual` run (its concurrency policy applies)."""
        now = self.clock.now_ms()
        result = await self.store.claim(
            job,
            expected_at=None,
            next_at=None,
            missed=[],
            missed_more=0,
            missed_reason="",
            fire=Fire(now, "manual"),
            now_ms=now,
            node=self.node_id,
            lease_until=now + self.lease_ms,
        )
        assert result is not None  # without a compare-and-set there is nothing to lose
        await self._apply(job, result)
        return result

    async def _apply(self, job: Job, result: ClaimResult) -> None:
        for cron_run_id in result.replaced:
            sequence = self._sequences.get(cron_run_id)
            if sequence is not None:
                await self._cancel(sequence, "replaced by a newer tick (concurrency = replace)")
        if result.skipped is not None:
            log.info("cron_tick_skipped", job_id=job.job_id, reason=result.skipped["reason"])
        if result.started is not None:
            self._spawn(job, result.started)

    # --- runs ---------------------------------------------------------------------------

    def _spawn(self, job: Job, record: Row) -> None:
        self.fired += 1
        sequence = _Sequence(job, record)
        self._sequences[record["cron_run_id"]] = sequence
        self._live.add(sequence)
        sequence.task = asyncio.create_task(
            self._run_sequence(sequence), name=f"cron-run-{job.job_id}"
        )

    async def _cancel(self, sequence: _Sequence, reason: str) -> None:
        if sequence.task is None or sequence.task.done():
            return
        sequence.cancel_reason = reason
        sequence.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sequence.done.wait()

    async def _run_sequence(self, sequence: _Sequence) -> None:
        job = sequence.job
        try:
            while True:
                record = sequence.record
                run_id = record["cron_run_id"]
                self._sequences[run_id] = sequence
                try:
                    # Until the record's start time (a retry's backoff), as an absolute time:
                    # however long writing the record took, the backoff is not stretched.
                    await self.clock.sleep_until(int(record["started_at"]), asyncio.Event())
                    async with self._slots:
                        result = await self._attempt(job, record)
                except asyncio.CancelledError:
                    await self._finish_cancelled(sequence)
                    self._sequences.pop(run_id, None)
                    return
                retry = result.status == "failed" and int(record["attempt"]) < job.max_attempts
                now = self.clock.now_ms()
                retry_at = now + job.backoff_for(int(record["attempt"])) if retry else None
                next_record = await self.store.finish_run(
                    run_id,
                    status=result.status,
                    now_ms=now,
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens,
                    tool_calls=result.tool_calls,
                    error_kind=result.error_kind,
                    error_message=result.error_message,
                    output_excerpt=_excerpt(result.output),
                    retry_at=retry_at,
                    node=self.node_id,
                    lease_until=(retry_at or now) + self.lease_ms,
                )
                log.info(
                    "cron_run_finished",
                    job_id=job.job_id,
                    cron_run_id=run_id,
                    attempt=record["attempt"],
                    status=result.status,
                    error_kind=result.error_kind,
                )
                if next_record is not None:
                    # Registered before the finished one is dropped, so that a replace or a
                    # cancel request always finds the sequence.
                    self._sequences[next_record["cron_run_id"]] = sequence
                self._sequences.pop(run_id, None)
                if next_record is None:
                    break
                sequence.record = next_record
            if job.concurrency == "queue_one":
                await self._start_queued(job.job_id)
        except Exception:
            log.exception("cron_run_crashed", job_id=job.job_id)
        finally:
            self._sequences.pop(sequence.record["cron_run_id"], None)
            self._live.discard(sequence)
            sequence.done.set()

    async def _attempt(self, job: Job, record: Row) -> AttemptResult:
        async def link(agent_run_id: str) -> None:
            await self.store.set_agent_run(record["cron_run_id"], agent_run_id)

        try:
            return await self.runner(job, record, link)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("cron_runner_failed", job_id=job.job_id)
            return AttemptResult(
                "failed", "internal", redact_secrets(f"{type(exc).__name__}: {exc}")[:500]
            )

    async def _finish_cancelled(self, sequence: _Sequence) -> None:
        reason = sequence.cancel_reason or "cancelled"
        status, kind = ("failed", "interrupted") if reason == "interrupted" else ("cancelled", None)
        message = "the daemon shut down" if reason == "interrupted" else None
        # Shielded: this task is being cancelled, and the record must still be closed.
        await asyncio.shield(
            self.store.finish_run(
                sequence.record["cron_run_id"],
                status=status,
                now_ms=self.clock.now_ms(),
                error_kind=kind,
                error_message=message,
                reason=None if reason == "interrupted" else reason,
            )
        )

    async def _start_queued(self, job_id: str) -> None:
        now = self.clock.now_ms()
        record = await self.store.take_queued(
            job_id, now_ms=now, node=self.node_id, lease_until=now + self.lease_ms
        )
        if record is None:
            return
        job = await self.store.get_job(job_id)
        if job is None:
            return
        self._spawn(job, record)

    # --- upkeep -------------------------------------------------------------------------

    async def purge(self) -> int:
        cutoff = self.clock.now_ms() - self.config.history_retention_days * 86_400_000
        return await self.store.purge(cutoff)

    async def _heartbeat(self) -> None:
        beats = 0
        every_s = self.lease_ms / 3000
        resync_beats = max(1, round(RESYNC_EVERY_S / every_s))
        purge_beats = max(1, round(PURGE_EVERY_S / every_s))
        while True:
            await self.clock.sleep(every_s)
            beats += 1
            try:
                now = self.clock.now_ms()
                await self.store.renew_leases(self.node_id, now + self.lease_ms)
                for cron_run_id in await self.store.cancel_requests(self.node_id):
                    sequence = self._sequences.get(cron_run_id)
                    if sequence is not None:
                        await self._cancel(sequence, "replaced by a newer tick on another daemon")
                await self.store.interrupt_orphans(self.node_id, now, at_start=False)
                if beats % resync_beats == 0:
                    await self._resync()
                if beats % purge_beats == 0:
                    await self.purge()
            except Exception:
                log.exception("cron_heartbeat_failed")


def _excerpt(output: str | None) -> str | None:
    if output is None:
        return None
    return output if len(output) <= EXCERPT_CHARS else output[: EXCERPT_CHARS - 1] + "…"
