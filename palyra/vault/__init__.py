"""The encrypted vault for credentials, and the `VaultRef` that points into it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from palyra.state.db import Database
from palyra.vault.envelope import MAX_SECRET_BYTES, VaultDecryptError, VaultError
from palyra.vault.keys import KeyRing, key_source
from palyra.vault.ref import VaultRef, VaultRefError, parse_vault_ref
from palyra.vault.store import RotationReport, SecretMeta, SecretNotFound, Vault

__all__ = [
    "MAX_SECRET_BYTES",
    "RotationReport",
    "SecretMeta",
    "SecretNotFound",
    "Vault",
    "VaultDecryptError",
    "VaultError",
    "VaultRef",
    "VaultRefError",
    "open_vault",
    "parse_vault_ref",
]


async def open_vault(db: Database, state_dir: Path, env: Mapping[str, str]) -> Vault:
    """The vault over an open state store, its schema migrated, its master key loaded."""
    vault = Vault(db, KeyRing(key_source(state_dir, env)))
    await vault.migrate()
    vault.keys.reload()
    return vault
