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
]

_RUN_COLUMNS = (
    "run_id, agent_id, origin, principal, session_id, auth_profile_id, model, input, status,"
    " error_kind, error_message, prompt_tokens, completion_tokens, tool_calls, turns, output,"
    " started_at, finished_at"
)


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


def run_view(row: Row, events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    view = {
        "run_id": row["run_id"],
        "agent_id": row["agent_id"],
        "origin": row["origin"],
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
