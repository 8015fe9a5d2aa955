"""The client keys as requests see them: in memory, a dict from the hash of a secret to its
key's caller, so checking a key is one SHA-256 and one lookup (the keys themselves, and their
store, are palyra.keys'; the vault's master keys are another ring, palyra.vault.keys).

Each daemon asks the store for the changes past the last one it has every `REFRESH_S`
seconds, so a revocation on one daemon reaches every daemon sharing the store within a
second. Changes made here apply here at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from palyra.callers import Caller, key_caller
from palyra.keys import (
    MAX_SECRET_CHARS,
    REFRESH_S,
    ClientKey,
    Clock,
    KeyStore,
    hash_secret,
)
from palyra.tasks import cancel_and_wait

log = structlog.get_logger("palyra.keys")


class KeyRing:
    """The keys as requests see them: in memory, kept in step with the store (module doc).

    Revoked and expired keys stay in the ring, so their refusal can say why."""

    def __init__(self, *, clock: Clock = time.time, refresh_s: float = REFRESH_S) -> None:
        self.clock = clock
        self.refresh_s = refresh_s
        self._store: KeyStore | None = None
        self._callers: dict[str, Caller] = {}  # sha256 of the secret -> the key's caller
        self._entries: dict[str, tuple[str, int]] = {}  # key_id -> (hash, version held)
        # The last change read from the store. Only a refresh moves it: a change made here
        # may be numbered past one of another daemon's not yet read.
        self._version = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def store(self) -> KeyStore:
        if self._store is None:
            raise RuntimeError("the client keys are not open yet (daemon still starting)")
        return self._store

    def __len__(self) -> int:
        return len(self._entries)

    def caller(self, secret: str) -> Caller | None:
        """The caller a presented key stands for (revoked and expired keys included: see
        `ClientKey.problem`), or None for a key this gateway does not know. One SHA-256 and
        one dict lookup. The lookup is not constant-time, which leaks nothing: what it
        compares are hashes, and learning a hash's first bytes tells nothing of a secret."""
        if len(secret) > MAX_SECRET_CHARS:
            return None
        return self._callers.get(hash_secret(secret))

    def keys(self) -> list[ClientKey]:
        """Every key the ring holds (revoked and expired ones included)."""
        return [c.key for c in self._callers.values() if c.key is not None]

    def lookup(self, secret: str) -> ClientKey | None:
        caller = self.caller(secret)
        return None if caller is None else caller.key

    def now_ms(self) -> int:
        """The time expiry is judged by (the injected clock)."""
        return int(self.clock() * 1000)

    # --- keeping in step ---------------------------------------------------------------

    async def open(self, store: KeyStore) -> None:
        """Create the tables if needed and load every key, before the daemon serves."""
        await store.migrate()
        self._store = store
        await self.refresh()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="palyra-key-ring")

    async def aclose(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def refresh(self) -> None:
        """Read the changes made since the last one read (by any daemon)."""
        store = self._store
        if store is None:
            return
        # One at a time: an older read applied after a newer one would bring back an old
        # state (a revoked key usable again). `_apply` refuses that too.
        async with self._lock:
            for key, secret_hash in await store.changes(self._version):
                self._apply(key, secret_hash)
                self._version = max(self._version, key.version)

    def _apply(self, key: ClientKey, secret_hash: str | None = None) -> None:
        held = self._entries.get(key.key_id)
        if held is not None:
            old_hash, old_version = held
            if key.version <= old_version:
                return
            if secret_hash is None:
                secret_hash = old_hash
            elif secret_hash != old_hash:
                self._callers.pop(old_hash, None)  # rotated: the old secret is gone
        if secret_hash is None:
            return  # a key not read yet: the next refresh brings it whole
        self._callers[secret_hash] = key_caller(key)
        self._entries[key.key_id] = (secret_hash, key.version)

    async def _loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Once per outage: the keys held stay in use, and the dependency check logs
                # the store's own error.
                if not failing:
                    log.warning("client_keys_unreadable", error=type(exc).__name__)
                failing = True
            else:
                if failing:
                    log.info("client_keys_readable")
                failing = False

    # --- changes made here, in effect here at once -------------------------------------

    async def create(self, **fields: Any) -> tuple[ClientKey, str]:
        """`KeyStore.create`'s fields."""
        key, secret = await self.store.create(**fields)
        self._apply(key, hash_secret(secret))
        return key, secret

    async def update(self, key_id: str, **fields: Any) -> ClientKey:
        key = await self.store.update(key_id, **fields)
        self._apply(key)
        return key

    async def revoke(self, key_id: str) -> ClientKey:
        key = await self.store.revoke(key_id)
        self._apply(key)
        return key

    async def rotate(self, key_id: str) -> tuple[ClientKey, str]:
        key, secret = await self.store.rotate(key_id)
        self._apply(key, hash_secret(secret))
        return key, secret
