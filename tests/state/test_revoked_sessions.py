"""Console sign-outs in the state store: seen by every daemon sharing it, kept while their
sessions live, pruned after, and written late when the store was away at sign-out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from palyra.server.sessions import (
    PRUNE_EVERY_S,
    PRUNE_GRACE_S,
    RevokedSessions,
    Session,
    SessionSigner,
)
from palyra.state.db import Database
from palyra.state.postgres import PostgresDatabase
from tests.fakes.proxy import CuttableProxy
from tests.state.conftest import StoreOpener, drop_schema, postgres_schema_url

T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def a_session(clock: Clock) -> Session:
    return SessionSigner("token", clock).issue()[1]


async def rows(db: Database) -> list[str]:
    found = await db.fetch_all("SELECT session_id FROM console_revoked_sessions")
    return sorted(str(row["session_id"]) for row in found)


async def test_a_revocation_reaches_every_daemon_sharing_the_store(
    open_store: StoreOpener,
) -> None:
    clock = Clock()
    here, there = RevokedSessions(clock), RevokedSessions(clock)
    await here.open(await open_store())
    await there.open(await open_store())
    session, other = a_session(clock), a_session(clock)
    assert await here.revoke(session) is True
    assert session.session_id in here
    await there.refresh()
    assert session.session_id in there and other.session_id not in there
    # A daemon started later (or restarted) has it before it serves.
    late = RevokedSessions(clock)
    await late.open(await open_store())
    assert session.session_id in late


async def test_revocations_are_pruned_after_their_sessions_expire(
    open_store: StoreOpener,
) -> None:
    clock = Clock()
    db = await open_store()
    revoked = RevokedSessions(clock)
    await revoked.open(db)
    session = a_session(clock)
    await revoked.revoke(session)
    # Kept past expiry for a while: another daemon's clock may be behind this one's.
    clock.now = session.expires_at + PRUNE_GRACE_S - 1
    assert await revoked.prune() == 0
    await revoked.refresh()
    assert session.session_id in revoked
    assert await rows(db) == [session.session_id]
    clock.now += PRUNE_EVERY_S
    await revoked.refresh()  # prunes: the last prune was PRUNE_EVERY_S ago
    assert session.session_id not in revoked
    assert await rows(db) == []


async def test_the_background_refresh_picks_up_other_daemons_revocations(
    open_store: StoreOpener,
) -> None:
    clock = Clock()
    here, there = RevokedSessions(clock), RevokedSessions(clock, refresh_s=0.02)
    await here.open(await open_store())
    await there.open(await open_store())
    there.start()
    try:
        session = a_session(clock)
        await here.revoke(session)
        for _ in range(250):
            if session.session_id in there:
                break
            await asyncio.sleep(0.02)
        assert session.session_id in there
    finally:
        await there.aclose()


@pytest.fixture
async def postgres_via_proxy() -> AsyncIterator[tuple[str, CuttableProxy]]:
    url, schema = await postgres_schema_url()
    proxy = CuttableProxy(5432)
    await proxy.start()
    yield url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), proxy
    await proxy.close()
    await drop_schema(schema)


@pytest.mark.parametrize("written_by", ["refresh", "aclose"])
async def test_a_sign_out_while_the_store_is_away_is_written_when_it_is_back(
    postgres_via_proxy: tuple[str, CuttableProxy], written_by: str
) -> None:
    """By the next refresh, or, should the daemon stop first, as it stops."""
    url, proxy = postgres_via_proxy
    clock = Clock()
    db = await PostgresDatabase.open(url)
    try:
        revoked = RevokedSessions(clock)
        await revoked.open(db)
        session = a_session(clock)
        proxy.cut()
        assert await revoked.revoke(session) is False
        assert session.session_id in revoked  # refused here at once regardless
        assert revoked.unsaved == 1
        proxy.up = True
        await (revoked.refresh() if written_by == "refresh" else revoked.aclose())
        assert revoked.unsaved == 0
        assert await rows(db) == [session.session_id]
    finally:
        await db.close()
