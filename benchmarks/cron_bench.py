"""The cron scheduler with 10,000 enabled jobs on a real SQLite store and the wall clock:
CPU used while nothing is due, and firing lag (claim time minus due time) for a steady trickle
of ticks and for a burst of ticks all due at the same instant.

    .venv/bin/python benchmarks/cron_bench.py [--jobs 10000] [--idle-s 10] [--burst 1000]

Runs are no-ops here: what is measured is the scheduler (heap, sleep, claim transaction with
its fsync, run records), not an agent.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from palyra.config import CronConfig
from palyra.cron.clock import SystemClock
from palyra.cron.jobs import Job
from palyra.cron.schedule import Schedule
from palyra.cron.scheduler import AttemptResult
from palyra.cron.service import CronService
from palyra.logs import configure_logging
from palyra.state.db import Row, SqliteDatabase


async def noop_runner(
    job: Job, record: Row, link: Callable[[str], Awaitable[None]]
) -> AttemptResult:
    return AttemptResult("succeeded")


def make_jobs(count: int, every_ms: int, anchor_ms: int, prefix: str) -> list[Job]:
    return [
        Job(
            job_id=f"{prefix}{i:06d}",
            name=f"bench {i}",
            agent_id="default",
            prompt="noop",
            schedule=Schedule("every", every_ms=every_ms, anchor_ms=anchor_ms),
            created_at=anchor_ms,
            updated_at=anchor_ms,
            next_fire_at=anchor_ms + every_ms,
        )
        for i in range(count)
    ]


def percentile(values: list[int], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(p * len(ordered)))])


async def main(jobs: int, idle_s: float, burst: int, trickle: int) -> None:
    clock = SystemClock()
    with tempfile.TemporaryDirectory() as tmp:
        db = await SqliteDatabase.open(Path(tmp) / "palyra.db")
        cron = CronService(
            CronConfig(max_concurrent_runs=16),
            noop_runner,
            clock=clock,
            node_id="bench",
            agent_exists=lambda _: True,
        )
        await cron.start(db)
        now = clock.now_ms()
        # `jobs` enabled jobs firing hourly (not within the benchmark); then `trickle` more
        # every second, then `burst` more all due at one instant.
        quiet = jobs
        started = time.perf_counter()
        await cron.store.insert_jobs(make_jobs(quiet, 3_600_000, now, "hourly_"))
        print(f"inserted {jobs} jobs in {time.perf_counter() - started:.1f} s")
        scheduler = cron.scheduler
        cpu0 = time.process_time()
        await scheduler._resync()  # jobs were written behind its back: read them in
        print(
            f"re-reading the due index of {jobs} jobs (done once a minute): "
            f"{(time.process_time() - cpu0) * 1000:.0f} ms CPU"
        )
        await scheduler.settle()

        # 1. Idle: nothing due for `idle_s` seconds.
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(idle_s)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        print(
            f"idle, {quiet} enabled jobs, none due: CPU {cpu * 1000:.1f} ms over {wall:.1f} s "
            f"= {100 * cpu / wall:.3f} % of one core"
        )

        # 2. Trickle: `trickle` jobs every second for five seconds.
        now = clock.now_ms()
        await cron.store.insert_jobs(make_jobs(trickle, 1000, now, "second_"))
        await scheduler._resync()
        scheduler.fire_lag_ms.clear()
        await asyncio.sleep(5.5)
        lags = list(scheduler.fire_lag_ms)
        print(
            f"trickle, {trickle} jobs every second: {len(lags)} ticks fired, lag p50 "
            f"{percentile(lags, 0.5):.0f} ms, p99 {percentile(lags, 0.99):.0f} ms, "
            f"max {max(lags, default=0):.0f} ms"
        )
        for job in make_jobs(trickle, 1000, now, "second_"):
            await cron.delete(job.job_id)
        await scheduler.wait_runs(30)

        # 3. Burst: `burst` jobs due at the same instant, 2 s from now.
        due = clock.now_ms() + 2000
        batch = [
            dataclasses.replace(job, next_fire_at=due)
            for job in make_jobs(burst, 3_600_000, due - 3_600_000, "burst_")
        ]
        await cron.store.insert_jobs(batch)
        await scheduler._resync()
        scheduler.fire_lag_ms.clear()
        await asyncio.sleep(2 + burst / 200)
        await scheduler.wait_runs(60)
        lags = list(scheduler.fire_lag_ms)
        print(
            f"burst, {burst} more jobs due at one instant: {len(lags)} fired, lag p50 "
            f"{percentile(lags, 0.5):.0f} ms, p99 {percentile(lags, 0.99):.0f} ms, "
            f"max {max(lags, default=0):.0f} ms "
            f"(about {max(lags, default=0) / max(1, len(lags)):.2f} ms per claim)"
        )
        print(
            f"idle again: heap {len(scheduler._heap)} entries, {len(scheduler._due)} jobs scheduled"
        )
        await cron.aclose()
        await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--trickle", type=int, default=20)
    args = parser.parse_args()
    configure_logging("warning")
    asyncio.run(main(args.jobs, args.idle_s, args.burst, args.trickle))
