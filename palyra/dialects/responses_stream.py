"""The typed events of a streamed response, written from the internal stream of deltas.

The order is the API's: `response.created`, `response.in_progress`, then per output item
`response.output_item.added`, its parts and deltas (`response.content_part.added`,
`response.output_text.delta` / `response.refusal.delta`, `..done`, `response.content_part.done`;
`response.reasoning_summary_*` for reasoning; `response.function_call_arguments.delta` /
`.done` for a call), `response.output_item.done`; and last `response.completed` (or
`response.incomplete`), or on failure `error` then `response.failed`. Every event carries
its `sequence_number`, from 0.

A reasoning item's `encrypted_content` (the provider's reasoning state: Anthropic's thinking
blocks, each of which comes whole in one delta when it ends) is known once the item ends: it
is on the item of `response.output_item.done` and in the final response, when `include`
asked for it, and always in what is stored (`render.shown`).
"""

from __future__ import annotations

from typing import Any, Literal, cast

import orjson

from palyra.dialects import responses_render as render
from palyra.dialects.responses_reasoning import encode_reasoning_state
from palyra.dialects.responses_request import ResponsesCall
from palyra.dialects.responses_wire import (
    FunctionCall,
    OutputItem,
    OutputRefusal,
    OutputText,
    Reasoning,
    Response,
    ResponseStreamEvent,
    SummaryText,
)
from palyra.errors import PalyraError
from palyra.sse import encode_event
from palyra.types import ChatDelta, FinishReason, Usage

_GrowingKey = Literal["text", "refusal", "arguments"]

# A text delta, the one event a stream sends dozens of, written around its variable parts:
# exactly what encoding its `ResponseTextDeltaEvent` gives (keys in that order; tested),
# for a third of the cost.
_TEXT_DELTA_HEAD = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
    b'"sequence_number":'
)
_TEXT_DELTA_TAIL = b',"logprobs":[]}\n\n'


class _Growing:
    """A text field of the response that grows a piece at a time. Appending to a string held
    in a dict copies it whole each time (quadratic over a long answer; benchmarks/README.md
    has the figures); the pieces are kept and joined into the field when it is read."""

    __slots__ = ("_into", "_key", "_pieces")

    def __init__(
        self, into: OutputText | OutputRefusal | SummaryText | FunctionCall, key: _GrowingKey
    ) -> None:
        # (A TypedDict is not indexed by a key held in a variable: the object is seen here as
        # what the field makes it, a dict holding a string under `key`.)
        self._into = cast("dict[str, str]", into)
        self._key = key
        self._pieces: list[str] = [self._into[key]] if self._into[key] else []

    def add(self, piece: str) -> None:
        self._pieces.append(piece)

    def flush(self) -> str:
        text = "".join(self._pieces)
        self._into[self._key] = text
        self._pieces = [text] if text else []
        return text


# `responses_render` takes and gives plain dicts; what it gives back here is the response or
# item it was given, or a copy of it less its reasoning state: still of that type.
def _shown(response: dict[str, Any], include: bool) -> Response:
    return cast(Response, render.shown(response, include))


def _shown_item(item: OutputItem, include: bool) -> OutputItem:
    return cast(OutputItem, render.shown_item(cast("dict[str, Any]", item), include))


