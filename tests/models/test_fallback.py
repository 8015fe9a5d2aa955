"""The first-token rule of `open_stream`: a stream may still fail over until it has shown the
client something, and reasoning shows something."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from palyra.errors import ProviderError
from palyra.models.fallback import open_stream
from palyra.types import ChatDelta


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
