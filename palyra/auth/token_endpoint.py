"""Talking to an OAuth token endpoint (RFC 6749 §4.1.3 and §6): code exchange and refresh."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import orjson

from palyra.auth.profiles import clean_error


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    expires_in_s: int | None
    scope: str | None

    def __repr__(self) -> str:  # a stray log of this object must not print tokens
        return f"TokenSet(expires_in_s={self.expires_in_s}, scope={self.scope!r})"


class TokenEndpointError(Exception):
    def __init__(self, error: str, status: int, description: str) -> None:
        self.error = error
        self.status = status
        self.description = description
        super().__init__(self.summary)

    @property
    def summary(self) -> str:
        where = f"token endpoint answered {self.status}" if self.status else "token endpoint"
        text = f"{where}: {self.error}"
        return f"{text} ({self.description})" if self.description else text

    @property
    def grant_revoked(self) -> bool:
        """Only a new sign-in helps: retrying the same refresh token cannot succeed."""
        return self.error == "invalid_grant" or self.status == 401


# A token lifetime we take at its word; a longer one (1e30 from a broken server overflowed the
# 64-bit column its expiry is stored in) is cut to this, and the token refreshed then.
MAX_EXPIRES_IN_S = 10 * 365 * 86400
# RFC 6749 A.12: a token is visible ASCII (the space left out: it goes after "Bearer ").
_TOKEN = re.compile(r"[\x21-\x7e]+")


def _lifetime(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return int(min(value, MAX_EXPIRES_IN_S))


async def request_tokens(
    http: aiohttp.ClientSession, endpoint: str, form: Mapping[str, str]
) -> TokenSet:
    """POST the form; the parsed tokens, or a TokenEndpointError whose text holds none of
    the form's secret values (they are redacted should the server echo them)."""
    hide = tuple(form.values())
    try:
        async with http.post(
            endpoint, data=dict(form), headers={"Accept": "application/json"}, allow_redirects=False
        ) as response:
            status = response.status
            raw = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TokenEndpointError("unreachable", 0, type(exc).__name__) from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        text = clean_error(raw[:200].decode("utf-8", "replace"), hide)
        raise TokenEndpointError("invalid_response" if status < 400 else "error", status, text)
    if status >= 400 or "error" in body:
        error = clean_error(str(body.get("error") or "error"), hide)[:80]
        description = clean_error(str(body.get("error_description") or ""), hide)
        raise TokenEndpointError(error, status, description)
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise TokenEndpointError("invalid_response", status, "no access_token in the answer")
    refresh = body.get("refresh_token")
    for name, token in (("access_token", access), ("refresh_token", refresh)):
        if isinstance(token, str) and not _TOKEN.fullmatch(token):
            # It goes into a header (Authorization, a form): a CR/LF there would be a header
            # injection, which aiohttp refuses with an error of its own (a 500 in the callback).
            raise TokenEndpointError(
                "invalid_response", status, f"{name} holds characters a token cannot have"
            )
    expires = body.get("expires_in")
    scope = body.get("scope")
    return TokenSet(
        access_token=access,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        expires_in_s=_lifetime(expires),
        scope=scope if isinstance(scope, str) else None,
    )
