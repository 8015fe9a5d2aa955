"""Budgets per client key: spend in the current period, refusals naming the period and reset,
seeding from the ledger, and sharing through a real Redis (127.0.0.1:6379; skipped, saying
why, when it is not running)."""

from __future__ import annotations

import pytest

from palyra.budgets import BudgetBook, BudgetExceeded
from tests.support.budgets import DAY_MS, NOON, Key
from tests.support.redis import REDIS_URL, namespace

__all__ = ["namespace"]  # the fixture, from tests.support.redis

MIDNIGHT = NOON - 12 * 3_600_000


def test_noon_is_what_the_tests_say() -> None:
    import datetime as dt

    assert dt.datetime.fromtimestamp(NOON / 1000, dt.UTC) == dt.datetime(
        2026, 11, 26, 12, tzinfo=dt.UTC
    )


def test_under_budget_passes_and_at_budget_is_refused_with_the_reset() -> None:
    book, key = BudgetBook(), Key()
    assert book.check(key, NOON) is None
    book.add("key_a", 0.6, NOON)
    assert book.check(key, NOON + 1) is None
    book.add("key_a", 0.4, NOON + 2)
    refusal = book.check(key, NOON + 3)
    assert isinstance(refusal, BudgetExceeded)
    assert (refusal.status, refusal.code) == (429, "budget_exceeded")
    assert "'ci-bot'" in refusal.message and "$1.00 budget" in refusal.message
    assert "this day" in refusal.message and "2026-11-27 00:00 UTC" in refusal.message
    # Twelve hours to midnight, rounded up to whole seconds.
    assert refusal.headers == {"retry-after": str(12 * 3600)}


def test_the_next_period_starts_from_nothing() -> None:
    book, key = BudgetBook(), Key()
    book.add("key_a", 5.0, NOON)
    assert book.check(key, NOON) is not None
    assert book.check(key, MIDNIGHT + DAY_MS) is None  # tomorrow
    assert book.spent(key, MIDNIGHT + DAY_MS) == 0.0
    assert book.spent(key, MIDNIGHT - 1) == 0.0  # yesterday


def test_a_week_sums_its_days_and_resets_on_monday() -> None:
    book, key = BudgetBook(), Key(budget_period="week", budget_usd=3.0)
    monday = MIDNIGHT - 3 * DAY_MS
    book.add("key_a", 1.0, monday - 1)  # Sunday: last week
    book.add("key_a", 1.0, monday)
    book.add("key_a", 1.5, NOON)
    assert book.spent(key, NOON) == pytest.approx(2.5)
    assert book.check(key, NOON) is None
    book.add("key_a", 0.5, NOON + 1)
    refusal = book.check(key, NOON + 2)
    assert refusal is not None and "this week" in refusal.message
    assert "2026-11-30 00:00 UTC" in refusal.message  # the next Monday


def test_a_total_budget_never_resets_and_says_so_without_retry_after() -> None:
    book, key = BudgetBook(), Key(budget_period="total", budget_usd=2.0)
    book.add("key_a", 1.5, NOON - 40 * DAY_MS)
    book.add("key_a", 0.5, NOON)
    refusal = book.check(key, NOON + 400 * DAY_MS)
    assert refusal is not None
    assert "total" in refusal.message and "never resets" in refusal.message
    assert "retry-after" not in refusal.headers


def test_keys_without_a_budget_are_never_refused_and_keys_do_not_share_spend() -> None:
    book = BudgetBook()
    book.add("key_a", 100.0, NOON)
    assert book.check(Key(budget_usd=None), NOON) is None
    assert book.check(Key(key_id="key_b"), NOON) is None


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_no_cost_counts_nothing(value: float) -> None:
    book = BudgetBook()
    book.add("key_a", value, NOON)
    assert book.spent(Key(), NOON) == 0.0


def test_spend_added_after_a_check_moves_the_cached_window() -> None:
    # The window's sum is kept between checks; an addition must reach it.
    book, key = BudgetBook(), Key(budget_usd=1.0)
    book.add("key_a", 0.9, NOON)
    assert book.check(key, NOON) is None
    book.add("key_a", 0.2, NOON + 10)
    assert book.check(key, NOON + 20) is not None


