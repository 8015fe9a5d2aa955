"""PostgreSQL behind the same `Database` interface, for several daemons sharing one store."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from palyra.state.db import Database, Row, apply_migration


def to_postgres(sql: str) -> str:
    """`?` placeholders to `$1, $2, ...`, leaving quoted text alone."""
    out: list[str] = []
    number = 0
    quote: str | None = None
    for char in sql:
        if quote:
            if char == quote:
                quote = None
        elif char in ("'", '"'):
            quote = char
        elif char == "?":
            number += 1
            out.append(f"${number}")
            continue
        out.append(char)
    return "".join(out)


def _rowcount(status: str) -> int:
    # asyncpg answers a command tag: "UPDATE 3", "INSERT 0 1", "DELETE 0", "CREATE TABLE".
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _Connection(Database):
    """Statements on one connection (used for transactions)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *params: Any) -> int:
        return _rowcount(await self._conn.execute(to_postgres(sql), *params))

    async def fetch_one(self, sql: str, *params: Any) -> Row | None:
        row = await self._conn.fetchrow(to_postgres(sql), *params)
        return None if row is None else dict(row)

    async def fetch_all(self, sql: str, *params: Any) -> list[Row]:
        return [dict(row) for row in await self._conn.fetch(to_postgres(sql), *params)]

    def transaction(self) -> Any:
        raise RuntimeError("nested transactions are not supported")

    async def close(self) -> None:
        raise RuntimeError("close the database, not the transaction")


class PostgresDatabase(Database):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> PostgresDatabase:
        # Unknown query parameters of the URL (e.g. ?search_path=x) become server settings.
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, timeout=10)
        return cls(pool)

    async def execute(self, sql: str, *params: Any) -> int:
        async with self._pool.acquire() as conn:
            return _rowcount(await conn.execute(to_postgres(sql), *params))

    async def fetch_one(self, sql: str, *params: Any) -> Row | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(to_postgres(sql), *params)
        return None if row is None else dict(row)

    async def fetch_all(self, sql: str, *params: Any) -> list[Row]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(to_postgres(sql), *params)
        return [dict(row) for row in rows]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _Connection(conn)

    async def execute_many(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(to_postgres(sql), rows)

    async def migrate(self, component: str, migrations: Sequence[str]) -> None:
        # Several daemons may start at once: a session advisory lock makes them migrate in
        # turn, and each migration still commits on its own.
        lock = zlib.crc32(f"palyra-migrate:{component}".encode())
        async with self._pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", lock)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " component TEXT NOT NULL, version BIGINT NOT NULL,"
                    " PRIMARY KEY (component, version))"
                )
                for version, script in enumerate(migrations, start=1):
                    async with conn.transaction():
                        await apply_migration(_Connection(conn), component, version, script)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", lock)

    async def ping(self) -> None:
        async with self._pool.acquire(timeout=2) as conn:
            await conn.execute("SELECT 1")

    async def close(self) -> None:
        await self._pool.close()
