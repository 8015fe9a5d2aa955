"""Durable state: the embedded SQLite store (PostgreSQL joins it for scale-out)."""

from palyra.state.sqlite import SqliteState

__all__ = ["SqliteState"]
