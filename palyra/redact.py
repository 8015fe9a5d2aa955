"""Scrubbing secrets out of text that came from elsewhere (upstream error messages).

Upstreams sometimes echo a key ("Incorrect API key sk-..."), and not always the one they were
sent: an older key, another provider's key, a token a proxy saw. Such text must not reach a
client, a log line or a status field. So besides the key shapes below, every credential the
daemon has used is remembered here (`remember_secret`) and scrubbed from all text that passes
through `redact_secrets`, whoever built it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "<redacted>"

# Key shapes of the common providers, bearer credentials in any text, and
# `key=value` / `"key": "value"` pairs whose name says secret.
_PATTERNS = re.compile(
    r"(?:sk|rk|pk)-[A-Za-z0-9_\-]{8,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{8,}=*"
    r"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"  # a JWT (OAuth tokens)
    r"|AIza[0-9A-Za-z_\-]{30,}"  # Google API keys
    r"|(?:gh[pousr]|github_pat)_[A-Za-z0-9_]{20,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key ids
    r"|(?i:api[_-]?key|access[_-]?token|refresh[_-]?token|id[_-]?token|client[_-]?secret"
    r"|secret|password|passwd)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9._~+/\-]{8,}=*"
)

# A shorter value would also match ordinary words (local servers take keys such as "none").
MIN_REMEMBERED_LENGTH = 8
# Credentials are short; a longer value (a vault blob, a certificate) is no text to scrub for.
MAX_REMEMBERED_LENGTH = 4096
# Keys rotate rarely; the bound only keeps a pathological rotation loop from growing this.
MAX_REMEMBERED = 512

_remembered: dict[str, None] = {}  # insertion-ordered: the oldest goes first past the bound
_remembered_pattern: re.Pattern[str] | None = None


def remember_secret(secret: str | None) -> None:
    """Scrub `secret` from every text redacted from now on (in this process). Cheap when the
    secret is already known, so callers may call it on every use of a credential."""
    global _remembered_pattern
    if (
        not secret
        or not MIN_REMEMBERED_LENGTH <= len(secret) <= MAX_REMEMBERED_LENGTH
        or secret in _remembered
    ):
        return
    _remembered[secret] = None
    while len(_remembered) > MAX_REMEMBERED:
        del _remembered[next(iter(_remembered))]
    _remembered_pattern = _alternation(_remembered)


def forget_secrets() -> None:
    """Drop every remembered secret (tests that need a clean slate)."""
    global _remembered_pattern
    _remembered.clear()
    _remembered_pattern = None


def _alternation(secrets: Iterable[str]) -> re.Pattern[str]:
    # Longest first: a key that contains another is scrubbed whole, not around the shorter.
    ordered = sorted(set(secrets), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered)))


def redact_secrets(text: str, known: Iterable[str | None] = ()) -> str:
    """`text` without the secrets in `known` (any shape, 4 characters or more), without any
    remembered one, and without anything shaped like a key or token."""
    extra = [secret for secret in known if secret and len(secret) >= 4]
    if extra:
        text = _alternation(extra).sub(REDACTED, text)
    pattern = _remembered_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    return _PATTERNS.sub(REDACTED, text)
