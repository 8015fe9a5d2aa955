"""The stream events of palyra/models/anthropic_wire.py name what the anthropic SDK names: each
TypedDict the Messages dialect writes a stream in (`anthropic_stream`) has the keys of its
counterpart in the SDK (`types/raw_message_*_event.py`, `raw_content_block_*_event.py`, the
deltas). An event the SDK gains, loses or renames a field of fails here, with the names."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from anthropic import types as sdk
from anthropic.types import raw_message_delta_event

from palyra.models import anthropic_wire as wire
from tests.support.sdk_keys import mismatch

EVENTS: list[tuple[Any, Any]] = [
    (wire.MessageStartEvent, sdk.RawMessageStartEvent),
    (wire.ContentBlockStartEvent, sdk.RawContentBlockStartEvent),
    (wire.ContentBlockDeltaEvent, sdk.RawContentBlockDeltaEvent),
    (wire.ContentBlockStopEvent, sdk.RawContentBlockStopEvent),
    (wire.MessageDeltaEvent, sdk.RawMessageDeltaEvent),
    (wire.MessageStopEvent, sdk.RawMessageStopEvent),
]
PARTS: list[tuple[Any, Any]] = [
    (wire.MessageDelta, raw_message_delta_event.Delta),
    (wire.MessageDeltaUsage, sdk.MessageDeltaUsage),
    (wire.TextDelta, sdk.TextDelta),
    (wire.InputJSONDelta, sdk.InputJSONDelta),
    (wire.ThinkingDelta, sdk.ThinkingDelta),
    (wire.SignatureDelta, sdk.SignatureDelta),
]


@pytest.mark.parametrize(
    ("ours", "theirs"), EVENTS + PARTS, ids=[pair[0].__name__ for pair in EVENTS + PARTS]
)
def test_the_event_has_the_sdk_keys(ours: Any, theirs: Any) -> None:
    assert mismatch(ours, theirs, set()) is None


def test_every_event_palyra_writes_is_checked() -> None:
    assert set(get_args(wire.MessageStreamEvent)) == {pair[0] for pair in EVENTS}
