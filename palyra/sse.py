"""Server-sent events: an incremental decoder for upstream streams, and the encoder for ours."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import orjson


@dataclass(slots=True)
class SSEEvent:
    event: str
    data: str


class SSEError(ValueError):
    """The stream cannot be SSE: a line or an event past the decoder's limit."""


# An upstream that sends bytes without ever ending a line must not take the daemon's memory
# with it; real events (a tool call's arguments, an inline image) stay far below this.
MAX_EVENT_BYTES = 16 * 1024 * 1024


class SSEDecoder:
    """Feed bytes as they arrive; get whole events back. Handles \\n, \\r\\n and \\r line ends,
    multi-line data and comments. A line or an event longer than `max_event_bytes` raises
    `SSEError`; bytes that are not UTF-8 are replaced, as the spec says."""

    # (One per open stream, for as long as it lasts.)
    __slots__ = ("_data", "_data_size", "_event", "_parts", "_pending", "max_event_bytes")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        # The unfinished last line, in the pieces it came in: joined once its end arrives, so
        # a long line costs one copy, not one per read.
        self._parts: list[bytes] = []
        self._pending = 0
        self._event = ""
        self._data: list[str] = []
        self._data_size = 0
        self.max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        return list(self.iter_feed(chunk))

    def iter_feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        """`feed`, one event at a time: the first event of a large read is out before the
        rest of the read is parsed (a 50-chunk read takes ~0.1 ms to parse whole)."""
        parts = self._parts
        if not parts:
            buffer = chunk
        elif b"\n" in chunk or b"\r" in chunk or parts[-1].endswith(b"\r"):
            # (A held trailing \r ends a line whatever comes next: no waiting for more then.)
            buffer = parts[0] + chunk if len(parts) == 1 else b"".join([*parts, chunk])
            self._parts, self._pending = [], 0
        else:
            parts.append(chunk)
            self._pending += len(chunk)
            self._check_pending()
            return
        if b"\r" in buffer:
            # A lone trailing \r may be the first half of \r\n; wait for the next chunk.
            keep_cr = buffer.endswith(b"\r")
            body = buffer[:-1] if keep_cr else buffer
            buffer = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (
                b"\r" if keep_cr else b""
            )
        # Walk the lines by index and cut the rest off once: slicing the remainder off after
        # every line copies it each time (a 50-chunk read is ~100 lines).
        start = 0
        find, startswith = buffer.find, buffer.startswith
        while True:
            newline = find(b"\n", start)
            if newline < 0:
                break
            if (
                startswith(b"data: ", start)
                and startswith(b"\n", newline + 1)
                and not self._data
                and not self._event
            ):
                # The usual event, one `data: ` line and its blank line, taken whole: what the
                # two lines would give one at a time, at a third of the cost.
                yield SSEEvent("message", buffer[start + 6 : newline].decode("utf-8", "replace"))
                start = newline + 2
                continue
            if startswith(b"event: ", start) and not self._data and not self._event:
                # A named event (Anthropic's, the Responses API's): `event: ` and `data: `
                # lines and the blank line, taken whole as well.
                data_end = find(b"\n", newline + 1)
                if (
                    data_end >= 0
                    and startswith(b"data: ", newline + 1)
                    and startswith(b"\n", data_end + 1)
                ):
                    name = buffer[start + 7 : newline].decode("utf-8", "replace")
                    data = buffer[newline + 7 : data_end].decode("utf-8", "replace")
                    yield SSEEvent(name or "message", data)
                    start = data_end + 2
                    continue
            event = self._line(buffer[start:newline].decode("utf-8", "replace"))
            start = newline + 1
            if event is not None:
                yield event
        if start < len(buffer):
            rest = buffer[start:] if start else buffer
            self._parts, self._pending = [rest], len(rest)
            if self._pending > self.max_event_bytes:
                self._check_pending()

    def _check_pending(self) -> None:
        if self._pending > self.max_event_bytes:
            self._parts, self._pending = [], 0
            raise SSEError(f"a line longer than {self.max_event_bytes} bytes")

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._event = ""  # as the spec says: no data, no event, and the name resets
                return None
            event = SSEEvent(self._event or "message", "\n".join(self._data))
            self._event, self._data, self._data_size = "", [], 0
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data_size += len(value) + 1
            if self._data_size > self.max_event_bytes:
                self._data, self._data_size = [], 0
                raise SSEError(f"an event longer than {self.max_event_bytes} bytes")
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def close(self) -> SSEEvent | None:
        """An event left without its blank line when the stream ended, if any. (The spec
        drops it; some upstreams omit the last blank line, so we keep it.)"""
        event = None
        if self._parts:
            rest = b"".join(self._parts)
            self._parts, self._pending = [], 0
            event = self._line(rest.decode("utf-8", "replace").rstrip("\r"))
        return event or self._line("")


async def decode_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.iter_feed(chunk):
            yield event
    tail = decoder.close()
    if tail is not None:
        yield tail


DONE = b"data: [DONE]\n\n"


def encode_data(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def encode_event(name: str, data: bytes | str) -> bytes:
    """One event with its `event:` line (none for an empty name). Data that spans lines (an
    upstream's event relayed as it came, decoded with its `data:` lines joined by newlines)
    goes out in as many `data:` lines again: a newline inside one would end the event."""
    raw = data.encode() if isinstance(data, str) else data
    head = b"event: " + name.encode() + b"\n" if name else b""
    if b"\n" not in raw:
        return head + b"data: " + raw + b"\n\n"
    return head + b"".join(b"data: " + line + b"\n" for line in raw.split(b"\n")) + b"\n"
