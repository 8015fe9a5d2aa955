"""Deployment state and limits: rpm/tpm limits over a sliding minute on an injected clock,
upstream exhaustion, bookkeeping for the balancer, the view; and boards of several "daemons"
sharing one Redis counter (127.0.0.1:6379; skipped with the reason where none answers). The
counters themselves are tested in test_ratecounter.py."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from palyra.balancing import Balanceable
from palyra.config import ModelConfig
from palyra.deployments import Admission, Deployment, DeploymentBoard, Refusal
from palyra.ratecounter import RedisRateCounter
from palyra.ratelimits import UpstreamLimits
from tests.support.redis import REDIS_URL, namespace

__all__ = ["namespace"]  # the fixture, from tests.support.redis

WALL_S = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def model(model_id: str = "m", provider_id: str = "p1", **fields: Any) -> ModelConfig:
    return ModelConfig(model_id=model_id, provider_id=provider_id, **fields)


def board_at(clock: Clock, **kwargs: Any) -> DeploymentBoard:
    # Wall time runs with the injected clock, so epoch milliseconds in the view are exact.
    return DeploymentBoard(clock=clock, wall_clock=lambda: WALL_S + clock.now, **kwargs)


async def admitted(board: DeploymentBoard, deployment: Deployment, tokens: int) -> Admission:
    answer = await board.admit(deployment, tokens)
    assert isinstance(answer, Admission), answer
    return answer


async def refused(board: DeploymentBoard, deployment: Deployment, tokens: int) -> Refusal:
    answer = await board.admit(deployment, tokens)
    assert isinstance(answer, Refusal), answer
    return answer


# --- rpm: a sliding 60 s window -------------------------------------------------------------


async def test_rpm_limit_holds_in_every_60_s_window_under_steady_demand() -> None:
    clock = Clock(1000.3)
    board = board_at(clock)
    dep = board.deployment(model(rpm_limit=10))
    times: list[float] = []
    start = clock.now
    for step in range(1200):  # a request every 0.25 s for 300 s
        clock.now = start + step * 0.25
        if isinstance(await board.admit(dep, 1), Admission):
            times.append(clock.now)
    # Every admitted request opens a window: none holds more than 10, and the limit is used.
    in_window = [sum(1 for u in times if t <= u < t + 60) for t in times]
    assert max(in_window) == 10
    assert len(times) == 50  # ten at the start of each of the five minutes, no more
    assert times[10] == pytest.approx(start + 60.0)


async def test_rpm_limit_is_not_reset_by_a_calendar_minute() -> None:
    clock = Clock(59 * 60 + 50.0)  # ten seconds before a whole minute
    board = board_at(clock)
    dep = board.deployment(model(rpm_limit=10))
    for _ in range(10):
        await admitted(board, dep, 1)
        clock.now += 0.5  # 10 requests from :50.0 to :54.5
    clock.now = 60 * 60 + 0.0  # a new calendar minute: a per-minute counter would admit
    refusal = await refused(board, dep, 1)
    assert refusal.reason == "rpm_limit 10 reached"
    assert refusal.retry_after_s == pytest.approx(50.0)  # when the :50.0 request leaves
    clock.now = 60 * 60 + 49.999
    await refused(board, dep, 1)
    clock.now = 60 * 60 + 50.0
    await admitted(board, dep, 1)
    await refused(board, dep, 1)  # the :50.5 one has not left yet
    assert dep.last_skip == ("rpm_limit 10 reached", clock.now)


async def test_random_arrivals_never_put_more_than_rpm_limit_in_any_window() -> None:
    import random

    rng = random.Random(14)
    clock = Clock(5000.0)
    board = board_at(clock)
    dep = board.deployment(model(rpm_limit=7))
    times: list[float] = []
    for _ in range(3000):
        clock.now += rng.expovariate(1.0) * 0.2
        if isinstance(await board.admit(dep, 1), Admission):
            times.append(clock.now)
    assert max(sum(1 for u in times if t <= u < t + 60) for t in times) == 7
    assert dep.dispatched == len(times)


# --- tpm: estimates reserved, corrected from usage --------------------------------------------


async def test_tpm_reserves_the_estimate_and_corrects_to_the_usage() -> None:
    clock = Clock()
    board = board_at(clock)
    dep = board.deployment(model(tpm_limit=1000))
    first = await admitted(board, dep, 600)
    refusal = await refused(board, dep, 500)
    assert refusal.reason == "tpm_limit 1000 reached"
    assert refusal.retry_after_s == pytest.approx(60.0)
    clock.now += 10
    board.settle(first, ttft_s=None, tokens=300)  # answered with less than estimated
    assert board.counter.used(dep.key) == (1, 300)
    second = await admitted(board, dep, 500)
    await refused(board, dep, 300)  # 300 + 500 + 300 > 1000
    board.settle(second, ttft_s=None, tokens=900)  # and this one with more
    assert board.counter.used(dep.key) == (2, 1200)
    # The first reservation and its correction leave together, 60 s after the dispatch.
    clock.now = 1060.0
    assert board.counter.used(dep.key) == (1, 900)
    await refused(board, dep, 101)
    await admitted(board, dep, 100)
    clock.now = 1070.0
    assert board.counter.used(dep.key) == (1, 100)


async def test_a_request_larger_than_the_tpm_limit_is_refused_for_good_saying_so() -> None:
    clock = Clock()
    board = board_at(clock)
    dep = board.deployment(model(tpm_limit=1000))
    refusal = await refused(board, dep, 1001)
    assert "1001 tokens exceed tpm_limit 1000" in refusal.reason
    assert refusal.permanent  # no Retry-After would help: the router can answer 400
    assert board.counter.used(dep.key) == (0, 0)
    assert dep.last_skip == (refusal.reason, clock.now)
    await admitted(board, dep, 1000)  # exactly the limit fits


async def test_refusals_that_waiting_cures_are_not_permanent() -> None:
    clock = Clock()
    board = board_at(clock)
    full = board.deployment(model(rpm_limit=1, tpm_limit=1000))
    await admitted(board, full, 900)
    assert not (await refused(board, full, 1)).permanent  # rpm_limit reached
    clock.now += 60
    await admitted(board, full, 900)
    clock.now += 1
    assert not (await refused(board, full, 200)).permanent  # rpm and tpm
    told = board.deployment(model(provider_id="p2", tpm_limit=100_000))
    board.observe_limits("p2", "m", UpstreamLimits(None, 500, None, 30.0))
    # The upstream's own tokens left are below the estimate, yet its limit resets.
    refusal = await refused(board, told, 5000)
    assert not refusal.permanent and refusal.retry_after_s == pytest.approx(30.0)
    board.exhaust(told, 5.0, "upstream answered 429")
    assert not (await refused(board, told, 1)).permanent


async def test_a_refused_request_reserves_nothing() -> None:
    clock = Clock()
    board = board_at(clock)
    dep = board.deployment(model(rpm_limit=5, tpm_limit=1000))
    await admitted(board, dep, 900)
    for _ in range(20):
        await refused(board, dep, 200)
    assert board.counter.used(dep.key) == (1, 900)
    assert (dep.in_flight, dep.dispatched) == (1, 1)
    await admitted(board, dep, 100)


# --- upstream limits -----------------------------------------------------------------------


async def test_upstream_saying_nothing_left_rests_the_deployment_until_the_reset() -> None:
    clock = Clock()
    board = board_at(clock)
    dep = board.deployment(model(upstream_model="gpt-x"))
    alias = board.deployment(model("alias", upstream_model="gpt-x"))  # same upstream quota
    other = board.deployment(model(provider_id="p2", upstream_model="gpt-x"))
    await admitted(board, dep, 10)
    board.observe_limits("p1", "gpt-x", UpstreamLimits(0, 50_000, 2.0, 1.0))
    for deployment in (dep, alias):
        refusal = await refused(board, deployment, 10)
        assert refusal.reason == "upstream says 0 requests remaining"
        assert refusal.retry_after_s == pytest.approx(2.0)
    await admitted(board, other, 10)
    clock.now += 1.999
    await refused(board, dep, 10)
    clock.now += 0.001
    await admitted(board, dep, 10)
    await admitted(board, alias, 10)


async def test_upstream_tokens_left_below_the_estimate_refuse_until_the_tokens_reset() -> None:
    clock = Clock()
    board = board_at(clock)
    dep = board.deployment(model())
    board.observe_limits("p1", "m", UpstreamLimits(100, 500, 60.0, 3.0))
    refusal = await refused(board, dep, 501)
    assert refusal.reason == "upstream says 500 tokens remaining; the request needs about 501"
    assert refusal.retry_after_s == pytest.approx(3.0)
    await admitted(board, dep, 300)  # fits, and counts against what is left
    await refused(board, dep, 201)
    await admitted(board, dep, 200)
    clock.now += 3.0
    await admitted(board, dep, 5000)  # the tokens reset; what is left is unknown again
    assert board.view()[0]["upstream"] == {
        "remaining_requests": 97,
        "remaining_tokens": None,
        "exhausted_until_ms": None,
    }


async def test_requests_sent_since_the_last_answer_count_against_what_was_left() -> None:
    clock = Clock()
    board = board_at(clock)
    dep = board.deployment(model())
    board.observe_limits("p1", "m", UpstreamLimits(2, None, 10.0, None))
    await admitted(board, dep, 1)
    await admitted(board, dep, 1)
    refusal = await refused(board, dep, 1)
    assert refusal.retry_after_s == pytest.approx(10.0)
    board.observe_limits("p1", "m", UpstreamLimits(5, None, 9.0, None))  # a newer answer
    await admitted(board, dep, 1)


async def test_exhaust_after_a_429_and_limits_for_unknown_deployments_are_ignored() -> None:
    clock = Clock()
    board = board_at(clock)
    dep = board.deployment(model())
    board.observe_limits("p9", "m", UpstreamLimits(0, 0, 30.0, 30.0))  # nobody routes there
    await admitted(board, dep, 1)
    board.exhaust(dep, 20.0, "upstream answered 429")
    board.exhaust(dep, 5.0, "a shorter one does not shorten the rest")
    refusal = await refused(board, dep, 1)
    assert refusal == Refusal("upstream answered 429", 20.0)
    clock.now += 20.0
    await admitted(board, dep, 1)


async def test_zero_tokens_left_with_an_unknown_reset_rests_briefly() -> None:
    clock = Clock()
    board = board_at(clock)
    dep = board.deployment(model())
    board.observe_limits("p1", "m", UpstreamLimits(None, 0, None, None))
    refusal = await refused(board, dep, 1)
    assert refusal.reason == "upstream says 0 tokens remaining"
    assert refusal.retry_after_s == pytest.approx(1.0)
    clock.now += 1.0
    await admitted(board, dep, 1)


# --- bookkeeping -------------------------------------------------------------------------------


async def test_an_unlimited_deployment_is_admitted_without_suspending() -> None:
    clock = Clock()
    board = board_at(clock)
    dep = board.deployment(model())
    coroutine = board.admit(dep, 10)
    with pytest.raises(StopIteration) as done:
        coroutine.send(None)  # runs to the end on its first step: it never waited
    assert isinstance(done.value.value, Admission)
    assert board.counter.used(dep.key) == (0, 0)  # the rate counter is not even looked at


async def test_an_answer_after_a_long_gap_moves_the_ttft_average_most_of_the_way() -> None:
    clock = Clock()
    board = board_at(clock)
    dep = board.deployment(model())
    for _ in range(5):
        board.settle(await admitted(board, dep, 0), ttft_s=0.2, tokens=None)
    assert dep.ttft_s == pytest.approx(0.2)
    clock.now += 10  # explored again after ten seconds: it recovered
    board.settle(await admitted(board, dep, 0), ttft_s=0.01, tokens=None)
    after_gap = 0.2 + -math.expm1(-10 / 5) * (0.01 - 0.2)  # 86 % of the way
    assert dep.ttft_s == pytest.approx(after_gap)  # not 0.143, as 30 % would give
    board.settle(await admitted(board, dep, 0), ttft_s=0.2, tokens=None)  # no gap: 30 %
    assert dep.ttft_s == pytest.approx(after_gap + 0.3 * (0.2 - after_gap))


@pytest.mark.parametrize(("gap_s", "alpha"), [(0.5, 0.3), (1.7, 0.3), (1.9, 0.316), (3.0, 0.451)])
async def test_the_ttft_weight_grows_with_the_gap_only_once_past_the_usual_one(
    gap_s: float, alpha: float
) -> None:
    clock = Clock()
    board = board_at(clock)
    dep = board.deployment(model())
    board.settle(await admitted(board, dep, 0), ttft_s=1.0, tokens=None)
    clock.now += gap_s
    board.settle(await admitted(board, dep, 0), ttft_s=2.0, tokens=None)
    assert dep.ttft_s == pytest.approx(1.0 + alpha, abs=0.001)  # 1 - exp(-gap / 5), or 30 %


async def test_in_flight_ttft_and_dispatch_bookkeeping_and_idempotent_settle() -> None:
    clock = Clock()
    board = board_at(clock)
    dep = board.deployment(model(tpm_limit=10_000))
    balanceable: Balanceable = dep  # what the strategies read (checked by mypy)
    assert balanceable.key == "m@p1"
    assert (dep.in_flight, dep.dispatched, dep.last_used, dep.ttft_s) == (0, 0, 0.0, None)
    first = await admitted(board, dep, 100)
    clock.now += 1
    second = await admitted(board, dep, 100)
    assert (dep.in_flight, dep.dispatched, dep.last_used) == (2, 2, 1001.0)
    board.settle(first, ttft_s=0.1, tokens=50)
    assert dep.ttft_s == pytest.approx(0.1)  # the first measurement is the average
    board.settle(first, ttft_s=5.0, tokens=5000)  # again: nothing changes
    assert dep.in_flight == 1
    assert dep.ttft_s == pytest.approx(0.1)
    assert board.counter.used(dep.key) == (2, 150)
    assert first.settled and not second.settled
    board.settle(second, ttft_s=0.2, tokens=None)
    assert dep.ttft_s == pytest.approx(0.13)  # 0.1 + 0.3 * (0.2 - 0.1)
    assert dep.in_flight == 0
    assert board.counter.used(dep.key) == (2, 150)
    board.settle(second, ttft_s=None, tokens=None)
    assert dep.in_flight == 0


async def test_ttft_average_follows_a_slowdown_within_a_few_answers() -> None:
    board = board_at(Clock())
    dep = board.deployment(model())
    for _ in range(20):
        board.settle(await admitted(board, dep, 1), ttft_s=0.02, tokens=None)
    averages: list[float] = []
    for _ in range(6):
        board.settle(await admitted(board, dep, 1), ttft_s=0.2, tokens=None)
        assert dep.ttft_s is not None
        averages.append(dep.ttft_s)
    # Past halfway (0.11) after two slow answers, within an eighth of the jump after six.
    assert averages[1] == pytest.approx(0.02 + 0.18 * (1 - 0.7**2))
    assert averages[1] > 0.11 and averages[5] > 0.2 - 0.18 / 8
    board.settle(await admitted(board, dep, 1), ttft_s=float("nan"), tokens=None)
    assert dep.ttft_s == averages[5]


async def test_usage_share_is_the_larger_of_the_limits_used() -> None:
    board = board_at(Clock())
    limited = board.deployment(model(rpm_limit=10, tpm_limit=1000))
    unlimited = board.deployment(model(provider_id="p2"))
    await admitted(board, limited, 500)
    assert limited.usage_share() == pytest.approx(0.5)
    await admitted(board, limited, 0)
    await admitted(board, limited, 0)
    await admitted(board, limited, 0)
    await admitted(board, limited, 0)
    await admitted(board, limited, 0)
    assert limited.usage_share() == pytest.approx(0.6)  # 6 of 10 requests
    await admitted(board, unlimited, 500)
    assert unlimited.usage_share() == 0.0


async def test_share_of_a_models_dispatches_over_the_last_minute() -> None:
    clock = Clock(100.0)
    board = board_at(clock)
    a = board.deployment(model(provider_id="pa"))
    b = board.deployment(model(provider_id="pb"))
    other = board.deployment(model("other", provider_id="pa"))
    for _ in range(3):
        await admitted(board, a, 1)
    await admitted(board, b, 1)
    await admitted(board, other, 1)
    shares = {(r["model_id"], r["provider_id"]): r["share"] for r in board.view()}
    assert shares == {("m", "pa"): 0.75, ("m", "pb"): 0.25, ("other", "pa"): 1.0}
    # Ten minutes of b only: a's old dispatches left the window, whatever the ring wrapped.
    for step in range(600):
        clock.now = 101.0 + step
        await admitted(board, b, 1)
    shares = {(r["model_id"], r["provider_id"]): r["share"] for r in board.view()}
    assert shares == {("m", "pa"): 0.0, ("m", "pb"): 1.0, ("other", "pa"): 0.0}
    row_b = next(r for r in board.view() if r["provider_id"] == "pb")
    assert 59 <= row_b["requests_last_minute"] <= 60
    clock.now += 61
    assert all(r["share"] == 0.0 for r in board.view())


async def test_the_same_deployment_follows_a_changed_configuration_entry() -> None:
    clock = Clock()
    board = board_at(clock)
    entry = model(rpm_limit=1)
    dep = board.deployment(entry)
    assert board.deployment(entry) is dep
    await admitted(board, dep, 1)
    await refused(board, dep, 1)
    changed = model(rpm_limit=3, weight=2.5, priority=1)
    assert board.deployment(changed) is dep
    assert (dep.rpm_limit, dep.weight, dep.priority, dep.model) == (3, 2.5, 1, changed)
    await admitted(board, dep, 1)  # the counts carried over: one more, and
    await admitted(board, dep, 1)
    await refused(board, dep, 1)  # the third of the minute is the last
    board.retain([model(provider_id="p2")])
    assert board.view() == []


async def test_an_unlimited_deployments_own_counts_are_corrected_to_the_usage() -> None:
    clock = Clock(500.2)
    board = board_at(clock)
    dep = board.deployment(model())

    def counts() -> tuple[int, int]:
        row = board.view()[0]
        return row["requests_last_minute"], row["tokens_last_minute"]

    first = await admitted(board, dep, 100)
    clock.now = 500.7
    second = await admitted(board, dep, 100)
    clock.now = 503.0
    third = await admitted(board, dep, 50)
    assert counts() == (3, 250)
    board.settle(first, ttft_s=None, tokens=30)
    board.settle(third, ttft_s=None, tokens=-5)  # nonsense usage counts as none
    assert counts() == (3, 130)
    clock.now = 562.5  # the second of the first two has left; a late answer changes nothing
    assert counts() == (1, 0)
    board.settle(second, ttft_s=None, tokens=1000)
    assert counts() == (1, 0)
    assert board.counter.used(dep.key) == (0, 0)  # never reserved: no limits


# --- the view ----------------------------------------------------------------------------------


async def test_view_rows() -> None:
    clock = Clock()
    board = board_at(clock, default_strategy="least_busy")
    limited = board.deployment(
        model(upstream_model="up", rpm_limit=2, tpm_limit=900, weight=3, load_balancing="latency")
    )
    plain = board.deployment(model(provider_id="p2", priority=1, load_balancing="latency"))
    lone = board.deployment(model("solo"))
    first = await admitted(board, limited, 100)
    await admitted(board, limited, 200)
    board.settle(first, ttft_s=0.25, tokens=150)
    await admitted(board, plain, 40)
    clock.now += 1.5
    await refused(board, limited, 1)
    board.observe_limits("p1", "up", UpstreamLimits(3, None, 4.0, None))
    board.exhaust(plain, 7.0, "upstream answered 429")
    rows = board.view()
    assert rows == [
        {
            "model_id": "m",
            "provider_id": "p1",
            "weight": 3.0,
            "priority": 0,
            "strategy": "latency",
            "in_flight": 1,
            "requests_last_minute": 2,
            "tokens_last_minute": 350,
            "rpm_limit": 2,
            "tpm_limit": 900,
            "ttft_ms": pytest.approx(250.0),
            "share": pytest.approx(2 / 3),
            "dispatched": 2,
            "skipped": {"reason": "rpm_limit 2 reached", "at_ms": int((WALL_S + 1001.5) * 1000)},
            "upstream": {
                "remaining_requests": 3,
                "remaining_tokens": None,
                "exhausted_until_ms": None,
            },
        },
        {
            "model_id": "m",
            "provider_id": "p2",
            "weight": 1.0,
            "priority": 1,
            "strategy": "latency",
            "in_flight": 1,
            "requests_last_minute": 1,
            "tokens_last_minute": 40,
            "rpm_limit": 0,
            "tpm_limit": 0,
            "ttft_ms": None,
            "share": pytest.approx(1 / 3),
            "dispatched": 1,
            "skipped": None,
            "upstream": {
                "remaining_requests": None,
                "remaining_tokens": None,
                "exhausted_until_ms": int((WALL_S + 1008.5) * 1000),
            },
        },
        {
            "model_id": "solo",
            "provider_id": "p1",
            "weight": 1.0,
            "priority": 0,
            "strategy": "least_busy",
            "in_flight": 0,
            "requests_last_minute": 0,
            "tokens_last_minute": 0,
            "rpm_limit": 0,
            "tpm_limit": 0,
            "ttft_ms": None,
            "share": 0.0,
            "dispatched": 0,
            "skipped": None,
            "upstream": None,
        },
    ]
    assert lone.in_flight == 0


# --- Redis: counts shared by several daemons ---------------------------------------------------


@pytest.fixture
async def daemons(namespace: str) -> AsyncIterator[list[RedisRateCounter]]:
    counters = [RedisRateCounter(REDIS_URL, namespace=namespace, timeout_s=2.0) for _ in range(3)]
    yield counters
    for counter in counters:
        await counter.aclose()


async def test_three_boards_sharing_redis_admit_exactly_the_rpm_limit(
    daemons: list[RedisRateCounter],
) -> None:
    boards = [DeploymentBoard(counter=counter) for counter in daemons]
    entry = model(rpm_limit=10)
    answers = await asyncio.gather(
        *(board.admit(board.deployment(entry), 5) for board in boards for _ in range(10))
    )
    assert sum(isinstance(a, Admission) for a in answers) == 10
    reasons = {a.reason for a in answers if isinstance(a, Refusal)}
    assert reasons == {"rpm_limit 10 reached"}


async def test_a_board_on_redis_sends_its_corrections(
    daemons: list[RedisRateCounter],
) -> None:
    a, b, _ = daemons
    board_a, board_b = DeploymentBoard(counter=a), DeploymentBoard(counter=b)
    entry = model(tpm_limit=1000)
    first = await board_a.admit(board_a.deployment(entry), 900)
    assert isinstance(first, Admission)
    await refused(board_b, board_b.deployment(entry), 200)
    board_a.settle(first, ttft_s=None, tokens=100)
    await board_a.drain()
    await admitted(board_b, board_b.deployment(entry), 800)
