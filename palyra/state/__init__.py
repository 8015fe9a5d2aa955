"""Durable state: the embedded SQLite store, or PostgreSQL for several daemons."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from palyra.state.db import Database, SqliteDatabase

if TYPE_CHECKING:  # config imports the vault, which imports this package
    from palyra.config import StateConfig

DB_FILE = "palyra.db"

__all__ = ["DB_FILE", "Database", "SqliteDatabase", "open_database"]


async def open_database(config: StateConfig, state_dir: Path) -> Database:
    if config.backend == "postgres":
        # Imported here: the embedded default never loads the PostgreSQL driver.
        from palyra.state.postgres import PostgresDatabase

        return await PostgresDatabase.open(config.url)
    return await SqliteDatabase.open(state_dir / DB_FILE)
