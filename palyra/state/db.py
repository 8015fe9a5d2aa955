"""A small async database interface that the embedded SQLite store and PostgreSQL share.

Components (vault, auth profiles, cron, runs) write their SQL once, in a portable subset:
`?` placeholders, BIGINT for integers and millisecond times, TEXT for strings, JSON and
base64; `INSERT ... ON CONFLICT ... DO UPDATE` and `RETURNING` are fine in both.
Each component owns numbered migrations; each is applied in its own transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

Row = dict[str, Any]

# Python 3.11's sqlite3 binds int, float, str and bytearray as they are but hands any other
# value, None too, to its adapters, which look for `__adapt__` and `__conform__` and build
# (then drop) an AttributeError message for each: ~2,400 instructions a NULL, and a usage
# record binds seven. A registered adapter is found by one dict lookup first; `{}.get` is a
# C callable that gives None back for None.
_NONE_TO_NULL: dict[None, None] = {}
sqlite3.register_adapter(type(None), _NONE_TO_NULL.get)


class Database(ABC):
    """Statements run one at a time; inside `transaction()` they see and commit together."""

    @abstractmethod
    async def execute(self, sql: str, *params: Any) -> int:
        """Run a statement; the number of rows it changed."""

    @abstractmethod
    async def fetch_one(self, sql: str, *params: Any) -> Row | None: ...

    @abstractmethod
    async def fetch_all(self, sql: str, *params: Any) -> list[Row]: ...

    @abstractmethod
    def transaction(self) -> Any:
        """`async with db.transaction() as tx:` — tx is a Database bound to the transaction;
        an exception rolls everything back."""

    @abstractmethod
    async def close(self) -> None: ...

    async def execute_many(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Run a statement once per row of parameters, all in one transaction."""
        async with self.transaction() as tx:
            for row in rows:
                await tx.execute(sql, *row)

    async def ping(self) -> None:
        await self.fetch_one("SELECT 1 AS ok")

    async def migrate(self, component: str, migrations: Sequence[str]) -> None:
        """Apply the component's migrations not yet applied, in order, each atomically."""
        await self.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " component TEXT NOT NULL, version BIGINT NOT NULL,"
            " PRIMARY KEY (component, version))"
        )
        for version, script in enumerate(migrations, start=1):
            async with self.transaction() as tx:
                await apply_migration(tx, component, version, script)


async def apply_migration(tx: Database, component: str, version: int, script: str) -> None:
    """Inside the caller's transaction: apply one migration unless it already was."""
    done = await tx.fetch_one(
        "SELECT version FROM schema_migrations WHERE component = ? AND version = ?",
        component,
        version,
    )
    if done is not None:
        return
    for statement in filter(str.strip, script.split(";")):
        await tx.execute(statement)
    await tx.execute(
        "INSERT INTO schema_migrations (component, version) VALUES (?, ?)", component, version
    )


WAL_SWITCH_S = 5.0


def use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL (it stays so once switched), waiting out other connections.

    The workers of one daemon (palyra.workers) open a new file at the same moment. Each holds
    a shared lock and wants the exclusive one to switch; SQLite sees the deadlock and answers
    one of them "database is locked" at once, without its busy handler. By the time it tries
    again the winner has switched the file, and the switch is a no-op."""
    deadline = time.monotonic() + WAL_SWITCH_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SqliteDatabase(Database):
    """SQLite on one connection, driven from one worker thread so the event loop never
    blocks on disk. WAL and `synchronous=FULL`: a committed write survives a crash."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="palyra-sqlite")
        self._lock = asyncio.Lock()
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path) -> SqliteDatabase:
        db = cls(path)
        await db._call(db._connect)
        return db

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=5000")
        use_wal(conn)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        self.path.chmod(0o600)
        self._conn = conn

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await self._submit(fn, *args)

    def _submit(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        # Submitted at once, not when awaited: the one worker thread runs statements in the
        # order they were submitted, whoever has stopped waiting for them.
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _rollback(self) -> None:
        assert self._conn is not None, "database is closed"
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _run(self, sql: str, params: tuple[Any, ...], mode: str) -> Any:
        assert self._conn is not None, "database is closed"
        cursor = self._conn.execute(sql, params)
        if mode == "one":
            row = cursor.fetchone()
            return None if row is None else dict(row)
        if mode == "all":
            return [dict(row) for row in cursor.fetchall()]
        return cursor.rowcount

    async def execute(self, sql: str, *params: Any) -> int:
        async with self._lock:
            return int(await self._call(self._run, sql, params, "count"))

    async def fetch_one(self, sql: str, *params: Any) -> Row | None:
        async with self._lock:
            result: Row | None = await self._call(self._run, sql, params, "one")
            return result

    async def fetch_all(self, sql: str, *params: Any) -> list[Row]:
        async with self._lock:
            result: list[Row] = await self._call(self._run, sql, params, "all")
            return result

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        async with self._lock:
            try:
                # BEGIN inside the try: a caller cancelled while BEGIN runs (a client that
                # went away) must still roll back, or the connection stays in a transaction
                # and every later BEGIN fails.
                await self._call(self._run, "BEGIN IMMEDIATE", (), "count")
                yield _SqliteTransaction(self)
            except BaseException:
                # Submitted before the lock is let go, so it runs after whatever statement
                # of ours is still running and before anyone else's.
                await asyncio.shield(self._submit(self._rollback))
                raise
            await self._call(self._run, "COMMIT", (), "count")

    async def execute_many(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        # One hop to the SQLite thread for the whole batch, not three and one per row: a
        # batch of a hundred writes made as many trips through the event loop, and as many
        # hand-overs of the interpreter between the two threads, which held up requests
        # served meanwhile by tens of milliseconds (benchmarks/README.md).
        async with self._lock:
            await asyncio.shield(self._submit(self._run_many, sql, list(rows)))

    def _run_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        assert self._conn is not None, "database is closed"
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(sql, rows)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await self._call(self._conn.close)
                self._conn = None
        self._executor.shutdown(wait=True)


class _SqliteTransaction(Database):
    """The same connection, used while the transaction holds the lock."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def execute(self, sql: str, *params: Any) -> int:
        return int(await self._db._call(self._db._run, sql, params, "count"))

    async def fetch_one(self, sql: str, *params: Any) -> Row | None:
        result: Row | None = await self._db._call(self._db._run, sql, params, "one")
        return result

    async def fetch_all(self, sql: str, *params: Any) -> list[Row]:
        result: list[Row] = await self._db._call(self._db._run, sql, params, "all")
        return result

    def transaction(self) -> Any:
        raise RuntimeError("nested transactions are not supported")

    async def close(self) -> None:
        raise RuntimeError("close the database, not the transaction")
