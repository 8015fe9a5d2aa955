"""Deployments: the state of each deployment of a model (one `[[model_provider.models]]` entry)
that load balancing reads, and whether a deployment may take one more request now.

A deployment may not take a request while its upstream's rate-limit headers (or a 429) say it
has nothing left, nor when its own `rpm_limit` / `tpm_limit` would be passed in the last 60 s.
The 60 s are a sliding window, not a calendar minute: a calendar counter lets 2 x rpm_limit
through around the turn of a minute, which is what an upstream's own limiter answers with 429s.

Where the counts live is a `RateCounter`: in this process (`LocalRateCounter`), or in Redis
shared by all daemons (`RedisRateCounter`). A deployment without limits never touches one, so
on the common path `admit` is a few attribute reads and never suspends.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import redis.asyncio as redis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from palyra.config import ModelConfig, redact_url
from palyra.ratelimits import UNKNOWN_RESET_S, UpstreamLimits
from palyra.redact import redact_secrets

log = structlog.get_logger("palyra.deployments")

WINDOW_S: Final = 60.0
# Time-to-first-token average: each answer moves it 30 % of the way. High enough that a
# deployment slowing down shows within three or four answers (the latency strategy must move
# traffic off within tens of requests), low enough that one slow outlier (a cold cache, a long
# prompt) moves it less than a third of its jump.
TTFT_ALPHA: Final = 0.3
# ... and more the longer the deployment went unmeasured: an answer after a gap of t seconds
# moves it at least 1 - exp(-t / TTFT_TAU_S) of the way. A deployment the latency strategy
# only explores now and then (every ten seconds or so) is then judged by what it does now,
# so one that recovered takes traffic back at its first fast answer, not after ten of them.
TTFT_TAU_S: Final = 5.0
DEFAULT_STRATEGY: Final = "weighted"
_RING = 60  # one bucket per second of the share window


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a deployment cannot take a request now, and in how many seconds it could."""

    reason: str
    retry_after_s: float


class _Upstream:
    """What an upstream said of one model on one provider. Shared by every deployment with that
    provider and upstream model name: they draw on one quota."""

    __slots__ = (
        "active",
        "reason",
        "remaining_requests",
        "remaining_tokens",
        "requests_reset_at",
        "rest_until",
        "seen",
        "tokens_reset_at",
    )

    def __init__(self) -> None:
        # Something may refuse a request (cleared lazily once every reset has passed), so
        # `admit` looks further only while this is set.
        self.active = False
        self.seen = False
        self.remaining_requests: int | None = None
        self.requests_reset_at = 0.0
        self.remaining_tokens: int | None = None
        self.tokens_reset_at = 0.0
        self.rest_until = 0.0
        self.reason = ""

    def observe(self, limits: UpstreamLimits, now: float) -> None:
        self.seen = self.active = True
        if limits.remaining_requests is not None:
            self.remaining_requests = limits.remaining_requests
            reset = limits.requests_reset_s
            self.requests_reset_at = now + (UNKNOWN_RESET_S if reset is None else reset)
        if limits.remaining_tokens is not None:
            self.remaining_tokens = limits.remaining_tokens
            reset = limits.tokens_reset_s
            self.tokens_reset_at = now + (UNKNOWN_RESET_S if reset is None else reset)
        rest = limits.exhausted_for_s()
        if rest is not None:
            what = "requests" if limits.remaining_requests == 0 else "tokens"
            self.rest(now + rest, f"upstream says 0 {what} remaining")

    def rest(self, until: float, reason: str) -> None:
        # Only ever longer: a later answer saying "some left" may predate the one saying none.
        self.seen = self.active = True
        if until > self.rest_until:
            self.rest_until, self.reason = until, reason

    def refusal(self, tokens: int, now: float) -> Refusal | None:
        if now < self.rest_until:
            return Refusal(self.reason, self.rest_until - now)
        requests_known = self.remaining_requests is not None and now < self.requests_reset_at
        tokens_known = self.remaining_tokens is not None and now < self.tokens_reset_at
        if not requests_known and not tokens_known:
            self.active = False
            return None
        if requests_known and self.remaining_requests is not None and self.remaining_requests <= 0:
            return Refusal(
                "upstream's remaining requests used up until its reset",
                self.requests_reset_at - now,
            )
        if tokens_known and self.remaining_tokens is not None and tokens > self.remaining_tokens:
            return Refusal(
                f"upstream says {max(self.remaining_tokens, 0)} tokens remaining; "
                f"the request needs about {tokens}",
                self.tokens_reset_at - now,
            )
        return None

    def spend(self, tokens: int, now: float) -> None:
        """Count a request sent since the last answer, so a burst sent before any answer comes
        back cannot overdraw what the headers said was left."""
        if self.remaining_requests is not None and now < self.requests_reset_at:
            self.remaining_requests -= 1
        if self.remaining_tokens is not None and now < self.tokens_reset_at:
            self.remaining_tokens -= tokens


