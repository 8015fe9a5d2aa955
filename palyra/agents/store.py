"""Durable agent runs and their events, in the state store (portable SQL only).

A run row holds the summary (status, usage, output); its events (`run_started`, `model_text`,
`tool_call`, `tool_result`, `run_finished`) are numbered per run. A running row carries its
owner node and a lease that the owner renews; a run whose owner died is found by its expired
lease and marked `failed` / `interrupted`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from palyra.state.db import Database, Row

MIGRATIONS = [
    "CREATE TABLE agent_runs ("
    " run_id TEXT PRIMARY KEY, agent_id TEXT NOT NULL, origin TEXT NOT NULL,"
    " principal TEXT NOT NULL, session_id TEXT, auth_profile_id TEXT, model TEXT,"
    " input TEXT NOT NULL, status TEXT NOT NULL, error_kind TEXT, error_message TEXT,"
    " prompt_tokens BIGINT NOT NULL DEFAULT 0, completion_tokens BIGINT NOT NULL DEFAULT 0,"
    " tool_calls BIGINT NOT NULL DEFAULT 0, turns BIGINT NOT NULL DEFAULT 0, output TEXT,"
    " started_at BIGINT NOT NULL, finished_at BIGINT,"
    " owner_node TEXT NOT NULL, lease_expires_at BIGINT);"
    "CREATE INDEX agent_runs_status ON agent_runs (status, lease_expires_at);"
    "CREATE INDEX agent_runs_started ON agent_runs (started_at);"
    "CREATE TABLE agent_run_events ("
    " run_id TEXT NOT NULL, seq BIGINT NOT NULL, type TEXT NOT NULL, at_ms BIGINT NOT NULL,"
    " data TEXT NOT NULL, PRIMARY KEY (run_id, seq))",
    # The run history is read newest first, often for one agent.
    "CREATE INDEX agent_runs_agent ON agent_runs (agent_id, started_at)",
]

_RUN_COLUMNS = (
    "run_id, agent_id, origin, principal, session_id, auth_profile_id, model, input, status,"
    " error_kind, error_message, prompt_tokens, completion_tokens, tool_calls, turns, output,"
    " started_at, finished_at"
)


# What a run's listing shows of its input and output: enough to tell runs apart; the run's
# own page has the whole text.
EXCERPT_CHARS = 200
MAX_LIST_LIMIT = 200
_LIST_COLUMNS = (
    "run_id, agent_id, origin, session_id, model, status, error_kind, error_message,"
    " prompt_tokens, completion_tokens, tool_calls, turns, started_at, finished_at,"
    f" SUBSTR(input, 1, {EXCERPT_CHARS + 1}) AS input_head,"
    f" SUBSTR(output, 1, {EXCERPT_CHARS + 1}) AS output_head"
)
_RUN_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass(frozen=True, slots=True)
class RunCursor:
    """Where a page of runs ends: runs that started strictly earlier come next. Runs of one
    millisecond are ordered by run_id, so a page boundary inside a millisecond loses none."""

    started_at: int
    run_id: str | None = None

    def __str__(self) -> str:
        return str(self.started_at) if self.run_id is None else f"{self.started_at}:{self.run_id}"

    @classmethod
    def parse(cls, text: str) -> RunCursor:
        """`<epoch ms>` or a `next_before` value (`<epoch ms>:<run id>`)."""
        at, _, run_id = text.partition(":")
        rule = "must be epoch milliseconds or a next_before value"
        if not at.isascii() or not at.isdigit() or len(at) > 18:
            raise ValueError(rule)
        if run_id and not (len(run_id) <= 128 and set(run_id) <= _RUN_ID_CHARS):
            raise ValueError(rule)
        return cls(int(at), run_id or None)


@dataclass(frozen=True, slots=True)
class RunFilter:
    agent_id: str | None = None
    origins: tuple[str, ...] = ()  # empty: any
    status: str | None = None


@dataclass(frozen=True, slots=True)
class RunFinish:
    status: str  # succeeded | failed | cancelled
    error_kind: str | None
    error_message: str | None
    prompt_tokens: int
    completion_tokens: int
    tool_calls: int
    turns: int
    output: str | None


class RunStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def migrate(self) -> None:
        await self.db.migrate("agent_runs", MIGRATIONS)

    async def create(
        self,
        *,
        run_id: str,
        agent_id: str,
        origin: str,
        principal: str,
        session_id: str | None,
        auth_profile_id: str | None,
        model: str,
        input: str,
        started_at: int,
        owner_node: str,
        lease_expires_at: int,
        first_event: dict[str, Any],
    ) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO agent_runs (run_id, agent_id, origin, principal, session_id,"
                " auth_profile_id, model, input, status, started_at, owner_node,"
                " lease_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                run_id,
                agent_id,
                origin,
                principal,
                session_id,
                auth_profile_id,
                model,
                input,
                started_at,
                owner_node,
                lease_expires_at,
            )
            await _insert_event(tx, run_id, 1, "run_started", started_at, first_event)

    async def append(
        self, run_id: str, seq: int, type: str, at_ms: int, data: dict[str, Any]
    ) -> None:
        await _insert_event(self.db, run_id, seq, type, at_ms, data)

    async def finish(
        self, run_id: str, seq: int, at_ms: int, finish: RunFinish, event: dict[str, Any]
    ) -> bool:
        """Record the end and the `run_finished` event together; False when the run was
        already finished (e.g. marked interrupted by another node)."""
        async with self.db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE agent_runs SET status = ?, error_kind = ?, error_message = ?,"
                " prompt_tokens = ?, completion_tokens = ?, tool_calls = ?, turns = ?,"
                " output = ?, finished_at = ?, lease_expires_at = NULL"
                " WHERE run_id = ? AND status = 'running'",
                finish.status,
                finish.error_kind,
                _storable(finish.error_message),
                finish.prompt_tokens,
                finish.completion_tokens,
                finish.tool_calls,
                finish.turns,
                _storable(finish.output),
                at_ms,
                run_id,
            )
            if changed:
                await _insert_event(tx, run_id, seq, "run_finished", at_ms, event)
            return bool(changed == 1)

    async def get(self, run_id: str) -> Row | None:
        return await self.db.fetch_one(
            f"SELECT {_RUN_COLUMNS} FROM agent_runs WHERE run_id = ?", run_id
        )

    async def list_runs(
        self, where: RunFilter, *, limit: int = 50, before: RunCursor | None = None
    ) -> list[dict[str, Any]]:
        """Runs newest first, at most `limit` (1-200), that started before `before`; each as
        `summary_view` shows it."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit: must be from 1 to {MAX_LIST_LIMIT}")
        clauses: list[str] = []
        params: list[Any] = []
        if where.agent_id is not None:
            clauses.append("agent_id = ?")
            params.append(where.agent_id)
        if where.origins:
            clauses.append(f"origin IN ({', '.join('?' for _ in where.origins)})")
            params.extend(where.origins)
        if where.status is not None:
            clauses.append("status = ?")
            params.append(where.status)
        if before is not None:
            if before.run_id is None:
                clauses.append("started_at < ?")
                params.append(before.started_at)
            else:
                clauses.append("(started_at < ? OR (started_at = ? AND run_id < ?))")
                params += [before.started_at, before.started_at, before.run_id]
        sql = f"SELECT {_LIST_COLUMNS} FROM agent_runs"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        rows = await self.db.fetch_all(
            sql + " ORDER BY started_at DESC, run_id DESC LIMIT ?", *params, limit
        )
        return [summary_view(row) for row in rows]

    async def events(self, run_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        rows = await self.db.fetch_all(
            "SELECT seq, type, at_ms, data FROM agent_run_events"
            " WHERE run_id = ? AND seq > ? ORDER BY seq",
            run_id,
            after_seq,
        )
        return [event_view(row) for row in rows]

    async def renew_leases(self, owner_node: str, until_ms: int) -> None:
        await self.db.execute(
            "UPDATE agent_runs SET lease_expires_at = ?"
            " WHERE owner_node = ? AND status = 'running'",
            until_ms,
            owner_node,
        )

    async def interrupt_orphans(self, owner_node: str, now_ms: int, *, at_start: bool) -> int:
        """Mark `failed`/`interrupted` the running runs whose owner is gone: this node's own
        at start-up (it just restarted), and any node's whose lease ran out."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch_all(
                "SELECT run_id FROM agent_runs WHERE status = 'running'"
                " AND ((owner_node = ? AND ? = 1) OR lease_expires_at < ?)",
                owner_node,
                1 if at_start else 0,
                now_ms,
            )
            for row in rows:
                await tx.execute(
                    "UPDATE agent_runs SET status = 'failed', error_kind = 'interrupted',"
                    " error_message = ?, finished_at = ?, lease_expires_at = NULL"
                    " WHERE run_id = ?",
                    "the daemon running this run stopped before it finished",
                    now_ms,
                    row["run_id"],
                )
                last = await tx.fetch_one(
                    "SELECT MAX(seq) AS seq FROM agent_run_events WHERE run_id = ?",
                    row["run_id"],
                )
                seq = int(last["seq"] or 0) + 1 if last else 1
                await _insert_event(
                    tx,
                    row["run_id"],
                    seq,
                    "run_finished",
                    now_ms,
                    {"status": "failed", "error_kind": "interrupted"},
                )
            return len(rows)

    async def purge(self, before_ms: int) -> int:
        # A retention longer than the time since 1970 puts the cutoff so far back that it
        # overflows a 64-bit column; nothing is that old, so the cutoff is 0 instead.
        before_ms = max(before_ms, 0)
        async with self.db.transaction() as tx:
            await tx.execute(
                "DELETE FROM agent_run_events WHERE run_id IN (SELECT run_id FROM agent_runs"
                " WHERE started_at < ? AND status <> 'running')",
                before_ms,
            )
            deleted: int = await tx.execute(
                "DELETE FROM agent_runs WHERE started_at < ? AND status <> 'running'", before_ms
            )
            return deleted


def _storable(text: str | None) -> str | None:
    # What a model or an upstream says is not ours to refuse, but PostgreSQL text cannot
    # hold a NUL: it is stored as U+FFFD on every backend, so both read back the same.
    return text.replace("\x00", "\ufffd") if text and "\x00" in text else text


async def _insert_event(
    db: Database, run_id: str, seq: int, type: str, at_ms: int, data: dict[str, Any]
) -> None:
    await db.execute(
        "INSERT INTO agent_run_events (run_id, seq, type, at_ms, data) VALUES (?, ?, ?, ?, ?)",
        run_id,
        seq,
        type,
        at_ms,
        orjson.dumps(data).decode(),
    )


def event_view(row: Row) -> dict[str, Any]:
    return {
        "seq": row["seq"],
        "type": row["type"],
        "at_ms": row["at_ms"],
        **orjson.loads(row["data"]),
    }


def source(origin: str) -> str:
    """Where a run came from, as the run history names it: `cli`, `cron`, or `console` for
    the console's API (the web console, or any client of `POST /console/v1/runs`)."""
    return "console" if origin == "api" else origin


def origins_of(source_name: str) -> tuple[str, ...]:
    return ("api",) if source_name == "console" else (source_name,)


SOURCES = ("cli", "cron", "console")
STATUSES = ("running", "succeeded", "failed", "cancelled")


def _cron_job_id(row: Row) -> str | None:
    # The scheduler names a cron run's session after its job (palyra.cron.runner).
    session = row["session_id"] or ""
    return session[5:] if row["origin"] == "cron" and session.startswith("cron:") else None


def _excerpt(text: str | None) -> str | None:
    if text is None or len(text) <= EXCERPT_CHARS:
        return text
    return text[: EXCERPT_CHARS - 1] + "…"


def summary_view(row: Row) -> dict[str, Any]:
    """A run as the history lists it: its input and output cut to EXCERPT_CHARS."""
    prompt, completion = int(row["prompt_tokens"]), int(row["completion_tokens"])
    return {
        "run_id": row["run_id"],
        "agent_id": row["agent_id"],
        "source": source(row["origin"]),
        "cron_job_id": _cron_job_id(row),
        "model": row["model"] or None,
        "status": row["status"],
        "error_kind": row["error_kind"],
        "error_message": row["error_message"],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
        "tool_calls": row["tool_calls"],
        "turns": row["turns"],
        "input_excerpt": _excerpt(row["input_head"]),
        "output_excerpt": _excerpt(row["output_head"]),
        "started_at_ms": row["started_at"],
        "finished_at_ms": row["finished_at"],
    }


def run_view(row: Row, events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    view = {
        "run_id": row["run_id"],
        "agent_id": row["agent_id"],
        "origin": row["origin"],
        "source": source(row["origin"]),
        "cron_job_id": _cron_job_id(row),
        "principal": row["principal"],
        "session_id": row["session_id"],
        "auth_profile_id": row["auth_profile_id"],
        "model": row["model"] or None,
        "input": row["input"],
        "status": row["status"],
        "error_kind": row["error_kind"],
        "error_message": row["error_message"],
        "usage": {
            "prompt_tokens": row["prompt_tokens"],
            "completion_tokens": row["completion_tokens"],
            "total_tokens": row["prompt_tokens"] + row["completion_tokens"],
        },
        "tool_calls": row["tool_calls"],
        "turns": row["turns"],
        "output": row["output"],
        "started_at_ms": row["started_at"],
        "finished_at_ms": row["finished_at"],
    }
    if events is not None:
        view["events"] = events
    return view
