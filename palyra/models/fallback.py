"""A model made of candidates: each tried in turn, with retries, behind its circuit breaker.

The error class decides what happens next (see `palyra.errors.ErrorClass`):
retryable errors are retried on the same candidate with backoff (or as `Retry-After` says),
then fail over; credential errors fail over at once; a context error fails over only to a
larger window; client errors go straight back to the caller.

The breaker hears of each request once per provider: one failure for a request that failed
there (all its retries together, and however many of the provider's models it tried), or one
success. A stream is a success when it ends well, not when its first token came: one that
breaks after the first token cannot be retried (the client has the bytes), and it is the
provider's failure all the same.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from palyra.breaker import CircuitBreaker, Permit
from palyra.config import ModelConfig, ProviderSettings
from palyra.deployments import Admission, Deployment, DeploymentBoard, Refusal
from palyra.errors import (
    ErrorClass,
    InvalidRequest,
    PalyraError,
    ProviderError,
    RateLimitExceeded,
    Unsupported,
    UpstreamTimeout,
)
from palyra.health import HealthBoard
from palyra.metrics import Metrics
from palyra.models.base import ModelProvider
from palyra.telemetry import NULL_SPAN, TRACING
from palyra.types import RouteInfo, Usage

T = TypeVar("T")


class StreamEvent(Protocol):
    """What a stream's events tell the fallback model (`ChatDelta`, `TranscriptionDelta`)."""

    @property
    def shows_something(self) -> bool: ...

    @property
    def usage(self) -> Usage | None: ...


E = TypeVar("E", bound=StreamEvent)


# What a failure says about the provider itself, and so counts toward its breaker.
_PROVIDER_FAULTS = frozenset({ErrorClass.RETRYABLE, ErrorClass.CREDENTIAL, ErrorClass.CONFIG})
# How a stream ends that is left unread: one instance for all, never raised (one a stream
# would be kept for as long as each lasts).
_LEFT = asyncio.CancelledError()


@dataclass(frozen=True, slots=True)
class Candidate:
    model: ModelConfig
    provider: ModelProvider
    settings: ProviderSettings
    breaker: CircuitBreaker
    deployment: Deployment
    # One of several deployments of its model: a 429 there moves on to a sibling rather than
    # waiting out its Retry-After.
    balanced: bool = False


def _name_every_failure(
    last: ProviderError,
    failures: list[tuple[Candidate, ProviderError]],
    passed_over: list[tuple[Candidate, str]],
) -> None:
    """The last error (whose status and code the answer keeps) made to tell what happened on
    every candidate tried, in order, and which were passed over untried and why: the last
    alone would hide why the others failed, or that the model asked for was never tried.
    (Each message was redacted when its error was built; ids come from the config.)"""
    if len(failures) > 1:
        tried = "; ".join(
            f"[{n}] model {candidate.model.model_id} on {error.message}"
            for n, (candidate, error) in enumerate(failures, 1)
        )
        message = f"all {len(failures)} candidates failed: {tried}"
    else:
        message = f"model {failures[0][0].model.model_id} on {last.message}"
    if passed_over:
        message += "; passed over, untried: " + ", ".join(
            f"model {c.model.model_id} on provider {c.provider.provider_id} ({state})"
            for c, state in passed_over
        )
    last.message = message
    last.args = (last.message,)


class AllCandidatesCoolingDown(PalyraError):
    status = 503
    type = "server_error"
    code = "providers_unavailable"


