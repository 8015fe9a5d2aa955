"""Scrubbing secrets out of text that came from elsewhere (upstream error messages).

Upstreams sometimes echo the key they were sent ("Incorrect API key sk-..."); such text must
not reach a client, a log line or a status field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "<redacted>"

# Key shapes of the common providers, and bearer credentials in any text.
_PATTERNS = re.compile(
    r"(?:sk|rk|pk)-[A-Za-z0-9_\-]{8,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{8,}=*"
    r"|(?i:api[_-]?key)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9._\-]{8,}"
)


def redact_secrets(text: str, known: Iterable[str | None] = ()) -> str:
    for secret in known:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return _PATTERNS.sub(REDACTED, text)
