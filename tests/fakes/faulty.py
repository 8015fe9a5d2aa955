"""A TCP proxy in front of the fake upstream that breaks connections on cue.

Each connection serves one request, which meets the next fault scripted for its path (or
`Pass` when none is left): the proxy reads the request itself, so it knows where the request
ends and can break the answer at the byte it means to. `Pass` forwards the request to the
target with `Connection: close`, so every request comes on a connection of its own and meets
its own script. (The daemon's own traffic, discovery and probes, takes other paths.)

Faults that happen at the TCP level are real ones: a reset is an RST (SO_LINGER 0), garbage is
bytes on the wire, a stall is a socket that reads and never answers. Where a fault must come
after the client has seen something (a reset after the first token), it waits for an
`asyncio.Event` the test sets, not for a guessed delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import deque
from dataclasses import dataclass, field

__all__ = [
    "FaultyProxy",
    "Pass",
    "Raw",
    "ResetAfterFrames",
    "ResetBeforeHeaders",
    "Stall",
    "Trickle",
]


@dataclass
class Pass:
    """Forward the request to the target and its answer back, untouched."""


@dataclass
class ResetBeforeHeaders:
    """Read the request, then reset the connection without a byte of answer."""


@dataclass
class ResetAfterFrames:
    """Forward the target's answer up to the end of its `frames`-th SSE frame, wait for
    `release` (when given), then reset the connection."""

    frames: int
    release: asyncio.Event | None = None


@dataclass
class Stall:
    """Read the request and never answer (headers that never come)."""


@dataclass
class Trickle:
    """Send `head`, then `piece` every `every_s` for as long as the client listens: an answer
    that keeps the socket busy and never ends."""

    head: bytes
    piece: bytes = b" "
    every_s: float = 0.02


@dataclass
class Raw:
    """Send `data` as the whole answer, then close (or reset, with `reset`)."""

    data: bytes
    reset: bool = False


Fault = Pass | ResetBeforeHeaders | ResetAfterFrames | Stall | Trickle | Raw


def html_200(html: bytes = b"<html><body>Welcome to nginx!</body></html>") -> Raw:
    """A 200 with an HTML page, as a captive portal or a misrouted proxy answers."""
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
        b"Content-Length: " + str(len(html)).encode() + b"\r\nConnection: close\r\n\r\n"
    )
    return Raw(head + html)


GARBAGE = Raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xde\xad\xbe\xef" * 8)


@dataclass
class _Request:
    head: bytes
    body: bytes = b""


@dataclass
class FaultyProxy:
    """Listen on loopback; `target` is the (host, port) that `Pass` forwards to."""

    target: tuple[str, int] | None = None
    # Every request as (method, path), in the order they came.
    requests: list[tuple[str, str]] = field(default_factory=list)
    _scripts: dict[str, deque[Fault]] = field(default_factory=dict)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultyProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FaultyProxy is not started")
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def script(self, path: str, *faults: Fault) -> None:
        self._scripts.setdefault(path, deque()).extend(faults)

    def requests_to(self, path: str) -> list[tuple[str, str]]:
        return [request for request in self.requests if request[1] == path]

    # --- serving ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            request = await _read_request(reader)
            if request is None:
                return
            method, _, rest = request.head.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0].decode("latin-1")
            self.requests.append((method.decode("latin-1"), path))
            queue = self._scripts.get(path)
            fault = queue.popleft() if queue else Pass()
            await self._act(fault, request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Our own close(): end quietly (asyncio reports a cancelled connection callback as
            # an error in the log).
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()

    async def _act(
        self,
        fault: Fault,
        request: _Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        if isinstance(fault, ResetBeforeHeaders):
            _reset(writer)
        elif isinstance(fault, Stall):
            await reader.read()  # until the client gives up and closes
        elif isinstance(fault, Raw):
            writer.write(fault.data)
            await writer.drain()
            if fault.reset:
                _reset(writer)
            else:
                writer.close()
        elif isinstance(fault, Trickle):
            writer.write(fault.head)
            while not reader.at_eof():
                await writer.drain()
                await asyncio.sleep(fault.every_s)
                writer.write(fault.piece)
        else:
            await self._forward(fault, request, writer)

    async def _forward(
        self, fault: Pass | ResetAfterFrames, request: _Request, writer: asyncio.StreamWriter
    ) -> None:
        if self.target is None:
            raise RuntimeError("FaultyProxy has no target to forward to")
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        try:
            up_writer.write(_close_after(request.head) + request.body)
            await up_writer.drain()
            seen = b""
            frames = 0
            while chunk := await up_reader.read(65536):
                if not isinstance(fault, ResetAfterFrames):
                    writer.write(chunk)
                    await writer.drain()
                    continue
                seen += chunk
                body_at = seen.find(b"\r\n\r\n")
                cut = _frame_end(seen, max(body_at, 0), fault.frames - frames)
                if body_at < 0 or cut is None:
                    continue  # forwarded once the cut point is known: bytes stay in order
                writer.write(seen[:cut])
                await writer.drain()
                if fault.release is not None:
                    await fault.release.wait()
                _reset(writer)
                return
            if isinstance(fault, ResetAfterFrames):
                writer.write(seen)  # fewer frames than asked: the answer as it was
                await writer.drain()
        finally:
            up_writer.transport.abort()


def _frame_end(data: bytes, body_at: int, frames: int) -> int | None:
    """The offset just past the `frames`-th blank line (SSE frame end) after the head."""
    position = body_at + 4
    for _ in range(frames):
        found = data.find(b"\n\n", position)
        if found < 0:
            return None
        position = found + 2
    return position


def _close_after(head: bytes) -> bytes:
    lines = [
        line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:") and line
    ]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return _Request(head, body)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST: SO_LINGER on with a zero timeout drops the connection at once."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
