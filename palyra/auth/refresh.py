"""Keeping OAuth access tokens fresh.

A background loop renews each OAuth profile a margin before its token expires. One refresh
per profile at a time: an asyncio lock within this daemon, and a lease row in the state store
across daemons sharing it. A refresh token the server rotates is stored in the same
transaction as the new access token, so no crash can pair a new access token with a refresh
token the server has already retired.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import structlog

from palyra.auth.profiles import (
    AuthProfile,
    CredentialType,
    ProfileStore,
    RefreshState,
    clean_error,
)
from palyra.auth.token_endpoint import TokenEndpointError, request_tokens
from palyra.config import OpenAIOAuthConfig
from palyra.errors import InvalidRequest, NotFound, PalyraError
from palyra.state.db import Database
from palyra.vault import Vault, VaultRef, parse_vault_ref

log = structlog.get_logger("palyra.auth.refresh")

LEASE_MS = 60_000
BACKOFF_BASE_MS = 5_000
BACKOFF_CAP_MS = 15 * 60_000


@dataclass(frozen=True, slots=True)
class RefreshResult:
    profile: AuthProfile
    refreshed: bool
    error: str | None = None


def _now_ms() -> int:
    return int(time.time() * 1000)


class RefreshBusy(PalyraError):
    status = 503
    type = "upstream_error"
    code = "refresh_in_progress"


class RefreshContext(Protocol):
    """What a refresh needs of the daemon's auth parts (`AuthService` is one): where profiles
    and their tokens live, the client for the token endpoint, and whom to tell of a change."""

    @property
    def db(self) -> Database: ...

    @property
    def vault(self) -> Vault: ...

    @property
    def profiles(self) -> ProfileStore: ...

    @property
    def http(self) -> aiohttp.ClientSession: ...

    @property
    def openai_oauth(self) -> OpenAIOAuthConfig: ...

    def changed(self) -> None: ...


class Refresher:
    def __init__(
        self,
        auth: RefreshContext,
        *,
        margin_s: float = 300.0,
        interval_s: float = 15.0,
        lease_ms: int = LEASE_MS,
    ) -> None:
        """`margin_s`: how long before its expiry an access token is renewed; `interval_s`:
        how often the loop looks for tokens due (sooner when woken)."""
        self.auth = auth
        self.margin_s = margin_s
        self.interval_s = interval_s
        self.lease_ms = lease_ms
        # Who holds a lease, for humans reading the table: host, process, instance.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self.refreshes = 0  # successful refreshes by this process

    def wake(self) -> None:
        """Look for due profiles now rather than at the next tick (a profile was added)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.refresh_due()
            except Exception as exc:
                # The loop must survive a store hiccup; the next round tries again.
                log.warning("auth_refresh_loop_error", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()

    async def refresh_due(self) -> None:
        now = _now_ms()
        margin = int(self.margin_s * 1000)
        for profile_id in await self.auth.profiles.due_for_refresh(now + margin, now):
            await self.refresh(profile_id)

    async def _profile(self, profile_id: str) -> AuthProfile:
        profile = await self.auth.profiles.get(profile_id)
        if profile is None:
            raise NotFound(f"no auth profile {profile_id!r}", code="profile_not_found")
        return profile

    def _due(self, profile: AuthProfile) -> bool:
        expires = profile.access_expires_at_ms
        margin = int(self.margin_s * 1000)
        return expires is not None and expires - margin <= _now_ms()

    async def refresh(
        self, profile_id: str, *, force: bool = False, rejected_token: str | None = None
    ) -> RefreshResult:
        """Refresh when due (or `force`d, or when the provider refused `rejected_token` and it
        is still the current one). Failures are recorded on the profile, not raised."""
        # A profile that does not exist has no lease row to claim: say so now, not after
        # waiting a whole lease for a claim that cannot succeed.
        await self._profile(profile_id)
        lock = self._locks.setdefault(profile_id, asyncio.Lock())
        async with lock:
            deadline = time.monotonic() + self.lease_ms / 1000
            while not await self.auth.profiles.claim_lease(profile_id, self.owner, self.lease_ms):
                if time.monotonic() > deadline:
                    raise RefreshBusy(f"another daemon is refreshing profile {profile_id}")
                await asyncio.sleep(0.1)
            try:
                profile = await self._profile(profile_id)
                if profile.credential_type is not CredentialType.OAUTH:
                    raise InvalidRequest(
                        f"profile {profile_id} holds an API key: there is nothing to refresh"
                    )
                if rejected_token is not None:
                    current = await self.auth.vault.get_optional(profile.access_token_ref or "")
                    if current is not None and current.decode() != rejected_token:
                        return RefreshResult(profile, True)  # someone refreshed meanwhile
                    if profile.refresh_state is RefreshState.REAUTH_REQUIRED:
                        return RefreshResult(profile, False, profile.last_error)
                elif not force and (
                    not self._due(profile) or profile.refresh_state is RefreshState.REAUTH_REQUIRED
                ):
                    return RefreshResult(profile, False)
                return await self._refresh(profile)
            finally:
                await self.auth.profiles.release_lease(profile_id, self.owner)

    async def _mark(self, profile: AuthProfile, error: str, *, revoked: bool) -> RefreshResult:
        pid = profile.profile_id
        if revoked:
            await self.auth.profiles.update_refresh(
                pid,
                refresh_state=RefreshState.REAUTH_REQUIRED,
                next_refresh_at_ms=None,
                last_error=error,
            )
            log.warning("auth_reauth_required", profile_id=pid, error=error)
        else:
            failures = profile.refresh_failures + 1
            delay = min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** min(failures - 1, 20))
            await self.auth.profiles.update_refresh(
                pid,
                refresh_state=RefreshState.BACKOFF,
                refresh_failures=failures,
                next_refresh_at_ms=_now_ms() + delay,
                last_error=error,
            )
            log.warning("auth_refresh_failed", profile_id=pid, error=error, retry_in_ms=delay)
        self.auth.changed()
        return RefreshResult(await self._profile(pid), False, error)

    async def _refresh(self, profile: AuthProfile) -> RefreshResult:
        vault = self.auth.vault
        refresh_token = (
            await vault.get_optional(profile.refresh_token_ref)
            if profile.refresh_token_ref
            else None
        )
        if refresh_token is None:
            return await self._mark(
                profile, "no refresh token is stored; sign in again", revoked=True
            )
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token.decode(),
            "client_id": profile.client_id or self.auth.openai_oauth.client_id,
        }
        if profile.client_secret_ref:
            secret = await vault.get_optional(profile.client_secret_ref)
            if secret is not None:
                form["client_secret"] = secret.decode()
        endpoint = self.auth.openai_oauth.token_endpoint
        try:
            tokens = await request_tokens(self.auth.http, endpoint, form)
        except TokenEndpointError as exc:
            return await self._mark(profile, clean_error(exc.summary), revoked=exc.grant_revoked)
        access_ref = parse_vault_ref(profile.access_token_ref or "")
        values: dict[VaultRef, bytes | str] = {access_ref: tokens.access_token}
        if tokens.refresh_token:
            values[VaultRef(access_ref.scope, "refresh_token")] = tokens.refresh_token
        now = _now_ms()
        async with self.auth.db.transaction() as tx:
            await vault.put_many(values, tx=tx)
            await self.auth.profiles.update_refresh(
                profile.profile_id,
                tx,
                access_expires_at_ms=now + tokens.expires_in_s * 1000
                if tokens.expires_in_s
                else None,
                refresh_token_ref=str(VaultRef(access_ref.scope, "refresh_token")),
                refresh_state=RefreshState.OK,
                refresh_failures=0,
                next_refresh_at_ms=None,
                last_refresh_at_ms=now,
                last_error=None,
            )
        self.auth.changed()
        self.refreshes += 1
        log.info(
            "auth_refreshed",
            profile_id=profile.profile_id,
            expires_in_s=tokens.expires_in_s,
            rotated=tokens.refresh_token is not None,
        )
        return RefreshResult(await self._profile(profile.profile_id), True)
