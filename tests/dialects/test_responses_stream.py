"""The Responses stream's events as `EventWriter` writes them (palyra.dialects.responses_stream);
their order and shapes through the daemon are in test_openai_responses.py."""

from __future__ import annotations

from typing import cast

import orjson

from palyra.dialects.responses_stream import EventWriter
from palyra.dialects.responses_wire import Response, ResponseTextDeltaEvent
from palyra.sse import SSEDecoder
from palyra.types import ChatDelta

PIECES = ["Hello", ', "quoted"', " line\nbreak", " \\ back", " é😀", "", " tab\t end"]


def test_text_deltas_are_their_typed_events_encoded() -> None:
    # Text deltas are written around their variable parts, not encoded whole: each must be
    # byte for byte what encoding its ResponseTextDeltaEvent gives, as the other events are.
    writer = EventWriter(cast(Response, {"output": [], "status": "in_progress"}))
    frames = writer.start() + b"".join(writer.delta(ChatDelta(content=p)) for p in PIECES if p)
    frames += writer.delta(ChatDelta(refusal="no")) + writer.delta(ChatDelta(content="again"))
    events = list(SSEDecoder().iter_feed(frames))
    assert [e.data and orjson.loads(e.data)["sequence_number"] for e in events] == list(
        range(len(events))
    )
    deltas = [e for e in events if e.event == "response.output_text.delta"]
    assert [orjson.loads(e.data)["delta"] for e in deltas] == [p for p in PIECES if p] + ["again"]
    message = writer.response["output"][-1]
    for event in deltas:
        sent = orjson.loads(event.data)
        typed: ResponseTextDeltaEvent = {
            "type": "response.output_text.delta",
            "sequence_number": sent["sequence_number"],
            "item_id": sent["item_id"],
            "output_index": sent["output_index"],
            "content_index": sent["content_index"],
            "delta": sent["delta"],
            "logprobs": [],
        }
        assert event.data.encode() == orjson.dumps(typed)
        assert sent["item_id"] == message["id"]
    # After the refusal, the text goes into a part of its own: its index is spelt anew.
    assert [orjson.loads(e.data)["content_index"] for e in deltas] == [0] * 6 + [2]
