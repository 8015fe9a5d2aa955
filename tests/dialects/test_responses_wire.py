"""The stream events of palyra/dialects/responses_wire.py name what openai-python names: each
TypedDict has the keys of its counterpart in the SDK (`types/responses/response_*_event.py`).
An event the SDK gains, loses or renames a field of fails here, with the names."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types import responses as sdk

from palyra.dialects import responses_wire as wire
from tests.support.sdk_keys import mismatch

EVENTS: list[tuple[Any, Any]] = [
    (wire.ResponseCreatedEvent, sdk.ResponseCreatedEvent),
    (wire.ResponseInProgressEvent, sdk.ResponseInProgressEvent),
    (wire.ResponseCompletedEvent, sdk.ResponseCompletedEvent),
    (wire.ResponseIncompleteEvent, sdk.ResponseIncompleteEvent),
    (wire.ResponseFailedEvent, sdk.ResponseFailedEvent),
    (wire.ResponseErrorEvent, sdk.ResponseErrorEvent),
    (wire.ResponseOutputItemAddedEvent, sdk.ResponseOutputItemAddedEvent),
    (wire.ResponseOutputItemDoneEvent, sdk.ResponseOutputItemDoneEvent),
    (wire.ResponseContentPartAddedEvent, sdk.ResponseContentPartAddedEvent),
    (wire.ResponseContentPartDoneEvent, sdk.ResponseContentPartDoneEvent),
    (wire.ResponseTextDeltaEvent, sdk.ResponseTextDeltaEvent),
    (wire.ResponseTextDoneEvent, sdk.ResponseTextDoneEvent),
    (wire.ResponseRefusalDeltaEvent, sdk.ResponseRefusalDeltaEvent),
    (wire.ResponseRefusalDoneEvent, sdk.ResponseRefusalDoneEvent),
    (wire.ResponseReasoningSummaryPartAddedEvent, sdk.ResponseReasoningSummaryPartAddedEvent),
    (wire.ResponseReasoningSummaryPartDoneEvent, sdk.ResponseReasoningSummaryPartDoneEvent),
    (wire.ResponseReasoningSummaryTextDeltaEvent, sdk.ResponseReasoningSummaryTextDeltaEvent),
    (wire.ResponseReasoningSummaryTextDoneEvent, sdk.ResponseReasoningSummaryTextDoneEvent),
    (
        wire.ResponseFunctionCallArgumentsDeltaEvent,
        sdk.ResponseFunctionCallArgumentsDeltaEvent,
    ),
    (wire.ResponseFunctionCallArgumentsDoneEvent, sdk.ResponseFunctionCallArgumentsDoneEvent),
]


@pytest.mark.parametrize(("ours", "theirs"), EVENTS, ids=[pair[0].__name__ for pair in EVENTS])
def test_the_event_has_the_sdk_keys(ours: Any, theirs: Any) -> None:
    assert mismatch(ours, theirs, set()) is None


def test_every_event_palyra_writes_is_checked() -> None:
    assert set(wire.ResponseStreamEvent.__args__) == {pair[0] for pair in EVENTS}
