"""Circuit and health state shared between daemons through Redis (or between the workers of
one daemon through its channel, palyra.channel).

The request path never waits on Redis: breakers and health change in memory as before, a
listener marks what changed, and a background loop (every `SYNC_INTERVAL_S`) pushes local
changes and pulls everyone else's. The newest decision per provider wins, so a circuit
opened by one daemon is honoured by all within about one interval. When Redis is
unreachable every daemon goes on with its own state and reports itself degraded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as redis
import structlog

from palyra.breaker import BreakerBoard, CircuitBreaker
from palyra.health import HealthBoard
from palyra.redact import redact_secrets
from palyra.tasks import cancel_and_wait

log = structlog.get_logger("palyra.shared")

SYNC_INTERVAL_S = 0.25
KEY_TTL_S = 24 * 3600
PREFIX = "palyra:v1"


# (changed_at_ms, value, detail) of one decision, under "circuit:{provider}" or
# "health:{provider}".
Decision = tuple[int, str, str]


class DecisionStore(Protocol):
    """Where the newest decisions are kept: Redis between daemons, or the master of one
    daemon's workers (palyra.channel.ChannelDecisions)."""

    async def exchange(self, push: dict[str, Decision], pull: list[str]) -> dict[str, Decision]:
        """Keep each pushed decision unless the store has a newer one; answer the store's
        decisions for `pull` (those it has)."""
        ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class RedisDecisions:
    def __init__(self, url: str, namespace: str = PREFIX) -> None:
        self._prefix = namespace
        self._client: redis.Redis = redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0, decode_responses=True
        )

    async def exchange(self, push: dict[str, Decision], pull: list[str]) -> dict[str, Decision]:
        if push:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, (changed_at_ms, value, detail) in push.items():
                    # Only a newer decision may replace the stored one (compare in a Lua
                    # script so two daemons writing at once cannot go backwards).
                    pipe.eval(
                        _SET_IF_NEWER,
                        1,
                        f"{self._prefix}:{key}",
                        changed_at_ms,
                        value,
                        detail,
                        KEY_TTL_S,
                    )
                await pipe.execute()
        async with self._client.pipeline(transaction=False) as pipe:
            for key in pull:
                pipe.hgetall(f"{self._prefix}:{key}")
            results: list[Any] = await pipe.execute()
        return {
            key: (int(found["changed_at_ms"]), found["value"] or "", found.get("detail") or "")
            for key, found in zip(pull, results, strict=True)
            if found
        }

    async def ping(self) -> None:
        await self._client.ping()

    async def aclose(self) -> None:
        await self._client.aclose()


class SharedState:
    def __init__(
        self,
        store: str | DecisionStore,
        *,
        breakers: BreakerBoard,
        breaker_for: Callable[[str], CircuitBreaker],
        health: HealthBoard,
        provider_ids: list[str],
        interval_s: float = SYNC_INTERVAL_S,
        namespace: str = PREFIX,
    ) -> None:
        """`store`: a Redis URL, or another DecisionStore."""
        self._store = RedisDecisions(store, namespace) if isinstance(store, str) else store
        # What the logs call the store: Redis, or the channel to palyrad's master (workers).
        self._kind = "redis" if isinstance(store, str) else "channel"
        self._breakers = breakers
        self._breaker_for = breaker_for
        self._health = health
        self._provider_ids = provider_ids
        self._interval_s = interval_s
        self._dirty_circuits: set[str] = set()
        self._dirty_health: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.reachable = True
        self.last_error: str | None = None
        self.last_sync_at_ms: int | None = None

    def start(self) -> None:
        self._breakers.listener = lambda pid: self._dirty_circuits.add(pid)
        self._health.listener = lambda pid: self._dirty_health.add(pid)
        self._task = asyncio.create_task(self._loop())

    async def aclose(self) -> None:
        await cancel_and_wait(self._task)
        await self._store.aclose()

    async def _loop(self) -> None:
        while True:
            try:
                await self.sync()
                if not self.reachable:
                    log.info(f"{self._kind}_reachable_again")
                self.reachable, self.last_error = True, None
            except (redis.RedisError, OSError) as exc:
                if self.reachable:
                    log.warning(f"{self._kind}_unreachable", error=redact_secrets(str(exc)))
                self.reachable = False
                self.last_error = redact_secrets(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self._interval_s)

    async def sync(self) -> None:
        """Push what changed here, then take what is newer elsewhere."""
        circuits, self._dirty_circuits = self._dirty_circuits, set()
        healths, self._dirty_health = self._dirty_health, set()
        try:
            found = await self._store.exchange(
                self._decisions(circuits, healths),
                [f"{kind}:{pid}" for pid in self._provider_ids for kind in ("circuit", "health")],
            )
        except BaseException:
            # Not pushed: try again next round rather than lose the change.
            self._dirty_circuits |= circuits
            self._dirty_health |= healths
            raise
        for pid in self._provider_ids:
            circuit, health = found.get(f"circuit:{pid}"), found.get(f"health:{pid}")
            if circuit:
                breaker = self._breaker_for(pid)
                breaker.apply_remote(int(circuit[1] or 0), circuit[0])
            if health:
                self._health.apply_remote(pid, health[1], health[0], health[2] or None)
        self.last_sync_at_ms = int(time.time() * 1000)

    def _decisions(self, circuits: set[str], healths: set[str]) -> dict[str, Decision]:
        push: dict[str, Decision] = {}
        for pid in circuits:
            breaker = self._breakers.peek(pid)
            if breaker is not None:
                open_until, changed = breaker.snapshot()
                push[f"circuit:{pid}"] = (changed, str(open_until), "")
        for pid in healths:
            health = self._health.get(pid)
            push[f"health:{pid}"] = (
                health.changed_at_ms,
                health.state.value,
                health.last_error or "",
            )
        return push

    async def ping(self) -> None:
        await self._store.ping()


# KEYS[1] hash; ARGV: changed_at_ms, value, detail, ttl seconds.
_SET_IF_NEWER = """
local current = tonumber(redis.call('HGET', KEYS[1], 'changed_at_ms') or '0')
if tonumber(ARGV[1]) > current then
  redis.call('HSET', KEYS[1], 'changed_at_ms', ARGV[1], 'value', ARGV[2], 'detail', ARGV[3])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
  return 1
end
return 0
"""
