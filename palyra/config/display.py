"""Showing a config: secrets in URLs and credential fields redacted."""

from __future__ import annotations

import re
from typing import Any

from palyra.config.schema import PalyraConfig

# --- showing ----------------------------------------------------------------------------

REDACTED = "<redacted>"
_QUERY_SECRET = re.compile(
    r"(?i)(?P<head>(?:^|&)(?:password|passwd|pass|pwd|sslpassword|token|secret)=)[^&]*"
)


def redact_url(url: str) -> str:
    """Replace the password in `scheme://user:password@host/...` (and `?password=`)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    netloc, tail = (rest, "") if end < 0 else (rest[:end], rest[end:])
    # The last '@' ends the userinfo, as URL parsers read it; a password may hold '@' or ':'.
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{hostport}"
    elif at and scheme.lower().startswith("redis"):
        netloc = f"{REDACTED}@{hostport}"  # redis://password@host: the lone part is a password
    path, qmark, query = tail.partition("?")
    if qmark:
        body, hash_, fragment = query.partition("#")
        body = _QUERY_SECRET.sub(rf"\g<head>{REDACTED}", body)
        tail = f"{path}?{body}{hash_}{fragment}"
    return f"{scheme}://{netloc}{tail}"


def config_for_display(config: PalyraConfig, *, show_secrets: bool = False) -> dict[str, Any]:
    """The effective config as plain data, with passwords inside URLs replaced."""
    data = config.model_dump(mode="json")
    if not show_secrets:
        for section, key in (
            ("state", "url"),
            ("state", "redis_url"),
            ("daemon", "public_base_url"),
            ("telemetry", "otlp_endpoint"),
        ):
            if data[section][key]:
                data[section][key] = redact_url(data[section][key])
    return data
