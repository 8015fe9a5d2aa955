"""A circuit breaker per provider: stop sending to a provider that keeps failing, then let
exactly one probe request find out whether it is back.

closed --(threshold consecutive failed requests)--> open --(cooldown)--> half_open
half_open --(probe succeeds)--> closed;  half_open --(probe fails)--> open again
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Permit(StrEnum):
    """What `acquire` grants: an ordinary call, or the one probe of a half-open circuit."""

    NORMAL = "normal"
    PROBE = "probe"


@dataclass(slots=True)
class CircuitBreaker:
    failure_threshold: int
    cooldown_s: float
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_until: float = 0.0
    # Wall-clock time of the last open/close, so instances sharing state agree on "newest".
    changed_at_ms: int = 0
    on_change: Callable[[], None] | None = None
    _open: bool = False
    _probe_in_flight: bool = False

    @property
    def state(self) -> CircuitState:
        if not self._open:
            return CircuitState.CLOSED
        if self.clock() < self.opened_until:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def retry_after_s(self) -> float:
        """How long until a request could get through (0 when it could now)."""
        state = self.state
        if state is CircuitState.OPEN:
            return self.opened_until - self.clock()
        if state is CircuitState.HALF_OPEN and self._probe_in_flight:
            # The probe decides soon; a second caller should come back shortly.
            return 1.0
        return 0.0

    def acquire(self) -> Permit | None:
        """May a request go to this provider now? None: no, the circuit is open."""
        state = self.state
        if state is CircuitState.CLOSED:
            return Permit.NORMAL
        if state is CircuitState.OPEN or self._probe_in_flight:
            return None
        self._probe_in_flight = True
        return Permit.PROBE

    def record_success(self) -> None:
        self.failures = 0
        self._probe_in_flight = False
        if self._open:
            self._open = False
            self._changed()

    def record_failure(self) -> None:
        """One failed request (all its retries together)."""
        if self._open:
            self._trip()  # the probe failed: another full cooldown
            return
        self.failures += 1
        if self.failures >= self.failure_threshold:
            self._trip()

    def release(self, permit: Permit) -> None:
        """The call ended without telling anything about the provider (a client error, a
        cancelled request): a probe permit goes back so the next request can probe."""
        if permit is Permit.PROBE:
            self._probe_in_flight = False

    def _trip(self) -> None:
        self._open = True
        self._probe_in_flight = False
        self.opened_until = self.clock() + self.cooldown_s
        self._changed()

    def _changed(self) -> None:
        self.changed_at_ms = max(self.changed_at_ms + 1, int(time.time() * 1000))
        if self.on_change is not None:
            self.on_change()

    def snapshot(self) -> tuple[int, int]:
        """(open until, as epoch ms, or 0 when closed; when that was decided, epoch ms)."""
        if not self._open:
            return 0, self.changed_at_ms
        remaining = self.opened_until - self.clock()
        return int(time.time() * 1000 + remaining * 1000), self.changed_at_ms

    def apply_remote(self, open_until_ms: int, changed_at_ms: int) -> bool:
        """Take another instance's newer decision; True when it changed ours."""
        if changed_at_ms <= self.changed_at_ms:
            return False
        self.changed_at_ms = changed_at_ms
        remaining_s = (open_until_ms - time.time() * 1000) / 1000
        if open_until_ms and remaining_s > -self.cooldown_s:
            # Open (or half-open once the shared cooldown has passed) here too.
            self._open = True
            self._probe_in_flight = False
            self.opened_until = self.clock() + remaining_s
        else:
            self._open = False
            self.failures = 0
        return True


class BreakerBoard:
    """The breakers of all providers, made on first use with each provider's settings."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._breakers: dict[str, CircuitBreaker] = {}
        self._clock = clock
        # Told the provider id whenever a circuit opens or closes (shared state listens).
        self.listener: Callable[[str], None] | None = None

    def get(self, provider_id: str, threshold: int, cooldown_ms: int) -> CircuitBreaker:
        breaker = self._breakers.get(provider_id)
        if breaker is None:
            breaker = CircuitBreaker(threshold, cooldown_ms / 1000, clock=self._clock)
            breaker.on_change = lambda: self._notify(provider_id)
            self._breakers[provider_id] = breaker
        return breaker

    def _notify(self, provider_id: str) -> None:
        if self.listener is not None:
            self.listener(provider_id)

    def items(self) -> list[tuple[str, CircuitBreaker]]:
        return list(self._breakers.items())

    def peek(self, provider_id: str) -> CircuitBreaker | None:
        return self._breakers.get(provider_id)
