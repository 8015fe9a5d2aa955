"""The state-store fixtures: every store test runs against each backend.

PostgreSQL tests use the server at 127.0.0.1:5432 (database `test`, trust auth), each test in
a schema of its own; where no server answers they skip and say so.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from palyra.state.db import Database, SqliteDatabase

POSTGRES_URL = os.environ.get(
    "PALYRA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


async def postgres_schema_url() -> tuple[str, str]:
    """A fresh schema on the test server and a URL whose search_path points at it."""
    asyncpg = pytest.importorskip("asyncpg")
    try:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    schema = "palyra_test_" + uuid.uuid4().hex[:12]
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    return f"{POSTGRES_URL}?search_path={schema}", schema


async def drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL, timeout=3)
    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        db: Database = await SqliteDatabase.open(tmp_path / "palyra.db")
        yield db
        await db.close()
        return
    from palyra.state.postgres import PostgresDatabase

    url, schema = await postgres_schema_url()
    db = await PostgresDatabase.open(url)
    yield db
    await db.close()
    await drop_schema(schema)


StoreOpener = Callable[[], Awaitable[Database]]


@pytest.fixture(params=["sqlite", "postgres"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreOpener]:
    """Opens connections to one store, as several daemons sharing it would."""
    opened: list[Database] = []
    if request.param == "sqlite":

        async def open_sqlite() -> Database:
            db = await SqliteDatabase.open(tmp_path / "palyra.db")
            opened.append(db)
            return db

        yield open_sqlite
    else:
        from palyra.state.postgres import PostgresDatabase

        url, schema = await postgres_schema_url()

        async def open_postgres() -> Database:
            db = await PostgresDatabase.open(url)
            opened.append(db)
            return db

        yield open_postgres
    for db in opened:
        await db.close()
    if request.param == "postgres":
        await drop_schema(schema)
