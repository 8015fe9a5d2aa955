"""The ledger's writer: the request path hands it a record and goes on; a background task
writes them to the state store in batches.

`record` appends to a bounded buffer and returns: no I/O, no await, no exception. A batch
is written 0.5 s after its first record arrived, or at once when 500 are waiting, in one
transaction. A store that fails is retried with a growing backoff while records keep
gathering (up to `max_queue`; beyond that the newest are dropped, counted and logged once
per burst), so no answer ever waits for the store. A clean shutdown (`aclose`) writes what
is buffered; a kill -9 loses what arrived in the last half second or so, plus whatever a
failing store had not yet taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import structlog

from palyra.cron.clock import Clock, SystemClock
from palyra.tasks import cancel_and_wait, run_periodically
from palyra.usage.records import MAX_PAYLOAD_CHARS, UsageRecord, row
from palyra.usage.store import UsageStore

if TYPE_CHECKING:
    from palyra.metrics import Metrics
    from palyra.state.db import Database

log = structlog.get_logger("palyra.usage")

MAX_QUEUE: Final = 50_000
BATCH: Final = 500
FLUSH_EVERY_S: Final = 0.5
BACKOFF_FIRST_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
# How long shutdown waits for the buffer to be written.
CLOSE_TIMEOUT_S: Final = 10.0
PURGE_EVERY_S: Final = 3600.0
DAY_MS: Final = 86_400_000


class UsageWriter:
    def __init__(
        self,
        metrics: Metrics | None = None,
        *,
        enabled: bool = True,
        log_payloads: bool = False,
        max_queue: int = MAX_QUEUE,
        batch: int = BATCH,
        flush_every_s: float = FLUSH_EVERY_S,
        clock: Clock | None = None,
    ) -> None:
        self._metrics = metrics
        self.enabled = enabled
        self._log_payloads = log_payloads
        self._max_queue = max_queue
        self._batch = batch
        self._flush_ms = round(flush_every_s * 1000)
        self._clock: Clock = clock or SystemClock()
        self._buffer: deque[UsageRecord] = deque()
        # Set when the buffer gets its first record or a full batch, or on close.
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        # Set by the task whenever it finds the buffer empty (or has stopped).
        self._drained = asyncio.Event()
        self._urgent = False  # flush(): write without waiting for company
        self._since_ms = 0  # when the buffer's oldest record (or what is left) began waiting
        self._writing = False
        self._closing = False
        self._closed = False
        self._store: UsageStore | None = None
        self._task: asyncio.Task[None] | None = None
        self._purger: asyncio.Task[None] | None = None
        self.dropped = 0  # records dropped since start: buffer full, closed, or broken
        self.written = 0
        self.failures = 0  # failed write attempts
        self._burst = 0  # drops since the last "dropped" log line

    # --- the request path ------------------------------------------------------------

    def record(self, r: UsageRecord) -> None:
        """Queue one record for the ledger and count it in the metrics. Never blocks, never
        raises: a ledger problem must not become a failed answer."""
        try:
            if self._metrics is not None:
                self._metrics.count_usage(r)
            if not self.enabled:
                return
            if self._closed or len(self._buffer) >= self._max_queue:
                self._drop()
                return
            if r.prompt is not None or r.answer is not None:
                if self._log_payloads:
                    if r.prompt is not None and len(r.prompt) > MAX_PAYLOAD_CHARS:
                        r.prompt = r.prompt[:MAX_PAYLOAD_CHARS]
                    if r.answer is not None and len(r.answer) > MAX_PAYLOAD_CHARS:
                        r.answer = r.answer[:MAX_PAYLOAD_CHARS]
                else:
                    r.prompt = r.answer = None
            buffer = self._buffer
            buffer.append(r)
            if len(buffer) == 1:
                # The batch's half second runs from its first record, not from when the
                # task next looks.
                self._since_ms = self._clock.now_ms()
                self._wake.set()
            elif len(buffer) == self._batch:
                self._wake.set()
        except Exception:
            with contextlib.suppress(Exception):
                self._drop()

    def _drop(self) -> None:
        self.dropped += 1
        self._burst += 1
        if self._metrics is not None:
            self._metrics.count_usage_dropped()
        if self._burst == 1:
            log.warning(
                "usage_records_dropping",
                reason="closed" if self._closed else "queue full",
                queued=len(self._buffer),
            )

    def _lose(self, taken: int) -> None:
        """At shutdown: `taken` records the store refused and the buffer are given up."""
        lost = taken + len(self._buffer)
        self._buffer.clear()
        self.dropped += lost
        if self._metrics is not None:
            self._metrics.count_usage_dropped(lost)
        log.warning("usage_records_not_written", records=lost, reason="shutdown")

    @property
    def queued(self) -> int:
        return len(self._buffer)

    # --- life cycle ------------------------------------------------------------------

    @property
    def store(self) -> UsageStore:
        if self._store is None:
            raise RuntimeError("the usage ledger is not open yet (daemon still starting)")
        return self._store

    async def start(
        self,
        db: Database,
        *,
        retention_days: int | None = 90,
        purge_every_s: float = PURGE_EVERY_S,
    ) -> None:
        """Open the ledger on `db` and start writing (records made before are kept); purge
        records older than `retention_days` now and every `purge_every_s` (None: never)."""
        store = UsageStore(db)
        await store.migrate()
        self._store = store
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="usage-writer")
        if retention_days is not None:
            keep_ms = retention_days * DAY_MS

            async def purge() -> None:
                deleted = await store.purge(self._clock.now_ms() - keep_ms)
                if deleted:
                    log.info("usage_purged", records=deleted, retention_days=retention_days)

            self._purger = loop.create_task(
                run_periodically(purge_every_s, purge, "usage_purge"), name="usage-purge"
            )

    async def flush(self) -> None:
        """Write what is buffered now, without waiting for the batch's time; returns when
        the buffer is empty (a failing store: once it recovers) or the writer has stopped."""
        if self._task is None or self._task.done() or not (self._buffer or self._writing):
            return
        self._drained.clear()
        self._urgent = True
        self._wake.set()
        await self._drained.wait()

    async def aclose(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Write what is buffered (within `timeout_s`), then stop; later records are dropped."""
        await cancel_and_wait(self._purger)
        self._closing = True
        self._wake.set()
        self._stop.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(self._task)
            except TimeoutError:
                # A store that stopped answering must not hold the daemon's shutdown.
                await cancel_and_wait(self._task)
        if self._buffer:
            self._lose(0)
        self._closed = True
        self._task = self._purger = None

    # --- the background task ---------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._loop()
        finally:
            self._drained.set()

    async def _loop(self) -> None:
        clock = self._clock
        while True:
            if not self._buffer:
                self._urgent = False
                self._drained.set()
                if self._closing:
                    return
                self._wake.clear()
                await clock.sleep_until(None, self._wake)
                continue
            # The batch's first record waits at most flush_every for company.
            deadline = self._since_ms + self._flush_ms
            while (
                len(self._buffer) < self._batch
                and not (self._closing or self._urgent)
                and clock.now_ms() < deadline
            ):
                self._wake.clear()
                await clock.sleep_until(deadline, self._wake)
            await self._write_batch()

    async def _write_batch(self) -> None:
        buffer = self._buffer
        count = min(len(buffer), self._batch)
        # Rows and their ids are made once: a retry after an unclear failure (committed,
        # then the connection dropped) writes the same ids, which the store skips.
        # Ids lead with the record's time: the table's key grows at its end, where a random
        # id made SQLite's inserts about twice as dear once it held 200,000 rows
        # (benchmarks/README.md).
        rows = [_with_id(buffer.popleft()) for _ in range(count)]
        # What is left waited through this write; its own half second starts now.
        self._since_ms = self._clock.now_ms()
        self._writing = True
        try:
            await self._insert(rows)
        finally:
            self._writing = False
        if self._burst and len(buffer) < self._max_queue:
            log.warning("usage_records_dropped", records=self._burst, total=self.dropped)
            self._burst = 0

    async def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        assert self._store is not None
        backoff_s = BACKOFF_FIRST_S
        while True:
            try:
                await self._store.insert_many(rows)
                self.written += len(rows)
                if self.failures:
                    log.info("usage_store_recovered", records=len(rows))
                    self.failures = 0
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                if self.failures == 1 or self._closing:
                    log.warning(
                        "usage_store_failed",
                        error=type(exc).__name__,
                        records=len(rows),
                        queued=len(self._buffer),
                        retry_in_s=None if self._closing else backoff_s,
                    )
                if self._closing:
                    # Shutting down: what the store will not take now is lost, and said so.
                    self._lose(len(rows))
                    return
            await self._clock.sleep_until(
                self._clock.now_ms() + round(backoff_s * 1000), self._stop
            )
            backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)


def _with_id(r: UsageRecord) -> tuple[Any, ...]:
    # Ids need to be unique, not secret: the PRNG, not os.urandom's system call a record.
    return row(f"{max(r.at_ms, 0):012x}{random.getrandbits(32):08x}", r)
