"""A client key's models, rpm and tpm: on this daemon's counter on an injected clock, and on
Redis shared by three daemons (skipped, saying why, when Redis does not answer)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from palyra.errors import InvalidRequest, ModelNotAllowed, RateLimitExceeded
from palyra.keylimits import KeyLimits, check_model, counter_key, limit_error
from palyra.keys import ClientKey
from palyra.ratecounter import LocalRateCounter, RedisRateCounter
from tests.support.clock import FakeClock
from tests.support.redis import REDIS_URL, namespace

__all__ = ["namespace"]  # the fixture, from tests.support.redis


KEY = ClientKey(
    key_id="key_abc",
    name="team-a",
    prefix="pk-abcde",
    models=("gpt-4o-mini", "claude"),
    rpm=0,
    tpm=0,
    budget_usd=None,
    budget_period="month",
    expires_at_ms=None,
    agent_id=None,
    created_at_ms=0,
    revoked_at_ms=None,
)


def test_a_model_the_key_does_not_name_is_a_403_naming_both() -> None:
    assert check_model(KEY, "gpt-4o-mini") is None
    error = check_model(KEY, "o1")
    assert isinstance(error, ModelNotAllowed)
    assert error.status == 403 and error.code == "model_not_allowed"
    assert error.type == "permission_error" and error.param == "model"
    assert "'o1'" in error.message and "'team-a'" in error.message
    assert "gpt-4o-mini, claude" in error.message
    assert check_model(replace(KEY, models=()), "anything") is None


async def test_rpm_holds_over_a_sliding_minute() -> None:
    clock = FakeClock()
    counter = LocalRateCounter(clock=clock)
    limits = KeyLimits(counter)
    key = replace(KEY, rpm=2)
    assert await limits.check(key, 10) is None
    clock.now += 20
    assert await limits.check(key, 10) is None
    refusal = await limits.check(key, 10)
    assert refusal is not None and not refusal.permanent
    assert refusal.reason == "client key 'team-a' reached its rpm limit 2"
    assert refusal.retry_after_s == pytest.approx(40)  # when the first leaves the window
    assert counter.used(counter_key(key)) == (2, 20)  # the refused one was not counted
    clock.now += 40
    assert await limits.check(key, 10) is None
    # Another key has counts of its own.
    assert await limits.check(replace(key, key_id="key_other"), 10) is None


async def test_tpm_holds_and_corrections_count() -> None:
    clock = FakeClock()
    counter = LocalRateCounter(clock=clock)
    limits = KeyLimits(counter)
    key = replace(KEY, tpm=100)
    assert await limits.check(key, 60) is None
    refusal = await limits.check(key, 50)
    assert refusal is not None and refusal.reason == "client key 'team-a' reached its tpm limit 100"
    # The answer used 20 tokens, not 60: room for 50 more now.
    clock.now += 1
    limits.correct(key, -40, age_s=1)
    assert counter.used(counter_key(key)) == (1, 20)
    assert await limits.check(key, 50) is None
    too_big = await limits.check(key, 101)
    assert too_big is not None and too_big.permanent
    assert "estimated 101 tokens exceed the tpm limit 100 of client key 'team-a'" in too_big.reason


async def test_a_key_without_limits_never_touches_the_counter() -> None:
    counter = LocalRateCounter(clock=FakeClock())
    limits = KeyLimits(counter)
    for _ in range(1000):
        assert await limits.check(KEY, 10**6) is None
    limits.correct(KEY, 5)
    assert counter.used(counter_key(KEY)) == (0, 0)


def test_refusals_become_429_with_retry_after_or_a_400() -> None:
    from palyra.deployments import Refusal

    error = limit_error(Refusal("client key 'a' reached its rpm limit 2", 12.2))
    assert isinstance(error, RateLimitExceeded) and error.status == 429
    assert error.code == "rate_limit_exceeded" and error.headers["Retry-After"] == "13"
    assert "rpm limit 2" in error.message and "retry in 13 s" in error.message
    permanent = limit_error(Refusal("too many", 60, permanent=True))
    assert isinstance(permanent, InvalidRequest) and permanent.status == 400
    assert permanent.code == "exceeds_tpm_limit" and "Retry-After" not in permanent.headers


async def test_three_daemons_together_hold_a_key_to_its_rpm(namespace: str) -> None:
    counters = [RedisRateCounter(REDIS_URL, namespace=namespace) for _ in range(3)]
    daemons = [KeyLimits(counter) for counter in counters]
    key = replace(KEY, rpm=10, tpm=1000)
    try:
        results = await asyncio.gather(
            *(daemons[i % 3].check(key, 10) for i in range(30)), return_exceptions=False
        )
        admitted = [r for r in results if r is None]
        refused = [r for r in results if r is not None]
        assert len(admitted) == 10 and len(refused) == 20
        assert all(counter.reachable for counter in counters)
        assert all(0 < r.retry_after_s <= 60 and "rpm limit 10" in r.reason for r in refused)
        # Corrections reach Redis in the background; drain waits for them.
        daemons[0].correct(key, 500, age_s=0.1)
        await daemons[0].drain()
        refusal = await daemons[1].check(replace(key, rpm=0), 450)
        assert refusal is not None and "tpm limit 1000" in refusal.reason
    finally:
        for counter in counters:
            await counter.aclose()
