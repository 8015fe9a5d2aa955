"""What a running daemon holds, in one place: every part reaches the others through this.

Parts that need the event loop (the database, HTTP pools) are filled in at start-up by the
daemon's lifecycle; the app keeps this object from construction, so nothing is attached to
the app after it has started.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from palyra.config import PalyraConfig
from palyra.dependencies import Dependencies
from palyra.gateway import Gateway
from palyra.keyring import KeyRing
from palyra.state.db import Database
from palyra.state.responses import ResponseStore
from palyra.usage.writer import UsageWriter

if TYPE_CHECKING:
    from palyra.agents.service import AgentService
    from palyra.auth.service import AuthService
    from palyra.cron.service import CronService
    from palyra.reload import Reloader


@dataclass
class Runtime:
    config: PalyraConfig
    env: Mapping[str, str]
    state_dir: Path
    admin_token: str
    gateway: Gateway
    dependencies: Dependencies = field(default_factory=Dependencies)
    # Stored `/v1/responses` answers: in memory from the start, in the state store once open.
    responses: ResponseStore = field(default_factory=ResponseStore)
    # Client keys as requests see them: empty until the state store opens, then kept in step
    # with it; `keys.store` for the admin's changes (see palyra.keys).
    keys: KeyRing = field(default_factory=KeyRing)
    # The usage ledger: `usage.record(UsageRecord(...))` from the request path (buffered
    # until the state store opens); `usage.store` for queries once it has.
    usage: UsageWriter = field(default_factory=UsageWriter)
    # Which of the daemon's worker processes this is ([daemon] workers > 1; palyra.workers):
    # {"index": ..., "workers": ..., "pid": ...}; None for the single-process daemon.
    worker: dict[str, int] | None = None
    # Re-reads config.toml and agents.toml on SIGHUP or `POST /console/v1/config/reload`
    # (palyra.reload); None where the app was built without a daemon around it (tests).
    reloader: Reloader | None = None
    _db: Database | None = None
    _auth: AuthService | None = None
    _agents: AgentService | None = None
    _cron: CronService | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError("the state store is not open yet (daemon still starting)")
        return self._db

    @db.setter
    def db(self, value: Database) -> None:
        self._db = value

    @property
    def auth(self) -> AuthService:
        """Vault, auth profiles, OAuth attempts and the refresh task (open after start-up)."""
        if self._auth is None:
            raise RuntimeError("the auth store is not open yet (daemon still starting)")
        return self._auth

    @auth.setter
    def auth(self, value: AuthService) -> None:
        self._auth = value

    @property
    def agents(self) -> AgentService:
        """Agent definitions and runs."""
        if self._agents is None:
            raise RuntimeError("agents are not set up")
        return self._agents

    @agents.setter
    def agents(self, value: AgentService) -> None:
        self._agents = value

    @property
    def cron(self) -> CronService:
        """Cron jobs, their scheduler and history."""
        if self._cron is None:
            raise RuntimeError("cron is not set up")
        return self._cron

    @cron.setter
    def cron(self, value: CronService) -> None:
        self._cron = value
