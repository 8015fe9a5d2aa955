"""The encrypted vault for credentials, and the `VaultRef` that points into it."""

from palyra.vault.ref import VaultRef, VaultRefError, parse_vault_ref

__all__ = ["VaultRef", "VaultRefError", "parse_vault_ref"]
