"""The ledger's table on the state store (SQLite or PostgreSQL, portable SQL only), and the
queries the console, the CLI and budgets read: totals per group over a time range, and the
latest requests, newest first, paged by a cursor."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from palyra.state.db import Database, Row
from palyra.usage.records import COLUMNS

MIGRATIONS = [
    "CREATE TABLE usage_records ("
    " usage_id TEXT PRIMARY KEY, at_ms BIGINT NOT NULL, request_id TEXT NOT NULL,"
    " key_id TEXT, key_name TEXT, agent_id TEXT, route TEXT NOT NULL, model TEXT NOT NULL,"
    " provider TEXT NOT NULL, deployment TEXT NOT NULL, status BIGINT NOT NULL,"
    " input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL,"
    " cached_tokens BIGINT NOT NULL, reasoning_tokens BIGINT NOT NULL,"
    " cost_usd DOUBLE PRECISION, cost_estimated BIGINT NOT NULL,"
    " latency_ms DOUBLE PRECISION NOT NULL, ttft_ms DOUBLE PRECISION,"
    " retries BIGINT NOT NULL, failovers BIGINT NOT NULL, error TEXT, stream BIGINT NOT NULL,"
    " prompt TEXT, answer TEXT);"
    "CREATE INDEX usage_records_at ON usage_records (at_ms);"
    "CREATE INDEX usage_records_key ON usage_records (key_id, at_ms);"
    "CREATE INDEX usage_records_model ON usage_records (model, at_ms)",
]

GroupBy = Literal["key", "model", "provider", "agent", "day", "hour"]
GROUP_BY: Final[tuple[str, ...]] = ("key", "model", "provider", "agent", "day", "hour")
# A summary answers at most this many groups (the busiest; for day and hour the latest).
MAX_GROUPS: Final = 1000
MAX_REQUESTS_LIMIT: Final = 200
DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000
ADMIN: Final = "admin"  # how requests made without a client key are named

# Integer division is integer in both SQLite and PostgreSQL (BIGINT / integer is BIGINT).
_GROUP_SQL: Final[dict[str, str]] = {
    "key": "key_id",
    "model": "model",
    "provider": "provider",
    "agent": "agent_id",
    "day": f"at_ms / {DAY_MS}",
    "hour": f"at_ms / {HOUR_MS}",
}
_TOTALS_SQL: Final = (
    "COUNT(*) AS requests,"
    " SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors,"
    " SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens,"
    " SUM(cached_tokens) AS cached_tokens, SUM(reasoning_tokens) AS reasoning_tokens,"
    " SUM(cost_usd) AS cost_usd,"
    " SUM(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END) AS unpriced,"
    " SUM(cost_estimated) AS estimated, AVG(latency_ms) AS latency_ms_avg"
)
# Rows per INSERT: 26 parameters each, far below SQLite's 32,766 and PostgreSQL's 65,535.
_CHUNK: Final = 250


@functools.cache
def _insert(rows: int) -> str:
    one = f"({', '.join('?' * (len(COLUMNS) + 1))})"
    return (
        f"INSERT INTO usage_records (usage_id, {', '.join(COLUMNS)})"
        f" VALUES {', '.join([one] * rows)}"
        " ON CONFLICT (usage_id) DO NOTHING"
    )


def _flat(rows: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    return tuple(itertools.chain.from_iterable(rows))


_REQUEST_COLUMNS: Final = "usage_id, " + ", ".join(COLUMNS)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page of requests ends: rows strictly older come next. Rows of one
    millisecond are ordered by usage_id, so a page boundary inside a millisecond loses none."""

    at_ms: int
    usage_id: str | None = None

    def __str__(self) -> str:
        return f"{self.at_ms}" if self.usage_id is None else f"{self.at_ms}:{self.usage_id}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """`<epoch ms>` or a `next_before` value (`<epoch ms>:<usage id>`)."""
        at, _, usage_id = text.partition(":")
        if not at.isascii() or not at.isdigit() or len(at) > 18:
            raise ValueError("must be epoch milliseconds or a next_before value")
        if usage_id and not (usage_id.isascii() and usage_id.isalnum() and len(usage_id) <= 64):
            raise ValueError("must be epoch milliseconds or a next_before value")
        return cls(int(at), usage_id or None)


StatusFilter = int | Literal["ok", "error"]


class UsageStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def migrate(self) -> None:
        await self.db.migrate("usage", MIGRATIONS)

    async def insert_many(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Rows as `records.row` makes them, in one transaction; a row whose usage_id is
        stored already is skipped, so a batch retried after an unclear failure is not
        counted twice."""
        # Many rows to a statement: SQLite's thread then binds and steps a chunk in one call,
        # where one statement a row handed the interpreter between it and the event loop at
        # every row, which cost the requests served meanwhile more than the inserts did
        # (about 0.14 ms a request at 1,000 requests a second, benchmarks/README.md).
        full = len(rows) - len(rows) % _CHUNK
        if full:
            chunks = [_flat(rows[i : i + _CHUNK]) for i in range(0, full, _CHUNK)]
            await self.db.execute_many(_insert(_CHUNK), chunks)
        if full < len(rows):
            await self.db.execute_many(_insert(len(rows) - full), [_flat(rows[full:])])

    async def purge(self, before_ms: int) -> int:
        """Delete the records made before `before_ms`; how many there were."""
        return await self.db.execute("DELETE FROM usage_records WHERE at_ms < ?", max(before_ms, 0))

    async def spend_since(self, key_id: str, since_ms: int) -> float:
        """USD the ledger holds for the client key from `since_ms` on (what budgets start
        from); records without a price count as nothing."""
        row = await self.db.fetch_one(
            "SELECT SUM(cost_usd) AS spent FROM usage_records WHERE key_id = ? AND at_ms >= ?",
            key_id,
            since_ms,
        )
        spent = None if row is None else row["spent"]
        return 0.0 if spent is None else float(spent)

    async def summary(
        self,
        group_by: GroupBy | None,
        since_ms: int,
        until_ms: int,
        *,
        limit: int = MAX_GROUPS,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Totals per group of the records with since_ms <= at_ms < until_ms: the busiest
        `limit` groups after the first `offset`, most requests first (day and hour: the
        latest, oldest first). `group_by=None`: one row of totals over everything in the
        range."""
        where = "WHERE at_ms >= ? AND at_ms < ?"
        if group_by is None:
            row = await self.db.fetch_one(
                f"SELECT {_TOTALS_SQL} FROM usage_records {where}", since_ms, until_ms
            )
            return [_totals(row or {})]
        if group_by not in _GROUP_SQL:
            raise ValueError(f"group_by: must be one of {', '.join(GROUP_BY)}")
        limit = max(1, min(int(limit), MAX_GROUPS + 1))
        expr = _GROUP_SQL[group_by]
        name = ", MAX(key_name) AS key_name" if group_by == "key" else ""
        if group_by in ("day", "hour"):
            order = f"{expr} DESC"
        else:
            order = f"COUNT(*) DESC, COALESCE({expr}, '')"
        rows = await self.db.fetch_all(
            f"SELECT {expr} AS grp{name}, {_TOTALS_SQL} FROM usage_records {where}"
            f" GROUP BY {expr} ORDER BY {order} LIMIT ? OFFSET ?",
            since_ms,
            until_ms,
            limit,
            max(0, int(offset)),
        )
        groups = [_group(group_by, row) for row in rows]
        if group_by in ("day", "hour"):
            groups.reverse()
        return groups

    async def requests(
        self,
        *,
        key_id: str | None = None,
        model: str | None = None,
        status: StatusFilter | None = None,
        limit: int = 50,
        before: Cursor | None = None,
    ) -> list[dict[str, Any]]:
        """The latest records, newest first, at most `limit` (1-200), older than `before`.
        `key_id="admin"`: those made without a client key. `status`: an HTTP status, "ok"
        (below 400) or "error" (400 and above)."""
        if not 1 <= limit <= MAX_REQUESTS_LIMIT:
            raise ValueError(f"limit: must be from 1 to {MAX_REQUESTS_LIMIT}")
        clauses: list[str] = []
        params: list[Any] = []
        if key_id == ADMIN:
            clauses.append("key_id IS NULL")
        elif key_id is not None:
            clauses.append("key_id = ?")
            params.append(key_id)
        if model is not None:
            clauses.append("model = ?")
            params.append(model)
        if status == "ok":
            clauses.append("status < 400")
        elif status == "error":
            clauses.append("status >= 400")
        elif status is not None:
            clauses.append("status = ?")
            params.append(int(status))
        if before is not None:
            if before.usage_id is None:
                clauses.append("at_ms < ?")
                params.append(before.at_ms)
            else:
                clauses.append("(at_ms < ? OR (at_ms = ? AND usage_id < ?))")
                params += [before.at_ms, before.at_ms, before.usage_id]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self.db.fetch_all(
            f"SELECT {_REQUEST_COLUMNS} FROM usage_records {where}"
            " ORDER BY at_ms DESC, usage_id DESC LIMIT ?",
            *params,
            limit,
        )
        return [_request(row) for row in rows]


def next_cursor(page: list[dict[str, Any]], limit: int) -> Cursor | None:
    """Where the next page starts; None when this one was the last."""
    if len(page) < limit:
        return None
    last = page[-1]
    return Cursor(int(last["at_ms"]), str(last["usage_id"]))


def _int(value: Any) -> int:
    # PostgreSQL sums BIGINTs as numeric (a Decimal here); SQLite answers ints.
    return 0 if value is None else int(value)


def _totals(row: Row) -> dict[str, Any]:
    cost = row.get("cost_usd")
    latency = row.get("latency_ms_avg")
    return {
        "requests": _int(row.get("requests")),
        "errors": _int(row.get("errors")),
        "input_tokens": _int(row.get("input_tokens")),
        "output_tokens": _int(row.get("output_tokens")),
        "cached_tokens": _int(row.get("cached_tokens")),
        "reasoning_tokens": _int(row.get("reasoning_tokens")),
        # None when no record in the group had a price: unknown, not free.
        "cost_usd": None if cost is None else float(cost),
        "unpriced_requests": _int(row.get("unpriced")),
        "estimated_requests": _int(row.get("estimated")),
        "latency_ms_avg": None if latency is None else round(float(latency), 3),
    }


def _group(group_by: str, row: Row) -> dict[str, Any]:
    value = row["grp"]
    head: dict[str, Any]
    if group_by == "key":
        head = {"group": value or ADMIN, "key_id": value, "key_name": row["key_name"] or ADMIN}
    elif group_by in ("day", "hour"):
        start_ms = int(value) * (DAY_MS if group_by == "day" else HOUR_MS)
        at = dt.datetime.fromtimestamp(start_ms / 1000, dt.UTC)
        label = at.date().isoformat() if group_by == "day" else at.strftime("%Y-%m-%dT%H:00Z")
        head = {"group": label, "start_ms": start_ms}
    else:
        head = {"group": value}
    return head | _totals(row)


def _request(row: Row) -> dict[str, Any]:
    out = dict(row)
    for name in ("at_ms", "status", "input_tokens", "output_tokens", "cached_tokens"):
        out[name] = _int(out[name])
    for name in ("reasoning_tokens", "retries", "failovers"):
        out[name] = _int(out[name])
    out["cost_estimated"] = bool(out["cost_estimated"])
    out["stream"] = bool(out["stream"])
    return out
