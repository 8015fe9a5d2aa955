"""`VaultRef`: `<scope>/<key>`, the only way config and profiles name a secret."""

from __future__ import annotations

import re
from dataclasses import dataclass

_KEY = re.compile(r"^[a-z0-9._-]{1,128}$")
_ID = re.compile(r"^[a-z0-9._:-]{1,128}$")
_SCOPE_KINDS = ("agent", "profile")


class VaultRefError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class VaultRef:
    scope: str
    key: str

    def __str__(self) -> str:
        return f"{self.scope}/{self.key}"


def parse_vault_ref(text: str) -> VaultRef:
    """Parse case-insensitively; refuse anything that could escape its scope."""
    if "\x00" in text:
        raise VaultRefError("vault ref must not contain NUL")
    lowered = text.strip().lower()
    if lowered.count("/") != 1:
        raise VaultRefError(
            f"vault ref {text!r} must be <scope>/<key> with exactly one '/' "
            "(scope: global, agent:<id> or profile:<id>)"
        )
    scope, key = lowered.split("/")
    if not scope or not key:
        raise VaultRefError(f"vault ref {text!r} has an empty scope or key")
    if ".." in key or not _KEY.match(key):
        raise VaultRefError(
            f"vault ref {text!r}: key must match [a-z0-9._-]{{1,128}} and not hold '..'"
        )
    if scope != "global":
        kind, sep, ident = scope.partition(":")
        if (
            not sep
            or kind not in _SCOPE_KINDS
            or not ident
            or ".." in ident
            or not _ID.match(ident)
        ):
            raise VaultRefError(
                f"vault ref {text!r}: scope must be global, agent:<id> or profile:<id>"
            )
    return VaultRef(scope, key)