class Deployment:
    """One model on one provider: its settings, what is in flight, how it has been doing.
    Satisfies `palyra.balancing.Balanceable`."""

    __slots__ = (
        "_counter",
        "_limited",
        "_ring_requests",
        "_ring_sec",
        "_ring_tokens",
        "_upstream",
        "dispatched",
        "in_flight",
        "key",
        "last_skip",
        "last_used",
        "model",
        "priority",
        "provider_id",
        "rpm_limit",
        "tpm_limit",
        "ttft_at",
        "ttft_s",
        "weight",
    )

    def __init__(self, model: ModelConfig, counter: RateCounter, upstream: _Upstream) -> None:
        self.key = f"{model.model_id}@{model.provider_id}"
        self.provider_id = model.provider_id
        self._counter = counter
        self.in_flight = 0
        self.ttft_s: float | None = None
        self.ttft_at = 0.0  # clock time of the last measurement
        self.last_used = 0.0
        self.dispatched = 0
        self.last_skip: tuple[str, float] | None = None  # (reason, clock time)
        # This daemon's dispatches and tokens per second over the last minute (the share, and
        # the counts of a deployment without limits): bounded whatever the request rate.
        self._ring_sec = [-1] * _RING
        self._ring_requests = [0] * _RING
        self._ring_tokens = [0] * _RING
        self._configure(model, upstream)

    def _configure(self, model: ModelConfig, upstream: _Upstream) -> None:
        self.model = model
        self.weight = float(model.weight)
        self.priority = model.priority
        self.rpm_limit = model.rpm_limit
        self.tpm_limit = model.tpm_limit
        self._limited = bool(self.rpm_limit or self.tpm_limit)
        self._upstream = upstream

    @property
    def counts_tokens(self) -> bool:
        """Whether admitting a request here needs its token estimate (a tpm_limit, or what
        the upstream said is left); otherwise the estimate need not be worked out."""
        return self.tpm_limit > 0 or self._upstream.active

    def usage_share(self) -> float:
        """The larger of requests / rpm_limit and tokens / tpm_limit over the last 60 s
        (0.0 without limits)."""
        if not self._limited:
            return 0.0
        requests, tokens = self._counter.used(self.key)
        share = requests / self.rpm_limit if self.rpm_limit else 0.0
        if self.tpm_limit:
            share = max(share, tokens / self.tpm_limit)
        return share

    def _recent(self, now: float) -> tuple[int, int]:
        """(requests, tokens) this daemon sent in about the last minute (whole seconds)."""
        oldest = int(now) - _RING
        requests = tokens = 0
        for i, sec in enumerate(self._ring_sec):
            if sec > oldest:
                requests += self._ring_requests[i]
                tokens += self._ring_tokens[i]
        return requests, max(tokens, 0)

    def __repr__(self) -> str:
        return f"Deployment({self.key!r}, in_flight={self.in_flight})"


class Admission:
    """A granted request: counted in flight, its `tokens` estimate reserved. Hand it back to
    `DeploymentBoard.settle` when the attempt ends."""

    __slots__ = ("_counted", "_settled", "admitted_at", "deployment", "tokens")

    def __init__(self, deployment: Deployment, tokens: int, at: float, counted: bool) -> None:
        self.deployment = deployment
        self.tokens = tokens
        self.admitted_at = at
        self._counted = counted  # reserved in the rate counter (the deployment has limits)
        self._settled = False

    @property
    def settled(self) -> bool:
        return self._settled


