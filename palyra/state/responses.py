"""Stored responses (`store: true` on `POST /v1/responses`): what `GET /v1/responses/{id}`,
its `input_items` and `previous_response_id` read back.

A response is written off the request path: `save` puts it in memory and queues it, and a
background task writes the queue to the state store (SQLite or PostgreSQL, portable SQL
only). The latest responses stay in a bounded in-memory map as well, so one is readable the
moment its client has it, and a conversation chained with `previous_response_id` usually
never reads the database. Responses older than `RETENTION_MS` (30 days, as OpenAI keeps
them) are purged once a day.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
import structlog

from palyra.state.db import Database, Row

log = structlog.get_logger("palyra.responses")

MIGRATIONS = [
    "CREATE TABLE responses ("
    " response_id TEXT PRIMARY KEY, created_at BIGINT NOT NULL, previous_response_id TEXT,"
    " input TEXT NOT NULL, response TEXT NOT NULL);"
    "CREATE INDEX responses_created ON responses (created_at)",
    # The client key that made it (NULL: the admin token or an agent run).
    "ALTER TABLE responses ADD COLUMN owner TEXT",
]

# `owner=` for a caller who may see every stored response (the admin token, agent runs).
ANYONE: Final = "*"

RETENTION_MS = 30 * 24 * 3600 * 1000
PURGE_EVERY_S = 24 * 3600.0
# The in-memory map: the latest responses, up to this many and this many bytes of JSON.
MEMORY_ITEMS = 1024
MEMORY_BYTES = 64 * 1024 * 1024
# Responses waiting to be written beyond this many are written no more (and said so): a
# store that stopped answering must not take the daemon's memory with it.
MAX_PENDING = 10_000
MAX_PENDING_BYTES = 256 * 1024 * 1024
# How long shutdown waits for the responses still to be written.
CLOSE_TIMEOUT_S = 10.0
# At most this many responses are written in one transaction.
WRITE_BATCH = 256
# How long the writer waits for more answers to join a batch: at most this much of what was
# stored is lost to a kill -9 (a clean shutdown writes everything).
WRITE_GATHER_S = 0.05
# How many earlier responses a `previous_response_id` chain may reach back.
MAX_CHAIN = 1000


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response_id: str
    created_at_ms: int
    previous_response_id: str | None
    # This turn's own input items, each with an id.
    input: list[dict[str, Any]]
    response: dict[str, Any]
    size: int = 0  # bytes of JSON, for the memory bound
    # The client key that made it: only that key (and the admin token) may read it, delete
    # it or continue from it. None: made with the admin token or by an agent run.
    owner: str | None = None

    @classmethod
    def of(
        cls,
        response: dict[str, Any],
        input: list[dict[str, Any]],
        previous_response_id: str | None,
        created_at_ms: int,
        owner: str | None = None,
    ) -> StoredResponse:
        size = len(orjson.dumps(input)) + len(orjson.dumps(response))
        return cls(
            str(response["id"]), created_at_ms, previous_response_id, input, response, size, owner
        )

    def visible_to(self, owner: str | None) -> bool:
        return owner == ANYONE or owner == self.owner


class ChainTooLong(ValueError):
    pass


class ResponseStore:
    def __init__(
        self,
        *,
        memory_items: int = MEMORY_ITEMS,
        memory_bytes: int = MEMORY_BYTES,
        clock: Callable[[], float] = time.time,
        gather_s: float = WRITE_GATHER_S,
    ) -> None:
        self._gather_s = gather_s
        self._memory: OrderedDict[str, StoredResponse] = OrderedDict()
        self._memory_size = 0
        self._memory_items = memory_items
        self._memory_bytes = memory_bytes
        self._clock = clock
        # The items (input and output) of the remembered responses, by id: what an
        # `item_reference` names.
        self._items: dict[str, tuple[dict[str, Any], str | None]] = {}  # id -> (item, owner)
        # Saved, not yet written: readable here until they are.
        self._pending: dict[str, StoredResponse] = {}
        self._pending_size = 0
        self._queue: asyncio.Queue[str] | None = None
        self._db: Database | None = None
        self._writer: asyncio.Task[None] | None = None
        self._purger: asyncio.Task[None] | None = None

    async def start(self, db: Database, *, purge_every_s: float = PURGE_EVERY_S) -> None:
        await db.migrate("responses", MIGRATIONS)
        self._db = db
        self._queue = asyncio.Queue()
        for response_id in self._pending:  # saved before the store was open
            self._queue.put_nowait(response_id)
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        self._purger = asyncio.get_running_loop().create_task(self._purge_loop(purge_every_s))

    async def aclose(self) -> None:
        """Writes what is still pending, then stops."""
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        if self._queue is not None and self._writer is not None:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self._queue.join()
            except TimeoutError:
                # A store that stopped answering must not hold the daemon's shutdown.
                log.warning("responses_not_stored", reason="shutdown", pending=len(self._pending))
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self._writer = self._purger = None

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # --- writing --------------------------------------------------------------------------

    def save(self, record: StoredResponse) -> None:
        """Readable at once; written to the state store in the background."""
        self._remember(record)
        if (
            len(self._pending) >= MAX_PENDING
            or self._pending_size + record.size > MAX_PENDING_BYTES
        ):
            log.warning(
                "responses_not_stored", reason="write queue full", response_id=record.response_id
            )
            return
        self._unpend(record.response_id)
        self._pending[record.response_id] = record
        self._pending_size += record.size
        if self._queue is not None:
            self._queue.put_nowait(record.response_id)

    async def flush(self) -> None:
        """Returns when everything saved so far is written."""
        if self._queue is not None:
            await self._queue.join()

    async def _write_loop(self) -> None:
        assert self._queue is not None
        while True:
            # All that piled up is written in one transaction: one commit (one fsync on
            # SQLite) per batch, not per response, so a busy daemon's writes keep up.
            batch = [await self._queue.get()]
            if self._gather_s:
                # One answer rarely comes alone: those of the next moment join its batch. A
                # transaction (and its fsync) per answer cost 0.4 ms of CPU each at one
                # answer a millisecond (benchmarks/README.md); the answers are readable
                # from memory meanwhile.
                await asyncio.sleep(self._gather_s)
            while len(batch) < WRITE_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The answers were given; the store failing only loses their later reading.
                log.warning("response_store_failed", responses=len(batch), error=type(exc).__name__)
            finally:
                for response_id in batch:
                    self._unpend(response_id)
                    self._queue.task_done()

    async def _write(self, batch: list[str]) -> None:
        assert self._db is not None
        records = [r for r in map(self._pending.get, batch) if r is not None]
        if not records:
            return
        await self._db.execute_many(
            "INSERT INTO responses (response_id, created_at, previous_response_id,"
            " input, response, owner) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (response_id) DO NOTHING",
            [
                (
                    record.response_id,
                    record.created_at_ms,
                    record.previous_response_id,
                    orjson.dumps(record.input).decode(),
                    orjson.dumps(record.response).decode(),
                    record.owner,
                )
                for record in records
            ],
        )
        for record in records:
            if record.response_id not in self._pending:
                # Deleted while it was being written: deleted it stays.
                await self._delete_row(record.response_id)

    async def _purge_loop(self, every_s: float) -> None:
        while True:
            try:
                await self.purge(self.now_ms() - RETENTION_MS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("response_purge_failed", error=type(exc).__name__)
            await asyncio.sleep(every_s)

    async def purge(self, before_ms: int) -> int:
        """Forget the responses created before `before_ms`; how many the store held."""
        for response_id in [r for r, s in self._memory.items() if s.created_at_ms < before_ms]:
            self._forget(response_id)
        if self._db is None:
            return 0
        return await self._db.execute(
            "DELETE FROM responses WHERE created_at < ?", max(before_ms, 0)
        )

    # --- reading --------------------------------------------------------------------------

    async def get(self, response_id: str, owner: str | None = ANYONE) -> StoredResponse | None:
        """The stored response, if `owner` may see it (a client key's id, None for what
        the admin token made, `ANYONE` for a caller who sees all)."""
        record = await self._get(response_id)
        return record if record is not None and record.visible_to(owner) else None

    async def _get(self, response_id: str) -> StoredResponse | None:
        record = self._memory.get(response_id) or self._pending.get(response_id)
        if record is not None:
            if response_id in self._memory:
                self._memory.move_to_end(response_id)
            return record
        if self._db is None:
            return None
        row = await self._db.fetch_one(
            "SELECT response_id, created_at, previous_response_id, input, response, owner"
            " FROM responses WHERE response_id = ?",
            response_id,
        )
        if row is None:
            return None
        record = _from_row(row)
        self._remember(record)
        return record

    async def history(
        self, response_id: str, owner: str | None = ANYONE
    ) -> list[dict[str, Any]] | None:
        """The conversation up to and with `response_id`: each earlier response's input and
        output items, oldest first; None when `response_id` (or one it chains to) is not
        stored."""
        chain: list[StoredResponse] = []
        next_id: str | None = response_id
        while next_id is not None:
            if len(chain) >= MAX_CHAIN:
                raise ChainTooLong(f"more than {MAX_CHAIN} responses chained")
            record = await self.get(next_id, owner)
            if record is None:
                return None
            chain.append(record)
            next_id = record.previous_response_id
        items: list[dict[str, Any]] = []
        for record in reversed(chain):
            items += record.input
            items += record.response.get("output") or []
        return items

    def find_items(
        self, item_ids: list[str], owner: str | None = ANYONE
    ) -> dict[str, dict[str, Any]]:
        """Of `item_ids`, the items of remembered responses (the latest ones) that have them
        and that `owner` may see."""
        found = {}
        for item_id in item_ids:
            known = self._items.get(item_id)
            if known is not None and (owner == ANYONE or known[1] == owner):
                found[item_id] = known[0]
        return found

    async def delete(self, response_id: str, owner: str | None = ANYONE) -> bool:
        if owner != ANYONE and await self.get(response_id, owner) is None:
            return False
        found = self._forget(response_id)
        self._unpend(response_id)
        if self._db is not None:
            found = await self._delete_row(response_id) or found
        return found

    async def _delete_row(self, response_id: str) -> bool:
        assert self._db is not None
        deleted = await self._db.execute("DELETE FROM responses WHERE response_id = ?", response_id)
        return bool(deleted)

    # --- the in-memory map ----------------------------------------------------------------

    def _unpend(self, response_id: str) -> None:
        record = self._pending.pop(response_id, None)
        if record is not None:
            self._pending_size -= record.size

    def _remember(self, record: StoredResponse) -> None:
        if record.size > self._memory_bytes:
            return
        self._forget(record.response_id)
        self._memory[record.response_id] = record
        self._memory_size += record.size
        for item in _items_of(record):
            self._items[item["id"]] = (item, record.owner)
        while len(self._memory) > self._memory_items or self._memory_size > self._memory_bytes:
            self._forget(next(iter(self._memory)))

    def _forget(self, response_id: str) -> bool:
        record = self._memory.pop(response_id, None)
        if record is None:
            return False
        self._memory_size -= record.size
        for item in _items_of(record):
            known = self._items.get(item["id"])
            if known is not None and known[0] is item:
                del self._items[item["id"]]
        return True


def _items_of(record: StoredResponse) -> list[dict[str, Any]]:
    output = record.response.get("output") or []
    return [
        item
        for item in [*record.input, *output]
        if isinstance(item, dict) and isinstance(item.get("id"), str)
    ]


def _from_row(row: Row) -> StoredResponse:
    input = orjson.loads(row["input"])
    response = orjson.loads(row["response"])
    return StoredResponse(
        row["response_id"],
        int(row["created_at"]),
        row["previous_response_id"],
        input,
        response,
        len(row["input"]) + len(row["response"]),
        row["owner"],
    )
