"""Web-console sessions: signing in with the admin token gives an HttpOnly, SameSite=Strict
cookie; every state-changing request also carries a CSRF token.

Sessions are signed, not stored: any daemon that shares the admin token accepts them (no
sticky sessions behind a proxy), and every session expires after `SESSION_TTL_S` regardless.

Signing out is durable. The revocation is written to the state store (table
`console_revoked_sessions`), so it survives a restart and reaches every daemon that shares
the store. The session check itself never waits on the store: each daemon keeps the
revocations in memory, loaded before it serves and re-read every `REFRESH_S` seconds. So a
signed-out cookie is refused at once by the daemon that signed it out, by a restarted daemon
from its first request, and by the other daemons within `REFRESH_S` (plus however long the
store takes to answer). The cost is one indexed SELECT per daemon every `REFRESH_S`, of the
revocations whose sessions have not long expired: the sign-outs of the last 13 hours, a
handful of rows. Only someone signed in can sign out, so nobody else can grow the set.

While the store does not answer, a daemon goes on with the revocations it has; a sign-out it
could not write is refused here at once and written when the store is back (tried once more
as the daemon stops, then lost; the browser's cookie is cleared either way, and the sign-out
answer says so). Rows are deleted `PRUNE_GRACE_S` after their session's expiry (a margin for
daemons whose clocks disagree), at start and every `PRUNE_EVERY_S`.

Everything parsed here comes from the client before it is authenticated: a malformed cookie
or header is "no session", never an exception.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from palyra.state.db import Database
from palyra.tasks import cancel_and_wait

log = structlog.get_logger("palyra.sessions")

COOKIE = "palyra_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL_S = 12 * 3600
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The cookies issued here are about 110 characters; a longer one is not ours and not parsed.
MAX_COOKIE_CHARS = 512
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_EXPIRES = 2**40  # seconds: year 36812, and still a BIGINT in milliseconds
REFRESH_S = 2.0
PRUNE_EVERY_S = 600.0
PRUNE_GRACE_S = 3600
# A sign-out answers within this even when the store hangs; the write is retried later.
STORE_TIMEOUT_S = 2.0

Clock = Callable[[], float]

MIGRATIONS = [
    """
    CREATE TABLE console_revoked_sessions (
        session_id TEXT PRIMARY KEY,
        expires_at_ms BIGINT NOT NULL,
        revoked_at_ms BIGINT NOT NULL
    );
    CREATE INDEX console_revoked_sessions_expiry ON console_revoked_sessions (expires_at_ms)
    """
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _utf8(text: str) -> bytes:
    # surrogatepass: header values arrive with undecodable bytes as lone surrogates, which
    # the plain codec refuses to encode; this way any text compares, and equal text only.
    return text.encode("utf-8", "surrogatepass")


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    expires_at: int
    csrf_token: str


class SessionSigner:
    """Issues and checks signed session cookies: signature and expiry, nothing stored."""

    def __init__(self, admin_token: str, clock: Clock = time.time) -> None:
        # A key of its own, derived from the admin token: a session cookie is not the token.
        self._key = hmac.new(
            _utf8(admin_token), b"palyra-console-session-v1", hashlib.sha256
        ).digest()
        self._clock = clock

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self._key, payload, hashlib.sha256).digest())

    def _csrf(self, session_id: str) -> str:
        return self._sign(b"csrf:" + session_id.encode())

    def issue(self) -> tuple[str, Session]:
        """A new session and its cookie value."""
        expires = int(self._clock() + SESSION_TTL_S)
        session_id = secrets.token_urlsafe(18)
        payload = json.dumps({"sid": session_id, "exp": expires}, separators=(",", ":")).encode()
        cookie = f"{_b64(payload)}.{self._sign(payload)}"
        return cookie, Session(session_id, expires, self._csrf(session_id))

    def verify(self, cookie: str | None) -> Session | None:
        if not cookie or len(cookie) > MAX_COOKIE_CHARS or not cookie.isascii():
            return None
        body, _, signature = cookie.partition(".")
        try:
            payload = _unb64(body)
        except (ValueError, binascii.Error):
            return None
        # The signature first: what is parsed below was written by a daemon, never a client.
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        session_id, expires = data.get("sid"), data.get("exp")
        # Only what issue() writes: an id of its alphabet, and an int that fits the store's
        # BIGINT in milliseconds (type(), not isinstance(): True is an int, 1e999 a float).
        if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
            return None
        if type(expires) is not int or not self._clock() < expires < MAX_EXPIRES:
            return None
        return Session(session_id, expires, self._csrf(session_id))

    @staticmethod
    def csrf_ok(session: Session, header: str | None) -> bool:
        return bool(header) and hmac.compare_digest(_utf8(header or ""), _utf8(session.csrf_token))


class RevokedSessions:
    """The revoked sessions not yet expired: in memory, kept in step with the state store."""

    def __init__(self, clock: Clock = time.time, refresh_s: float = REFRESH_S) -> None:
        self._clock = clock
        self.refresh_s = refresh_s
        # session id -> when its session expires (s); only ever grows, minus expired ones.
        self._revoked: dict[str, int] = {}
        # Revoked here but not yet written to the store (it did not answer).
        self._unsaved: dict[str, int] = {}
        self._db: Database | None = None
        self._next_prune = 0.0
        self._task: asyncio.Task[None] | None = None

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._revoked

    @property
    def unsaved(self) -> int:
        return len(self._unsaved)

    async def open(self, db: Database) -> None:
        """Create the table if needed and load what is revoked, before the daemon serves."""
        await db.migrate("console_sessions", MIGRATIONS)
        self._db = db
        await self.refresh()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def aclose(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._unsaved and self._db is not None:
            # A last try: what is still unsaved when the daemon stops is lost to the others.
            try:
                await asyncio.wait_for(self._save_unsaved(), STORE_TIMEOUT_S)
            except Exception as exc:
                log.warning(
                    "session_revocations_lost", count=len(self._unsaved), error=type(exc).__name__
                )

    async def revoke(self, session: Session) -> bool:
        """Refused here at once; True once the store has it too (else it is retried)."""
        self._revoked[session.session_id] = session.expires_at
        self._unsaved[session.session_id] = session.expires_at
        try:
            await asyncio.wait_for(self._save_unsaved(), STORE_TIMEOUT_S)
        except Exception as exc:
            log.warning("session_revocation_unsaved", error=type(exc).__name__)
            return False
        return not self._unsaved

    async def refresh(self) -> None:
        """Write what is unsaved, read what the other daemons revoked, forget the expired."""
        db = self._db
        if db is None:
            return
        unsaved: Exception | None = None
        try:
            await self._save_unsaved()
        except Exception as exc:
            # Still read below: the other daemons' sign-outs must come in regardless.
            unsaved = exc
        now = self._clock()
        rows = await db.fetch_all(
            "SELECT session_id, expires_at_ms FROM console_revoked_sessions"
            " WHERE expires_at_ms > ?",
            int((now - PRUNE_GRACE_S) * 1000),
        )
        # Added to, never replaced: a sign-out here during this read must not be dropped.
        for row in rows:
            self._revoked[str(row["session_id"])] = int(row["expires_at_ms"]) // 1000
        cutoff = now - PRUNE_GRACE_S
        self._revoked = {sid: exp for sid, exp in self._revoked.items() if exp > cutoff}
        if now >= self._next_prune:
            await self.prune()
        if unsaved is not None:
            raise unsaved

    async def prune(self) -> int:
        """Delete revocations of sessions that expired more than PRUNE_GRACE_S ago."""
        if self._db is None:
            return 0
        now = self._clock()
        self._next_prune = now + PRUNE_EVERY_S
        return await self._db.execute(
            "DELETE FROM console_revoked_sessions WHERE expires_at_ms <= ?",
            int((now - PRUNE_GRACE_S) * 1000),
        )

    async def _save_unsaved(self) -> None:
        db = self._db
        if db is None:
            return
        for session_id, expires_at in list(self._unsaved.items()):
            await db.execute(
                "INSERT INTO console_revoked_sessions (session_id, expires_at_ms, revoked_at_ms)"
                " VALUES (?, ?, ?) ON CONFLICT (session_id) DO NOTHING",
                session_id,
                expires_at * 1000,
                int(self._clock() * 1000),
            )
            self._unsaved.pop(session_id, None)

    async def _loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Once per outage: the dependency check logs the store's own error.
                if not failing:
                    log.warning("session_revocations_unreadable", error=type(exc).__name__)
                failing = True
            else:
                if failing:
                    log.info("session_revocations_readable", unsaved=len(self._unsaved))
                failing = False


class Sessions:
    """What the console routes use: signed cookies, minus the revoked ones."""

    def __init__(
        self, admin_token: str, clock: Clock = time.time, refresh_s: float = REFRESH_S
    ) -> None:
        self.signer = SessionSigner(admin_token, clock)
        self.revoked = RevokedSessions(clock, refresh_s)

    async def start(self, db: Database) -> None:
        await self.revoked.open(db)
        self.revoked.start()

    async def aclose(self) -> None:
        await self.revoked.aclose()

    def issue(self) -> tuple[str, Session]:
        return self.signer.issue()

    def verify(self, cookie: str | None) -> Session | None:
        session = self.signer.verify(cookie)
        if session is None or session.session_id in self.revoked:
            return None
        return session

    def csrf_ok(self, session: Session, header: str | None) -> bool:
        return self.signer.csrf_ok(session, header)

    async def revoke(self, session: Session) -> bool:
        return await self.revoked.revoke(session)
