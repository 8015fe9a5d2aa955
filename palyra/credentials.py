"""Where a provider's API key comes from at request time.

Config names a source (`api_key_env`, `api_key_vault_ref`, `auth_profile_id`), never a key.
Providers ask a `CredentialSource` for the key on each call, so a rotated or refreshed key
is picked up without a restart.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import structlog

from palyra.auth.profiles import CredentialType
from palyra.config import ProviderConfig
from palyra.context import current_context
from palyra.errors import PalyraError
from palyra.models.kinds import spec_for
from palyra.tasks import cancel_and_wait
from palyra.types import ModelProviderKind

if TYPE_CHECKING:
    from palyra.auth.profiles import AuthProfile
    from palyra.auth.service import AuthService
    from palyra.models.base import CredentialSource


log = structlog.get_logger("palyra.credentials")

# A store read that takes longer is given up (a partitioned PostgreSQL can hang a query).
READ_TIMEOUT_S = 5.0


class MissingCredential(LookupError):
    """The provider's credential source is configured but holds no key."""


class EnvCredentials:
    """Keys from environment variables named by `api_key_env`; other sources go to `fallback`."""

    def __init__(
        self, env: Mapping[str, str] | None = None, fallback: CredentialSource | None = None
    ) -> None:
        self._env = os.environ if env is None else env
        self._fallback = fallback

    async def api_key(self, provider: ProviderConfig) -> str | None:
        if provider.api_key_env:
            value = self._env.get(provider.api_key_env, "")
            if not value:
                raise MissingCredential(
                    f"environment variable {provider.api_key_env} (api_key_env) is not set"
                )
            return value
        if self._fallback is not None:
            return await self._fallback.api_key(provider)
        if provider.api_key_vault_ref or provider.auth_profile_id:
            what = provider.api_key_vault_ref or f"auth profile {provider.auth_profile_id}"
            raise MissingCredential(f"credential {what} is not available")
        return None

    async def credential_rejected(self, provider: ProviderConfig, api_key: str | None) -> bool:
        return False


