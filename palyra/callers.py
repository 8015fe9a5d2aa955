"""Who is calling: the admin token, a client key, or an agent run. Set per request by the auth
middleware (palyra.server.app) and around each agent run (palyra.agents.service), read below
them (limits, usage records) through a context variable, which follows asyncio tasks."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:  # palyra.keys builds Callers, so this side only names the type
    from palyra.keys import ClientKey

CallerKind = Literal["admin", "key", "agent"]


@dataclass(frozen=True, slots=True)
class Caller:
    kind: CallerKind
    key_id: str | None = None  # the client key's id ("key_..."); None for admin and agents
    key_name: str | None = None
    # The agent a key is bound to, or the agent whose run this is.
    agent_id: str | None = None
    # The key's settings (models, limits, budget), for the checks on the request's way.
    key: ClientKey | None = None
    # An agent run's id: its model calls are recorded under it.
    run_id: str | None = None


ADMIN: Final = Caller(kind="admin")

# ADMIN by default: work that no request or run started (start-up, the CLI in-process) is the
# daemon's own.
CALLER: ContextVar[Caller] = ContextVar("palyra_caller", default=ADMIN)


def key_caller(key: ClientKey) -> Caller:
    return Caller(kind="key", key_id=key.key_id, key_name=key.name, agent_id=key.agent_id, key=key)


def agent_caller(agent_id: str, run_id: str | None = None) -> Caller:
    return Caller(kind="agent", agent_id=agent_id, run_id=run_id)
