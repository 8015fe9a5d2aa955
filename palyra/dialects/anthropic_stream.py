"""A streamed Messages API answer: the SSE events Anthropic sends, from internal deltas.

`EventWriter` turns the `ChatDelta`s of a translated stream into Anthropic's events in their
order: `message_start`, `ping`, then per content block `content_block_start`,
`content_block_delta`s (`thinking_delta`, `text_delta`, `input_json_delta`) and
`content_block_stop`, then `message_delta` (stop reason and usage) and `message_stop`. A
stream passed through natively needs none of it: its events are relayed as they came
(`palyra.sse.encode_event`).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from palyra.dialects.anthropic_render import message_id, render_usage, stop_reason
from palyra.dialects.common import random_id
from palyra.models.anthropic_wire import (
    ContentBlock,
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    ErrorResponse,
    Message,
    MessageDeltaEvent,
    MessageDeltaUsage,
    MessageStartEvent,
    MessageStreamEvent,
)
from palyra.sse import encode_event
from palyra.types import ChatDelta, FinishReason, ToolCallDelta, Usage

PING = b'event: ping\ndata: {"type":"ping"}\n\n'
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def frame(name: str, payload: MessageStreamEvent | ErrorResponse) -> bytes:
    # (An error mid-stream goes out as an `error` event with the error body: anthropic_messages.)
    return encode_event(name, orjson.dumps(payload))


class EventWriter:
    """The frames of one translated stream. Feed every delta to `delta`, then call `end`."""

    def __init__(self, model_id: str, stop_sequences: tuple[str, ...] = ()) -> None:
        self._model_id = model_id
        self._stop_sequences = stop_sequences
        self._started = False
        self._index = -1  # the last block opened
        self._open: str | None = None  # its type, while it is open
        self._tool_blocks: dict[int, int] = {}  # tool call index -> block index
        self._finish: FinishReason | None = None
        self._refused = False
        self._usage: Usage | None = None
        self._choice_extra: dict[str, Any] | None = None

    def start(self) -> bytes:
        """`message_start` and a `ping`, once (the first delta or `end` asks for them)."""
        if self._started:
            return b""
        self._started = True
        message: Message = {
            "id": message_id(),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self._model_id,
            "stop_reason": None,
            "stop_sequence": None,
            # The counts arrive with the end of the answer, in message_delta.
            "usage": {
                "input_tokens": 0,
                "output_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        start: MessageStartEvent = {"type": "message_start", "message": message}
        return frame("message_start", start) + PING

    def delta(self, event: ChatDelta) -> bytes:
        frames = self.start()
        if event.reasoning:
            frames += self._text_like("thinking", event.reasoning)
        if event.content:
            frames += self._text_like("text", event.content)
        if event.refusal:
            self._refused = True
            frames += self._text_like("text", event.refusal)
        for call in event.tool_calls or ():
            frames += self._tool_call(call)
        if event.finish_reason is not None:
            self._finish = event.finish_reason
        if event.usage is not None:
            self._usage = event.usage
        if event.choice_extra:
            self._choice_extra = event.choice_extra
        return frames

    def end(self) -> bytes:
        """Closes the open block; `message_delta` with the stop reason and usage, and
        `message_stop`."""
        frames = self.start() + self._close()
        finish: FinishReason | None = "content_filter" if self._refused else self._finish
        reason, sequence = stop_reason(finish, self._stop_sequences, self._choice_extra)
        usage: MessageDeltaUsage = {"output_tokens": 0}
        if self._usage is not None:
            counts = render_usage(self._usage)
            usage = {
                "output_tokens": counts["output_tokens"],
                "input_tokens": counts["input_tokens"],
                "cache_creation_input_tokens": counts["cache_creation_input_tokens"],
                "cache_read_input_tokens": counts["cache_read_input_tokens"],
            }
        delta: MessageDeltaEvent = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": usage,
        }
        return frames + frame("message_delta", delta) + MESSAGE_STOP

    # --- blocks --------------------------------------------------------------------------

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        stop: ContentBlockStopEvent = {"type": "content_block_stop", "index": self._index}
        return frame("content_block_stop", stop)

    def _open_block(self, block: ContentBlock) -> bytes:
        frames = self._close()
        self._index += 1
        self._open = block["type"]
        start: ContentBlockStartEvent = {
            "type": "content_block_start",
            "index": self._index,
            "content_block": block,
        }
        return frames + frame("content_block_start", start)

    def _text_like(self, kind: Literal["thinking", "text"], text: str) -> bytes:
        frames = b""
        if self._open != kind:
            block: ContentBlock
            if kind == "thinking":
                block = {"type": "thinking", "thinking": "", "signature": ""}
            else:
                block = {"type": "text", "text": ""}
            frames = self._open_block(block)
        # One literal per delta type (not a computed key), so each is checked as its own.
        delta: ContentBlockDeltaEvent
        if kind == "thinking":
            delta = {
                "type": "content_block_delta",
                "index": self._index,
                "delta": {"type": "thinking_delta", "thinking": text},
            }
        else:
            delta = {
                "type": "content_block_delta",
                "index": self._index,
                "delta": {"type": "text_delta", "text": text},
            }
        return frames + frame("content_block_delta", delta)

    def _tool_call(self, call: ToolCallDelta) -> bytes:
        frames = b""
        index = self._tool_blocks.get(call.index)
        if index is None:
            block: ContentBlock = {
                "type": "tool_use",
                "id": call.id or "toolu_" + random_id(),
                "name": call.name or "",
                "input": {},
            }
            frames = self._open_block(block)
            index = self._tool_blocks[call.index] = self._index
        if call.arguments:
            # (A fragment for a call whose block was closed goes to that block's index: the
            # events cannot reopen it, and clients assemble by index.)
            delta: ContentBlockDeltaEvent = {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": call.arguments},
            }
            frames += frame("content_block_delta", delta)
        return frames
