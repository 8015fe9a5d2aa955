"""The channel between the workers of one palyrad (`[daemon] workers` > 1): the master process
serves it on a Unix socket, each worker keeps one connection to it.

What Redis is to several daemons the channel is to the workers of one, when `[state]
redis_url` is not set (with it, every worker uses Redis as a daemon does):

- rate counts of client keys and deployments: `reserve` is one round trip, decided by the
  master's one `LocalRateCounter`, so N workers together hold a key exactly to its rpm;
  a correction is sent and not waited for.
- circuit breaker and provider health decisions: pushed and pulled in the background by
  `palyra.shared.SharedState` (every 0.25 s), the newest decision winning.
- client keys' budget spend: added and read back in the background by `palyra.budgets`.

A worker also says on it when it is serving (`ready`), and takes the channel closing as the
master gone: it drains and exits. A call that gets no answer fails with `ChannelError` (an
OSError, as a Redis connection error is), and each user falls back on its own local state.

On the wire: one JSON array a line. A request is `[id, op, args]`, its answer `[id, result]`
or `[id, null, error]`; id 0 asks for no answer.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, cast

import orjson
import structlog

from palyra.ratecounter import RETRY_REDIS_AFTER_S, SNAPSHOT_FRESH_S, LocalRateCounter
from palyra.shared import Decision

log = structlog.get_logger("palyra.channel")

# As Redis's: a request limited by a key's rpm waits at most this long for a master that
# does not answer (then counts here, for RETRY_AFTER_S, without asking it).
CALL_TIMEOUT_S: Final = 0.25
RETRY_AFTER_S: Final = RETRY_REDIS_AFTER_S
MAX_LINE: Final = 1 << 20  # longer lines are a bug or a stranger: the connection is closed


class ChannelError(ConnectionError):
    """The master did not answer (gone, or too slow)."""


class _Lines(asyncio.Protocol):
    """Cuts what arrives into lines and hands each, parsed, to `on_message`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        *lines, self._buffer = buffer.split(b"\n")
        if len(self._buffer) > MAX_LINE:
            log.warning("channel_line_too_long", bytes=len(self._buffer))
            self._buffer = b""
            if self.transport is not None:
                self.transport.close()
            return
        for line in lines:
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.warning("channel_bad_message")
                continue
            self.on_message(message)

    def on_message(self, message: Any) -> None:
        raise NotImplementedError

    def write(self, message: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(orjson.dumps(message) + b"\n")


# --- the master's side --------------------------------------------------------------------


class Hub:
    """The state the workers share, kept by the master, and the server of the channel."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.counter = LocalRateCounter(clock=clock)
        self._decisions: dict[str, Decision] = {}
        # Redis-like key -> [USD, expires at (wall ms) or 0 for never].
        self._spend: dict[str, list[float]] = {}
        self._wall_ms = wall_ms
        self._server: asyncio.AbstractServer | None = None
        # Told (worker index, pid) when a worker serves.
        self.on_ready: Callable[[int, int], None] = lambda index, pid: None

    async def start(self, path: Path) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _HubConnection(self), str(path))
        os.chmod(path, 0o600)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def handle(self, op: str, args: list[Any]) -> Any:
        if op == "reserve":
            key, tokens, rpm, tpm = args
            wait = self.counter.reserve_now(key, int(tokens), int(rpm), int(tpm))
            requests, used = self.counter.used(key)
            return [wait, requests, used]
        if op == "correct":
            key, delta, age_s = args
            self.counter.correct_now(key, int(delta), age_s=float(age_s))
            return None
        if op == "decisions":
            push, pull = args
            for key, changed_at_ms, value, detail in push:
                current = self._decisions.get(key)
                if current is None or changed_at_ms > current[0]:
                    self._decisions[key] = (int(changed_at_ms), str(value), str(detail))
            return {key: self._decisions[key] for key in pull if key in self._decisions}
        if op == "spend":
            return self._exchange_spend(*args)
        if op == "ready":
            self.on_ready(int(args[0]), int(args[1]))
            return None
        if op == "ping":
            return True
        raise ValueError(f"unknown operation {op!r}")

    def _exchange_spend(
        self,
        adds: dict[str, list[Any]],
        reads: list[str],
        seeds: dict[str, list[Any]] | None = None,
    ) -> dict[str, Any]:
        now = self._wall_ms()
        for name in [n for n, (_, until) in self._spend.items() if until and until <= now]:
            del self._spend[name]
        # Set if absent, as Redis's SET NX: what the ledger held when palyrad started, the
        # same for every worker, counted once however many send it.
        for name, (usd, ttl_s) in (seeds or {}).items():
            if name not in self._spend:
                self._spend[name] = [float(usd), now + ttl_s * 1000 if ttl_s else 0.0]
        for name, (usd, ttl_s) in adds.items():
            entry = self._spend.setdefault(name, [0.0, 0.0])
            entry[0] += float(usd)
            entry[1] = now + ttl_s * 1000 if ttl_s else 0.0
        return {name: self._spend[name][0] if name in self._spend else None for name in reads}


class _HubConnection(_Lines):
    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self._hub = hub

    def on_message(self, message: Any) -> None:
        try:
            call_id, op, args = message
            result = self._hub.handle(op, args)
        except Exception as exc:  # a worker's bad request must not take the master down
            log.warning("channel_request_failed", error=f"{type(exc).__name__}: {exc}")
            if isinstance(message, list) and message and message[0]:
                self.write([message[0], None, type(exc).__name__])
            return
        if call_id:
            self.write([call_id, result])


# --- a worker's side ----------------------------------------------------------------------


class Channel:
    """A worker's connection to the master: `call` waits for the answer (at most
    `timeout_s`), `send` does not."""

    def __init__(self, path: str, *, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.path = path
        self._timeout_s = timeout_s
        self._protocol: _WorkerConnection | None = None
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        # Set when the connection is gone: the master has exited (or was killed).
        self.lost = asyncio.Event()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_unix_connection(
                lambda: _WorkerConnection(self), self.path
            )
        except OSError as exc:
            raise ChannelError(f"cannot reach palyrad's master on {self.path}: {exc}") from None
        self._protocol = protocol

    async def call(self, op: str, *args: Any) -> Any:
        protocol = self._protocol
        if protocol is None or self.lost.is_set():
            raise ChannelError("the channel to palyrad's master is closed")
        self._next_id += 1
        call_id = self._next_id
        future = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        protocol.write([call_id, op, args])
        try:
            async with asyncio.timeout(self._timeout_s):
                return await future
        except TimeoutError:
            raise ChannelError(f"palyrad's master did not answer {op!r} in time") from None
        finally:
            self._waiting.pop(call_id, None)

    def send(self, op: str, *args: Any) -> None:
        if self._protocol is not None and not self.lost.is_set():
            self._protocol.write([0, op, args])

    async def ping(self) -> None:
        await self.call("ping")

    def _answer(self, message: Any) -> None:
        future = self._waiting.get(message[0])
        if future is None or future.done():
            return  # timed out already
        if len(message) > 2:
            future.set_exception(ChannelError(f"palyrad's master refused: {message[2]}"))
        else:
            future.set_result(message[1])

    def _lost(self) -> None:
        self.lost.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ChannelError("the channel to palyrad's master closed"))

    async def aclose(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


class _WorkerConnection(_Lines):
    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self._channel = channel

    def on_message(self, message: Any) -> None:
        self._channel._answer(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._channel._lost()


# --- what travels on it -------------------------------------------------------------------


class ChannelRateCounter:
    """A `palyra.ratecounter.RateCounter` kept by the master: every worker's reservations in
    one sliding window. While the master does not answer, this worker counts alone, and after
    a failure asks it again only `RETRY_AFTER_S` later (each request would wait the timeout)."""

    def __init__(self, channel: Channel, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._channel = channel
        self._clock = clock
        self.local = LocalRateCounter(clock=clock)
        self._snapshots: dict[str, tuple[int, int, float]] = {}
        self._retry_at = 0.0
        self.reachable = True

    async def reserve(self, key: str, tokens: int, rpm_limit: int, tpm_limit: int) -> float:
        if not self.reachable and self._clock() < self._retry_at:
            return self.local.reserve_now(key, tokens, rpm_limit, tpm_limit)
        try:
            wait, requests, used = await self._channel.call(
                "reserve", key, tokens, rpm_limit, tpm_limit
            )
        except ChannelError as exc:
            self._retry_at = self._clock() + RETRY_AFTER_S
            if self.reachable:
                self.reachable = False
                log.warning("channel_rate_counter_unreachable", error=str(exc))
            return self.local.reserve_now(key, tokens, rpm_limit, tpm_limit)
        if not self.reachable:
            self.reachable = True
            log.info("channel_rate_counter_reachable_again")
        self._snapshots[key] = (int(requests), int(used), self._clock())
        if wait > 0:
            return float(wait)
        self.local.record(key, tokens)
        return 0.0

    async def correct(self, key: str, delta_tokens: int, *, age_s: float = 0.0) -> None:
        self.correct_now(key, delta_tokens, age_s=age_s)

    def correct_now(self, key: str, delta_tokens: int, *, age_s: float = 0.0) -> None:
        """Sent, not waited for (palyra.ratecounter.Corrections calls this directly)."""
        if not delta_tokens:
            return
        self.local.correct_now(key, delta_tokens, age_s=age_s)
        self._channel.send("correct", key, delta_tokens, age_s)

    def used(self, key: str) -> tuple[int, int]:
        """What the master said on this worker's last call for the key (all workers' counts)
        if fresh, but never less than this worker's own."""
        requests, tokens = self.local.used(key)
        snapshot = self._snapshots.get(key)
        if snapshot is not None and self._clock() - snapshot[2] <= SNAPSHOT_FRESH_S:
            requests, tokens = max(requests, snapshot[0]), max(tokens, snapshot[1])
        return requests, tokens


class ChannelDecisions:
    """Where `palyra.shared.SharedState` keeps breaker and health decisions: the master."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    async def exchange(self, push: dict[str, Decision], pull: list[str]) -> dict[str, Decision]:
        answer = await self._channel.call(
            "decisions", [[key, *decision] for key, decision in push.items()], pull
        )
        return {key: (int(v[0]), str(v[1]), str(v[2])) for key, v in answer.items()}

    async def ping(self) -> None:
        await self._channel.ping()

    async def aclose(self) -> None:
        pass  # the channel is the worker's, closed with it


class ChannelSpend:
    """Where `palyra.budgets.BudgetBook` adds and reads shared spend: the master."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    async def exchange(
        self,
        adds: dict[str, tuple[float, int | None]],
        reads: list[str],
        seeds: Mapping[str, tuple[float, int | None]] = {},
    ) -> dict[str, float | None]:
        answer = await self._channel.call(
            "spend",
            {name: [usd, ttl] for name, (usd, ttl) in adds.items()},
            reads,
            {name: [usd, ttl] for name, (usd, ttl) in seeds.items()},
        )
        return {name: None if value is None else float(value) for name, value in answer.items()}

    async def aclose(self) -> None:
        pass
