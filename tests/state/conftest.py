"""The state-store fixture: every test here runs against each backend that is available."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from palyra.state.db import Database, SqliteDatabase


@pytest.fixture(params=["sqlite"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    db = await SqliteDatabase.open(tmp_path / "palyra.db")
    yield db
    await db.close()
