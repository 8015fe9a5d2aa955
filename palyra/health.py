"""What the daemon knows about each provider's health, from probes and from live traffic.

Probes are cheap and unbilled (the models list, never a completion), run concurrently in the
background every `health_ttl_ms`, and never sit in a request's way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

import structlog

from palyra.errors import ErrorClass, PalyraError, ProviderError
from palyra.models.base import ModelProvider
from palyra.redact import redact_secrets

log = structlog.get_logger("palyra.health")


class HealthState(StrEnum):
    UNKNOWN = "unknown"  # not probed yet
    OK = "ok"
    DEGRADED = "degraded"  # answers, but slowly
    AUTH_FAILED = "auth_failed"
    RATE_LIMITED = "rate_limited"
    UNREACHABLE = "unreachable"
    MISSING_AUTH = "missing_auth"
    MISCONFIGURED = "misconfigured"  # e.g. base_url reaches an address it was not allowed
    DISABLED = "disabled"


UNHEALTHY = frozenset(
    {
        HealthState.AUTH_FAILED,
        HealthState.RATE_LIMITED,
        HealthState.UNREACHABLE,
        HealthState.MISSING_AUTH,
        HealthState.MISCONFIGURED,
        HealthState.DISABLED,
    }
)

# States that say a request sent there now would fail whatever it asks (a refused or missing
# credential): the router passes such a provider over while another can serve. The others
# (slow, unreachable or rate limited at the last probe) may be over already; only the
# breaker, fed by live traffic, takes a provider out of rotation for them.
DEFINITIVE = frozenset({HealthState.AUTH_FAILED, HealthState.MISSING_AUTH, HealthState.DISABLED})


@dataclass(slots=True)
class ProviderHealth:
    state: HealthState = HealthState.UNKNOWN
    last_probe_at_ms: int | None = None
    last_probe_latency_ms: float | None = None
    last_error: str | None = None
    last_error_at_ms: int | None = None
    changed_at_ms: int = 0  # 0: nothing known yet, so any shared news is newer
    # What the last probe alone found, apart from live traffic (whose failures the breaker
    # weighs): the router orders fallbacks of equal rank by it.
    probed_well: bool = True

    @property
    def healthy(self) -> bool:
        return self.state not in UNHEALTHY


def _now_ms() -> int:
    return int(time.time() * 1000)


def state_for_error(error: ProviderError) -> HealthState | None:
    """The health an error says a provider is in; None for errors that are the caller's."""
    if error.error_class is ErrorClass.CREDENTIAL:
        if error.code == "missing_credential":
            return HealthState.MISSING_AUTH
        return HealthState.AUTH_FAILED
    if error.error_class is ErrorClass.CONFIG:
        return HealthState.MISCONFIGURED
    if error.error_class is ErrorClass.RETRYABLE:
        if error.upstream_status == 429:
            return HealthState.RATE_LIMITED
        return HealthState.UNREACHABLE
    return None


class HealthBoard:
    def __init__(self, degraded_latency_ms: int) -> None:
        self._health: dict[str, ProviderHealth] = {}
        self.degraded_latency_ms = degraded_latency_ms
        # Told the provider id whenever a state changes (shared state listens).
        self.listener: Callable[[str], None] | None = None

    def get(self, provider_id: str) -> ProviderHealth:
        health = self._health.get(provider_id)
        if health is None:
            health = self._health[provider_id] = ProviderHealth()
        return health

    def _set(self, health: ProviderHealth, state: HealthState) -> None:
        if health.state is not state:
            health.state = state
            health.changed_at_ms = max(health.changed_at_ms + 1, _now_ms())
            if self.listener is not None:
                for pid, known in self._health.items():
                    if known is health:
                        self.listener(pid)

    def items(self) -> list[tuple[str, ProviderHealth]]:
        return list(self._health.items())

    def apply_remote(
        self, provider_id: str, state: str, changed_at_ms: int, last_error: str | None
    ) -> bool:
        """Take another instance's newer view of a provider; True when it changed ours."""
        health = self.get(provider_id)
        if changed_at_ms <= health.changed_at_ms:
            return False
        try:
            health.state = HealthState(state)
        except ValueError:
            return False
        health.changed_at_ms = changed_at_ms
        if last_error:
            health.last_error = last_error
        return True

    def set_disabled(self, provider_id: str) -> None:
        self._set(self.get(provider_id), HealthState.DISABLED)

    def record_success(self, provider_id: str) -> None:
        """Live traffic got an answer. A slow probe's `degraded` stands until a probe says
        otherwise: a long generation is not a sign of a slow provider."""
        health = self.get(provider_id)
        if health.state is not HealthState.DEGRADED:
            self._set(health, HealthState.OK)

    def record_failure(self, provider_id: str, error: ProviderError) -> None:
        state = state_for_error(error)
        if state is None:
            return
        health = self.get(provider_id)
        self._set(health, state)
        health.last_error = redact_secrets(error.message)
        health.last_error_at_ms = _now_ms()

    def record_probe(
        self, provider_id: str, latency_ms: float, error: PalyraError | None = None
    ) -> ProviderHealth:
        health = self.get(provider_id)
        health.last_probe_at_ms = _now_ms()
        health.last_probe_latency_ms = round(latency_ms, 3)
        if error is None:
            slow = latency_ms > self.degraded_latency_ms
            self._set(health, HealthState.DEGRADED if slow else HealthState.OK)
        elif isinstance(error, ProviderError):
            self.record_failure(provider_id, error)
            if state_for_error(error) is None:
                # The provider answered, just not with a model list: it is there.
                self._set(health, HealthState.OK)
        else:
            self._set(health, HealthState.UNREACHABLE)
            health.last_error = redact_secrets(error.message)
            health.last_error_at_ms = _now_ms()
        health.probed_well = health.healthy
        return health


async def probe(provider: ModelProvider, board: HealthBoard, timeout_s: float) -> ProviderHealth:
    """One unbilled round trip: list the provider's models."""
    if not provider.config.enabled:
        board.set_disabled(provider.provider_id)
        return board.get(provider.provider_id)
    started = time.perf_counter()
    error: PalyraError | None = None
    try:
        await asyncio.wait_for(provider.list_models(), timeout_s)
    except TimeoutError:
        error = ProviderError(
            f"probe got no answer within {timeout_s:.0f} s", provider_id=provider.provider_id
        )
    except PalyraError as exc:
        error = exc
    latency_ms = (time.perf_counter() - started) * 1000
    return board.record_probe(provider.provider_id, latency_ms, error)


async def probe_all(
    providers: Iterable[ModelProvider], board: HealthBoard, timeout_s: float
) -> dict[str, ProviderHealth]:
    providers = list(providers)
    results = await asyncio.gather(*(probe(p, board, timeout_s) for p in providers))
    return {p.provider_id: h for p, h in zip(providers, results, strict=True)}
