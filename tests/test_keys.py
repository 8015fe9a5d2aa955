"""Client keys in the state store and in the ring requests see: SQLite and PostgreSQL alike,
several rings on one store as several daemons have, on an injected clock."""

from __future__ import annotations

import calendar
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from palyra.errors import InvalidRequest, NotFound
from palyra.keyring import KeyRing
from palyra.keys import NEVER_MS, ClientKey, KeyStore, hash_secret, parse_duration
from palyra.state.db import Database, SqliteDatabase
from tests.state.conftest import drop_schema, postgres_schema_url
from tests.support.clock import FakeClock

T0 = 1_795_000_000.0  # 2026-11-18, seconds


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, s: int = 0) -> int:
    return calendar.timegm((year, month, day, hour, minute, s, 0, 0, 0)) * 1000


Opener = Callable[[], Awaitable[Database]]


@pytest.fixture(params=["sqlite", "postgres"])
async def open_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens connections to one store, as daemons sharing it do."""
    opened: list[Database] = []
    schema = ""
    if request.param == "sqlite":

        async def opener() -> Database:
            db = await SqliteDatabase.open(tmp_path / "palyra.db")
            opened.append(db)
            return db

    else:
        from palyra.state.postgres import PostgresDatabase

        url, schema = await postgres_schema_url()

        async def opener() -> Database:
            db = await PostgresDatabase.open(url)
            opened.append(db)
            return db

    yield opener
    for db in opened:
        await db.close()
    if schema:
        await drop_schema(schema)


async def ring_on(opener: Opener, clock: FakeClock | None = None) -> KeyRing:
    clock = clock or FakeClock(T0)
    ring = KeyRing(clock=clock)
    await ring.open(KeyStore(await opener(), clock=clock))
    return ring


async def test_a_key_is_shown_once_and_only_its_hash_is_stored(open_db: Opener) -> None:
    ring = await ring_on(open_db)
    key, secret = await ring.create(name="team-a", models=["gpt-4o-mini"], rpm=10)
    assert secret.startswith("pk-") and len(secret) >= 43
    assert key.prefix == secret[:8] and key.key_id.startswith("key_")
    assert key.created_at_ms == int(T0 * 1000) and key.revoked_at_ms is None
    rows = await ring.store.db.fetch_all("SELECT * FROM client_keys")
    assert len(rows) == 1
    stored = " ".join(str(v) for v in rows[0].values())
    assert secret not in stored and secret[8:20] not in stored
    assert rows[0]["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert ring.lookup(secret) == key
    caller = ring.caller(secret)
    assert caller is not None and caller.kind == "key" and caller.key_id == key.key_id
    assert ring.lookup(secret + "x") is None and ring.lookup("pk-" + "a" * 500) is None
    view = key.view(int(T0 * 1000))
    assert view["status"] == "active" and secret not in str(view)
    assert "secret_hash" not in view and rows[0]["secret_hash"] not in str(view)


async def test_update_rotate_and_revoke_take_effect_here_at_once(open_db: Opener) -> None:
    ring = await ring_on(open_db)
    key, secret = await ring.create(name="app", budget_usd=5, budget_period="day")
    changed = await ring.update(key.key_id, name=" app 2 ", tpm=1000, models=["a", "a", "b"])
    assert changed.name == "app 2" and changed.tpm == 1000 and changed.models == ("a", "b")
    assert ring.lookup(secret) == changed == await ring.store.get(key.key_id)
    cleared = await ring.update(key.key_id, budget_usd=None)
    assert cleared.budget_usd is None and (await ring.store.get(key.key_id)).budget_usd is None

    rotated, new_secret = await ring.rotate(key.key_id)
    assert new_secret != secret and rotated.prefix == new_secret[:8]
    assert ring.lookup(secret) is None
    assert ring.lookup(new_secret) == rotated and rotated.tpm == 1000

    revoked = await ring.revoke(key.key_id)
    assert revoked.revoked_at_ms == int(T0 * 1000)
    held = ring.lookup(new_secret)
    assert held is not None and held.problem(int(T0 * 1000)) == "revoked"
    assert await ring.revoke(key.key_id) == revoked  # again: nothing changes
    with pytest.raises(InvalidRequest, match="is revoked") as refused:
        await ring.rotate(key.key_id)
    assert refused.value.status == 409
    with pytest.raises(InvalidRequest, match="is revoked"):
        await ring.update(key.key_id, rpm=1)
    with pytest.raises(NotFound, match="no client key 'key_nope'"):
        await ring.revoke("key_nope")
    with pytest.raises(InvalidRequest, match="secret_hash: not a client key field"):
        await ring.update(key.key_id, secret_hash="x")


async def test_the_store_refuses_what_would_break_a_check(open_db: Opener) -> None:
    ring = await ring_on(open_db)
    with pytest.raises(InvalidRequest, match="name: must be a non-empty string"):
        await ring.create(name="  ")
    with pytest.raises(InvalidRequest, match="rpm: must be an integer, 0 or more"):
        await ring.create(name="x", rpm=-1)
    with pytest.raises(InvalidRequest, match="budget_usd: must be more than 0"):
        await ring.create(name="x", budget_usd=0)
    with pytest.raises(InvalidRequest, match="budget_period: must be day, week, month or total"):
        await ring.create(name="x", budget_period="year")
    assert await ring.store.list() == []


async def test_changes_reach_another_daemon_on_its_next_refresh(open_db: Opener) -> None:
    here, there = await ring_on(open_db), await ring_on(open_db)
    key, secret = await here.create(name="shared")
    assert there.lookup(secret) is None
    await there.refresh()
    assert there.lookup(secret) == key

    rotated, new_secret = await here.rotate(key.key_id)
    await here.revoke(key.key_id)
    await there.refresh()
    assert there.lookup(secret) is None
    held = there.lookup(new_secret)
    assert held is not None and held.revoked_at_ms is not None and held.prefix == rotated.prefix

    # Keys made on the other side are read too, and a restarted daemon loads them all.
    other, other_secret = await there.create(name="other")
    await here.refresh()
    assert here.lookup(other_secret) == other
    fresh = await ring_on(open_db)
    assert len(fresh) == 2 and fresh.lookup(other_secret) == other
    assert fresh.lookup(new_secret) is not None and fresh.lookup(secret) is None


async def test_an_older_state_never_replaces_a_newer_one(open_db: Opener) -> None:
    ring = await ring_on(open_db)
    key, secret = await ring.create(name="k")
    revoked = await ring.revoke(key.key_id)
    # A refresh that read before the revocation, applied after it, brings nothing back.
    ring._apply(key, hash_secret(secret))
    assert ring.lookup(secret) == revoked


async def test_the_ring_goes_on_with_what_it_has_while_the_store_is_away(
    tmp_path: Path,
) -> None:
    db = await SqliteDatabase.open(tmp_path / "palyra.db")
    ring = KeyRing(clock=FakeClock(T0))
    await ring.open(KeyStore(db))
    key, secret = await ring.create(name="k")
    await db.close()
    with pytest.raises(RuntimeError):  # the closed store
        await ring.refresh()
    assert ring.lookup(secret) == key


def test_budget_windows_are_utc_calendar_periods() -> None:
    def key(period: str) -> ClientKey:
        return ClientKey(
            key_id="key_1",
            name="k",
            prefix="pk-abcde",
            models=(),
            rpm=0,
            tpm=0,
            budget_usd=1.0,
            budget_period=period,  # type: ignore[arg-type]
            expires_at_ms=None,
            agent_id=None,
            created_at_ms=0,
            revoked_at_ms=None,
        )

    now = utc_ms(2026, 12, 31, 23, 59, 59) + 999  # a Thursday, the last ms of the year
    assert key("day").budget_window(now) == (utc_ms(2026, 12, 31), utc_ms(2027, 1, 1))
    assert key("week").budget_window(now) == (utc_ms(2026, 12, 28), utc_ms(2027, 1, 4))
    assert key("month").budget_window(now) == (utc_ms(2026, 12, 1), utc_ms(2027, 1, 1))
    assert key("total").budget_window(now) == (0, NEVER_MS)
    monday = utc_ms(2026, 11, 30)
    assert key("week").budget_window(monday) == (monday, utc_ms(2026, 12, 7))
    assert key("week").budget_window(monday - 1) == (utc_ms(2026, 11, 23), monday)
    feb = utc_ms(2028, 2, 29, 12)
    assert key("month").budget_window(feb) == (utc_ms(2028, 2, 1), utc_ms(2028, 3, 1))
    assert key("day").budget_window(feb) == (utc_ms(2028, 2, 29), utc_ms(2028, 3, 1))


def test_a_key_expires_at_its_time() -> None:
    key = ClientKey(
        key_id="key_1",
        name="k",
        prefix="pk-abcde",
        models=("a",),
        rpm=0,
        tpm=0,
        budget_usd=None,
        budget_period="month",
        expires_at_ms=5000,
        agent_id=None,
        created_at_ms=0,
        revoked_at_ms=None,
    )
    assert key.problem(4999) is None and key.problem(5000) == "expired"
    assert key.view(5000)["status"] == "expired"
    assert key.allows("a") and not key.allows("b")


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("30d", 30 * 86_400_000),
        ("12h", 12 * 3_600_000),
        ("90m", 90 * 60_000),
        ("1w", 7 * 86_400_000),
        ("45s", 45_000),
        ("1d12h", 36 * 3_600_000),
        (" 2H ", 2 * 3_600_000),
    ],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "30", "d", "30 d", "1.5h", "3y", "-1d", "1d-", "0h", "0d0h"])
def test_what_is_not_a_duration_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text) if text else "is not a duration"):
        parse_duration(text)
