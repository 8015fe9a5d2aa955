"""Background tasks: running a job periodically, and stopping tasks cleanly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("palyra.tasks")


async def run_periodically(every_s: float, job: Callable[[], Awaitable[object]], name: str) -> None:
    """Run `job` now and then every `every_s`, forever; a failing job is logged, not fatal."""
    while True:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background_job_failed", job=name)
        await asyncio.sleep(every_s)


async def cancel_and_wait(*tasks: asyncio.Task[object] | asyncio.Task[None] | None) -> None:
    """Cancel the tasks and wait until each has finished unwinding."""
    live = [task for task in tasks if task is not None]
    for task in live:
        task.cancel()
    for task in live:
        with contextlib.suppress(asyncio.CancelledError):
            await task
