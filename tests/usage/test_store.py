"""The ledger's table on every state backend (PostgreSQL skips where no server answers):
totals per group over a range, requests newest first paged without loss inside one
millisecond, filters, the retention purge, idempotent inserts, budgets' spend."""

from __future__ import annotations

import pytest

from palyra.state.db import Database
from palyra.usage.records import UsageRecord, row
from palyra.usage.store import Cursor, UsageStore, next_cursor
from tests.state.conftest import database
from tests.usage.conftest import DAY, HOUR, T0, usage_record

__all__ = ["database"]  # the fixture, run once per backend


async def open_store(db: Database, *records: tuple[str, UsageRecord]) -> UsageStore:
    store = UsageStore(db)
    await store.migrate()
    await store.migrate()  # a second daemon starting on the same store changes nothing
    await store.insert_many([row(usage_id, r) for usage_id, r in records])
    return store


def ledger() -> list[tuple[str, UsageRecord]]:
    key = {"key_id": "key_a", "key_name": "alpha"}
    return [
        ("u01", usage_record(at_ms=T0 - 1, request_id="too_early")),
        ("u02", usage_record(at_ms=T0, cached_tokens=10, reasoning_tokens=5, **key)),
        (
            "u03",
            usage_record(
                at_ms=T0 + HOUR,
                status=500,
                input_tokens=0,
                output_tokens=0,
                cost_usd=None,
                error="upstream answered 500",
                **key,
            ),
        ),
        (
            "u04",
            usage_record(
                at_ms=T0 + DAY,
                model="claude",
                provider="anthropic",
                agent_id="helper",
                input_tokens=1000,
                output_tokens=200,
                cost_usd=0.5,
                cost_estimated=True,
                stream=True,
            ),
        ),
        (
            "u05",
            usage_record(at_ms=T0 + DAY + 1, model="claude", provider="anthropic", cost_usd=None),
        ),
        (
            "u06",
            usage_record(
                at_ms=T0 + DAY + 2, model="llama", provider="local", status=429, cost_usd=None
            ),
        ),
        ("u07", usage_record(at_ms=T0 + 2 * DAY, request_id="too_late")),
    ]


async def test_summary_per_group(database: Database) -> None:
    store = await open_store(database, *ledger())
    since, until = T0, T0 + 2 * DAY
    by_model = await store.summary("model", since, until)
    assert [(g["group"], g["requests"], g["errors"]) for g in by_model] == [
        ("claude", 2, 0),
        ("gpt-4o", 2, 1),
        ("llama", 1, 1),
    ]
    claude, gpt, llama = by_model
    assert (claude["input_tokens"], claude["output_tokens"]) == (1100, 250)
    assert claude["cost_usd"] == pytest.approx(0.5)
    assert (claude["unpriced_requests"], claude["estimated_requests"]) == (1, 1)
    assert (gpt["cached_tokens"], gpt["reasoning_tokens"]) == (10, 5)
    assert gpt["cost_usd"] == pytest.approx(0.01)
    assert llama["cost_usd"] is None  # no price known: unknown, not $0
    assert claude["latency_ms_avg"] == pytest.approx(120.5)

    by_key = await store.summary("key", since, until)
    assert [(g["group"], g["key_id"], g["key_name"], g["requests"]) for g in by_key] == [
        ("admin", None, "admin", 3),
        ("key_a", "key_a", "alpha", 2),
    ]
    by_provider = {g["group"]: g["requests"] for g in await store.summary("provider", since, until)}
    assert by_provider == {"anthropic": 2, "openai": 2, "local": 1}
    by_agent = {g["group"]: g["requests"] for g in await store.summary("agent", since, until)}
    assert by_agent == {None: 4, "helper": 1}

    by_day = await store.summary("day", since, until)
    assert [(g["group"], g["start_ms"], g["requests"]) for g in by_day] == [
        ("2027-01-15", T0, 2),
        ("2027-01-16", T0 + DAY, 3),
    ]
    by_hour = await store.summary("hour", T0, T0 + DAY)
    assert [(g["group"], g["requests"]) for g in by_hour] == [
        ("2027-01-15T00:00Z", 1),
        ("2027-01-15T01:00Z", 1),
    ]
    (total,) = await store.summary(None, since, until)
    assert (total["requests"], total["errors"], total["input_tokens"]) == (5, 2, 1300)
    assert total["cost_usd"] == pytest.approx(0.51)

    # Bounded: the busiest groups; for days the latest.
    assert [g["group"] for g in await store.summary("model", since, until, limit=1)] == ["claude"]
    assert [g["group"] for g in await store.summary("day", since, until, limit=1)] == ["2027-01-16"]
    # An empty range: no groups, zero totals and no cost.
    assert await store.summary("model", T0 + 5 * DAY, T0 + 6 * DAY) == []
    (empty,) = await store.summary(None, T0 + 5 * DAY, T0 + 6 * DAY)
    assert (empty["requests"], empty["cost_usd"], empty["latency_ms_avg"]) == (0, None, None)
    with pytest.raises(ValueError, match="group_by"):
        await store.summary("colour", since, until)  # type: ignore[arg-type]


