"""Client keys' budgets: what each key spent in its current budget period, so a request over
budget is refused before it reaches an upstream.

The hot path only reads memory (`check`) and adds to it (`add`). The spend is seeded from the
usage ledger at start (`load`); with Redis it is shared between daemons: a background task
(every `SYNC_S`) sends this daemon's additions with INCRBYFLOAT on one Redis key per key and
period, and reads the totals back. A Redis failure never fails a request: the daemon then goes
by what it knows itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

import redis.asyncio as redis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from palyra.config import redact_url
from palyra.errors import PalyraError
from palyra.redact import redact_secrets

log = structlog.get_logger("palyra.budgets")

SYNC_S: Final = 0.5
PREFIX: Final = "palyra:v1"
_HOUR_MS: Final = 3_600_000
_DAY_MS: Final = 24 * _HOUR_MS
# Spend is kept per UTC hour, so any period that starts and ends on an hour (day, week, month,
# in UTC or a whole-hour zone) is summed exactly; older hours than this are dropped.
_KEEP_MS: Final = 32 * _DAY_MS


class BudgetedKey(Protocol):
    """What a budget needs of a client key (palyra.keys.ClientKey)."""

    @property
    def key_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def budget_usd(self) -> float | None: ...
    @property
    def budget_period(self) -> str: ...  # "day" | "week" | "month" | "total"

    def budget_window(self, now_ms: int) -> tuple[int, int]: ...


class BudgetExceeded(PalyraError):
    """A client key spent its budget for the current period."""

    status = 429
    type = "rate_limit_error"
    code = "budget_exceeded"


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def exceeded(key: BudgetedKey, spent: float, now_ms: int, reset_ms: int | None) -> BudgetExceeded:
    """The error for `key` having spent `spent` USD of its budget."""
    budget = key.budget_usd or 0.0
    head = f"client key {key.name!r} has spent ${spent:.4f} of its ${budget:.2f} budget"
    if reset_ms is None:
        return BudgetExceeded(
            f"{head} (period: total, which never resets); raise the budget or use another key"
        )
    wait_s = max(1, -(-(reset_ms - now_ms) // 1000))
    return BudgetExceeded(
        f"{head} for this {key.budget_period}; it resets at {_utc(reset_ms)} (in {wait_s} s)",
        headers={"retry-after": str(wait_s)},
    )


@dataclass(slots=True)
class _Spend:
    total: float = 0.0
    hours: dict[int, float] = field(default_factory=dict)  # hour index -> USD
    # The current window's sum, kept so a check does not sum hours: (start_ms, reset_ms, USD).
    window: tuple[int, int, float] | None = None

    def add(self, cost_usd: float, at_ms: int) -> None:
        self.total += cost_usd
        hour = at_ms // _HOUR_MS
        self.hours[hour] = self.hours.get(hour, 0.0) + cost_usd
        if self.window is not None:
            start, reset, spent = self.window
            if start <= at_ms < reset:
                self.window = (start, reset, spent + cost_usd)

    def in_window(self, start_ms: int, reset_ms: int) -> float:
        window = self.window
        if window is not None and window[0] == start_ms and window[1] == reset_ms:
            return window[2]
        first, end = start_ms // _HOUR_MS, -(-reset_ms // _HOUR_MS)
        spent = sum(v for h, v in self.hours.items() if first <= h < end)
        self.window = (start_ms, reset_ms, spent)
        return spent

    def prune(self, now_ms: int) -> None:
        oldest = (now_ms - _KEEP_MS) // _HOUR_MS
        for hour in [h for h in self.hours if h < oldest]:
            del self.hours[hour]


class SpendStore(Protocol):
    """Where the spend of every daemon (or worker) is added up: Redis, or the master of one
    daemon's workers (palyra.channel.ChannelSpend)."""

    async def exchange(
        self,
        adds: dict[str, tuple[float, int | None]],
        reads: list[str],
        seeds: Mapping[str, tuple[float, int | None]] = {},
    ) -> dict[str, float | None]:
        """Set each `seeds` name's total where the store does not hold it yet (what the ledger
        says was spent before this start); add each `adds` name's USD to its total (kept for
        the seconds given, None: for ever); answer the totals of `reads` (None for a name the
        store does not hold)."""
        ...

    async def aclose(self) -> None: ...


