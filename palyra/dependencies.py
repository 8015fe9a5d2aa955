"""Whether the services a daemon leans on answer: the state store, and Redis when shared.

Checked in the background; when one does not answer, requests keep flowing on local state
and `/healthz` says `degraded`, naming which; the admin's status route and the log also say
why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import structlog

from palyra.redact import redact_secrets
from palyra.tasks import cancel_and_wait

log = structlog.get_logger("palyra.dependencies")

CHECK_INTERVAL_S = 2.0
CHECK_TIMEOUT_S = 2.0


@dataclass(slots=True)
class Check:
    name: str
    ping: Callable[[], Awaitable[object]]
    secrets: tuple[str, ...] = ()
    ok: bool = True
    error: str | None = None
    checked_at_ms: int | None = None


class Dependencies:
    def __init__(self, interval_s: float = CHECK_INTERVAL_S) -> None:
        self._checks: list[Check] = []
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def add(self, name: str, ping: Callable[[], Awaitable[object]], url: str = "") -> None:
        """`url`: the service's URL, whose password must never show in an error."""
        password = urlsplit(url).password if url else None
        self._checks.append(Check(name, ping, (password,) if password else ()))

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def aclose(self) -> None:
        await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self._interval_s)

    async def check_all(self) -> None:
        await asyncio.gather(*(self._check(c) for c in self._checks))

    async def _check(self, check: Check) -> None:
        try:
            await asyncio.wait_for(check.ping(), CHECK_TIMEOUT_S)
        except Exception as exc:
            message = str(exc) or type(exc).__name__
            error = redact_secrets(message, check.secrets)[:300]
            if check.ok:
                log.warning("dependency_down", dependency=check.name, error=error)
            check.ok, check.error = False, error
        else:
            if not check.ok:
                log.info("dependency_up", dependency=check.name)
            check.ok, check.error = True, None
        check.checked_at_ms = int(time.time() * 1000)

    @property
    def degraded(self) -> bool:
        return not all(c.ok for c in self._checks)

    def public_view(self) -> dict[str, str]:
        """For anyone (`/healthz`): `ok` or `degraded` per dependency; the reason stays in
        `view()` and the log, since error texts name hosts, ports and users."""
        return {c.name: "ok" if c.ok else "degraded" for c in self._checks}

    def view(self) -> dict[str, dict[str, object]]:
        """For the admin: each dependency's state and its last error (passwords redacted)."""
        return {
            c.name: {"ok": c.ok, "error": c.error, "checked_at_ms": c.checked_at_ms}
            for c in self._checks
        }