class StoreCredentials:
    """The daemon's source: auth profiles and the vault, then the environment.

    Order: the request context's `auth_profile_id` (when its provider kind matches), the
    provider's `auth_profile_id`, its `api_key_vault_ref`, its `api_key_env`, the default
    profile of its kind.

    Requests read decrypted values from memory only: the store is read on a credential's
    first use (the daemon warms every provider's at start) and after this process changes
    the vault or a profile. Changes made by another process (the CLI, a second daemon) are
    picked up by `refresh`, which the daemon runs every `ttl_s` in the background, and at
    once after a 401. When the store does not answer, the values last read keep serving.
    """

    def __init__(self, env: Mapping[str, str] | None = None, *, ttl_s: float = 5.0) -> None:
        self._env = os.environ if env is None else env
        self.ttl_s = ttl_s
        self._auth: AuthService | None = None
        self._cache: dict[tuple[str, str], object] = {}
        # Bumped by every local change, so a refresh that read before it does not write
        # older values over what the change made requests read since.
        self._generation = 0
        self._task: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None

    def attach(self, auth: AuthService) -> None:
        self._auth = auth
        auth.vault.listeners.append(self.invalidate)
        auth.profiles.listeners.append(self.invalidate)
        self.invalidate()

    def invalidate(self) -> None:
        self._cache = {}
        self._generation += 1

    async def warm(self, providers: Iterable[ProviderConfig]) -> None:
        """Read what these providers' first requests would, so that they find it in memory."""
        for provider in providers:
            try:
                await self.api_key(provider)
            except MissingCredential as exc:  # its requests will say so too
                log.warning(
                    "credential_unavailable", provider_id=provider.provider_id, reason=str(exc)
                )

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def aclose(self) -> None:
        await cancel_and_wait(self._task, self._refreshing)
        self._task = self._refreshing = None

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s)
            try:
                await self.refresh()
            except Exception:  # our bug; the loop goes on, the values last read keep serving
                log.exception("credential_refresh_failed")

    async def refresh(self) -> None:
        """Re-read every cached value from the store. A value that cannot be read keeps the
        last one; nothing read before a local change is written over it. Callers at the same
        time share one pass."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        await asyncio.shield(self._refreshing)

    async def _refresh(self) -> None:
        generation = self._generation
        fresh: dict[tuple[str, str], object] = {}
        failed: list[str] = []
        for kind, key in list(self._cache):
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    fresh[(kind, key)] = await self._read(kind, key)
            except Exception as exc:
                failed.append(f"{kind} {key}: {type(exc).__name__}")
        if generation == self._generation:
            self._cache.update(fresh)
        if failed:
            log.warning("credential_refresh_failed", failed=failed[:10], count=len(failed))

    async def _read(self, kind: str, key: str) -> object:
        if kind == "profile":
            return await self.auth.profiles.get(key)
        if kind == "secret":
            raw = await self.auth.vault.get_optional(key)
            return None if raw is None else raw.decode("utf-8")
        return await self.auth.profiles.default_id(ModelProviderKind(key))

    async def _cached(self, kind: str, key: str) -> object:
        try:
            return self._cache[(kind, key)]
        except KeyError:
            pass
        generation = self._generation
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                value = await self._read(kind, key)
        except MissingCredential:
            raise
        except Exception as exc:
            # A provider error (and so a failover), not a 500: the request can go elsewhere.
            raise MissingCredential(
                f"cannot read {kind} {key} from the state store ({type(exc).__name__})"
            ) from None
        if generation == self._generation:
            self._cache[(kind, key)] = value
        return value

    @property
    def auth(self) -> AuthService:
        if self._auth is None:
            raise MissingCredential("the credential store is not open yet (daemon starting)")
        return self._auth

    async def _profile(self, profile_id: str) -> AuthProfile | None:
        return await self._cached("profile", profile_id)  # type: ignore[return-value]

    async def _secret(self, ref: str) -> str | None:
        return await self._cached("secret", ref)  # type: ignore[return-value]

    async def _default_profile_id(self, kind: ModelProviderKind) -> str | None:
        return await self._cached("default", kind.value)  # type: ignore[return-value]

    async def _from_profile(self, profile_id: str, provider: ProviderConfig) -> str:
        profile = await self._profile(profile_id)
        if profile is None:
            raise MissingCredential(f"auth profile {profile_id} does not exist")
        if profile.provider_kind is not provider.kind:
            raise MissingCredential(
                f"auth profile {profile_id} is for {profile.provider_kind.value}, "
                f"not {provider.kind.value}"
            )
        ref = profile.secret_ref
        value = await self._secret(ref) if ref else None
        if not value:
            raise MissingCredential(f"auth profile {profile_id} holds no credential")
        return value

    async def _profile_for(self, provider: ProviderConfig) -> str | None:
        """The id of the profile whose credential `api_key` would use, if any."""
        context = current_context()
        if context is not None and context.auth_profile_id:
            profile = await self._profile(context.auth_profile_id)
            if profile is not None and profile.provider_kind is provider.kind:
                return profile.profile_id
        if provider.auth_profile_id:
            return provider.auth_profile_id
        if provider.api_key_vault_ref or provider.api_key_env:
            return None
        return await self._default_profile_id(provider.kind)

    async def api_key(self, provider: ProviderConfig) -> str | None:
        if spec_for(provider.kind).credential is None:
            return None
        profile_id = await self._profile_for(provider)
        if profile_id is not None:
            return await self._from_profile(profile_id, provider)
        if provider.api_key_vault_ref:
            value = await self._secret(provider.api_key_vault_ref)
            if not value:
                raise MissingCredential(
                    f"vault secret {provider.api_key_vault_ref} (api_key_vault_ref) is not set; "
                    f"use `palyra vault set {provider.api_key_vault_ref} --value-stdin`"
                )
            return value
        if provider.api_key_env:
            value = self._env.get(provider.api_key_env, "")
            if not value:
                raise MissingCredential(
                    f"environment variable {provider.api_key_env} (api_key_env) is not set"
                )
            return value
        if provider.allow_private_base_url:
            # A local server (vLLM, Ollama, llama.cpp) often takes no key at all.
            return None
        raise MissingCredential(
            f"provider {provider.provider_id} has no credential: set auth_profile_id, "
            "api_key_vault_ref or api_key_env, or connect a default profile with "
            "`palyra auth ... api-key`"
        )

    async def credential_rejected(self, provider: ProviderConfig, api_key: str | None) -> bool:
        if self._auth is None or not api_key or spec_for(provider.kind).credential is None:
            return False
        try:
            return await self._replaced(provider, api_key)
        except MissingCredential:
            return False  # the store cannot say: no retry

    async def _replaced(self, provider: ProviderConfig, api_key: str) -> bool:
        # What was sent may be stale in memory: re-read from the store before judging (what
        # cannot be read keeps serving as it was).
        await self.refresh()
        if (await self.api_key(provider)) != api_key:
            return True  # another process replaced it meanwhile (`palyra vault set`, ...)
        profile_id = await self._profile_for(provider)
        if profile_id is None:
            return False
        profile = await self._profile(profile_id)
        if profile is None or profile.credential_type is not CredentialType.OAUTH:
            return False
        try:
            result = await self.auth.refresher.refresh(profile_id, rejected_token=api_key)
        except PalyraError:
            return False
        if not result.refreshed:
            return False
        self.invalidate()
        return (await self.api_key(provider)) != api_key