class RedisSpend:
    def __init__(self, url: str, timeout_s: float) -> None:
        self._client: redis.Redis = redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    async def exchange(
        self,
        adds: dict[str, tuple[float, int | None]],
        reads: list[str],
        seeds: Mapping[str, tuple[float, int | None]] = {},
    ) -> dict[str, float | None]:
        names = list(dict.fromkeys([*adds, *reads]))
        answers: list[str | None] = []  # per pipelined command: the name whose total it is
        async with self._client.pipeline(transaction=False) as pipe:
            for name, (usd, expiry) in seeds.items():
                pipe.set(name, usd, nx=True, ex=expiry)
                answers.append(None)
            for name in names:
                if name in adds:
                    usd, expiry = adds[name]
                    pipe.incrbyfloat(name, usd)  # answers the new total
                    answers.append(name)
                    if expiry is not None:
                        pipe.expire(name, expiry)
                        answers.append(None)
                else:
                    pipe.get(name)
                    answers.append(name)
            results = await pipe.execute()
        return {
            name: None if value is None else float(value)
            for name, value in zip(answers, results, strict=True)
            if name is not None
        }

    async def aclose(self) -> None:
        await self._client.aclose()


class BudgetBook:
    """Spend per client key in its current budget period, in memory; shared through Redis when
    `redis_url` is set (`start()` runs the sync task, `aclose()` ends it)."""

    def __init__(
        self,
        redis_url: str = "",
        *,
        namespace: str = PREFIX,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        timeout_s: float = 0.25,
        known: Callable[[], Iterable[BudgetedKey]] = tuple,
        spend: SpendStore | None = None,
    ) -> None:
        """`known`: every client key there is (the key ring), so that a key's spend on other
        daemons is read back before this one has seen a request of it. `spend`: where the
        shared spend is kept when there is no `redis_url` (the workers' channel)."""
        self._known = known
        self._spend: dict[str, _Spend] = {}
        # The keys with a budget seen by `check`: `add` needs a key's period to share its spend.
        self._keys: dict[str, BudgetedKey] = {}
        self._wall_ms = wall_ms
        self._prefix = namespace
        self._url = redact_url(redis_url) if redis_url else "the workers' channel"
        self._kind = "redis" if redis_url or spend is None else "channel"  # for the logs
        self._client: SpendStore | None = spend
        if redis_url:
            self._client = RedisSpend(redis_url, timeout_s)
        # Redis key -> USD added here and not yet sent; Redis key -> total last read back.
        self._unsent: dict[str, float] = {}
        self._shared: dict[str, float] = {}
        # Redis key -> (USD the ledger held at start, expiry): the store's total where it has
        # none yet (palyrad restarted, its workers' channel empty), sent once.
        self._seeds: dict[str, tuple[float, int | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self.reachable = True
        self.last_error: str | None = None

    # --- the hot path -------------------------------------------------------------------

    def spent(self, key: BudgetedKey, now_ms: int) -> float:
        """USD spent by `key` in its period containing `now_ms`, as this daemon knows."""
        spend = self._spend.get(key.key_id)
        total = key.budget_period == "total"
        if total:
            local = spend.total if spend is not None else 0.0
        else:
            start, reset = key.budget_window(now_ms)
            local = spend.in_window(start, reset) if spend is not None else 0.0
        if self._client is None:
            return local
        rkey = self._redis_key(key, now_ms)
        shared = self._shared.get(rkey)
        if shared is None:
            return local
        # Redis has every daemon's additions since its key was made; the ledger-seeded local
        # sum may hold spend from before that. Neither is ever too high.
        return max(local, shared + self._unsent.get(rkey, 0.0))

    def check(self, key: BudgetedKey, now_ms: int) -> BudgetExceeded | None:
        """The refusal when `key` has spent its budget for the current period, else None."""
        budget = key.budget_usd
        if budget is None:
            return None
        self._keys[key.key_id] = key
        spent = self.spent(key, now_ms)
        if spent < budget:
            return None
        reset = None if key.budget_period == "total" else key.budget_window(now_ms)[1]
        return exceeded(key, spent, now_ms, reset)

    def add(self, key_id: str, cost_usd: float, at_ms: int) -> None:
        """Count `cost_usd` spent by `key_id` at `at_ms` (wall-clock epoch ms)."""
        if not cost_usd > 0:  # None-like zero, negative or NaN costs count nothing
            return
        spend = self._spend.get(key_id)
        if spend is None:
            spend = self._spend[key_id] = _Spend()
        spend.add(cost_usd, at_ms)
        if self._client is not None:
            key = self._keys.get(key_id)
            if key is not None:
                rkey = self._redis_key(key, at_ms)
                self._unsent[rkey] = self._unsent.get(rkey, 0.0) + cost_usd

    # --- start: the ledger ----------------------------------------------------------------

    async def load(
        self,
        keys: Iterable[BudgetedKey],
        spend_since: Callable[[str, int], Awaitable[float]],
        now_ms: int | None = None,
    ) -> None:
        """Seed each budgeted key's current period from the ledger: `spend_since(key_id,
        since_ms)` is the USD the ledger holds for the key from `since_ms` on."""
        now = self._wall_ms() if now_ms is None else now_ms
        for key in keys:
            if key.budget_usd is None:
                continue
            self._keys[key.key_id] = key
            since = 0 if key.budget_period == "total" else key.budget_window(now)[0]
            spent = await spend_since(key.key_id, since)
            if spent > 0:
                spend = self._spend[key.key_id] = _Spend()
                # Booked at the period's start, so the period sums it and the next does not.
                spend.add(spent, since)
                if self._client is not None:
                    self._seeds[self._redis_key(key, now)] = (spent, self._expiry_s(key, now))

    # --- Redis ----------------------------------------------------------------------------

    def _redis_key(self, key: BudgetedKey, at_ms: int) -> str:
        if key.budget_period == "total":
            return f"{self._prefix}:budget:{{{key.key_id}}}:total"
        start, _ = key.budget_window(at_ms)
        return f"{self._prefix}:budget:{{{key.key_id}}}:{key.budget_period}:{start}"

    def _expiry_s(self, key: BudgetedKey, now_ms: int) -> int | None:
        if key.budget_period == "total":
            return None
        _, reset = key.budget_window(now_ms)
        # A day past the reset: a daemon with a slow clock still finds the period it is in.
        return max(1, (reset - now_ms + _DAY_MS) // 1000)

    async def sync(self) -> None:
        """Send this daemon's unsent spend and read every budgeted key's current total back."""
        client = self._client
        if client is None:
            return
        now = self._wall_ms()
        for known in self._known():
            if known.budget_usd is not None:
                self._keys[known.key_id] = known
        unsent, self._unsent = self._unsent, {}
        seeds = self._seeds
        current = {self._redis_key(k, now): k for k in self._keys.values()}
        adds: dict[str, tuple[float, int | None]] = {}
        for name, usd in unsent.items():
            key = current.get(name)
            adds[name] = (usd, _DAY_MS // 1000 if key is None else self._expiry_s(key, now))
        try:
            totals = await client.exchange(adds, list(current), seeds)
        except (redis.RedisError, OSError) as exc:
            for name, value in unsent.items():  # sent again next time
                self._unsent[name] = self._unsent.get(name, 0.0) + value
            self._failed(exc)
            return
        self._succeeded()
        if seeds:
            self._seeds = {}
        for name, total in totals.items():
            if name in current and total is not None:
                self._shared[name] = total
        # Totals of periods that are over are no longer read.
        for name in [n for n in self._shared if n not in current]:
            del self._shared[name]
        for spend in self._spend.values():
            spend.prune(now)

    def _failed(self, exc: BaseException) -> None:
        self.last_error = redact_secrets(f"{type(exc).__name__}: {exc}")
        if self.reachable:
            self.reachable = False
            log.warning(f"{self._kind}_budgets_unreachable", url=self._url, error=self.last_error)

    def _succeeded(self) -> None:
        if not self.reachable:
            self.reachable, self.last_error = True, None
            log.info(f"{self._kind}_budgets_reachable_again", url=self._url)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SYNC_S)
            try:
                await self.sync()
            except Exception as exc:  # the loop must outlive any one failure
                log.warning("budget_sync_failed", error=redact_secrets(str(exc)))

    def start(self) -> None:
        if self._client is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="budget-sync")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await self.sync()  # this daemon's last additions
            await self._client.aclose()