class RateCounter(Protocol):
    """Where the per-deployment request and token counts of the last 60 s live."""

    async def reserve(self, key: str, tokens: int, rpm_limit: int, tpm_limit: int) -> float:
        """Count one request of `tokens` if it fits both limits (0: none): 0.0. Else count
        nothing and return the seconds until it would fit."""
        ...

    async def correct(self, key: str, delta_tokens: int, *, age_s: float = 0.0) -> None:
        """Change a reservation made `age_s` ago by `delta_tokens` (the answer's usage less the
        estimate); it leaves the window when the reservation does."""
        ...

    def used(self, key: str) -> tuple[int, int]:
        """(requests, tokens) in the last 60 s, as this daemon knows."""
        ...


class _Window:
    __slots__ = ("entries", "requests", "tokens")

    def __init__(self) -> None:
        # (clock time, 1 for a request or 0 for a correction, tokens), oldest first.
        self.entries: deque[tuple[float, int, int]] = deque()
        self.requests = 0
        self.tokens = 0

    def prune(self, now: float, window_s: float) -> None:
        cutoff = now - window_s
        entries = self.entries
        while entries and entries[0][0] <= cutoff:
            _, requests, tokens = entries.popleft()
            self.requests -= requests
            self.tokens -= tokens


def _entry_time(entry: tuple[float, int, int]) -> float:
    return entry[0]


class LocalRateCounter:
    """A sliding 60 s log per key, in this process, on `clock`. Entries leave lazily when the
    key is next looked at; a key's log holds at most its traffic of one minute."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, window_s: float = WINDOW_S
    ) -> None:
        self._clock = clock
        self._window_s = window_s
        self._windows: dict[str, _Window] = {}

    def _window(self, key: str, now: float) -> _Window:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        else:
            window.prune(now, self._window_s)
        return window

    async def reserve(self, key: str, tokens: int, rpm_limit: int, tpm_limit: int) -> float:
        return self.reserve_now(key, tokens, rpm_limit, tpm_limit)

    def reserve_now(self, key: str, tokens: int, rpm_limit: int, tpm_limit: int) -> float:
        now = self._clock()
        window = self._window(key, now)
        wait = 0.0
        if rpm_limit and window.requests + 1 > rpm_limit:
            wait = self._wait_for_requests(window, window.requests + 1 - rpm_limit, now)
        if tpm_limit and max(window.tokens, 0) + tokens > tpm_limit:
            wait = max(wait, self._wait_for_tokens(window, tokens, tpm_limit, now))
        if wait > 0:
            return wait
        window.entries.append((now, 1, tokens))
        window.requests += 1
        window.tokens += tokens
        return 0.0

    def record(self, key: str, tokens: int) -> None:
        """Count a request reserved elsewhere (in Redis), so a fall-back knows of it."""
        now = self._clock()
        window = self._window(key, now)
        window.entries.append((now, 1, tokens))
        window.requests += 1
        window.tokens += tokens

    def _wait_for_requests(self, window: _Window, leave: int, now: float) -> float:
        for at, requests, _ in window.entries:
            leave -= requests
            if leave <= 0:
                return at + self._window_s - now
        return self._window_s  # unreachable while the counts match the entries

    def _wait_for_tokens(self, window: _Window, tokens: int, limit: int, now: float) -> float:
        if tokens > limit:
            return self._window_s  # never fits; the caller says why
        need = window.tokens + tokens - limit
        for at, _, freed in window.entries:
            need -= freed
            if need <= 0:
                return at + self._window_s - now
        return self._window_s

    async def correct(self, key: str, delta_tokens: int, *, age_s: float = 0.0) -> None:
        self.correct_now(key, delta_tokens, age_s=age_s)

    def correct_now(self, key: str, delta_tokens: int, *, age_s: float = 0.0) -> None:
        now = self._clock()
        at = now - age_s
        if not delta_tokens or at <= now - self._window_s:
            return  # nothing to change, or the reservation has left the window already
        window = self._window(key, now)
        entry = (at, 0, delta_tokens)
        entries = window.entries
        if not entries or entries[-1][0] <= at:
            entries.append(entry)
        else:
            # Dated with its reservation so both leave together: a correction dated now would
            # outlive the reservation and, if negative, count the minute after it short.
            entries.insert(bisect.bisect_right(entries, at, key=_entry_time), entry)
        window.tokens += delta_tokens

    def used(self, key: str) -> tuple[int, int]:
        window = self._windows.get(key)
        if window is None:
            return 0, 0
        window.prune(self._clock(), self._window_s)
        return window.requests, max(window.tokens, 0)


# A key's counts in Redis: KEYS[1] a sorted set of requests (member: sequence number),
# KEYS[2] a sorted set of token entries (member "seq:tokens", tokens possibly negative for a
# correction), KEYS[3] a hash of the tokens' running sum `t` and the sequence `n`. Scores are
# Redis server time in ms, so the daemons' clocks do not matter.
# ARGV: tokens, rpm_limit, tpm_limit, window ms, ttl ms. Returns {wait ms (0: reserved),
# requests, tokens} as counted after the call.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tokens, rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local cutoff = now - window
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
local sum = tonumber(redis.call('HGET', KEYS[3], 't') or '0')
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
if #old > 0 then
  for i = 1, #old do
    sum = sum - tonumber(string.match(old[i], ':(%-?%d+)$'))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
end
if redis.call('ZCARD', KEYS[2]) == 0 then sum = 0 end
local requests = redis.call('ZCARD', KEYS[1])
local wait = 0
if rpm > 0 and requests + 1 > rpm then
  local first = redis.call('ZRANGE', KEYS[1], requests - rpm, requests - rpm, 'WITHSCORES')
  wait = tonumber(first[2]) + window - now
end
if tpm > 0 and math.max(sum, 0) + tokens > tpm then
  local w = window
  if tokens <= tpm then
    -- the oldest entries that must leave first; past 128 of them the wait is a lower bound
    local need = sum + tokens - tpm
    local entries = redis.call('ZRANGE', KEYS[2], 0, 127, 'WITHSCORES')
    for i = 1, #entries, 2 do
      need = need - tonumber(string.match(entries[i], ':(%-?%d+)$'))
      w = tonumber(entries[i + 1]) + window - now
      if need <= 0 then break end
    end
  end
  wait = math.max(wait, w)
end
if wait > 0 then
  if #old > 0 then
    redis.call('HSET', KEYS[3], 't', sum)
    for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
  end
  return {math.max(math.ceil(wait), 1), requests, math.max(sum, 0)}
end
local seq = redis.call('HINCRBY', KEYS[3], 'n', 1)
redis.call('ZADD', KEYS[1], now, seq)
if tokens ~= 0 then
  redis.call('ZADD', KEYS[2], now, seq .. ':' .. ARGV[1])
  sum = sum + tokens
end
redis.call('HSET', KEYS[3], 't', sum)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
return {0, requests + 1, math.max(sum, 0)}
"""

