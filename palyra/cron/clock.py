"""The scheduler's sense of time, injectable so tests can move it by hand.

`SystemClock` is wall-clock time; `ManualClock` only moves when a test calls `advance`, and
wakes every sleeper whose deadline has passed — a day of cron ticks runs in milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

# Long sleeps are cut into pieces this long so that a wall-clock step (NTP, suspend/resume)
# is noticed within this time instead of after the whole computed sleep.
MAX_SLEEP_S = 30.0


class Clock(Protocol):
    def now_ms(self) -> int: ...

    async def sleep_until(self, deadline_ms: int | None, wake: asyncio.Event) -> None:
        """Return at `deadline_ms` (None: never) or as soon as `wake` is set."""

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep_until(self, deadline_ms: int | None, wake: asyncio.Event) -> None:
        timeout = MAX_SLEEP_S
        if deadline_ms is not None:
            timeout = min(timeout, max(0.0, (deadline_ms - self.now_ms()) / 1000))
        if timeout <= 0:
            return
        try:
            async with asyncio.timeout(timeout):
                await wake.wait()
        except TimeoutError:
            pass

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    def __init__(self, now_ms: int) -> None:
        self._now = now_ms
        self._moved = asyncio.Event()

    def now_ms(self) -> int:
        return self._now

    async def advance(self, ms: int) -> None:
        await self.set(self._now + ms)

    async def set(self, now_ms: int) -> None:
        if now_ms < self._now:
            raise ValueError("a ManualClock does not go backwards")
        self._now = now_ms
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()
        # Let the woken sleepers run before the caller goes on.
        for _ in range(5):
            await asyncio.sleep(0)

    async def sleep_until(self, deadline_ms: int | None, wake: asyncio.Event) -> None:
        while deadline_ms is None or self._now < deadline_ms:
            if wake.is_set():
                return
            moved = asyncio.ensure_future(self._moved.wait())
            woken = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait({moved, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                moved.cancel()
                woken.cancel()

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + round(seconds * 1000), asyncio.Event())
