"""A model made of candidates: each tried in turn, with retries, behind its circuit breaker.

The error class decides what happens next (see `palyra.errors.ErrorClass`):
retryable errors are retried on the same candidate with backoff (or as `Retry-After` says),
then fail over; credential errors fail over at once; a context error fails over only to a
larger window; client errors go straight back to the caller.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from palyra.breaker import CircuitBreaker, Permit
from palyra.config import ModelConfig, ProviderSettings
from palyra.errors import ErrorClass, PalyraError, ProviderError
from palyra.health import HealthBoard
from palyra.metrics import Metrics
from palyra.models.base import ModelProvider
from palyra.types import ChatDelta

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Candidate:
    model: ModelConfig
    provider: ModelProvider
    settings: ProviderSettings
    breaker: CircuitBreaker


@dataclass(slots=True)
class RouteInfo:
    """Who served a request and what it took; rendered as the `x-palyra-*` headers."""

    model_id: str = ""
    provider_id: str = ""
    retries: int = 0
    failovers: int = 0
    # Time spent upstream or waiting to retry: not the gateway's own overhead.
    upstream_s: float = 0.0


class AllCandidatesCoolingDown(PalyraError):
    status = 503
    type = "server_error"
    code = "providers_unavailable"


def backoff_s(attempt: int, base_ms: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential from `base_ms`, with full jitter in [0.5, 1.5) so retries do not align."""
    return float(base_ms / 1000 * (2**attempt) * (0.5 + rng()))


class FallbackModel:
    def __init__(
        self,
        candidates: Iterable[Candidate],
        *,
        route: RouteInfo,
        deadline: float,
        health: HealthBoard,
        metrics: Metrics,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.candidates = candidates
        self.route = route
        self.deadline = deadline  # time.monotonic() by which the whole request must be done
        self._health = health
        self._metrics = metrics
        self._sleep = sleep

    async def run(self, call: Callable[[Candidate], Awaitable[T]]) -> T:
        try:
            return await self._run(call)
        except PalyraError as error:
            error.route = self.route
            raise

    async def _run(self, call: Callable[[Candidate], Awaitable[T]]) -> T:
        last_error: ProviderError | None = None
        attempted = 0
        cooling: list[float] = []
        window_floor = 0  # after a context error: only larger windows are worth trying
        for candidate in self.candidates:
            if candidate.model.max_context_tokens <= window_floor:
                continue
            permit = candidate.breaker.acquire()
            if permit is None:
                cooling.append(candidate.breaker.retry_after_s())
                continue
            if attempted:
                self.route.failovers += 1
                if last_error is not None:
                    self._metrics.count_failover(last_error.provider_id)
            attempted += 1
            self.route.model_id = candidate.model.model_id
            self.route.provider_id = candidate.provider.provider_id
            try:
                return await self._attempt(candidate, permit, call)
            except ProviderError as error:
                if error.error_class is ErrorClass.CLIENT:
                    raise
                last_error = error
                if error.error_class is ErrorClass.CONTEXT:
                    window_floor = max(window_floor, candidate.model.max_context_tokens)
        if last_error is not None:
            raise last_error
        if cooling:
            wait = max(1, math.ceil(min(cooling)))
            raise AllCandidatesCoolingDown(
                "every provider that could serve this request is cooling down after failures; "
                f"retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        raise AllCandidatesCoolingDown("no enabled provider can serve this request")

    async def _attempt(
        self, candidate: Candidate, permit: Permit, call: Callable[[Candidate], Awaitable[T]]
    ) -> T:
        provider_id = candidate.provider.provider_id
        # A half-open probe is one request, one try: its answer decides the circuit.
        max_retries = 0 if permit is Permit.PROBE else candidate.settings.max_retries
        attempt = 0
        try:
            while True:
                started = time.perf_counter()
                try:
                    result = await call(candidate)
                except ProviderError as error:
                    self.route.upstream_s += time.perf_counter() - started
                    self._metrics.count_upstream_error(provider_id, error.error_class)
                    wait = self._retry_wait(error, attempt, max_retries, candidate.settings)
                    if wait is None:
                        self._settle_failure(candidate, permit, error)
                        raise
                    attempt += 1
                    self.route.retries += 1
                    self._metrics.count_retry(provider_id)
                    await self._sleep(wait)
                    self.route.upstream_s += wait
                    continue
                elapsed = time.perf_counter() - started
                self.route.upstream_s += elapsed
                self._metrics.observe_upstream(provider_id, candidate.model.model_id, elapsed)
                candidate.breaker.record_success()
                self._metrics.set_circuit(provider_id, candidate.breaker.state)
                self._health.record_success(provider_id)
                return result
        except BaseException as error:
            if not isinstance(error, ProviderError):
                # Cancelled, or our own bug: says nothing about the provider.
                candidate.breaker.release(permit)
            raise

    def _retry_wait(
        self, error: ProviderError, attempt: int, max_retries: int, settings: ProviderSettings
    ) -> float | None:
        if error.error_class is not ErrorClass.RETRYABLE or attempt >= max_retries:
            return None
        if error.retry_after_s is not None:
            wait = error.retry_after_s
        else:
            wait = backoff_s(attempt, settings.retry_backoff_ms)
        if time.monotonic() + wait >= self.deadline:
            return None  # the wait would not fit: better to fail over now
        return wait

    def _settle_failure(self, candidate: Candidate, permit: Permit, error: ProviderError) -> None:
        provider_id = candidate.provider.provider_id
        if error.error_class in (ErrorClass.RETRYABLE, ErrorClass.CREDENTIAL):
            candidate.breaker.record_failure()
        else:
            candidate.breaker.release(permit)
        self._metrics.set_circuit(provider_id, candidate.breaker.state)
        self._health.record_failure(provider_id, error)


async def open_stream(stream: AsyncIterator[ChatDelta]) -> AsyncIterator[ChatDelta]:
    """Read a stream up to its first content token and hand back the whole stream.

    A stream that fails before that token has shown the client nothing, so it can still be
    retried or failed over; the deltas read so far are replayed in front of the rest.
    """
    head: list[ChatDelta] = []
    try:
        async for delta in stream:
            head.append(delta)
            if delta.content or delta.tool_calls or delta.finish_reason:
                break
    except BaseException:
        await _close(stream)
        raise
    return _chain(head, stream)


async def _chain(head: list[ChatDelta], rest: AsyncIterator[ChatDelta]) -> AsyncIterator[ChatDelta]:
    try:
        for delta in head:
            yield delta
        async for delta in rest:
            yield delta
    finally:
        # Closing the provider's generator closes its upstream response (client went away).
        await _close(rest)


async def _close(stream: AsyncIterator[ChatDelta]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
