"""Circuit and health state shared through a real Redis (127.0.0.1:6379); skipped with the
reason where no Redis answers."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from palyra.breaker import BreakerBoard, CircuitBreaker, CircuitState
from palyra.errors import ErrorClass, ProviderError
from palyra.health import HealthBoard, HealthState
from palyra.shared import SharedState

REDIS_URL = os.environ.get("PALYRA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Instance:
    def __init__(self, namespace: str, url: str = REDIS_URL) -> None:
        self.breakers = BreakerBoard()
        self.health = HealthBoard(degraded_latency_ms=2000)
        self.shared = SharedState(
            url,
            breakers=self.breakers,
            breaker_for=self.breaker,
            health=self.health,
            provider_ids=["p1", "p2"],
            interval_s=0.1,
            namespace=namespace,
        )

    def breaker(self, pid: str) -> CircuitBreaker:
        return self.breakers.get(pid, 2, 30_000)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Instance, Instance]]:
    redis = pytest.importorskip("redis.asyncio")
    client = redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    finally:
        await client.aclose()
    namespace = f"palyra-test:{uuid.uuid4().hex}"
    a, b = Instance(namespace), Instance(namespace)
    a.shared.start()
    b.shared.start()
    yield a, b
    await a.shared.aclose()
    await b.shared.aclose()


async def eventually(check: Callable[[], bool], within_s: float = 1.0) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not check():
        if loop.time() - started > within_s:
            raise AssertionError("not within the time allowed")
        await asyncio.sleep(0.02)
    return loop.time() - started


async def test_a_circuit_opened_by_one_is_honoured_by_the_other(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    a.breaker("p1").record_failure()
    a.breaker("p1").record_failure()
    assert a.breaker("p1").state is CircuitState.OPEN
    await eventually(lambda: b.breaker("p1").state is CircuitState.OPEN, within_s=1.0)
    assert b.breaker("p1").acquire() is None
    assert 25 < b.breaker("p1").retry_after_s() <= 30
    assert b.breaker("p2").state is CircuitState.CLOSED

    # A probe that succeeds on b closes the circuit for a too.
    b.breaker("p1").opened_until = 0  # as if b's cooldown had passed
    permit = b.breaker("p1").acquire()
    assert permit is not None
    b.breaker("p1").record_success()
    await eventually(lambda: a.breaker("p1").state is CircuitState.CLOSED, within_s=1.0)


async def test_health_is_shared_newest_first(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    error = ProviderError(
        "bad key sk-abcdefgh12345678",
        provider_id="p2",
        upstream_status=401,
        error_class=ErrorClass.CREDENTIAL,
    )
    a.health.record_failure("p2", error)
    await eventually(lambda: b.health.get("p2").state is HealthState.AUTH_FAILED)
    assert "sk-abcdefgh" not in (b.health.get("p2").last_error or "")
    b.health.record_success("p2")
    await eventually(lambda: a.health.get("p2").state is HealthState.OK)


async def test_unreachable_redis_keeps_local_state_and_says_so() -> None:
    lone = Instance(f"palyra-test:{uuid.uuid4().hex}", url="redis://127.0.0.1:1/0")
    lone.shared.start()
    try:
        await eventually(lambda: not lone.shared.reachable, within_s=3)
        assert lone.shared.last_error
        lone.breaker("p1").record_failure()
        lone.breaker("p1").record_failure()
        assert lone.breaker("p1").state is CircuitState.OPEN
    finally:
        await lone.shared.aclose()
