"""Where a secret ended up on disk: the tests that store one check it is nowhere in plain text."""

from __future__ import annotations

from pathlib import Path


def files_holding(root: Path, needle: bytes, skip: frozenset[str] = frozenset()) -> list[Path]:
    """Every file under root (SQLite's WAL included) whose bytes contain needle."""
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and path.name not in skip and needle in path.read_bytes()
    ]
