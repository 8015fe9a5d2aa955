"""Web-console sessions: signing in with the admin token gives an HttpOnly, SameSite=Strict
cookie; every state-changing request also carries a CSRF token.

Sessions are signed, not stored: any daemon that shares the admin token accepts them (no
sticky sessions behind a proxy). Signing out revokes the session on the daemon that saw it,
and the cookie is cleared; every session expires after `SESSION_TTL_S` regardless.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE = "palyra_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL_S = 12 * 3600
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    expires_at: int
    csrf_token: str


class SessionSigner:
    def __init__(self, admin_token: str) -> None:
        # A key of its own, derived from the admin token: a session cookie is not the token.
        self._key = hmac.new(
            admin_token.encode(), b"palyra-console-session-v1", hashlib.sha256
        ).digest()
        self._revoked: dict[str, int] = {}

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self._key, payload, hashlib.sha256).digest())

    def _csrf(self, session_id: str) -> str:
        return self._sign(b"csrf:" + session_id.encode())

    def issue(self, now: float | None = None) -> tuple[str, Session]:
        """A new session and its cookie value."""
        expires = int((now or time.time()) + SESSION_TTL_S)
        session_id = secrets.token_urlsafe(18)
        payload = json.dumps({"sid": session_id, "exp": expires}, separators=(",", ":")).encode()
        cookie = f"{_b64(payload)}.{self._sign(payload)}"
        return cookie, Session(session_id, expires, self._csrf(session_id))

    def verify(self, cookie: str | None, now: float | None = None) -> Session | None:
        if not cookie or "." not in cookie:
            return None
        body, _, signature = cookie.partition(".")
        try:
            payload = _unb64(body)
            data = json.loads(payload)
            session_id, expires = str(data["sid"]), int(data["exp"])
        except (ValueError, KeyError, TypeError):
            return None
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        current = now or time.time()
        if expires <= current or session_id in self._revoked:
            return None
        return Session(session_id, expires, self._csrf(session_id))

    def csrf_ok(self, session: Session, header: str | None) -> bool:
        return bool(header) and hmac.compare_digest(header or "", session.csrf_token)

    def revoke(self, session: Session) -> None:
        now = int(time.time())
        # Forget revocations whose sessions have expired anyway, so the set stays small.
        self._revoked = {sid: exp for sid, exp in self._revoked.items() if exp > now}
        self._revoked[session.session_id] = session.expires_at
