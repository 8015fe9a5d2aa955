"""Where a provider's API key comes from at request time.

Config names a source (`api_key_env`, `api_key_vault_ref`, `auth_profile_id`), never a key.
Providers ask a `CredentialSource` for the key on each call, so a rotated or refreshed key
is picked up without a restart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from palyra.config import ProviderConfig


class MissingCredential(LookupError):
    """The provider's credential source is configured but holds no key."""


class CredentialSource(Protocol):
    async def api_key(self, provider: ProviderConfig) -> str | None:
        """The key to send, None when the provider is configured with no credential at all."""
        ...


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