# ARGV: delta tokens, age ms, window ms, ttl ms. A further token entry dated with the
# reservation it corrects.
_CORRECT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local at = now - tonumber(ARGV[2])
if at <= now - tonumber(ARGV[3]) or redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
local seq = redis.call('HINCRBY', KEYS[3], 'n', 1)
redis.call('ZADD', KEYS[2], at, seq .. ':' .. ARGV[1])
redis.call('HINCRBY', KEYS[3], 't', ARGV[1])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
return 1
"""

PREFIX: Final = "palyra:v1"
# Counts of a deployment nobody has used for this long are gone (its window is long past).
KEY_TTL_MS: Final = 120_000
# After a Redis failure, requests use the local counts this long before Redis is tried again:
# while Redis is down (or black-holed) each one would otherwise wait out the timeout.
RETRY_REDIS_AFTER_S: Final = 1.0
# What Redis said of a key on this daemon's last call stands in `used` this long; after it,
# this daemon's own reservations do.
SNAPSHOT_FRESH_S: Final = 5.0


class RedisRateCounter:
    """Counts in Redis, shared by every daemon using `namespace`: one Lua script prunes, checks
    and reserves atomically, so three daemons together stay within one deployment's limits.

    A Redis failure never fails a request, nor holds it longer than `timeout_s`: that call (and
    those of the next `RETRY_REDIS_AFTER_S`) is counted by this daemon alone, `reachable` turns
    False, and it is logged once (the URL without its password)."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = PREFIX,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = 0.25,
        window_s: float = WINDOW_S,
    ) -> None:
        self._url = redact_url(url)
        self._client: redis.Redis = redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # a retry would double the wait a request sees
        )
        self._reserve = self._client.register_script(_RESERVE)
        self._correct = self._client.register_script(_CORRECT)
        self._prefix = namespace
        self._clock = clock
        self._timeout_s = timeout_s
        self._window_s = window_s
        self._window_ms = int(window_s * 1000)
        self.local = LocalRateCounter(clock=clock, window_s=window_s)
        self._keys: dict[str, list[str]] = {}
        self._snapshots: dict[str, tuple[int, int, float]] = {}
        self._retry_at = 0.0
        self.reachable = True
        self.last_error: str | None = None

    def _keys_of(self, key: str) -> list[str]:
        keys = self._keys.get(key)
        if keys is None:
            # One hash tag: a cluster keeps a deployment's three keys in one slot.
            base = f"{self._prefix}:rate:{{{key}}}"
            keys = self._keys[key] = [f"{base}:req", f"{base}:tok", f"{base}:sum"]
        return keys

    def _redis_now(self) -> bool:
        return self.reachable or self._clock() >= self._retry_at

    def _failed(self, exc: BaseException) -> None:
        self._retry_at = self._clock() + RETRY_REDIS_AFTER_S
        self.last_error = redact_secrets(f"{type(exc).__name__}: {exc}")
        if self.reachable:
            self.reachable = False
            log.warning("redis_rate_counter_unreachable", url=self._url, error=self.last_error)

    def _succeeded(self) -> None:
        if not self.reachable:
            self.reachable, self.last_error = True, None
            log.info("redis_rate_counter_reachable_again", url=self._url)

    async def reserve(self, key: str, tokens: int, rpm_limit: int, tpm_limit: int) -> float:
        if self._redis_now():
            try:
                async with asyncio.timeout(self._timeout_s):
                    answer = await self._reserve(
                        keys=self._keys_of(key),
                        args=[tokens, rpm_limit, tpm_limit, self._window_ms, KEY_TTL_MS],
                    )
                wait_ms, requests, used = (int(value) for value in answer)
            except Exception as exc:  # any failure: count here instead, never fail the request
                self._failed(exc)
            else:
                self._succeeded()
                self._snapshots[key] = (requests, used, self._clock())
                if wait_ms > 0:
                    return wait_ms / 1000
                self.local.record(key, tokens)
                return 0.0
        return self.local.reserve_now(key, tokens, rpm_limit, tpm_limit)

    async def correct(self, key: str, delta_tokens: int, *, age_s: float = 0.0) -> None:
        if not delta_tokens:
            return
        self.local.correct_now(key, delta_tokens, age_s=age_s)
        if not self._redis_now():
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._correct(
                    keys=self._keys_of(key),
                    args=[delta_tokens, int(age_s * 1000), self._window_ms, KEY_TTL_MS],
                )
        except Exception as exc:
            self._failed(exc)
        else:
            self._succeeded()

    def used(self, key: str) -> tuple[int, int]:
        """What Redis said on this daemon's last call for the key (all daemons' counts) if
        fresh, but never less than this daemon's own."""
        requests, tokens = self.local.used(key)
        snapshot = self._snapshots.get(key)
        if snapshot is not None and self._clock() - snapshot[2] <= SNAPSHOT_FRESH_S:
            requests, tokens = max(requests, snapshot[0]), max(tokens, snapshot[1])
        return requests, tokens

    async def aclose(self) -> None:
        await self._client.aclose()


