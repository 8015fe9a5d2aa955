"""The vault: secrets sealed one by one and kept in the state store, so they travel with it.

Every write takes the `vault_meta` row first. That row names the key new blobs are sealed
with, and taking it serialises writers with `rotate-key` on SQLite and PostgreSQL alike: a
writer either finishes before the rotation switches keys (and its blob is then re-sealed by
it) or starts after (and seals with the new key).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from palyra.redact import remember_secret
from palyra.state.db import Database
from palyra.vault.envelope import (
    MAX_SECRET_BYTES,
    VaultDecryptError,
    VaultError,
    key_id,
    open_sealed,
    parse,
    seal,
)
from palyra.vault.keys import KeyRing
from palyra.vault.ref import VaultRef, parse_vault_ref

MIGRATIONS = [
    """
    CREATE TABLE vault_secrets (
        scope TEXT NOT NULL,
        name TEXT NOT NULL,
        key_id TEXT NOT NULL,
        envelope TEXT NOT NULL,
        size BIGINT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        PRIMARY KEY (scope, name)
    );
    CREATE INDEX vault_secrets_key_id ON vault_secrets (key_id);
    CREATE TABLE vault_meta (
        id BIGINT PRIMARY KEY,
        current_key_id TEXT NOT NULL,
        write_seq BIGINT NOT NULL
    )
    """
]
ROTATE_BATCH = 100


class SecretNotFound(VaultError):
    pass


@dataclass(frozen=True, slots=True)
class SecretMeta:
    ref: str
    size: int
    created_at_ms: int
    updated_at_ms: int

    def as_dict(self) -> dict[str, object]:
        return {
            "ref": self.ref,
            "size": self.size,
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
        }


@dataclass(frozen=True, slots=True)
class RotationReport:
    resealed: int
    new_key_id: str
    todo: str  # what the user must still do (env keys), else ""


def as_ref(ref: VaultRef | str) -> VaultRef:
    return ref if isinstance(ref, VaultRef) else parse_vault_ref(ref)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _as_bytes(value: bytes | str, ref: VaultRef) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    if not data:
        raise VaultError(f"secret {ref}: the value is empty")
    if len(data) > MAX_SECRET_BYTES:
        raise VaultError(f"secret {ref}: {len(data)} bytes; at most {MAX_SECRET_BYTES} bytes")
    return data


class Vault:
    def __init__(self, db: Database, keys: KeyRing) -> None:
        self._db = db
        self.keys = keys
        # Called after a change commits (or when a caller's own transaction will commit):
        # the credential cache listens here.
        self.listeners: list[Callable[[], None]] = []

    async def migrate(self) -> None:
        await self._db.migrate("vault", MIGRATIONS)

    def notify_changed(self) -> None:
        for listener in self.listeners:
            listener()

    @asynccontextmanager
    async def _tx(self, tx: Database | None) -> AsyncIterator[Database]:
        if tx is not None:
            yield tx
            return
        async with self._db.transaction() as own:
            yield own

    async def _sealing_key(self, tx: Database) -> bytes:
        """Take the vault's write lock (its meta row) and answer the key to seal with."""
        if not await tx.execute("UPDATE vault_meta SET write_seq = write_seq + 1 WHERE id = 1"):
            current = self.keys.current()
            await tx.execute(
                "INSERT INTO vault_meta (id, current_key_id, write_seq) VALUES (1, ?, 1) "
                "ON CONFLICT (id) DO UPDATE SET write_seq = vault_meta.write_seq + 1",
                key_id(current),
            )
        row = await tx.fetch_one("SELECT current_key_id FROM vault_meta WHERE id = 1")
        assert row is not None
        wanted = str(row["current_key_id"])
        key = self.keys.find(wanted)
        if key is not None:
            return key
        if await tx.fetch_one("SELECT name FROM vault_secrets LIMIT 1") is None:
            # Nothing is sealed yet: the key this process has may simply take over.
            current = self.keys.current()
            await tx.execute(
                "UPDATE vault_meta SET current_key_id = ? WHERE id = 1", key_id(current)
            )
            return current
        raise VaultError(
            f"the vault's master key (id {wanted}) is not in {self.keys.source.description} "
            f"(it holds {', '.join(self.keys.known_ids()) or 'no key'}): wrong master key?"
        )

    async def put(
        self, ref: VaultRef | str, value: bytes | str, *, tx: Database | None = None
    ) -> SecretMeta:
        metas = await self.put_many({as_ref(ref): value}, tx=tx)
        return metas[0]

    async def put_many(
        self, items: Mapping[VaultRef, bytes | str], *, tx: Database | None = None
    ) -> list[SecretMeta]:
        """Seal and store every item in one transaction: all of them land, or none."""
        prepared = [(ref, _as_bytes(value, ref)) for ref, value in items.items()]
        now = _now_ms()
        metas: list[SecretMeta] = []
        async with self._tx(tx) as db:
            key = await self._sealing_key(db)
            kid = key_id(key)
            for ref, data in prepared:
                row = await db.fetch_one(
                    "INSERT INTO vault_secrets"
                    " (scope, name, key_id, envelope, size, created_at_ms, updated_at_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (scope, name) DO UPDATE SET key_id = excluded.key_id,"
                    " envelope = excluded.envelope, size = excluded.size,"
                    " updated_at_ms = excluded.updated_at_ms"
                    " RETURNING created_at_ms",
                    ref.scope,
                    ref.key,
                    kid,
                    seal(key, str(ref), data),
                    len(data),
                    now,
                    now,
                )
                assert row is not None
                metas.append(SecretMeta(str(ref), len(data), int(row["created_at_ms"]), now))
        if tx is None:
            self.notify_changed()
        return metas

    async def get(self, ref: VaultRef | str, *, tx: Database | None = None) -> bytes:
        parsed = as_ref(ref)
        db = tx or self._db
        row = await db.fetch_one(
            "SELECT envelope FROM vault_secrets WHERE scope = ? AND name = ?",
            parsed.scope,
            parsed.key,
        )
        if row is None:
            raise SecretNotFound(f"no secret {parsed} in the vault")
        return self._open(str(parsed), str(row["envelope"]))

    async def get_text(self, ref: VaultRef | str) -> str:
        return (await self.get(ref)).decode("utf-8", "replace")

    async def get_optional(self, ref: VaultRef | str) -> bytes | None:
        try:
            return await self.get(ref)
        except SecretNotFound:
            return None

    def _open(self, ref: str, blob: str) -> bytes:
        envelope = parse(blob, ref)
        key = self.keys.find(envelope.key_id)
        if key is None:
            raise VaultDecryptError(
                f"secret {ref} was sealed with master key {envelope.key_id}, which "
                f"{self.keys.source.description} does not hold (it holds "
                f"{', '.join(self.keys.known_ids()) or 'no key'}): wrong master key?"
            )
        secret = open_sealed(key, ref, envelope)
        # Whatever leaves the vault may be echoed back by an upstream one day (an old key, a
        # token): from now on it is scrubbed from every redacted text.
        remember_secret(secret.decode("utf-8", "replace"))
        return secret

    async def list(self, scope: str) -> list[SecretMeta]:
        scope = parse_vault_ref(f"{scope}/x").scope  # same rules as a ref's scope
        rows = await self._db.fetch_all(
            "SELECT scope, name, size, created_at_ms, updated_at_ms FROM vault_secrets"
            " WHERE scope = ? ORDER BY name",
            scope,
        )
        return [
            SecretMeta(
                f"{r['scope']}/{r['name']}",
                int(r["size"]),
                int(r["created_at_ms"]),
                int(r["updated_at_ms"]),
            )
            for r in rows
        ]

    async def delete(self, ref: VaultRef | str, *, tx: Database | None = None) -> bool:
        parsed = as_ref(ref)
        db = tx or self._db
        gone = await db.execute(
            "DELETE FROM vault_secrets WHERE scope = ? AND name = ?", parsed.scope, parsed.key
        )
        if tx is None:
            self.notify_changed()
        return gone > 0

    async def delete_scope(self, scope: str, *, tx: Database | None = None) -> int:
        scope = parse_vault_ref(f"{scope}/x").scope
        db = tx or self._db
        gone = await db.execute("DELETE FROM vault_secrets WHERE scope = ?", scope)
        if tx is None:
            self.notify_changed()
        return gone

    async def rotate_key(
        self,
        *,
        batch: int = ROTATE_BATCH,
        after_batch: Callable[[int], Awaitable[None]] | None = None,
    ) -> RotationReport:
        """Re-seal every secret under a new master key.

        Steps, each safe to interrupt: (1) the next key is persisted beside the current one;
        (2) new writes switch to it; (3) blobs are re-sealed in batches, one transaction each;
        (4) the next key becomes the current one. Until (4) both keys are loaded, so every
        blob opens whatever step was last done; running again resumes with the same next key.
        """
        self.keys.reload()
        new = self.keys.source.next_key()
        self.keys.remember(new)
        new_id = key_id(new)
        async with self._db.transaction() as tx:
            await self._sealing_key(tx)
            await tx.execute("UPDATE vault_meta SET current_key_id = ? WHERE id = 1", new_id)
        resealed = 0
        while True:
            async with self._db.transaction() as tx:
                await tx.execute("UPDATE vault_meta SET write_seq = write_seq + 1 WHERE id = 1")
                rows = await tx.fetch_all(
                    "SELECT scope, name, envelope FROM vault_secrets WHERE key_id <> ?"
                    " ORDER BY scope, name LIMIT ?",
                    new_id,
                    batch,
                )
                for row in rows:
                    ref = f"{row['scope']}/{row['name']}"
                    plaintext = self._open(ref, str(row["envelope"]))
                    await tx.execute(
                        "UPDATE vault_secrets SET key_id = ?, envelope = ?"
                        " WHERE scope = ? AND name = ?",
                        new_id,
                        seal(new, ref, plaintext),
                        row["scope"],
                        row["name"],
                    )
            if not rows:
                break
            resealed += len(rows)
            if after_batch is not None:
                await after_batch(resealed)
        todo = self.keys.source.finish_rotation()
        self.keys.reload()
        self.keys.remember(new)
        self.notify_changed()
        return RotationReport(resealed, new_id, todo)