def no_tokens() -> int:
    """No tokens: where an estimate is not needed (or no longer is)."""
    return 0


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
        deployments: DeploymentBoard,
        estimate: Callable[[], int] = no_tokens,
        prompt_tokens: Callable[[], int] = no_tokens,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        passed_over: list[Candidate] | None = None,
    ) -> None:
        """`passed_over`: candidates routing left out for their provider's state (filled as
        `candidates` is walked), named in the error when every one tried fails."""
        self.candidates = candidates
        self._passed_over = passed_over
        self.route = route
        self.deadline = deadline  # time.monotonic() by which the whole request must be done
        self._health = health
        self._metrics = metrics
        self._sleep = sleep
        self._deployments = deployments
        # The request's tokens as reserved against a deployment's limits before dispatch:
        # worked out only for a deployment that counts them.
        self._estimate = estimate
        self._estimated: int | None = None
        # The prompt's tokens as Palyra counts them: for a stream that reports no usage.
        self._prompt_tokens = prompt_tokens
        self._prompt_at_open = 0  # (a stream's, once it is open)
        # Providers whose breaker this request has already charged a failure to.
        self._charged: set[str] | None = None
        # Set while opening a stream: success is settled when the stream ends.
        self._streaming = False
        self._served: tuple[Candidate, Permit, Admission, float] | None = None

    async def run(self, call: Callable[[Candidate], Awaitable[T]]) -> T:
        try:
            return await self._run(call)
        except PalyraError as error:
            error.route = self.route
            raise

    async def _run(self, call: Callable[[Candidate], Awaitable[T]]) -> T:
        last_error: ProviderError | None = None
        # Each candidate that was tried and failed, with its (last) error, in order.
        failures: list[tuple[Candidate, ProviderError]] = []
        # The first candidate that could not carry the request as sent (found while
        # translating it, before anything went upstream): skipped like one `unsupported()`
        # names, and the answer when no other candidate serves.
        refused: Unsupported | None = None
        attempted = 0
        cooling: list[float] = []
        limited: list[Refusal] = []
        window_floor = 0  # after a context error: only larger windows are worth trying
        for candidate in self.candidates:
            if candidate.model.max_context_tokens <= window_floor:
                continue
            permit = candidate.breaker.acquire()
            if permit is None:
                wait = candidate.breaker.retry_after_s()
                cooling.append(wait)
                self._deployments.skipped(
                    candidate.deployment, f"circuit open; retry in {wait:.1f} s"
                )
                continue
            admission = await self._admit(candidate, permit)
            if isinstance(admission, Refusal):
                candidate.breaker.release(permit)
                limited.append(admission)
                continue
            failing_over_from = last_error.provider_id if last_error is not None else None
            failover = attempted > 0
            attempted += 1
            self.route.model_id = candidate.model.model_id
            self.route.provider_id = candidate.provider.provider_id
            try:
                result = await self._attempt(candidate, permit, admission, call)
            except Unsupported as refusal:
                refused = refused or refusal
                attempted -= 1
                continue
            except ProviderError as error:
                self._count_failover(failover, failing_over_from)
                if error.error_class is ErrorClass.CLIENT:
                    raise
                last_error = error
                failures.append((candidate, error))
                if error.error_class is ErrorClass.CONTEXT:
                    window_floor = max(window_floor, candidate.model.max_context_tokens)
                continue
            except BaseException:
                self._count_failover(failover, failing_over_from)
                raise
            self._count_failover(failover, failing_over_from)
            return result
        if last_error is not None:
            if len(failures) > 1 or self._passed_over:
                passed = [
                    (c, self._health.get(c.provider.provider_id).state.value)
                    for c in self._passed_over or ()
                ]
                _name_every_failure(last_error, failures, passed)
            raise last_error
        if limited and all(r.permanent for r in limited) and not cooling:
            raise InvalidRequest(
                f"{limited[0].reason}: the request cannot fit the token limit of any "
                "deployment that could serve it; ask for fewer tokens (max_tokens) or a "
                "model with room",
                code="exceeds_tpm_limit",
            )
        if limited and not cooling:
            wait = max(1, math.ceil(min(r.retry_after_s for r in limited if not r.permanent)))
            raise RateLimitExceeded(
                "every deployment that could serve this request is at its rate limit "
                f"({limited[0].reason}); retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        if cooling or limited:
            # (Before a refusal: a candidate cooling down may be the one that can carry the
            # request, and a client told to retry later will then be served.)
            waits = cooling + [r.retry_after_s for r in limited if not r.permanent]
            wait = max(1, math.ceil(min(waits)))
            raise AllCandidatesCoolingDown(
                "every provider that could serve this request is cooling down after failures"
                f"{' or at its rate limit' if limited else ''}; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        if refused is not None:
            raise refused
        raise AllCandidatesCoolingDown("no enabled provider can serve this request")

    async def _admit(self, candidate: Candidate, permit: Permit) -> Admission | Refusal:
        deployment = candidate.deployment
        try:
            return await self._deployments.admit(deployment, self._tokens(deployment))
        except BaseException:
            # Cancelled while a shared counter answered: a probe's permit must go back, or
            # the circuit would wait on a probe that never comes.
            candidate.breaker.release(permit)
            raise

    def _tokens(self, deployment: Deployment) -> int:
        if not deployment.counts_tokens:
            return 0
        if self._estimated is None:
            self._estimated = self._estimate()
        return self._estimated

    def _count_failover(self, failover: bool, from_provider: str | None) -> None:
        # Counted once the attempt it led to was made (a candidate skipped for refusing the
        # request is no failover).
        if failover:
            self.route.failovers += 1
            if from_provider is not None:
                self._metrics.count_failover(from_provider)

    async def _attempt(
        self,
        candidate: Candidate,
        permit: Permit,
        admission: Admission,
        call: Callable[[Candidate], Awaitable[T]],
    ) -> T:
        provider_id = candidate.provider.provider_id
        # A half-open probe is one request, one try: its answer decides the circuit.
        max_retries = 0 if permit is Permit.PROBE else candidate.settings.max_retries
        attempt = 0
        try:
            while True:
                started = time.perf_counter()
                try:
                    with (
                        TRACING.attempt(
                            provider_id,
                            candidate.provider.kind,
                            candidate.model.model_id,
                            candidate.model.upstream_name,
                            attempt,
                            candidate.provider.config.base_url,
                        )
                        if TRACING.enabled
                        else NULL_SPAN
                    ) as span:
                        result = await call(candidate)
                        usage = getattr(result, "usage", None)
                        if isinstance(usage, Usage):
                            span.record_usage(usage.prompt_tokens, usage.completion_tokens)
                except ProviderError as error:
                    self.route.upstream_s += time.perf_counter() - started
                    self._metrics.count_upstream_error(provider_id, error.error_class)
                    wait = self._retry_wait(error, attempt, max_retries, candidate)
                    if wait is None:
                        self._settle_failure(candidate, permit, error)
                        self._deployments.settle(admission, ttft_s=None, tokens=None)
                        raise
                    attempt += 1
                    self.route.retries += 1
                    self._metrics.count_retry(provider_id)
                    await self._sleep(wait)
                    self.route.upstream_s += wait
                    # A retry is one more request to the deployment: within its limits too.
                    self._deployments.settle(admission, ttft_s=None, tokens=None)
                    again = await self._deployments.admit(
                        candidate.deployment, self._tokens(candidate.deployment)
                    )
                    if isinstance(again, Refusal):
                        self._settle_failure(candidate, permit, error)
                        raise
                    admission = again
                    continue
                elapsed = time.perf_counter() - started
                self.route.upstream_s += elapsed
                self._metrics.observe_upstream(provider_id, candidate.model.model_id, elapsed)
                if self._streaming:
                    self._served = (candidate, permit, admission, elapsed)
                    # A probe is settled by its first token: the circuit must not wait on a
                    # stream that the caller may never read, nor stay half-open for its length.
                    if permit is Permit.PROBE:
                        self._settle_success(candidate)
                else:
                    self._settle_success(candidate)
                    if isinstance(usage, Usage):
                        self.route.usage = usage
                    self._deployments.settle(
                        admission, ttft_s=elapsed, tokens=usage.total_tokens if usage else None
                    )
                return result
        except BaseException as error:
            if not isinstance(error, ProviderError):
                # Cancelled, or our own bug: says nothing about the provider.
                candidate.breaker.release(permit)
                self._deployments.settle(admission, ttft_s=None, tokens=None)
            raise

    def _retry_wait(
        self, error: ProviderError, attempt: int, max_retries: int, candidate: Candidate
    ) -> float | None:
        if error.upstream_status == 429:
            if error.retry_after_s is not None:
                # The upstream's quota is spent: no request goes there before it says.
                self._deployments.exhaust(
                    candidate.deployment, error.retry_after_s, "upstream answered 429"
                )
            if candidate.balanced:
                return None  # a sibling deployment can answer now
        settings = candidate.settings
        if error.error_class is not ErrorClass.RETRYABLE or attempt >= max_retries:
            return None
        if error.retry_after_s is not None:
            wait = error.retry_after_s
        else:
            wait = backoff_s(attempt, settings.retry_backoff_ms)
        if time.monotonic() + wait >= self.deadline:
            return None  # the wait would not fit: better to fail over now
        return wait

    def _settle_success(self, candidate: Candidate) -> None:
        provider_id = candidate.provider.provider_id
        candidate.breaker.record_success()
        self._metrics.set_circuit(provider_id, candidate.breaker.state)
        self._health.record_success(provider_id)

    def _settle_failure(self, candidate: Candidate, permit: Permit, error: ProviderError) -> None:
        provider_id = candidate.provider.provider_id
        charged = self._charged
        # A 429 that says how long to wait is one deployment's quota, spent: that deployment
        # rests (see `_retry_wait`); the provider's other models are as well as before.
        quota = error.upstream_status == 429 and error.retry_after_s is not None
        if (
            error.error_class in _PROVIDER_FAULTS
            and not quota
            and (charged is None or provider_id not in charged)
        ):
            candidate.breaker.record_failure()
            if charged is None:
                charged = self._charged = set()
            charged.add(provider_id)
        else:
            # A client's own error, or a second model of a provider this request has already
            # counted a failure against: nothing new about the provider.
            candidate.breaker.release(permit)
        self._metrics.set_circuit(provider_id, candidate.breaker.state)
        self._health.record_failure(provider_id, error)

    # --- streams ------------------------------------------------------------------------

    async def stream(
        self,
        open_: Callable[[Candidate], AsyncIterator[E]],
        on_end: Callable[[BaseException | None], None] | None = None,
        text: list[str] | None = None,
    ) -> AsyncIterator[E]:
        """Open a stream up to its first content token, failing over as needed, and hand it
        back whole; what it does after that (ends, breaks, is left) is settled with the
        provider's breaker and health as it happens, and its token counts are metered.
        `on_end` hears how it ended (None: read to its end) once, with `route.usage` set;
        `text`, when given, gathers the answer's text (for a ledger that keeps it)."""
        self._streaming = True

        async def call(candidate: Candidate) -> tuple[list[E], AsyncIterator[E]]:
            timeout_s = candidate.settings.request_timeout_ms / 1000
            return await open_stream(open_(candidate), timeout_s, candidate.provider.provider_id)

        head, rest = await self.run(call)
        assert self._served is not None  # run() returned: a candidate served
        # Open: no other candidate will be tried. What choosing one needed (the walk of the
        # candidates, the estimates' closures, with the request in them) is let go, not kept
        # for as long as the stream lasts; the prompt's count is taken now.
        self._prompt_at_open = self._prompt_tokens()
        self.candidates = ()
        self._estimate = self._prompt_tokens = no_tokens
        self._passed_over = None
        candidate, permit, admission, ttft_s = self._served
        self.route.ttft_s = ttft_s
        self.route.first_token_at = time.perf_counter()
        ended = _Ending(self._deployments, admission, self.route, on_end)
        relay = self._relay(head, rest, candidate, permit, ended, text)
        # A relay its caller drops before reading it (the client left while the headers
        # went out) never runs its `finally`: the deployment would count it in flight for
        # good, and the request would go unrecorded. (Ending twice does nothing; a stream
        # read to its end has ended first.)
        weakref.finalize(relay, ended, _LEFT)
        return relay

    async def _relay(
        self,
        head: list[E],
        rest: AsyncIterator[E],
        candidate: Candidate,
        permit: Permit,
        ended: _Ending,
        kept: list[str] | None,
    ) -> AsyncIterator[E]:
        provider_id, model_id = candidate.provider.provider_id, candidate.model.model_id
        count_tokens = self._metrics.count_tokens
        settled = permit is Permit.PROBE  # (a probe was settled by its first token)
        usage: Usage | None = None
        chars = 0  # of answer text, for Palyra's own count when the upstream sends no usage
        outcome: BaseException | None = _LEFT
        span = TRACING.stream()
        span.__enter__()
        try:
            while head:
                delta = head.pop(0)  # (not kept once relayed)
                if delta.usage is not None:
                    usage = delta.usage
                    count_tokens(
                        provider_id, model_id, usage.prompt_tokens, usage.completion_tokens
                    )
                text = getattr(delta, "content", None)
                if text:
                    chars += len(text)
                    if kept is not None:
                        kept.append(text)
                yield delta
            async for delta in rest:
                if delta.usage is not None:
                    usage = delta.usage
                    count_tokens(
                        provider_id, model_id, usage.prompt_tokens, usage.completion_tokens
                    )
                text = getattr(delta, "content", None)
                if text:
                    chars += len(text)
                    if kept is not None:
                        kept.append(text)
                yield delta
        except ProviderError as error:
            # Too late to retry or fail over: the client has had part of the answer.
            self._metrics.count_upstream_error(provider_id, error.error_class)
            # (A probe's permit was given back with its first token: not to be given twice.)
            self._settle_failure(candidate, Permit.NORMAL if settled else permit, error)
            error.route = self.route
            outcome = error
            raise
        else:
            outcome = None
            if not settled:
                self._settle_success(candidate)
        finally:
            if usage is None:
                # The upstream was reached and its prompt billed, whatever came back; the
                # answer weighs about a token per four characters of its text.
                usage = Usage(prompt_tokens=self._prompt_at_open, completion_tokens=-(-chars // 4))
                self.route.usage_estimated = True
            self.route.usage = usage
            span.record_usage(usage.prompt_tokens, usage.completion_tokens)
            if outcome is not None:
                span.fail(outcome)
            span.__exit__(None, None, None)
            ended(outcome)
            # Closing the provider's generator closes its upstream response (client went away).
            await _close(rest)


class _Ending:
    """How a stream ended, told once: to its deployment (out of flight, its tokens) and to
    whoever opened it (the request's accounting)."""

    __slots__ = ("_admission", "_board", "_done", "_on_end", "_route")

    def __init__(
        self,
        board: DeploymentBoard,
        admission: Admission,
        route: RouteInfo,
        on_end: Callable[[BaseException | None], None] | None,
    ) -> None:
        self._board = board
        self._admission = admission
        self._route = route
        self._on_end = on_end
        self._done = False

    def __call__(self, outcome: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        usage = self._route.usage
        self._board.settle(
            self._admission,
            ttft_s=self._route.ttft_s,
            tokens=usage.total_tokens if usage is not None else None,
        )
        if self._on_end is not None:
            self._on_end(outcome)


async def open_stream(
    stream: AsyncIterator[E], timeout_s: float, provider_id: str
) -> tuple[list[E], AsyncIterator[E]]:
    """Read a stream up to its first content token: (the deltas read, the rest).

    A stream that fails before that token has shown the client nothing, so it can still be
    retried or failed over. The wait for that token is bounded by `timeout_s` even while the
    upstream keeps the connection busy (keep-alive comments, pings) without ever answering.
    """
    head: list[E] = []
    try:
        async with asyncio.timeout(timeout_s):
            async for delta in stream:
                head.append(delta)
                if delta.shows_something:
                    break
    except TimeoutError:
        await _close(stream)
        raise UpstreamTimeout(
            f"no first token within {round(timeout_s * 1000)} ms", provider_id=provider_id
        ) from None
    except BaseException:
        await _close(stream)
        raise
    return head, stream


async def _close(stream: AsyncIterator[E]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