class DeploymentBoard:
    """Every deployment this daemon has routed to, made on first use."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        counter: RateCounter | None = None,
        default_strategy: str = DEFAULT_STRATEGY,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self.counter: RateCounter = LocalRateCounter(clock=clock) if counter is None else counter
        # `[model_provider] load_balancing`, shown for models without their own.
        self.default_strategy = default_strategy
        self._deployments: dict[str, Deployment] = {}
        self._by_config: dict[int, Deployment] = {}
        self._upstreams: dict[tuple[str, str], _Upstream] = {}
        self._corrections: set[asyncio.Task[None]] = set()

    def deployment(self, model: ModelConfig) -> Deployment:
        """The deployment of `model` (an entry of the configuration); the same object for as
        long as the key stays, its settings refreshed when the entry changed."""
        found = self._by_config.get(id(model))
        if found is not None and found.model is model:
            return found
        key = f"{model.model_id}@{model.provider_id}"
        upstream = self._upstream_of(model)
        deployment = self._deployments.get(key)
        if deployment is None:
            deployment = self._deployments[key] = Deployment(model, self.counter, upstream)
        else:
            self._by_config.pop(id(deployment.model), None)
            deployment._configure(model, upstream)
        self._by_config[id(model)] = deployment
        return deployment

    def _upstream_of(self, model: ModelConfig) -> _Upstream:
        name = (model.provider_id, model.upstream_name)
        upstream = self._upstreams.get(name)
        if upstream is None:
            upstream = self._upstreams[name] = _Upstream()
        return upstream

    def retain(self, models: Iterable[ModelConfig]) -> None:
        """Forget deployments no longer configured (after a reload), so `view` drops them."""
        keep = {f"{m.model_id}@{m.provider_id}" for m in models}
        for key in [key for key in self._deployments if key not in keep]:
            gone = self._deployments.pop(key)
            self._by_config.pop(id(gone.model), None)
        used = {(d.provider_id, d.model.upstream_name) for d in self._deployments.values()}
        for name in [name for name in self._upstreams if name not in used]:
            del self._upstreams[name]

    async def admit(self, deployment: Deployment, tokens: int) -> Admission | Refusal:
        """Admit one request of about `tokens` (the estimate made before dispatch), or say why
        not: the upstream said it has nothing left, or rpm_limit / tpm_limit would be passed
        in the last 60 s. Admitted: in flight, reserved, counted as dispatched."""
        now = self._clock()
        upstream = deployment._upstream
        if upstream.active:
            refusal = upstream.refusal(tokens, now)
            if refusal is not None:
                deployment.last_skip = (refusal.reason, now)
                return refusal
        counted = deployment._limited
        if counted:
            refusal = await self._reserve(deployment, tokens)
            if refusal is not None:
                deployment.last_skip = (refusal.reason, self._clock())
                return refusal
            now = self._clock()
        if upstream.active:
            upstream.spend(tokens, now)
        deployment.in_flight += 1
        deployment.dispatched += 1
        deployment.last_used = now
        sec = int(now)
        slot = sec % _RING
        if deployment._ring_sec[slot] != sec:
            deployment._ring_sec[slot] = sec
            deployment._ring_requests[slot] = 0
            deployment._ring_tokens[slot] = 0
        deployment._ring_requests[slot] += 1
        deployment._ring_tokens[slot] += tokens
        return Admission(deployment, tokens, now, counted)

    async def _reserve(self, deployment: Deployment, tokens: int) -> Refusal | None:
        rpm_limit, tpm_limit = deployment.rpm_limit, deployment.tpm_limit
        if tpm_limit and tokens > tpm_limit:
            return Refusal(
                f"the request's estimated {tokens} tokens exceed tpm_limit {tpm_limit}", WINDOW_S
            )
        wait = await self.counter.reserve(deployment.key, tokens, rpm_limit, tpm_limit)
        if wait <= 0:
            return None
        requests, _ = self.counter.used(deployment.key)
        if rpm_limit and requests >= rpm_limit:
            return Refusal(f"rpm_limit {rpm_limit} reached", wait)
        return Refusal(f"tpm_limit {tpm_limit} reached", wait)

    def settle(self, admission: Admission, *, ttft_s: float | None, tokens: int | None) -> None:
        """The attempt ended: out of flight, `ttft_s` (when measured) into the average, and the
        reservation corrected to the answer's `tokens` (when known). A second call does nothing."""
        if admission._settled:
            return
        admission._settled = True
        deployment = admission.deployment
        if deployment.in_flight > 0:
            deployment.in_flight -= 1
        if ttft_s is not None and ttft_s >= 0:  # (NaN fails the comparison)
            now = self._clock()
            average = deployment.ttft_s
            if average is None:
                deployment.ttft_s = ttft_s
            else:
                gap = now - deployment.ttft_at
                alpha = max(TTFT_ALPHA, -math.expm1(-gap / TTFT_TAU_S)) if gap > 0 else TTFT_ALPHA
                deployment.ttft_s = average + alpha * (ttft_s - average)
            deployment.ttft_at = now
        if tokens is None or tokens == admission.tokens:
            return
        delta = max(tokens, 0) - admission.tokens
        sec = int(admission.admitted_at)
        slot = sec % _RING
        if deployment._ring_sec[slot] == sec:
            deployment._ring_tokens[slot] += delta
        if admission._counted:
            age_s = self._clock() - admission.admitted_at
            if age_s < WINDOW_S:
                self._correct(deployment.key, delta, age_s)

    def _correct(self, key: str, delta: int, age_s: float) -> None:
        counter = self.counter
        if isinstance(counter, LocalRateCounter):
            counter.correct_now(key, delta, age_s=age_s)
            return
        try:
            task = asyncio.get_running_loop().create_task(counter.correct(key, delta, age_s=age_s))
        except RuntimeError:  # settled outside the event loop: nowhere to send it
            return
        self._corrections.add(task)
        task.add_done_callback(self._corrections.discard)

    async def drain(self) -> None:
        """Wait for corrections still on their way to the counter (before shutdown)."""
        while self._corrections:
            await asyncio.gather(*list(self._corrections), return_exceptions=True)

    def observe_limits(self, provider_id: str, upstream_model: str, limits: UpstreamLimits) -> None:
        """What an answer's rate-limit headers said, for every deployment with that provider
        and upstream model name: nothing left means exhausted until the reset."""
        upstream = self._upstreams.get((provider_id, upstream_model))
        if upstream is not None:
            upstream.observe(limits, self._clock())

    def skipped(self, deployment: Deployment, reason: str) -> None:
        """The router passed `deployment` over for a reason of its own (an open circuit)."""
        deployment.last_skip = (reason, self._clock())

    def exhaust(self, deployment: Deployment, retry_after_s: float, reason: str) -> None:
        """Rest the deployment (and those sharing its upstream quota) `retry_after_s`, e.g.
        after an upstream 429."""
        deployment._upstream.rest(self._clock() + max(retry_after_s, 0.0), reason)

    def view(self) -> list[dict[str, Any]]:
        """One row per deployment, by model and priority (see design: gateway status, the CLI,
        the console and /metrics read these)."""
        now = self._clock()
        wall_ms = self._wall_clock() * 1000

        def epoch_ms(at: float) -> int:
            return round(wall_ms - (now - at) * 1000)

        deployments = sorted(
            self._deployments.values(),
            key=lambda d: (d.model.model_id, d.priority, d.provider_id),
        )
        recent = {d.key: d._recent(now) for d in deployments}
        model_total: dict[str, int] = {}
        for d in deployments:
            model_total[d.model.model_id] = model_total.get(d.model.model_id, 0) + recent[d.key][0]
        rows: list[dict[str, Any]] = []
        for d in deployments:
            mine = recent[d.key][0]
            total = model_total[d.model.model_id]
            requests, tokens = self.counter.used(d.key) if d._limited else recent[d.key]
            upstream = d._upstream
            rows.append(
                {
                    "model_id": d.model.model_id,
                    "provider_id": d.provider_id,
                    "weight": d.weight,
                    "priority": d.priority,
                    "strategy": d.model.strategy(self.default_strategy),
                    "in_flight": d.in_flight,
                    "requests_last_minute": requests,
                    "tokens_last_minute": tokens,
                    "rpm_limit": d.rpm_limit,
                    "tpm_limit": d.tpm_limit,
                    "ttft_ms": None if d.ttft_s is None else d.ttft_s * 1000,
                    "share": mine / total if total else 0.0,
                    "dispatched": d.dispatched,
                    "skipped": (
                        None
                        if d.last_skip is None
                        else {"reason": d.last_skip[0], "at_ms": epoch_ms(d.last_skip[1])}
                    ),
                    "upstream": (
                        None
                        if not upstream.seen
                        else {
                            "remaining_requests": (
                                max(upstream.remaining_requests, 0)
                                if upstream.remaining_requests is not None
                                and now < upstream.requests_reset_at
                                else None
                            ),
                            "remaining_tokens": (
                                max(upstream.remaining_tokens, 0)
                                if upstream.remaining_tokens is not None
                                and now < upstream.tokens_reset_at
                                else None
                            ),
                            "exhausted_until_ms": (
                                epoch_ms(upstream.rest_until) if upstream.rest_until > now else None
                            ),
                        }
                    ),
                }
            )
        return rows