class EventWriter:
    """The events of one response. `response` is its shell (`render.shell`), filled in as
    the stream goes: what `response.completed` carries, and what is stored."""

    def __init__(self, response: Response, *, include_reasoning_state: bool = False) -> None:
        self.response = response
        self._include = include_reasoning_state
        # The open reasoning item's state: blocks as `render.thinking_blocks` gives them, for
        # `encode_reasoning_state`.
        self._thinking: list[dict[str, Any]] = []
        self.sequence = 0
        self._output: list[OutputItem] = response["output"]
        self._item: OutputItem | None = None  # the output item being written
        self._part: OutputText | OutputRefusal | None = None  # its content part being written
        self._calls: dict[int, FunctionCall] = {}  # a delta's tool call index -> its item
        # The text fields being written: the open part's, the open summary's, each call's
        # arguments (by item id); all flushed before the response is encoded.
        self._growing: dict[int, _Growing] = {}
        self._part_text: _Growing | None = None
        # The open output_text part's item_id, output_index and content_index as its deltas
        # spell them (between `sequence_number` and `delta`).
        self._delta_middle: bytes | None = None
        self._summary_text: _Growing | None = None
        self._arguments: dict[str, _Growing] = {}
        self._finish: FinishReason | None = None
        self._usage = Usage()
        # The whole response once the stream ended well: what is stored (as a plain dict,
        # which is what the store takes).
        self.final: dict[str, Any] | None = None

    def _emit(self, event: ResponseStreamEvent) -> bytes:
        # (Each event is written with `sequence_number` = self.sequence, then counted here.)
        self.sequence += 1
        return encode_event(event["type"], orjson.dumps(event))

    def _growing_field(
        self, into: OutputText | OutputRefusal | SummaryText | FunctionCall, key: _GrowingKey
    ) -> _Growing:
        field = _Growing(into, key)
        self._growing[id(field)] = field
        return field

    def _flush_all(self) -> None:
        for field in self._growing.values():
            field.flush()

    def start(self) -> bytes:
        # (An event is encoded as it is made: what it carries may change after, unseen.)
        return self._emit(
            {
                "type": "response.created",
                "sequence_number": self.sequence,
                "response": self.response,
            }
        ) + self._emit(
            {
                "type": "response.in_progress",
                "sequence_number": self.sequence,
                "response": self.response,
            }
        )

    # --- items ----------------------------------------------------------------------------

    def _open(self, item: OutputItem) -> bytes:
        self._item = item
        self._output.append(item)
        added: OutputItem
        if item["type"] == "message":
            added = {**item, "content": []}
        elif item["type"] == "reasoning":
            added = {**item, "summary": []}
        else:
            added = {**item}
        return self._emit(
            {
                "type": "response.output_item.added",
                "sequence_number": self.sequence,
                "output_index": len(self._output) - 1,
                "item": added,
            }
        )

    def _close(self) -> bytes:
        item = self._item
        if item is None:
            return b""
        frames = self._close_part()
        self._item = None
        index = self._output.index(item)
        if item["type"] == "function_call":
            self._arguments[item["id"]].flush()
            frames += self._emit(
                {
                    "type": "response.function_call_arguments.done",
                    "sequence_number": self.sequence,
                    "item_id": item["id"],
                    "output_index": index,
                    "arguments": item["arguments"],
                }
            )
        elif item["type"] == "reasoning":
            frames += self._close_reasoning(item, index)
        if "status" in item:
            item["status"] = "completed"
        return frames + self._emit(
            {
                "type": "response.output_item.done",
                "sequence_number": self.sequence,
                "output_index": index,
                "item": _shown_item(item, self._include),
            }
        )

    def _close_reasoning(self, item: Reasoning, index: int) -> bytes:
        if self._thinking:
            item["encrypted_content"] = encode_reasoning_state(self._thinking)
            self._thinking = []
        if not item["summary"]:
            return b""  # state without text (redacted thinking): nothing was summarised
        if self._summary_text is not None:
            self._summary_text.flush()
            self._summary_text = None
        summary = item["summary"][0]
        return self._emit(
            {
                "type": "response.reasoning_summary_text.done",
                "sequence_number": self.sequence,
                "item_id": item["id"],
                "output_index": index,
                "summary_index": 0,
                "text": summary["text"],
            }
        ) + self._emit(
            {
                "type": "response.reasoning_summary_part.done",
                "sequence_number": self.sequence,
                "item_id": item["id"],
                "output_index": index,
                "summary_index": 0,
                "part": summary,
            }
        )

    def _close_part(self) -> bytes:
        part, self._part = self._part, None
        item = self._item
        # (A part is only ever open in a message: the type test is for mypy.)
        if part is None or item is None or item["type"] != "message":
            return b""
        if self._part_text is not None:
            self._part_text.flush()
            self._part_text = None
        item_id, output_index = item["id"], len(self._output) - 1
        content_index = len(item["content"]) - 1
        done: bytes
        if part["type"] == "output_text":
            done = self._emit(
                {
                    "type": "response.output_text.done",
                    "sequence_number": self.sequence,
                    "item_id": item_id,
                    "output_index": output_index,
                    "content_index": content_index,
                    "text": part["text"],
                    "logprobs": [],
                }
            )
        else:
            done = self._emit(
                {
                    "type": "response.refusal.done",
                    "sequence_number": self.sequence,
                    "item_id": item_id,
                    "output_index": output_index,
                    "content_index": content_index,
                    "refusal": part["refusal"],
                }
            )
        return done + self._emit(
            {
                "type": "response.content_part.done",
                "sequence_number": self.sequence,
                "item_id": item_id,
                "output_index": output_index,
                "content_index": content_index,
                "part": part,
            }
        )

    def _text(self, kind: Literal["output_text", "refusal"], piece: str) -> bytes:
        """A piece of text (`output_text`) or refusal, into the open message."""
        frames = b""
        item = self._item
        if item is None or item["type"] != "message":
            item = render.message([], status="in_progress")
            frames += self._close() + self._open(item)
        if self._part is None or self._part["type"] != kind:
            frames += self._close_part()
            part = render.output_text("") if kind == "output_text" else render.refusal("")
            self._part = part
            self._delta_middle = None
            self._part_text = self._growing_field(
                part, "text" if kind == "output_text" else "refusal"
            )
            item["content"].append(part)
            frames += self._emit(
                {
                    "type": "response.content_part.added",
                    "sequence_number": self.sequence,
                    "item_id": item["id"],
                    "output_index": len(self._output) - 1,
                    "content_index": len(item["content"]) - 1,
                    "part": part.copy(),
                }
            )
        assert self._part_text is not None
        self._part_text.add(piece)
        if kind == "output_text":
            middle = self._delta_middle
            if middle is None:
                middle = self._delta_middle = (
                    b',"item_id":%b,"output_index":%d,"content_index":%d,"delta":'
                    % (
                        orjson.dumps(item["id"]),
                        len(self._output) - 1,
                        len(item["content"]) - 1,
                    )
                )
            sequence, self.sequence = self.sequence, self.sequence + 1
            return (
                frames
                + _TEXT_DELTA_HEAD
                + str(sequence).encode()
                + middle
                + orjson.dumps(piece)
                + _TEXT_DELTA_TAIL
            )
        return frames + self._emit(
            {
                "type": "response.refusal.delta",
                "sequence_number": self.sequence,
                "item_id": item["id"],
                "output_index": len(self._output) - 1,
                "content_index": len(item["content"]) - 1,
                "delta": piece,
            }
        )

    def _open_reasoning(self) -> bytes:
        if self._item is not None and self._item["type"] == "reasoning":
            return b""
        return self._close() + self._open(render.reasoning(""))

    def _thinking_blocks(self, blocks: list[dict[str, Any]]) -> bytes:
        """Whole blocks of the provider's reasoning state, kept for the reasoning item's
        `encrypted_content` (a redacted block, which has no text, opens one)."""
        frames = self._open_reasoning()
        self._thinking += blocks
        return frames

    def _reasoning(self, piece: str) -> bytes:
        frames = b""
        item = self._item
        if item is None or item["type"] != "reasoning":
            item = render.reasoning("")
            frames = self._close() + self._open(item)
        if not item["summary"]:
            summary: SummaryText = {"type": "summary_text", "text": ""}
            item["summary"] = [summary]
            self._summary_text = self._growing_field(summary, "text")
            frames += self._emit(
                {
                    "type": "response.reasoning_summary_part.added",
                    "sequence_number": self.sequence,
                    "item_id": item["id"],
                    "output_index": len(self._output) - 1,
                    "summary_index": 0,
                    "part": {**summary},
                }
            )
        assert self._summary_text is not None
        self._summary_text.add(piece)
        return frames + self._emit(
            {
                "type": "response.reasoning_summary_text.delta",
                "sequence_number": self.sequence,
                "item_id": item["id"],
                "output_index": len(self._output) - 1,
                "summary_index": 0,
                "delta": piece,
            }
        )

    def _call(self, index: int, call_id: str | None, name: str | None, piece: str) -> bytes:
        frames = b""
        item = self._calls.get(index)
        if item is None:
            frames += self._close()
            item = render.function_call(call_id or "", name or "", "", done=False)
            self._calls[index] = item
            self._arguments[item["id"]] = self._growing_field(item, "arguments")
            frames += self._open(item)
        elif item is not self._item:
            # A fragment of a call already closed (calls interleaved): its arguments go on.
            pass
        if call_id and not item["call_id"]:
            item["call_id"] = call_id
        if name and not item["name"]:
            item["name"] = name
        if not piece:
            return frames
        self._arguments[item["id"]].add(piece)
        return frames + self._emit(
            {
                "type": "response.function_call_arguments.delta",
                "sequence_number": self.sequence,
                "item_id": item["id"],
                "output_index": self._output.index(item),
                "delta": piece,
            }
        )

    # --- the stream -----------------------------------------------------------------------

    def delta(self, event: ChatDelta) -> bytes:
        frames = b""
        if event.reasoning:
            frames += self._reasoning(event.reasoning)
        if event.delta_extra is not None:
            blocks = render.thinking_blocks(event.delta_extra)
            if blocks:
                frames += self._thinking_blocks(blocks)
        if event.content:
            frames += self._text("output_text", event.content)
        if event.refusal:
            frames += self._text("refusal", event.refusal)
        for call in event.tool_calls or ():
            frames += self._call(call.index, call.id, call.name, call.arguments)
        if event.finish_reason is not None:
            self._finish = event.finish_reason
        if event.usage is not None:
            self._usage = event.usage
        return frames

    def complete(self) -> bytes:
        """The items still open closed, then `response.completed` (or `.incomplete`)."""
        frames = self._close()
        self._flush_all()  # (a call closed early may have had fragments since)
        render.finish(self.response, self._finish)
        self.response["usage"] = render.usage(self._usage)
        self.final = dict(self.response)
        shown = _shown(self.final, self._include)
        if self.response["status"] == "incomplete":
            return frames + self._emit(
                {"type": "response.incomplete", "sequence_number": self.sequence, "response": shown}
            )
        return frames + self._emit(
            {"type": "response.completed", "sequence_number": self.sequence, "response": shown}
        )

    def fail(self, error: PalyraError) -> bytes:
        """After a failure mid-stream: `error`, then `response.failed` with what was sent."""
        code = "rate_limit_exceeded" if error.status == 429 else "server_error"
        self._flush_all()
        self.response["status"] = "failed"
        self.response["error"] = {"code": code, "message": error.message}
        self.response["usage"] = render.usage(self._usage)
        if self._item is not None and "status" in self._item:
            self._item["status"] = "incomplete"
        return self._emit(
            {
                "type": "error",
                "sequence_number": self.sequence,
                "code": error.code,
                "message": error.message,
                "param": error.param,
            }
        ) + self._emit(
            {
                "type": "response.failed",
                "sequence_number": self.sequence,
                "response": _shown(dict(self.response), self._include),
            }
        )


