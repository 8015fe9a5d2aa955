"""Rate counters: where the per-deployment request and token counts of the last 60 s live, so
`palyra.deployments` can hold a deployment to its `rpm_limit` / `tpm_limit`.

The 60 s are a sliding window, not a calendar minute: a calendar counter lets 2 x rpm_limit
through around the turn of a minute, which is what an upstream's own limiter answers with 429s.
`LocalRateCounter` counts in this process; `RedisRateCounter` in Redis, shared by all daemons,
falling back to its own local counts (never failing a request) while Redis does not answer.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

import redis.asyncio as redis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from palyra.config import redact_url
from palyra.redact import redact_secrets

log = structlog.get_logger("palyra.ratecounter")

WINDOW_S: Final = 60.0


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


def _place(entries: deque[tuple[float, int, int]], at: float) -> int:
    """Where an entry dated `at` goes among `entries` (in time order), searched from the newest
    end: a correction is for a request that began a moment ago, and a deque reaches its middle
    slowly (a minute of a busy key holds ~300,000 entries, where a plain bisection was
    dear: benchmarks/README.md)."""
    n = len(entries)
    step, newer = 1, n  # entries[newer:] are all later than `at`
    while step <= n and entries[n - step][0] > at:
        newer = n - step
        step *= 2
    older = max(0, n - step)
    return bisect.bisect_right(entries, at, older, newer, key=_entry_time)


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
            entries.insert(_place(entries, at), entry)
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
# requests, tokens, Redis time in µs} as counted after the call.
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
  return {math.max(math.ceil(wait), 1), requests, math.max(sum, 0), math.floor(now * 1000)}
end
local seq = redis.call('HINCRBY', KEYS[3], 'n', 1)
redis.call('ZADD', KEYS[1], now, seq)
if tokens ~= 0 then
  redis.call('ZADD', KEYS[2], now, seq .. ':' .. ARGV[1])
  sum = sum + tokens
end
redis.call('HSET', KEYS[3], 't', sum)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
return {0, requests + 1, math.max(sum, 0), math.floor(now * 1000)}
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
        # key -> (requests, tokens, our clock when heard, Redis time of the count in µs)
        self._snapshots: dict[str, tuple[int, int, float, int]] = {}
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
                wait_ms, requests, used, counted_us = (int(value) for value in answer)
            except Exception as exc:  # any failure: count here instead, never fail the request
                self._failed(exc)
            else:
                self._succeeded()
                self.remember(key, requests, used, counted_us)
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

    def remember(self, key: str, requests: int, tokens: int, counted_us: int) -> None:
        """Keep what Redis counted for `key` at `counted_us` (its own time) unless a later
        count is kept already: calls made at once over several connections are answered in
        any order, and the one answered last may hold the oldest count."""
        kept = self._snapshots.get(key)
        if kept is None or counted_us >= kept[3]:
            self._snapshots[key] = (requests, tokens, self._clock(), counted_us)

    def used(self, key: str) -> tuple[int, int]:
        """What Redis last counted for the key (all daemons' counts), as this daemon heard
        it, if fresh, but never less than this daemon's own."""
        requests, tokens = self.local.used(key)
        snapshot = self._snapshots.get(key)
        if snapshot is not None and self._clock() - snapshot[2] <= SNAPSHOT_FRESH_S:
            requests, tokens = max(requests, snapshot[0]), max(tokens, snapshot[1])
        return requests, tokens

    async def aclose(self) -> None:
        await self._client.aclose()


class Corrections:
    """Corrections to a counter that the request path never waits for: made at once on the
    local counter, sent in the background to a shared one (`drain` waits for those)."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Task[None]] = set()

    def send(self, counter: RateCounter, key: str, delta_tokens: int, *, age_s: float) -> None:
        # A counter that corrects without waiting (in this process, or sending to the master
        # of the workers, palyra.channel) has `correct_now`: no task needed.
        correct_now = getattr(counter, "correct_now", None)
        if correct_now is not None:
            correct_now(key, delta_tokens, age_s=age_s)
            return
        try:
            task = asyncio.get_running_loop().create_task(
                counter.correct(key, delta_tokens, age_s=age_s)
            )
        except RuntimeError:  # outside the event loop: nowhere to send it
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for corrections still on their way to the counter (before shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