async def test_requests_newest_first_paged_without_loss(database: Database) -> None:
    # Seven in one millisecond: a page boundary inside it must neither skip nor repeat one.
    same_ms = [(f"s{i:02d}", usage_record(at_ms=T0 + 5, request_id=f"same_{i}")) for i in range(7)]
    store = await open_store(database, *ledger(), *same_ms)
    seen: list[str] = []
    before: Cursor | None = None
    pages = 0
    while True:
        page = await store.requests(limit=3, before=before)
        pages += 1
        seen += [r["usage_id"] for r in page]
        before = next_cursor(page, 3)
        if before is None:
            break
        before = Cursor.parse(str(before))  # as it goes through a URL
    assert len(seen) == len(set(seen)) == 14
    assert pages == 5
    assert seen[:2] == ["u07", "u06"] and seen[-1] == "u01"
    ats = [r["at_ms"] for r in await store.requests(limit=200)]
    assert ats == sorted(ats, reverse=True)

    first = (await store.requests(limit=1))[0]
    assert first["request_id"] == "too_late" and first["stream"] is False
    assert first["cost_estimated"] is False and first["prompt"] is None
    # Epoch ms as the cursor: strictly older; one millisecond's rows by usage_id, descending.
    older = await store.requests(limit=200, before=Cursor(T0 + DAY + 1))
    assert [r["usage_id"] for r in older] == [
        "u04",
        "u03",
        *[f"s{i:02d}" for i in reversed(range(7))],
        "u02",
        "u01",
    ]


async def test_requests_filters(database: Database) -> None:
    store = await open_store(database, *ledger())

    async def ids(**filters: object) -> list[str]:
        return [r["usage_id"] for r in await store.requests(**filters)]  # type: ignore[arg-type]

    assert await ids(key_id="key_a") == ["u03", "u02"]
    assert await ids(key_id="admin") == ["u07", "u06", "u05", "u04", "u01"]
    assert await ids(model="claude") == ["u05", "u04"]
    assert await ids(status="error") == ["u06", "u03"]
    assert await ids(status="ok", model="gpt-4o", key_id="key_a") == ["u02"]
    assert await ids(status=429) == ["u06"]
    assert await ids(key_id="key_nobody") == []
    errored = (await store.requests(status=500))[0]
    assert errored["error"] == "upstream answered 500" and errored["cost_usd"] is None
    with pytest.raises(ValueError, match="limit"):
        await store.requests(limit=201)


async def test_retention_purge_and_idempotent_inserts(database: Database) -> None:
    store = await open_store(database, *ledger())
    # The same rows again (a batch retried after an unclear failure): stored once.
    await store.insert_many([row(usage_id, r) for usage_id, r in ledger()])
    assert len(await store.requests(limit=200)) == 7
    assert await store.purge(T0) == 1
    assert await store.purge(T0) == 0
    remaining = [r["usage_id"] for r in await store.requests(limit=200)]
    assert "u01" not in remaining and len(remaining) == 6


async def test_text_is_bounded_and_nul_free(database: Database) -> None:
    store = await open_store(
        database,
        ("n1", usage_record(request_id="a\x00b", error="x" * 5000, prompt="p" * 40_000)),
    )
    (stored,) = await store.requests()
    assert stored["request_id"] == "a\ufffdb"
    assert len(stored["error"]) == 2000 and len(stored["prompt"]) == 32_768


async def test_spend_since_for_budgets(database: Database) -> None:
    store = await open_store(database, *ledger())
    assert await store.spend_since("key_a", T0) == pytest.approx(0.01)
    assert await store.spend_since("key_a", T0 + 1) == 0.0  # only an unpriced failure left
    assert await store.spend_since("key_nobody", 0) == 0.0


def test_cursor_parsing() -> None:
    assert Cursor.parse("1800000000000") == Cursor(1_800_000_000_000)
    assert str(Cursor.parse("1800000000000:ab12")) == "1800000000000:ab12"
    for bad in ("", "abc", "-5", "1:a b", "1:" + "a" * 65, "١٢", "1" * 19):
        with pytest.raises(ValueError):
            Cursor.parse(bad)


async def test_a_batch_of_many_chunks_is_stored_whole_once(database: Database) -> None:
    # Rows go in several to a statement: two full chunks and a remainder, then all again.
    many = [(f"m{i:04d}", usage_record(at_ms=T0 + i, request_id=f"r{i}")) for i in range(613)]
    store = await open_store(database, *many)
    await store.insert_many([row(usage_id, r) for usage_id, r in many])
    (totals,) = await store.summary(None, T0, T0 + DAY)
    assert totals["requests"] == 613
    page = await store.requests(limit=3)
    assert [r["request_id"] for r in page] == ["r612", "r611", "r610"]


def test_row_mends_what_the_usual_record_never_has() -> None:
    usual = row("u1", usage_record())
    assert usual[2:10] == (
        "req_1",
        None,
        None,
        None,
        "/v1/chat/completions",
        "gpt-4o",
        "openai",
        "gpt-4o@openai",
    )
    # A client's model name with a NUL, a long key name, a negative and a float count.
    odd = row(
        "u2",
        usage_record(model="m\x00x", key_name="k" * 300, input_tokens=-3, retries=2.0),
    )
    assert odd[7] == "m\ufffdx" and odd[4] == "k" * 256
    assert odd[11] == 0 and odd[19] == 2 and type(odd[19]) is int
    assert odd[2:4] == ("req_1", None)  # the rest as it was