async def test_load_seeds_each_budgeted_key_from_the_ledger_since_its_period_start() -> None:
    asked: list[tuple[str, int]] = []

    async def spend_since(key_id: str, since_ms: int) -> float:
        asked.append((key_id, since_ms))
        return {"key_a": 0.75, "key_t": 9.0}.get(key_id, 0.0)

    book = BudgetBook()
    keys = [
        Key(),
        Key(key_id="key_t", budget_period="total", budget_usd=10.0),
        Key(key_id="key_n", budget_usd=None),
    ]
    await book.load(keys, spend_since, now_ms=NOON)
    assert asked == [("key_a", MIDNIGHT), ("key_t", 0)]
    assert book.spent(keys[0], NOON) == pytest.approx(0.75)
    assert book.spent(keys[1], NOON) == pytest.approx(9.0)
    book.add("key_a", 0.25, NOON + 1)
    assert book.check(keys[0], NOON + 2) is not None
    # Loaded spend belongs to today: tomorrow starts from nothing.
    assert book.spent(keys[0], MIDNIGHT + DAY_MS) == 0.0


# --- Redis ------------------------------------------------------------------------------


async def test_three_daemons_share_spend_through_redis(namespace: str) -> None:
    books = [BudgetBook(REDIS_URL, namespace=namespace, wall_ms=lambda: NOON) for _ in range(3)]
    key = Key(budget_usd=1.0)
    try:
        for book in books:
            assert book.check(key, NOON) is None  # each learns the key's period
        for book in books:
            book.add("key_a", 0.4, NOON)  # 1.2 together; 0.4 each alone
        for book in books:
            await book.sync()  # sends
        for book in books:
            await book.sync()  # reads the others' back
        for book in books:
            assert book.spent(key, NOON) == pytest.approx(1.2)
            assert book.check(key, NOON) is not None
    finally:
        for book in books:
            await book.aclose()


async def test_the_ledger_seeds_a_shared_total_only_where_there_is_none(namespace: str) -> None:
    """Two daemons (or workers) start on one ledger that says 0.9 was spent: the shared total
    is 0.9 plus what they spend since, never each one's 0.9 alone (nor 1.8)."""
    key = Key(budget_usd=1.0)

    async def ledger(key_id: str, since_ms: int) -> float:
        return 0.9

    books = [BudgetBook(REDIS_URL, namespace=namespace, wall_ms=lambda: NOON) for _ in range(2)]
    try:
        for book in books:
            await book.load([key], ledger, now_ms=NOON)
            book.add("key_a", 0.05, NOON)
        for book in books * 2:
            await book.sync()
        for book in books:
            assert book.spent(key, NOON) == pytest.approx(1.0)
            assert book.check(key, NOON) is not None
    finally:
        for book in books:
            await book.aclose()


async def test_redis_keys_expire_past_the_period_and_totals_do_not(namespace: str) -> None:
    import redis.asyncio as redis

    book = BudgetBook(REDIS_URL, namespace=namespace, wall_ms=lambda: NOON)
    day, total = Key(), Key(key_id="key_t", budget_period="total", budget_usd=5.0)
    client = redis.from_url(REDIS_URL)
    try:
        book.check(day, NOON)
        book.check(total, NOON)
        book.add("key_a", 0.1, NOON)
        book.add("key_t", 0.1, NOON)
        await book.sync()
        day_key = f"{namespace}:budget:{{key_a}}:day:{MIDNIGHT}"
        ttl = await client.ttl(day_key)
        assert 12 * 3600 < ttl <= 36 * 3600  # the reset, 12 h off, plus a day
        assert await client.ttl(f"{namespace}:budget:{{key_t}}:total") == -1
        assert float(await client.get(day_key)) == pytest.approx(0.1)
    finally:
        await book.aclose()
        await client.aclose()


async def test_an_unreachable_redis_never_fails_and_keeps_local_spend() -> None:
    # Nothing listens on port 1: every sync fails fast.
    book = BudgetBook("redis://127.0.0.1:1/0", timeout_s=0.05, wall_ms=lambda: NOON)
    key = Key(budget_usd=1.0)
    try:
        book.check(key, NOON)
        book.add("key_a", 1.5, NOON)
        await book.sync()
        assert not book.reachable and book.last_error
        assert book.check(key, NOON) is not None  # local spend still counts
        await book.sync()  # the unsent addition is kept for a later try
        assert book._unsent
    finally:
        await book.aclose()
