"""The embedded default: one SQLite file in the state dir.

Never used on the request path. Schema changes are numbered migrations applied in one
transaction each, so a crash mid-upgrade leaves the previous schema intact.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

DB_FILE = "palyra.db"

MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
]


class SqliteState:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        path.chmod(0o600)
        self._migrate()

    @classmethod
    def open(cls, state_dir: Path) -> SqliteState:
        return cls(state_dir / DB_FILE)

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, script.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def instance_id(self) -> str:
        """A stable id for this state store, made on first open."""
        existing = self.get_meta("instance_id")
        if existing:
            return existing
        created = uuid.uuid4().hex
        self.set_meta("instance_id", created)
        return created

    def close(self) -> None:
        self._db.close()
