"""OAuth sign-in attempts, kept in the state store so a restart loses none.

An attempt holds no secret: its PKCE verifier (and a client secret, when one was given) sit
in the vault under the target profile's scope, named after the attempt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from palyra.auth.profiles import profile_ref
from palyra.state.db import Database, Row
from palyra.vault.ref import VaultRef

ATTEMPT_TTL_MS = 10 * 60 * 1000

MIGRATIONS = [
    """
    CREATE TABLE oauth_attempts (
        attempt_id TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        profile_id TEXT NOT NULL,
        profile_name TEXT NOT NULL,
        set_default BIGINT NOT NULL,
        client_id TEXT NOT NULL,
        has_client_secret BIGINT NOT NULL,
        scopes TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        state TEXT NOT NULL,
        error TEXT,
        created_at_ms BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        completed_at_ms BIGINT
    )
    """
]


def pending_ref(profile_id: str, attempt_id: str, what: str) -> VaultRef:
    """Where an attempt's verifier or client secret waits in the vault until the callback."""
    return profile_ref(profile_id, f"pending.{attempt_id}.{what}")


class AttemptState(StrEnum):
    PENDING = "pending"
    EXCHANGING = "exchanging"  # a callback claimed it; reported as pending
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class OAuthAttempt:
    attempt_id: str
    provider: str
    profile_id: str
    profile_name: str
    set_default: bool
    client_id: str
    has_client_secret: bool
    scopes: list[str]
    redirect_uri: str
    state: AttemptState
    error: str | None
    created_at_ms: int
    expires_at_ms: int
    completed_at_ms: int | None

    def public(self) -> dict[str, Any]:
        state = self.state
        if state is AttemptState.PENDING and self.expires_at_ms <= int(time.time() * 1000):
            return {**self._base(), "state": "failed", "error": "the sign-in attempt expired"}
        shown = "pending" if state is AttemptState.EXCHANGING else state.value
        return {**self._base(), "state": shown, "error": self.error}

    def _base(self) -> dict[str, Any]:
        return {
            "attempt_id": self.attempt_id,
            "profile_id": self.profile_id,
            "expires_at_unix_ms": self.expires_at_ms,
            "completed_at_unix_ms": self.completed_at_ms,
        }


def _from_row(row: Row) -> OAuthAttempt:
    return OAuthAttempt(
        attempt_id=row["attempt_id"],
        provider=row["provider"],
        profile_id=row["profile_id"],
        profile_name=row["profile_name"],
        set_default=bool(row["set_default"]),
        client_id=row["client_id"],
        has_client_secret=bool(row["has_client_secret"]),
        scopes=list(orjson.loads(row["scopes"])),
        redirect_uri=row["redirect_uri"],
        state=AttemptState(row["state"]),
        error=row["error"],
        created_at_ms=int(row["created_at_ms"]),
        expires_at_ms=int(row["expires_at_ms"]),
        completed_at_ms=row["completed_at_ms"],
    )


class AttemptStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def migrate(self) -> None:
        await self._db.migrate("oauth_attempts", MIGRATIONS)

    async def insert(self, attempt: OAuthAttempt, tx: Database) -> None:
        await tx.execute(
            "INSERT INTO oauth_attempts (attempt_id, provider, profile_id, profile_name,"
            " set_default, client_id, has_client_secret, scopes, redirect_uri, state, error,"
            " created_at_ms, expires_at_ms, completed_at_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            attempt.attempt_id,
            attempt.provider,
            attempt.profile_id,
            attempt.profile_name,
            int(attempt.set_default),
            attempt.client_id,
            int(attempt.has_client_secret),
            orjson.dumps(attempt.scopes).decode(),
            attempt.redirect_uri,
            attempt.state.value,
            attempt.error,
            attempt.created_at_ms,
            attempt.expires_at_ms,
            attempt.completed_at_ms,
        )

    async def get(self, attempt_id: str) -> OAuthAttempt | None:
        row = await self._db.fetch_one(
            "SELECT * FROM oauth_attempts WHERE attempt_id = ?", attempt_id
        )
        return None if row is None else _from_row(row)

    async def claim(self, attempt_id: str, now_ms: int) -> bool:
        """Move a live pending attempt to `exchanging`. One conditional update: of two
        callbacks racing with the same state, exactly one gets True."""
        claimed = await self._db.execute(
            "UPDATE oauth_attempts SET state = ? WHERE attempt_id = ? AND state = ?"
            " AND expires_at_ms > ?",
            AttemptState.EXCHANGING.value,
            attempt_id,
            AttemptState.PENDING.value,
            now_ms,
        )
        return claimed > 0

    async def finish(
        self,
        attempt_id: str,
        state: AttemptState,
        error: str | None = None,
        *,
        tx: Database | None = None,
    ) -> None:
        await (tx or self._db).execute(
            "UPDATE oauth_attempts SET state = ?, error = ?, completed_at_ms = ?"
            " WHERE attempt_id = ?",
            state.value,
            error,
            int(time.time() * 1000),
            attempt_id,
        )

    async def forget_profile(self, profile_id: str, tx: Database) -> None:
        await tx.execute(
            "UPDATE oauth_attempts SET state = ?, error = ? WHERE profile_id = ? AND state = ?",
            AttemptState.FAILED.value,
            "the profile was deleted",
            profile_id,
            AttemptState.PENDING.value,
        )

    async def expired_pending(self, now_ms: int) -> list[OAuthAttempt]:
        rows = await self._db.fetch_all(
            "SELECT * FROM oauth_attempts WHERE state = ? AND expires_at_ms <= ?",
            AttemptState.PENDING.value,
            now_ms,
        )
        return [_from_row(row) for row in rows]

    async def prune(self, older_than_ms: int) -> int:
        """Attempts that ended before a retention window: they only fill the table."""
        return await self._db.execute(
            "DELETE FROM oauth_attempts WHERE COALESCE(completed_at_ms, expires_at_ms) < ?"
            " AND state <> ?",
            older_than_ms,
            AttemptState.PENDING.value,
        )
