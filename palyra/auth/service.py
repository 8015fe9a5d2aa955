"""The auth parts of a running daemon in one object: vault, profiles, OAuth attempts, the
HTTP client for providers' and authorization servers' endpoints, and the refresh task."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from palyra.auth.attempts import AttemptState, AttemptStore, pending_ref
from palyra.auth.profiles import AuthProfile, ProfileStore, profile_ref
from palyra.auth.refresh import Refresher
from palyra.config import OpenAIOAuthConfig, PalyraConfig
from palyra.egress import guarded_session, ip_literal
from palyra.errors import NotFound
from palyra.state.db import Database
from palyra.tasks import cancel_and_wait, run_periodically
from palyra.vault import Vault

CHECK_TIMEOUT_S = 15.0
ATTEMPT_RETENTION_MS = 24 * 3600 * 1000
# How often sign-in attempts whose browser never came back are failed and old ones forgotten.
ATTEMPT_SWEEP_S = 15.0


@dataclass
class AuthService:
    config: PalyraConfig
    db: Database
    vault: Vault
    profiles: ProfileStore
    attempts: AttemptStore
    _http: aiohttp.ClientSession | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _refresher: Refresher | None = None

    @classmethod
    async def open(cls, config: PalyraConfig, db: Database, vault: Vault) -> AuthService:
        service = cls(config, db, vault, ProfileStore(db), AttemptStore(db))
        await service.profiles.migrate()
        await service.attempts.migrate()
        return service

    @property
    def http(self) -> aiohttp.ClientSession:
        """The client for providers' credential checks and the OAuth server's endpoints,
        behind the egress guard: non-public addresses only for `private_hosts()`."""
        if self._http is None or self._http.closed:
            # No proxies from the environment (guarded_session's default): they must not see
            # tokens by surprise, and would connect out of the guard's sight.
            self._http = guarded_session(
                allowed_private=self.private_hosts(),
                timeout=aiohttp.ClientTimeout(total=CHECK_TIMEOUT_S),
            )
        return self._http

    def private_hosts(self) -> set[str]:
        """Hosts `http` may reach on loopback or private addresses: those of providers with
        `allow_private_base_url = true`, and OAuth endpoints written as an IP address or
        localhost (a name must resolve to public addresses: no DNS rebinding)."""
        hosts = {
            urlsplit(p.base_url).hostname or ""
            for p in self.config.model_provider.providers
            if p.allow_private_base_url and p.base_url
        }
        oauth = self.config.auth.openai_oauth
        for url in (oauth.authorization_endpoint, oauth.token_endpoint, oauth.revocation_endpoint):
            host = urlsplit(url).hostname if url else None
            if host and (host == "localhost" or ip_literal(host) is not None):
                hosts.add(host)
        hosts.discard("")
        return hosts

    @property
    def openai_oauth(self) -> OpenAIOAuthConfig:
        return self.config.auth.openai_oauth

    @property
    def refresher(self) -> Refresher:
        if self._refresher is None:
            self._refresher = Refresher(self)
        return self._refresher

    def start_background(self) -> None:
        self._tasks.append(asyncio.create_task(self.refresher.run()))
        self._tasks.append(
            asyncio.create_task(
                run_periodically(ATTEMPT_SWEEP_S, self.expire_attempts, "auth_expire_attempts")
            )
        )

    async def aclose(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        if self._http is not None:
            await self._http.close()

    async def profile(self, profile_id: str) -> AuthProfile:
        profile = await self.profiles.get(profile_id)
        if profile is None:
            raise NotFound(f"no auth profile {profile_id!r}", code="profile_not_found")
        return profile

    async def delete_profile(self, profile_id: str) -> None:
        """The profile, its default mark and every secret in its vault scope, in one step."""
        async with self.db.transaction() as tx:
            if not await self.profiles.delete(profile_id, tx):
                raise NotFound(f"no auth profile {profile_id!r}", code="profile_not_found")
            await self.vault.delete_scope(profile_ref(profile_id, "x").scope, tx=tx)
            await self.attempts.forget_profile(profile_id, tx)
        self.changed()

    async def set_default(self, profile_id: str) -> AuthProfile:
        async with self.db.transaction() as tx:
            try:
                await self.profiles.set_default(profile_id, tx)
            except LookupError:
                raise NotFound(
                    f"no auth profile {profile_id!r}", code="profile_not_found"
                ) from None
        self.changed()
        return await self.profile(profile_id)

    async def expire_attempts(self) -> None:
        """Fail attempts whose browser never came back, dropping their verifiers, and forget
        attempts that ended more than a day ago."""
        now = int(time.time() * 1000)
        for attempt in await self.attempts.expired_pending(now):
            async with self.db.transaction() as tx:
                for key in ("verifier", "client_secret"):
                    ref = pending_ref(attempt.profile_id, attempt.attempt_id, key)
                    await self.vault.delete(ref, tx=tx)
                await self.attempts.finish(
                    attempt.attempt_id, AttemptState.FAILED, "the sign-in attempt expired", tx=tx
                )
        await self.attempts.prune(now - ATTEMPT_RETENTION_MS)

    def changed(self) -> None:
        self.vault.notify_changed()
        self.profiles.notify_changed()