# The events of an upstream's own stream that carry the response object: made Palyra's.
_RESPONSE_EVENTS = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
    }
)


class NativeEvents:
    """An upstream's own response stream (pass-through), relayed as it came but for the
    response object its lifecycle events carry, which becomes Palyra's (`render.adopt`)."""

    def __init__(self, call: ResponsesCall, response_id: str, model_id: str) -> None:
        self._call = call
        self._id = response_id
        self._model_id = model_id
        self._sequence = 0
        self._response: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None

    def delta(self, event: ChatDelta) -> bytes:
        assert event.native is not None
        kind, data = event.native
        self._sequence += 1
        if kind not in _RESPONSE_EVENTS:
            return encode_event(kind, data)
        parsed = orjson.loads(data)
        response = parsed.get("response")
        if isinstance(response, dict):
            parsed["response"] = self._response = render.adopt(
                self._call, response, self._id, self._model_id
            )
            if kind in ("response.completed", "response.incomplete"):
                self.final = self._response
        return encode_event(kind, orjson.dumps(parsed))

    def complete(self) -> bytes:
        return b""  # the upstream's own last event has gone already

    def fail(self, error: PalyraError) -> bytes:
        code = "rate_limit_exceeded" if error.status == 429 else "server_error"
        response = dict(self._response or {"id": self._id, "object": "response"})
        response.update(status="failed", error={"code": code, "message": error.message})
        frames = b""
        for kind, fields in (
            ("error", {"code": error.code, "message": error.message, "param": error.param}),
            ("response.failed", {"response": response}),
        ):
            data = {"type": kind, "sequence_number": self._sequence, **fields}
            self._sequence += 1
            frames += encode_event(kind, orjson.dumps(data))
        return frames
