"""The first-token rule of `open_stream`: a stream may still fail over until it has shown the
client something, and reasoning shows something."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from palyra.breaker import CircuitBreaker
from palyra.config import ModelConfig, ProviderSettings
from palyra.deployments import DeploymentBoard
from palyra.errors import InvalidRequest, ProviderError
from palyra.health import HealthBoard
from palyra.metrics import Metrics
from palyra.models.base import ModelProvider
from palyra.models.fallback import Candidate, FallbackModel, open_stream
from palyra.types import ChatDelta, RouteInfo
from tests.support.clock import FakeClock


def broken_after(*deltas: ChatDelta) -> AsyncIterator[ChatDelta]:
    async def stream() -> AsyncIterator[ChatDelta]:
        for delta in deltas:
            yield delta
        raise ProviderError("connection reset", provider_id="p1")

    return stream()


@pytest.mark.parametrize(
    "shown",
    [
        ChatDelta(reasoning="let me think"),
        ChatDelta(refusal="no"),
        ChatDelta(content="hi"),
        ChatDelta(more_choices=[{"index": 1, "delta": {"content": "hi"}}]),
        ChatDelta(delta_extra={"audio": {"id": "audio_1", "transcript": "hi"}}),
    ],
)
async def test_a_stream_is_shown_from_its_first_reasoning_refusal_or_content(
    shown: ChatDelta,
) -> None:
    quiet = ChatDelta(chunk_extra={"system_fingerprint": "fp"})
    head, rest = await open_stream(broken_after(quiet, shown), 5.0, "p1")
    # Read up to what the client sees, no further: a failure after it is the client's to see.
    assert head == [quiet, shown]
    with pytest.raises(ProviderError):
        await anext(rest)


async def test_a_stream_that_breaks_before_showing_anything_can_still_fail_over() -> None:
    quiet = ChatDelta(chunk_extra={"system_fingerprint": "fp"}, delta_extra={"x": None})
    assert not quiet.shows_something
    with pytest.raises(ProviderError):
        await open_stream(broken_after(quiet), 5.0, "p1")


# --- candidates over deployments: admission, retries, streams ------------------------------


class Blocked:
    """A rate counter that answers only when let: a shared counter slow to reply."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def reserve(self, key: str, tokens: int, rpm_limit: int, tpm_limit: int) -> float:
        await self.release.wait()
        return 0.0

    async def correct(self, key: str, delta_tokens: int, *, age_s: float = 0.0) -> None:
        return None

    def used(self, key: str) -> tuple[int, int]:
        return 0, 0


def candidate(
    board: DeploymentBoard, clock: FakeClock, *, threshold: int = 3, retries: int = 0, **model: Any
) -> Candidate:
    config = ModelConfig(model_id="m", provider_id="p1", **model)
    provider = cast(ModelProvider, SimpleNamespace(provider_id="p1"))
    settings = ProviderSettings(60_000, retries, 0, threshold, 1000)
    return Candidate(
        config,
        provider,
        settings,
        CircuitBreaker(threshold, 1.0, clock=clock),
        board.deployment(config),
    )


def fallback(candidates: list[Candidate], board: DeploymentBoard) -> FallbackModel:
    async def no_wait(seconds: float) -> None:
        return None

    return FallbackModel(
        candidates,
        route=RouteInfo(),
        deadline=time.monotonic() + 60,
        health=HealthBoard(2000),
        metrics=Metrics(),
        deployments=board,
        sleep=no_wait,
    )


async def test_a_request_cancelled_while_admitted_gives_the_probe_back() -> None:
    clock, counter = FakeClock(), Blocked()
    board = DeploymentBoard(clock=clock, counter=counter)
    one = candidate(board, clock, threshold=1, rpm_limit=10)
    one.breaker.record_failure()  # open
    clock.now += 1.5  # half-open: the next request is the probe

    async def answer(c: Candidate) -> str:
        return "ok"

    waiting = asyncio.ensure_future(fallback([one], board).run(answer))
    await asyncio.sleep(0.01)  # the probe's permit is taken; the counter has not answered
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    counter.release.set()
    # The probe is free for the next request, which closes the circuit.
    assert await fallback([one], board).run(answer) == "ok"
    assert one.breaker.state.value == "closed"


async def test_retries_count_against_the_rpm_limit() -> None:
    clock = FakeClock()
    board = DeploymentBoard(clock=clock)
    one = candidate(board, clock, retries=5, rpm_limit=2)
    sent = 0

    async def failing(c: Candidate) -> str:
        nonlocal sent
        sent += 1
        raise ProviderError("overloaded", provider_id="p1", upstream_status=503)

    with pytest.raises(ProviderError):
        await fallback([one], board).run(failing)
    assert sent == 2  # the try and one retry; a third would pass rpm_limit 2
    assert one.deployment.in_flight == 0


async def test_a_stream_dropped_unread_is_settled() -> None:
    clock = FakeClock()
    board = DeploymentBoard(clock=clock)
    one = candidate(board, clock)

    async def chunks() -> AsyncIterator[ChatDelta]:
        yield ChatDelta(content="hi")
        yield ChatDelta(content="there")

    relay = await fallback([one], board).stream(lambda c: chunks())
    assert one.deployment.in_flight == 1
    del relay  # the client left before the first event was read
    gc.collect()
    assert one.deployment.in_flight == 0


class _Request:
    """Stands in for what routing's closures keep: the request."""


async def test_an_open_stream_keeps_nothing_of_choosing_its_candidate() -> None:
    # A stream lasts long; what routing held to choose a candidate (the request, in the
    # estimates' closures and the walk of the candidates) is let go once one serves, and the
    # prompt's count, taken then, is what a stream without usage is billed.
    clock = FakeClock()
    board = DeploymentBoard(clock=clock)
    one = candidate(board, clock)

    def walk(held: _Request) -> Iterator[Candidate]:
        yield one

    def routed(request: _Request) -> FallbackModel:
        model = fallback([], board)
        model.candidates = walk(request)
        model._estimate = lambda: 7 if request else 0
        model._prompt_tokens = lambda: 11 if request else 0
        return model

    request = _Request()
    gone = weakref.ref(request)
    model = routed(request)
    del request

    async def chunks() -> AsyncIterator[ChatDelta]:
        yield ChatDelta(content="hi")
        yield ChatDelta(content="there")

    relay = await model.stream(lambda c: chunks())
    gc.collect()
    assert gone() is None
    assert [d.content async for d in relay] == ["hi", "there"]
    assert model.route.usage is not None and model.route.usage.prompt_tokens == 11


async def test_a_request_too_large_for_every_tpm_limit_is_a_400_not_a_429() -> None:
    clock = FakeClock()
    board = DeploymentBoard(clock=clock)
    one = candidate(board, clock, tpm_limit=100)

    async def answer(c: Candidate) -> str:
        return "ok"

    model = fallback([one], board)
    model._estimate = lambda: 500
    with pytest.raises(InvalidRequest) as refused:
        await model.run(answer)
    assert refused.value.status == 400 and "tpm_limit 100" in refused.value.message
