"""Who a piece of work is for: the `RequestContext` every agent run, cron run and API request
carries, available anywhere below it through a context variable (it follows asyncio tasks)."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

SYSTEM_DAEMON_PRINCIPAL = "system:daemon"
ADMIN_PRINCIPAL = "admin"

Origin = Literal["api", "cli", "cron"]


@dataclass(frozen=True, slots=True)
class RequestContext:
    principal: str = ADMIN_PRINCIPAL
    origin: Origin = "api"
    agent_id: str | None = None
    # When set, provider calls use this auth profile's credential instead of the provider's
    # configured one (the profile must be for the provider's kind).
    auth_profile_id: str | None = None
    session_id: str | None = None
    run_id: str | None = None


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "palyra_request_context", default=None
)


def current_context() -> RequestContext | None:
    return _current.get()


@contextmanager
def request_context(context: RequestContext) -> Iterator[RequestContext]:
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
