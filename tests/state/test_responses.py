"""The stored responses of `/v1/responses`, on every state backend (PostgreSQL skips where no
server answers): readable the moment they are saved, written in the background, chained,
deleted, bounded in memory, purged after their retention."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from palyra.state.db import Database
from palyra.state.responses import (
    MAX_CHAIN,
    RETENTION_MS,
    ChainTooLong,
    ResponseStore,
    StoredResponse,
)
from tests.state.conftest import database

__all__ = ["database"]  # the fixture, run once per backend

T0 = 1_800_000_000_000


def record(
    n: int, previous: str | None = None, at_ms: int = T0, text: str = "answer"
) -> StoredResponse:
    response = {
        "id": f"resp_{n}",
        "object": "response",
        "output": [
            {
                "id": f"msg_out_{n}",
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": f"{text} {n}"}],
            }
        ],
    }
    inputs: list[dict[str, Any]] = [
        {"id": f"msg_in_{n}", "type": "message", "role": "user", "content": f"question {n}\x00"}
    ]
    return StoredResponse.of(response, inputs, previous, at_ms)


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


async def test_saved_is_readable_at_once_and_written_behind(database: Database) -> None:
    store = ResponseStore()
    store.save(record(1))  # before the store is open: memory only, written once it is
    await store.start(database, purge_every_s=3600)
    store.save(record(2, previous="resp_1"))
    got = await store.get("resp_2")
    assert got is not None and got.previous_response_id == "resp_1"
    await store.flush()
    await store.aclose()

    fresh = ResponseStore()  # nothing in memory: read from the state store
    await fresh.start(database, purge_every_s=3600)
    again = await fresh.get("resp_2")
    assert again is not None and again.response == record(2).response
    assert again.input[0]["content"] == "question 2\x00"  # a NUL survives PostgreSQL text
    history = await fresh.history("resp_2")
    assert history is not None
    assert [item["id"] for item in history] == ["msg_in_1", "msg_out_1", "msg_in_2", "msg_out_2"]
    assert await fresh.history("resp_unknown") is None
    await fresh.aclose()


async def test_answers_of_one_moment_are_written_in_one_transaction(database: Database) -> None:
    # Found by the benchmark: each answer its own transaction (and fsync) cost 0.4 ms of CPU
    # an answer at one answer a millisecond.
    store = ResponseStore(gather_s=0.05)
    await store.start(database, purge_every_s=3600)
    batches: list[int] = []
    write = store._write

    async def counted(batch: list[str]) -> None:
        batches.append(len(batch))
        await write(batch)

    store._write = counted  # type: ignore[method-assign]
    store.save(record(1))
    await asyncio.sleep(0.01)  # the writer has taken the first and waits for company
    for n in range(2, 6):
        store.save(record(n))
        await asyncio.sleep(0)
    await store.flush()
    assert batches == [5]
    await store.aclose()


async def test_delete_also_what_is_still_being_written(database: Database) -> None:
    store = ResponseStore()
    await store.start(database, purge_every_s=3600)
    store.save(record(1))
    assert await store.delete("resp_1") is True  # (perhaps not written yet)
    await store.flush()
    assert await store.get("resp_1") is None
    assert await store.delete("resp_1") is False
    fresh = ResponseStore()
    await fresh.start(database, purge_every_s=3600)
    assert await fresh.get("resp_1") is None
    await fresh.aclose()
    await store.aclose()


async def test_memory_is_bounded_and_the_rest_read_back(database: Database) -> None:
    store = ResponseStore(memory_items=2)
    await store.start(database, purge_every_s=3600)
    for n in range(5):
        store.save(record(n))
    await store.flush()
    assert len(store._memory) == 2
    for n in range(5):
        got = await store.get(f"resp_{n}")
        assert got is not None and got.response["id"] == f"resp_{n}"
    small = ResponseStore(memory_bytes=record(1).size * 2 - 1)
    small.save(record(1))
    small.save(record(2))
    assert list(small._memory) == ["resp_2"]
    await store.aclose()


async def test_purged_after_retention(database: Database) -> None:
    clock = Clock(T0 + 2)
    store = ResponseStore(clock=clock)
    await store.start(database, purge_every_s=3600)
    store.save(record(1, at_ms=T0))
    store.save(record(2, at_ms=T0 + 2))
    await store.flush()
    clock.ms = T0 + RETENTION_MS + 1  # the first is one ms past its retention
    assert await store.purge(clock.ms - RETENTION_MS) == 1
    assert await store.get("resp_1") is None  # gone from memory as well
    assert await store.get("resp_2") is not None
    await store.aclose()


async def test_a_chain_too_long_is_refused() -> None:
    store = ResponseStore(memory_items=MAX_CHAIN + 10)
    store.save(record(0))
    for n in range(1, MAX_CHAIN + 1):
        store.save(record(n, previous=f"resp_{n - 1}"))
    with pytest.raises(ChainTooLong):
        await store.history(f"resp_{MAX_CHAIN}")
    history = await store.history(f"resp_{MAX_CHAIN - 1}")
    assert history is not None and len(history) == 2 * MAX_CHAIN


async def test_a_store_that_fails_loses_only_the_later_reading(database: Database) -> None:
    store = ResponseStore(memory_items=1)
    await store.start(database, purge_every_s=3600)
    await database.execute("DROP TABLE responses")
    store.save(record(1))
    await store.flush()  # the write failed; the writer goes on
    store.save(record(2))
    await store.flush()
    assert await store.get("resp_2") is not None  # still in memory
    await store.aclose()


async def test_writes_beyond_the_pending_bound_are_dropped(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from palyra.state import responses

    monkeypatch.setattr(responses, "MAX_PENDING", 2)
    store = ResponseStore()
    for n in range(3):  # the store not open yet: all three wait
        store.save(record(n))
    assert await store.get("resp_2") is not None  # readable from memory all the same
    await store.start(database, purge_every_s=3600)
    await store.flush()
    rows = await database.fetch_all("SELECT response_id FROM responses ORDER BY response_id")
    assert [row["response_id"] for row in rows] == ["resp_0", "resp_1"]
    await store.aclose()
