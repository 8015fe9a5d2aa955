"""Cron as the rest of the daemon sees it: job CRUD, manual triggers, history, and the
scheduler kept informed of every change."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from palyra.config import CronConfig
from palyra.cron.clock import Clock
from palyra.cron.jobs import Job, JobError, apply_fields, new_job
from palyra.cron.schedule import ScheduleError
from palyra.cron.scheduler import JobRunner, Scheduler
from palyra.cron.store import ClaimResult, CronStore
from palyra.errors import InvalidRequest, NotFound, PalyraError
from palyra.state.db import Database, Row

_UPDATE_TRIES = 5


class CronService:
    def __init__(
        self,
        config: CronConfig,
        runner: JobRunner,
        *,
        clock: Clock,
        node_id: str,
        agent_exists: Callable[[str], bool],
        heartbeat: bool = True,
    ) -> None:
        self.config = config
        self.runner = runner
        self.clock = clock
        self.node_id = node_id
        self.agent_exists = agent_exists
        self._heartbeat = heartbeat
        self._scheduler: Scheduler | None = None

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            raise RuntimeError("cron is not started")
        return self._scheduler

    @property
    def store(self) -> CronStore:
        return self.scheduler.store

    async def start(self, db: Database) -> None:
        store = CronStore(db)
        self._scheduler = Scheduler(
            store,
            self.runner,
            clock=self.clock,
            node_id=self.node_id,
            config=self.config,
            heartbeat=self._heartbeat,
        )
        if self.config.enabled:
            await self._scheduler.start()
        else:
            # Jobs can still be managed; nothing fires while [cron] enabled = false.
            await store.migrate()

    async def aclose(self) -> None:
        if self._scheduler is not None and self.config.enabled:
            await self._scheduler.aclose()

    def _notify(self, job: Job) -> None:
        if self.config.enabled:
            self.scheduler.notify(job.job_id, job.next_fire_at if job.enabled else None)

    # --- jobs ---------------------------------------------------------------------------

    async def create(self, body: Mapping[str, Any]) -> Job:
        try:
            job = new_job(
                body,
                default_tz=self.config.timezone,
                now_ms=self.clock.now_ms(),
                agent_exists=self.agent_exists,
            )
        except JobError as exc:
            raise InvalidRequest(str(exc), param=exc.field, code="invalid_job") from None
        await self.store.insert_job(job)
        self._notify(job)
        return job

    async def get(self, job_id: str) -> Job:
        job = await self.store.get_job(job_id)
        if job is None:
            raise NotFound(f"no cron job {job_id!r}", param="job_id")
        return job

    async def list_jobs(self) -> list[Job]:
        return await self.store.list_jobs()

    async def update(self, job_id: str, body: Mapping[str, Any]) -> Job:
        for _ in range(_UPDATE_TRIES):
            job = await self.get(job_id)
            now = self.clock.now_ms()
            try:
                changed = apply_fields(
                    job,
                    body,
                    default_tz=self.config.timezone,
                    now_ms=now,
                    agent_exists=self.agent_exists,
                )
            except JobError as exc:
                raise InvalidRequest(str(exc), param=exc.field, code="invalid_job") from None
            if changed.schedule != job.schedule or (changed.enabled and not job.enabled):
                # A new schedule, or a job switched back on, starts from now: the time it
                # was off is skipped on purpose, not missed.
                changed = dataclasses.replace(changed, next_fire_at=_next_fire(changed, now))
            if await self.store.update_job(changed, expected_next=job.next_fire_at):
                self._notify(changed)
                return changed
        raise PalyraError(
            f"cron job {job_id!r} kept changing while it was being updated; try again",
            status=409,
            code="conflict",
        )

    async def delete(self, job_id: str) -> None:
        if not await self.store.delete_job(job_id):
            raise NotFound(f"no cron job {job_id!r}", param="job_id")
        if self.config.enabled:
            self.scheduler.notify(job_id, None)

    async def trigger(self, job_id: str) -> ClaimResult:
        job = await self.get(job_id)
        if not self.config.enabled:
            raise InvalidRequest(
                "cron is disabled in config ([cron] enabled = false)", code="cron_disabled"
            )
        return await self.scheduler.trigger(job)

    async def runs(self, job_id: str, limit: int) -> list[Row]:
        await self.get(job_id)
        return await self.store.list_runs(job_id, limit)

    def upcoming(self, job: Job, count: int = 5) -> list[int]:
        if not job.enabled or job.next_fire_at is None or job.schedule.problem() is not None:
            return []  # job_view names the problem
        try:
            return [job.next_fire_at, *job.schedule.upcoming(job.next_fire_at, count - 1)]
        except ScheduleError:
            return []


def _next_fire(job: Job, now_ms: int) -> int | None:
    """The next fire time of a job being switched on or rescheduled. A schedule from the
    request was checked already; one stored by an older version may be unusable, and is
    refused rather than switched on to never fire."""
    try:
        problem = job.schedule.problem()
        if problem is None:
            return job.schedule.next_after(now_ms)
    except ScheduleError as exc:
        problem = f"{exc}; send a new schedule"
    raise InvalidRequest(
        f"schedule: the stored schedule cannot be used: {problem}",
        param="schedule",
        code="invalid_job",
    )
