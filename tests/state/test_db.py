"""The database interface every component's store is written against."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from palyra.state.db import Database, SqliteDatabase

MIGRATIONS = [
    "CREATE TABLE items (id TEXT PRIMARY KEY, n BIGINT NOT NULL)",
    "ALTER TABLE items ADD COLUMN note TEXT; CREATE INDEX items_n ON items (n)",
]


async def test_migrations_apply_once_in_order(database: Database) -> None:
    await database.migrate("test", MIGRATIONS)
    await database.migrate("test", MIGRATIONS)  # already applied: nothing happens
    await database.execute("INSERT INTO items (id, n, note) VALUES (?, ?, ?)", "a", 1, "x")
    rows = await database.fetch_all(
        "SELECT component, version FROM schema_migrations ORDER BY version"
    )
    assert [(r["component"], r["version"]) for r in rows] == [("test", 1), ("test", 2)]


async def test_a_failing_migration_leaves_nothing_behind(database: Database) -> None:
    await database.migrate("test", MIGRATIONS[:1])
    with pytest.raises(Exception):  # noqa: B017 - each backend raises its own error type
        await database.migrate(
            "test", [*MIGRATIONS[:1], "ALTER TABLE items ADD COLUMN z TEXT; NOT SQL"]
        )
    assert (
        await database.fetch_one("SELECT version FROM schema_migrations WHERE version = 2") is None
    )
    await database.execute("INSERT INTO items (id, n) VALUES (?, ?)", "a", 1)
    with pytest.raises(Exception):  # noqa: B017
        await database.execute("INSERT INTO items (id, n, z) VALUES (?, ?, ?)", "b", 2, "no")


async def test_transactions_commit_together_or_not_at_all(database: Database) -> None:
    await database.migrate("test", MIGRATIONS)
    async with database.transaction() as tx:
        await tx.execute("INSERT INTO items (id, n) VALUES (?, ?)", "a", 1)
        await tx.execute("INSERT INTO items (id, n) VALUES (?, ?)", "b", 2)
    with pytest.raises(RuntimeError):
        async with database.transaction() as tx:
            await tx.execute("INSERT INTO items (id, n) VALUES (?, ?)", "c", 3)
            raise RuntimeError("boom")
    rows = await database.fetch_all("SELECT id FROM items ORDER BY id")
    assert [r["id"] for r in rows] == ["a", "b"]


async def test_upsert_returning_and_rowcount(database: Database) -> None:
    await database.migrate("test", MIGRATIONS)
    upsert = (
        "INSERT INTO items (id, n) VALUES (?, ?) "
        "ON CONFLICT (id) DO UPDATE SET n = items.n + excluded.n RETURNING n"
    )
    assert await database.fetch_one(upsert, "a", 5) == {"n": 5}
    assert await database.fetch_one(upsert, "a", 5) == {"n": 10}
    assert await database.execute("UPDATE items SET n = ? WHERE n = ?", 0, 10) == 1
    assert await database.execute("UPDATE items SET n = ? WHERE n = ?", 0, 10) == 0


async def test_compare_and_set_under_concurrency(database: Database) -> None:
    """The claim pattern cron and OAuth rely on: of many concurrent claims exactly one wins."""
    await database.migrate("test", MIGRATIONS)
    await database.execute("INSERT INTO items (id, n) VALUES (?, ?)", "tick", 100)
    results = await asyncio.gather(
        *(
            database.execute("UPDATE items SET n = ? WHERE id = ? AND n = ?", 200, "tick", 100)
            for _ in range(20)
        )
    )
    assert sorted(results) == [0] * 19 + [1]


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
async def test_a_transaction_cancelled_at_any_point_leaves_the_store_usable(
    database: Database, steps: int
) -> None:
    # A client that goes away cancels its handler wherever it is: waiting for BEGIN, for a
    # statement, for COMMIT. The store must roll back what it must and serve the next one
    # (SQLite was left inside a transaction: every later BEGIN failed until a restart).
    await database.migrate("test", MIGRATIONS[:1])

    async def write() -> None:
        async with database.transaction() as tx:
            await tx.execute("INSERT INTO items (id, n) VALUES (?, ?)", "cancelled", 1)
            await tx.execute("UPDATE items SET n = 2 WHERE id = ?", "cancelled")

    task = asyncio.create_task(write())
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with database.transaction() as tx:
        await tx.execute("INSERT INTO items (id, n) VALUES (?, ?)", "next", 1)
    rows = await database.fetch_all("SELECT id, n FROM items ORDER BY id")
    # All or nothing: a cancel that lands while COMMIT runs may leave the whole write.
    assert [(r["id"], r["n"]) for r in rows] in ([("next", 1)], [("cancelled", 2), ("next", 1)])


async def test_execute_many_commits_every_row_or_none(database: Database) -> None:
    await database.execute("CREATE TABLE batch (k TEXT PRIMARY KEY, v BIGINT)")
    insert = "INSERT INTO batch (k, v) VALUES (?, ?)"
    await database.execute_many(insert, [(f"k{n}", n) for n in range(100)])
    rows = await database.fetch_all("SELECT k, v FROM batch ORDER BY v")
    assert [(r["k"], r["v"]) for r in rows] == [(f"k{n}", n) for n in range(100)]
    # A row that breaks the batch (a duplicate key) leaves none of it behind.
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await database.execute_many(insert, [("new", 1), ("k5", 5)])
    assert await database.fetch_one("SELECT k FROM batch WHERE k = ?", "new") is None
    await database.execute_many(insert, [("after", 101)])  # the store is usable after
    assert await database.fetch_one("SELECT k FROM batch WHERE k = ?", "after") is not None


async def test_nulls_bind_as_null_through_the_registered_adapter(database: Database) -> None:
    # SQLite's NULLs take the adapter palyra.state.db registers (one dict lookup, not two
    # failed attribute lookups each); PostgreSQL has no such step.
    assert sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)](None) is None
    await database.execute("CREATE TABLE nullable (a TEXT, b BIGINT, c DOUBLE PRECISION)")
    await database.execute("INSERT INTO nullable (a, b, c) VALUES (?, ?, ?)", None, None, None)
    row = await database.fetch_one("SELECT a, b, c FROM nullable")
    assert row == {"a": None, "b": None, "c": None}


def _open_together(
    db: SqliteDatabase, start: threading.Barrier, errors: list[BaseException]
) -> None:
    start.wait()
    try:
        db._connect()
    except BaseException as exc:
        errors.append(exc)


def test_connections_opening_a_new_file_together_all_get_wal(tmp_path: Path) -> None:
    # Found in CI: two workers of one daemon opened a new palyra.db at once and one died on
    # "database is locked" switching it to WAL (SQLite answers a deadlock at once, without
    # the busy handler). Old code lost about one round in ten at four openers.
    for round_ in range(40):
        path = tmp_path / f"r{round_}.db"
        openers = [SqliteDatabase(path) for _ in range(6)]
        start = threading.Barrier(len(openers))
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=_open_together, args=(db, start, errors)) for db in openers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [], f"round {round_}: {errors}"
        for db in openers:
            assert db._conn is not None
            assert db._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            db._conn.close()
