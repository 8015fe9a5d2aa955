"""Auth profiles: which credential a provider kind uses, kept in the state store.

A profile names its secrets by vault ref only; the values stay in the vault under the
profile's own scope (`profile:<id>/...`), so deleting the profile deletes them with it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import orjson

from palyra.errors import InvalidRequest
from palyra.redact import redact_secrets
from palyra.state.db import Database, Row
from palyra.types import ModelProviderKind
from palyra.vault.ref import VaultRef

_PROFILE_ID = re.compile(r"^[a-z0-9._-]{1,64}$")
MAX_ERROR_CHARS = 300

MIGRATIONS = [
    """
    CREATE TABLE auth_profiles (
        profile_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        provider_kind TEXT NOT NULL,
        credential_type TEXT NOT NULL,
        api_key_ref TEXT,
        access_token_ref TEXT,
        refresh_token_ref TEXT,
        client_secret_ref TEXT,
        client_id TEXT,
        scopes TEXT NOT NULL,
        access_expires_at_ms BIGINT,
        refresh_state TEXT NOT NULL,
        refresh_failures BIGINT NOT NULL,
        next_refresh_at_ms BIGINT,
        last_refresh_at_ms BIGINT,
        last_error TEXT,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        lease_owner TEXT,
        lease_expires_at_ms BIGINT
    );
    CREATE TABLE auth_defaults (
        provider_kind TEXT PRIMARY KEY,
        profile_id TEXT NOT NULL
    )
    """
]


class CredentialType(StrEnum):
    API_KEY = "api_key"
    OAUTH = "oauth"


class RefreshState(StrEnum):
    NONE = "none"  # API keys: nothing to refresh
    OK = "ok"
    BACKOFF = "backoff"  # the last refresh failed for a passing reason; retried later
    REAUTH_REQUIRED = "reauth_required"  # the grant is gone: only a new login helps


def check_profile_id(value: str) -> str:
    lowered = value.strip().lower()
    if not _PROFILE_ID.match(lowered) or ".." in lowered:
        raise InvalidRequest(
            "profile_id: must be 1-64 characters of a-z, 0-9, '.', '_', '-'", param="profile_id"
        )
    return lowered


def profile_ref(profile_id: str, key: str) -> VaultRef:
    return VaultRef(f"profile:{profile_id}", key)


def clean_error(message: str, known: tuple[str | None, ...] = ()) -> str:
    """What may be stored or shown of an error: redacted, one line, short."""
    text = " ".join(redact_secrets(message, known).split())
    return text[:MAX_ERROR_CHARS]


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class AuthProfile:
    profile_id: str
    name: str
    provider_kind: ModelProviderKind
    credential_type: CredentialType
    api_key_ref: str | None = None
    access_token_ref: str | None = None
    refresh_token_ref: str | None = None
    client_secret_ref: str | None = None
    client_id: str | None = None
    scopes: list[str] = field(default_factory=list)
    access_expires_at_ms: int | None = None
    refresh_state: RefreshState = RefreshState.NONE
    refresh_failures: int = 0
    next_refresh_at_ms: int | None = None
    last_refresh_at_ms: int | None = None
    last_error: str | None = None
    created_at_ms: int = field(default_factory=_now_ms)
    updated_at_ms: int = field(default_factory=_now_ms)
    is_default: bool = False

    @property
    def secret_ref(self) -> str | None:
        """The ref of what a provider sends: the API key or the current access token."""
        if self.credential_type is CredentialType.API_KEY:
            return self.api_key_ref
        return self.access_token_ref

    def public(self) -> dict[str, Any]:
        """Everything but secret values (refs name secrets, they do not hold them)."""
        return {
            "profile_id": self.profile_id,
            "name": self.name,
            "provider_kind": self.provider_kind.value,
            "credential_type": self.credential_type.value,
            "vault_refs": {
                k: v
                for k, v in (
                    ("api_key", self.api_key_ref),
                    ("access_token", self.access_token_ref),
                    ("refresh_token", self.refresh_token_ref),
                    ("client_secret", self.client_secret_ref),
                )
                if v
            },
            "client_id": self.client_id,
            "scopes": self.scopes,
            "access_expires_at_ms": self.access_expires_at_ms,
            "refresh_state": self.refresh_state.value,
            "refresh_failures": self.refresh_failures,
            "next_refresh_at_ms": self.next_refresh_at_ms,
            "last_refresh_at_ms": self.last_refresh_at_ms,
            "last_error": self.last_error,
            "is_default": self.is_default,
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
        }


_COLUMNS = (
    "profile_id, name, provider_kind, credential_type, api_key_ref, access_token_ref,"
    " refresh_token_ref, client_secret_ref, client_id, scopes, access_expires_at_ms,"
    " refresh_state, refresh_failures, next_refresh_at_ms, last_refresh_at_ms, last_error,"
    " created_at_ms, updated_at_ms"
)


def _from_row(row: Row, default_id: str | None) -> AuthProfile:
    return AuthProfile(
        profile_id=row["profile_id"],
        name=row["name"],
        provider_kind=ModelProviderKind(row["provider_kind"]),
        credential_type=CredentialType(row["credential_type"]),
        api_key_ref=row["api_key_ref"],
        access_token_ref=row["access_token_ref"],
        refresh_token_ref=row["refresh_token_ref"],
        client_secret_ref=row["client_secret_ref"],
        client_id=row["client_id"],
        scopes=list(orjson.loads(row["scopes"])),
        access_expires_at_ms=row["access_expires_at_ms"],
        refresh_state=RefreshState(row["refresh_state"]),
        refresh_failures=int(row["refresh_failures"]),
        next_refresh_at_ms=row["next_refresh_at_ms"],
        last_refresh_at_ms=row["last_refresh_at_ms"],
        last_error=row["last_error"],
        created_at_ms=int(row["created_at_ms"]),
        updated_at_ms=int(row["updated_at_ms"]),
        is_default=default_id == row["profile_id"],
    )


class ProfileStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.listeners: list[Callable[[], None]] = []

    async def migrate(self) -> None:
        await self._db.migrate("auth_profiles", MIGRATIONS)

    def notify_changed(self) -> None:
        for listener in self.listeners:
            listener()

    async def get(self, profile_id: str, *, tx: Database | None = None) -> AuthProfile | None:
        db = tx or self._db
        row = await db.fetch_one(
            f"SELECT {_COLUMNS} FROM auth_profiles WHERE profile_id = ?", profile_id
        )
        if row is None:
            return None
        default = await self.default_id(ModelProviderKind(row["provider_kind"]), tx=tx)
        return _from_row(row, default)

    async def list_all(self) -> list[AuthProfile]:
        rows = await self._db.fetch_all(f"SELECT {_COLUMNS} FROM auth_profiles ORDER BY profile_id")
        defaults = {
            r["profile_id"] for r in await self._db.fetch_all("SELECT * FROM auth_defaults")
        }
        return [
            _from_row(r, r["profile_id"] if r["profile_id"] in defaults else None) for r in rows
        ]

    async def default_id(
        self, kind: ModelProviderKind, *, tx: Database | None = None
    ) -> str | None:
        row = await (tx or self._db).fetch_one(
            "SELECT profile_id FROM auth_defaults WHERE provider_kind = ?", kind.value
        )
        return None if row is None else str(row["profile_id"])

    async def save(self, profile: AuthProfile, tx: Database) -> AuthProfile:
        """Insert or replace the whole record (the caller's transaction commits it)."""
        profile = replace(profile, updated_at_ms=_now_ms())
        values = (
            profile.profile_id,
            profile.name,
            profile.provider_kind.value,
            profile.credential_type.value,
            profile.api_key_ref,
            profile.access_token_ref,
            profile.refresh_token_ref,
            profile.client_secret_ref,
            profile.client_id,
            orjson.dumps(profile.scopes).decode(),
            profile.access_expires_at_ms,
            profile.refresh_state.value,
            profile.refresh_failures,
            profile.next_refresh_at_ms,
            profile.last_refresh_at_ms,
            profile.last_error,
            profile.created_at_ms,
            profile.updated_at_ms,
        )
        updates = ", ".join(
            f"{c.strip()} = excluded.{c.strip()}"
            for c in _COLUMNS.split(",")
            if c.strip() not in ("profile_id", "created_at_ms")
        )
        await tx.execute(
            f"INSERT INTO auth_profiles ({_COLUMNS}) VALUES ({', '.join('?' * len(values))})"
            f" ON CONFLICT (profile_id) DO UPDATE SET {updates}",
            *values,
        )
        return profile

    async def set_default(self, profile_id: str, tx: Database) -> None:
        row = await tx.fetch_one(
            "SELECT provider_kind FROM auth_profiles WHERE profile_id = ?", profile_id
        )
        if row is None:
            raise LookupError(profile_id)
        await tx.execute(
            "INSERT INTO auth_defaults (provider_kind, profile_id) VALUES (?, ?)"
            " ON CONFLICT (provider_kind) DO UPDATE SET profile_id = excluded.profile_id",
            row["provider_kind"],
            profile_id,
        )

    async def delete(self, profile_id: str, tx: Database) -> bool:
        await tx.execute("DELETE FROM auth_defaults WHERE profile_id = ?", profile_id)
        return await tx.execute("DELETE FROM auth_profiles WHERE profile_id = ?", profile_id) > 0

    async def update_refresh(
        self, profile_id: str, tx: Database | None = None, **fields: Any
    ) -> None:
        """Set refresh bookkeeping columns (state, failures, times, last error)."""
        allowed = {
            "access_expires_at_ms",
            "refresh_state",
            "refresh_failures",
            "next_refresh_at_ms",
            "last_refresh_at_ms",
            "last_error",
            "refresh_token_ref",
        }
        assert set(fields) <= allowed, set(fields) - allowed
        fields["updated_at_ms"] = _now_ms()
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = [v.value if isinstance(v, StrEnum) else v for v in fields.values()]
        await (tx or self._db).execute(
            f"UPDATE auth_profiles SET {assignments} WHERE profile_id = ?", *values, profile_id
        )

    async def due_for_refresh(self, before_ms: int, now_ms: int) -> list[str]:
        """OAuth profiles whose token expires before `before_ms` and that may be tried now."""
        rows = await self._db.fetch_all(
            "SELECT profile_id FROM auth_profiles WHERE credential_type = ?"
            " AND refresh_state <> ? AND refresh_token_ref IS NOT NULL"
            " AND access_expires_at_ms IS NOT NULL AND access_expires_at_ms <= ?"
            " AND (next_refresh_at_ms IS NULL OR next_refresh_at_ms <= ?)"
            " ORDER BY access_expires_at_ms",
            CredentialType.OAUTH.value,
            RefreshState.REAUTH_REQUIRED.value,
            before_ms,
            now_ms,
        )
        return [str(r["profile_id"]) for r in rows]

    async def claim_lease(self, profile_id: str, owner: str, lease_ms: int) -> bool:
        """Take the profile's refresh lease unless another holder's is still live. One row
        update, so it is atomic across daemons sharing the store (SQLite or PostgreSQL)."""
        now = _now_ms()
        claimed = await self._db.execute(
            "UPDATE auth_profiles SET lease_owner = ?, lease_expires_at_ms = ?"
            " WHERE profile_id = ? AND (lease_owner IS NULL OR lease_owner = ?"
            " OR lease_expires_at_ms < ?)",
            owner,
            now + lease_ms,
            profile_id,
            owner,
            now,
        )
        return claimed > 0

    async def release_lease(self, profile_id: str, owner: str) -> None:
        await self._db.execute(
            "UPDATE auth_profiles SET lease_owner = NULL, lease_expires_at_ms = NULL"
            " WHERE profile_id = ? AND lease_owner = ?",
            profile_id,
            owner,
        )
