"""The provider kinds, side by side, and the one place that builds them from config.

What each kind is lives in `kinds.py` (one spec per kind); this module builds providers from
those specs and owns their HTTP pools. It imports neither config nor a provider module at
import time: `palyra.config` reads the registry, and the provider modules import config.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import aiohttp

from palyra.egress import EgressGuard
from palyra.models.kinds import spec_for

if TYPE_CHECKING:
    from palyra.config import ModelProviderConfig, ProviderConfig
    from palyra.models.base import CredentialSource, ModelProvider

__all__ = [
    "ProviderSessions",
    "build_provider",
    "build_providers",
    "new_http_session",
]


def build_provider(
    config: ProviderConfig,
    *,
    settings_from: ModelProviderConfig,
    session: aiohttp.ClientSession,
    credentials: CredentialSource,
) -> ModelProvider:
    """The provider of `config.kind`'s spec; a kind without one is `UnknownProviderKind`."""
    cls = spec_for(config.kind).provider()
    return cls(
        config,
        session=session,
        settings=settings_from.settings_for(config),
        credentials=credentials,
    )


def build_providers(
    config: ModelProviderConfig,
    *,
    sessions: ProviderSessions,
    credentials: CredentialSource,
) -> dict[str, ModelProvider]:
    return {
        p.provider_id: build_provider(
            p,
            settings_from=config,
            session=sessions.for_provider(p),
            credentials=credentials,
        )
        for p in config.providers
    }


# Upstream connections open at once, at the least and at the most; between the two, half the
# files this process may open: a stream holds one client connection and one upstream.
MIN_CONNECTIONS = 100
MAX_CONNECTIONS = 65_536


def connection_limit(open_files: int | None = None) -> int:
    """How many upstream connections one pool may open: half of `open_files` (by default the
    process's soft RLIMIT_NOFILE, which palyrad raises to its hard limit at start)."""
    if open_files is None:
        if sys.platform == "win32":
            open_files = 2 * MAX_CONNECTIONS  # (no RLIMIT_NOFILE there)
        else:
            import resource

            open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if open_files == resource.RLIM_INFINITY:
                open_files = 2 * MAX_CONNECTIONS
    return max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, open_files // 2))


def _pool() -> dict[str, Any]:
    """One pool's shape: many concurrent streams, DNS answers reused for five minutes."""
    return {"limit": connection_limit(), "ttl_dns_cache": 300, "keepalive_timeout": 60}


def new_http_session(connector: aiohttp.BaseConnector | None = None) -> aiohttp.ClientSession:
    """A pooled client (measured ~10x httpx's throughput here); without a connector, one
    that connects anywhere."""
    return aiohttp.ClientSession(
        connector=connector or aiohttp.TCPConnector(**_pool()),
        trust_env=False,  # a proxy from the environment would connect out of the guard's sight
        auto_decompress=True,
    )


class ProviderSessions:
    """The providers' two HTTP pools. Providers with `allow_private_base_url = true` share
    one that connects anywhere (loopback and private servers included); every other
    provider shares one behind an egress guard that refuses non-public addresses at connect
    time. A refusal arrives as a connection error, which the provider names as its own
    configuration's fault (`UpstreamAddressRefused`, in `models/http.py`). The open pool is
    the one there was before: requests through it cost nothing more."""

    def __init__(self) -> None:
        self._open: aiohttp.ClientSession | None = None
        self._guarded: aiohttp.ClientSession | None = None

    def for_provider(self, config: ProviderConfig) -> aiohttp.ClientSession:
        # A kind that talks to no upstream makes no connections: it needs no pool of its own.
        if config.allow_private_base_url or spec_for(config.kind).offline:
            if self._open is None:
                self._open = new_http_session()
            return self._open
        if self._guarded is None:
            self._guarded = new_http_session(EgressGuard().connector(**_pool()))
        return self._guarded

    async def close(self) -> None:
        sessions = [s for s in (self._guarded, self._open) if s is not None]
        self._open = self._guarded = None
        for session in sessions:
            await session.close()
