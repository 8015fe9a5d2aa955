"""Load-balancing strategies, pure: fake deployments, an injected random.Random and clock."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from palyra.balancing import EPSILON, EXPLORE_AFTER_S, STRATEGIES, order, prefix_key
from palyra.types import ChatRequest


@dataclass(eq=False)
class Fake:
    key: str
    weight: float = 1.0
    priority: int = 0
    in_flight: int = 0
    ttft_s: float | None = None
    last_used: float = 0.0
    share: float = 0.0

    def usage_share(self) -> float:
        return self.share


def keys(deployments: Sequence[Fake]) -> list[str]:
    return [d.key for d in deployments]


def first_share(
    deployments: Sequence[Fake], strategy: str, draws: int, seed: int, key: str
) -> float:
    rng = random.Random(seed)
    hits = sum(order(deployments, strategy, rng=rng, now=100.0)[0].key == key for _ in range(draws))
    return hits / draws


# --- weighted -------------------------------------------------------------------------------


def test_weights_three_to_one_give_three_quarters_of_first_picks() -> None:
    pair = [Fake("m@a", weight=3), Fake("m@b", weight=1)]
    assert abs(first_share(pair, "weighted", 2000, 14, "m@a") - 0.75) <= 0.04
    for seed in range(20):
        assert abs(first_share(pair, "weighted", 2000, seed, "m@a") - 0.75) <= 0.04, seed


def test_weights_spread_first_picks_over_three_deployments_and_keep_everyone_in_order() -> None:
    trio = [Fake("m@a", weight=1), Fake("m@b", weight=1), Fake("m@c", weight=2)]
    rng = random.Random(7)
    firsts: Counter[str] = Counter()
    for _ in range(4000):
        tried = order(trio, "weighted", rng=rng, now=0.0)
        assert sorted(keys(tried)) == ["m@a", "m@b", "m@c"]
        firsts[tried[0].key] += 1
    assert abs(firsts["m@a"] / 4000 - 0.25) <= 0.03
    assert abs(firsts["m@b"] / 4000 - 0.25) <= 0.03
    assert abs(firsts["m@c"] / 4000 - 0.5) <= 0.03


def test_equal_weights_shuffle_evenly() -> None:
    trio = [Fake("m@a"), Fake("m@b"), Fake("m@c")]
    for key in ("m@a", "m@b", "m@c"):
        assert abs(first_share(trio, "weighted", 3000, 3, key) - 1 / 3) <= 0.03


def test_the_failover_order_after_the_first_pick_is_by_weight_too() -> None:
    # With weights 1:1:8 the heavy one is first most of the time, and second when not first.
    trio = [Fake("m@a"), Fake("m@b"), Fake("m@c", weight=8)]
    rng = random.Random(5)
    seconds: Counter[str] = Counter()
    for _ in range(2000):
        tried = order(trio, "weighted", rng=rng, now=0.0)
        if tried[0].key != "m@c":
            seconds[tried[1].key] += 1
    assert seconds["m@c"] / sum(seconds.values()) >= 0.8


# --- shared behaviour ------------------------------------------------------------------------


def test_one_deployment_is_returned_without_drawing_randomness() -> None:
    only = Fake("m@a", ttft_s=None)
    for strategy in STRATEGIES:
        rng = random.Random(1)
        state = rng.getstate()
        assert order([only], strategy, rng=rng, now=5.0) == [only]
        assert order([only], strategy, rng=rng, now=5.0, affinity_key="k") == [only]
        assert rng.getstate() == state


def test_no_deployments_give_an_empty_order() -> None:
    assert order([], "weighted", rng=random.Random(0), now=0.0) == []


def test_an_unknown_strategy_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"'fastest'.*weighted, least_busy, latency, usage"):
        order([Fake("m@a"), Fake("m@b")], "fastest", rng=random.Random(0), now=0.0)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("affinity_key", [None, "conversation"])
def test_priority_groups_are_tried_lowest_first(strategy: str, affinity_key: str | None) -> None:
    deployments = [
        Fake("m@backup", priority=1, weight=100, ttft_s=0.01, last_used=99.0),
        Fake("m@a", priority=0, ttft_s=0.5, last_used=99.0, in_flight=50, share=0.9),
        Fake("m@last", priority=2, weight=100, ttft_s=0.01, last_used=99.0),
        Fake("m@b", priority=0, ttft_s=0.6, last_used=99.0, in_flight=50, share=0.9),
    ]
    rng = random.Random(2)
    firsts: set[str] = set()
    for _ in range(200):
        tried = keys(order(deployments, strategy, rng=rng, now=100.0, affinity_key=affinity_key))
        assert sorted(tried[:2]) == ["m@a", "m@b"]
        assert tried[2:] == ["m@backup", "m@last"]
        firsts.add(tried[0])
    # Without affinity every strategy still picks both of the group at times (weights,
    # ties or exploration); with it, one key always lands on one.
    assert len(firsts) == (1 if affinity_key else 2)


# --- least_busy, usage -----------------------------------------------------------------------


def test_least_busy_never_picks_the_one_holding_eight_while_another_is_idle() -> None:
    busy, idle = Fake("m@busy", weight=10, in_flight=8), Fake("m@idle", in_flight=0)
    for seed in range(1000):
        assert keys(order([busy, idle], "least_busy", rng=random.Random(seed), now=0.0)) == [
            "m@idle",
            "m@busy",
        ]


def test_least_busy_breaks_ties_by_weight() -> None:
    pair = [Fake("m@a", weight=3, in_flight=2), Fake("m@b", weight=1, in_flight=2)]
    assert abs(first_share(pair, "least_busy", 2000, 11, "m@a") - 0.75) <= 0.04


def test_usage_picks_the_lowest_share_of_its_limits() -> None:
    trio = [Fake("m@half", share=0.5), Fake("m@low", share=0.2), Fake("m@full", share=0.9)]
    for seed in range(100):
        tried = order(trio, "usage", rng=random.Random(seed), now=0.0)
        assert keys(tried) == ["m@low", "m@half", "m@full"]


def test_usage_breaks_ties_by_weight() -> None:
    pair = [Fake("m@a", weight=3), Fake("m@b", weight=1)]
    assert abs(first_share(pair, "usage", 2000, 12, "m@a") - 0.75) <= 0.04


# --- latency ---------------------------------------------------------------------------------


def test_latency_puts_the_fastest_first() -> None:
    trio = [
        Fake("m@slow", ttft_s=0.3, last_used=99.0),
        Fake("m@fast", ttft_s=0.05, last_used=99.5),
        Fake("m@mid", ttft_s=0.1, last_used=99.0),
    ]
    tried = order(trio, "latency", rng=random.Random(4), now=100.0)
    assert keys(tried) == ["m@fast", "m@mid", "m@slow"]


def test_latency_tries_a_deployment_never_dispatched_first_then_goes_back() -> None:
    used = Fake("m@used", ttft_s=0.05, last_used=99.0)
    new = Fake("m@new")
    rng = random.Random(0)
    assert keys(order([used, new], "latency", rng=rng, now=100.0)) == ["m@new", "m@used"]
    new.last_used = 100.0  # dispatched; its answer has not come yet
    for _ in range(20):
        assert order([used, new], "latency", rng=rng, now=100.1)[1] is new


def test_latency_at_startup_explores_one_deployment_at_a_time() -> None:
    a, b, c = Fake("m@a"), Fake("m@b"), Fake("m@c")
    seen = []
    for t in (1.0, 1.1, 1.2):
        first = order([a, b, c], "latency", rng=random.Random(0), now=t)[0]
        first.last_used = t
        seen.append(first.key)
    assert sorted(seen) == ["m@a", "m@b", "m@c"]


def test_latency_explores_the_stalest_idle_deployment_one_at_a_time() -> None:
    fast = Fake("m@fast", ttft_s=0.05, last_used=99.9)
    idle = Fake("m@idle", ttft_s=0.2, last_used=100.0 - EXPLORE_AFTER_S - 5)
    idler = Fake("m@idler", ttft_s=0.3, last_used=100.0 - EXPLORE_AFTER_S - 9)
    tried = order([fast, idle, idler], "latency", rng=random.Random(0), now=100.0)
    assert keys(tried) == ["m@idler", "m@fast", "m@idle"]


def test_latency_does_not_explore_on_every_request_when_requests_are_rare() -> None:
    # The fastest was last used 5 s ago (requests come seldom): 20 s idle is no sign.
    fast = Fake("m@fast", ttft_s=0.05, last_used=95.0)
    slow = Fake("m@slow", ttft_s=0.3, last_used=80.0)
    rng = random.Random(8)
    firsts = Counter(order([fast, slow], "latency", rng=rng, now=100.0)[0].key for _ in range(2000))
    assert abs(firsts["m@slow"] / 2000 - EPSILON) <= 0.015


def test_latency_tries_another_first_in_epsilon_of_requests() -> None:
    trio = [
        Fake("m@fast", ttft_s=0.05, last_used=100.0),
        Fake("m@b", ttft_s=0.1, last_used=100.0),
        Fake("m@c", ttft_s=0.2, last_used=100.0),
    ]
    rng = random.Random(9)
    firsts = Counter(order(trio, "latency", rng=rng, now=100.5)[0].key for _ in range(10_000))
    assert abs((10_000 - firsts["m@fast"]) / 10_000 - EPSILON) <= 0.01
    assert firsts["m@b"] > 150 and firsts["m@c"] > 150


ALPHA = 0.3  # the moving average's weight of a new measurement in the simulation


class Simulation:
    """Requests at a steady rate over two deployments; each dispatch measures the deployment's
    true time to first token into a moving average, as palyra.deployments does."""

    def __init__(self, rate_per_s: float, seed: int) -> None:
        self.a, self.b = Fake("m@a"), Fake("m@b")
        self.true = {"m@a": 0.04, "m@b": 0.06}
        self.rng = random.Random(seed)
        self.now = 1000.0
        self.gap = 1.0 / rate_per_s

    def request(self) -> str:
        self.now += self.gap
        first = order([self.a, self.b], "latency", rng=self.rng, now=self.now)[0]
        first.last_used = self.now
        sample = self.true[first.key]
        first.ttft_s = (
            sample if first.ttft_s is None else (1 - ALPHA) * first.ttft_s + ALPHA * sample
        )
        return first.key

    def run(self, requests: int) -> list[str]:
        return [self.request() for _ in range(requests)]


@pytest.mark.parametrize("rate_per_s", [1.0, 10.0])
@pytest.mark.parametrize("seed", range(5))
def test_latency_moves_off_a_slowed_deployment_and_back_after_it_recovers(
    rate_per_s: float, seed: int
) -> None:
    sim = Simulation(rate_per_s, seed)
    warm = sim.run(300)
    assert warm[100:].count("m@a") / 200 >= 0.8

    sim.true["m@a"] = 0.2
    slowed = sim.run(250)
    # Within 50 requests the slow one has only what exploration gives it.
    assert slowed[50:].count("m@a") / 200 <= 0.2
    assert sim.a.ttft_s is not None and sim.b.ttft_s is not None
    assert sim.a.ttft_s > sim.b.ttft_s

    sim.true["m@a"] = 0.04
    recovered_at = sim.now
    sim.run(int(60 * rate_per_s))
    assert sim.now - recovered_at <= 60.0 + 1e-9
    assert sim.a.ttft_s < sim.b.ttft_s, "not back within a minute of its recovery"
    assert sim.run(200).count("m@a") / 200 >= 0.8


def test_latency_sends_few_requests_to_the_slow_one_when_requests_are_rare() -> None:
    sim = Simulation(1 / 30, 3)  # a request every 30 s: someone typing
    picks = sim.run(1000)
    assert picks[50:].count("m@b") / 950 <= 0.2


# --- affinity --------------------------------------------------------------------------------


def test_one_affinity_key_always_lands_on_one_deployment() -> None:
    trio = [Fake("m@a", in_flight=3), Fake("m@b"), Fake("m@c", weight=2)]
    orders = {
        tuple(keys(order(trio, strategy, rng=random.Random(seed), now=0.0, affinity_key="k1")))
        for strategy in STRATEGIES
        for seed in range(50)
    }
    assert len(orders) == 1


def test_affinity_is_the_same_in_every_process() -> None:
    # Not Python's hash() (salted per process): every daemon must agree. Fixed expectations.
    trio = [Fake("gpt@openai"), Fake("gpt@azure"), Fake("gpt@vllm")]
    for key, expected in EXPECTED_RENDEZVOUS.items():
        tried = order(trio, "weighted", rng=random.Random(0), now=0.0, affinity_key=key)
        assert keys(tried) == expected, key
    request = ChatRequest.model_validate(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ]
        }
    )
    assert prefix_key(request) == EXPECTED_PREFIX_KEY


EXPECTED_RENDEZVOUS = {
    "0123abcd": ["gpt@openai", "gpt@vllm", "gpt@azure"],
    "4567cdef": ["gpt@azure", "gpt@vllm", "gpt@openai"],
    "89abef01": ["gpt@vllm", "gpt@openai", "gpt@azure"],
}
EXPECTED_PREFIX_KEY = "8006d37fc22864ac"


def test_affinity_keys_spread_by_weight() -> None:
    pair = [Fake("m@a", weight=3), Fake("m@b", weight=1)]
    rng = random.Random(0)
    on_a = sum(
        order(pair, "weighted", rng=rng, now=0.0, affinity_key=f"key-{i}")[0].key == "m@a"
        for i in range(2000)
    )
    assert abs(on_a / 2000 - 0.75) <= 0.04


def test_removing_a_deployment_moves_only_the_keys_that_were_on_it() -> None:
    four = [Fake(f"m@p{i}", weight=1 + i % 2) for i in range(4)]
    rng = random.Random(0)
    before = {
        f"k{i}": keys(order(four, "weighted", rng=rng, now=0.0, affinity_key=f"k{i}"))
        for i in range(1000)
    }
    removed = four[2]
    assert 150 <= sum(tried[0] == removed.key for tried in before.values()) <= 400
    rest = [d for d in four if d is not removed]
    for key, tried in before.items():
        now_first = order(rest, "weighted", rng=rng, now=0.0, affinity_key=key)[0].key
        if tried[0] == removed.key:
            assert now_first == tried[1], key  # the next in its hash order takes over
        else:
            assert now_first == tried[0], key


def conversation(system: str, first: str, turns: int) -> list[ChatRequest]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": first},
    ]
    requests = []
    for turn in range(turns):
        requests.append(ChatRequest.model_validate({"messages": list(messages)}))
        messages.append({"role": "assistant", "content": f"answer {turn}"})
        messages.append({"role": "user", "content": f"follow-up {turn}"})
    return requests


def test_a_conversation_stays_on_one_deployment() -> None:
    trio = [Fake("m@a"), Fake("m@b"), Fake("m@c")]
    rng = random.Random(0)
    landed: Counter[str] = Counter()
    for c in range(200):
        requests = conversation(f"You are assistant number {c}.", "Hello", 20)
        picks = Counter(
            order(trio, "weighted", rng=rng, now=0.0, affinity_key=prefix_key(r))[0].key
            for r in requests
        )
        assert picks.most_common(1)[0][1] / 20 >= 0.95
        landed[picks.most_common(1)[0][0]] += 1
    assert all(count >= 40 for count in landed.values()), landed  # and conversations spread


# --- prefix_key ------------------------------------------------------------------------------


def request(*messages: dict[str, Any]) -> ChatRequest:
    return ChatRequest.model_validate({"messages": list(messages)})


def test_prefix_key_is_the_same_as_a_conversation_grows() -> None:
    keys_seen = {prefix_key(r) for r in conversation("Be brief.", "Hello", 10)}
    assert len(keys_seen) == 1
    (key,) = keys_seen
    assert key is not None and len(key) == 16 and int(key, 16) >= 0


def test_prefix_key_differs_with_the_system_prompt_or_the_first_user_message() -> None:
    base = prefix_key(request({"role": "system", "content": "A"}, {"role": "user", "content": "x"}))
    assert base != prefix_key(
        request({"role": "system", "content": "B"}, {"role": "user", "content": "x"})
    )
    assert base != prefix_key(
        request({"role": "system", "content": "A"}, {"role": "user", "content": "y"})
    )
    assert base != prefix_key(
        request({"role": "developer", "content": "A"}, {"role": "user", "content": "x"})
    )
    assert base != prefix_key(request({"role": "user", "content": "x"}))
    # The boundary between messages counts: not the same as one message "Ax".
    assert prefix_key(
        request({"role": "system", "content": "A"}, {"role": "user", "content": "xy"})
    ) != prefix_key(request({"role": "system", "content": "Ax"}, {"role": "user", "content": "y"}))


def test_prefix_key_ignores_what_follows_the_first_user_message() -> None:
    lead = ({"role": "system", "content": "S"}, {"role": "user", "content": "u"})
    assert prefix_key(request(*lead)) == prefix_key(
        request(*lead, {"role": "system", "content": "later"}, {"role": "user", "content": "v"})
    )


def test_prefix_key_is_none_without_a_user_message() -> None:
    assert prefix_key(request({"role": "system", "content": "S"})) is None


def test_prefix_key_reads_text_parts_as_text_and_images_by_their_url() -> None:
    as_string = prefix_key(request({"role": "user", "content": "look"}))
    as_parts = prefix_key(request({"role": "user", "content": [{"type": "text", "text": "look"}]}))
    assert as_string == as_parts

    def with_image(url: str) -> str | None:
        return prefix_key(
            request(
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            )
        )

    big_a = "data:image/png;base64," + "A" * 2_000_000
    big_b = "data:image/png;base64," + "A" * 1_999_999 + "B"
    assert with_image(big_a) == with_image(big_a)
    assert (
        len({with_image(big_a), with_image(big_b), with_image("https://x/y.png"), as_string}) == 4
    )
