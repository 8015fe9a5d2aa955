"""The relay that writes a stream's frames (palyra.dialects.common.Relay): what it keeps per
open stream, and its writer's wake-ups. Batching and backpressure are in test_openai.py."""

from __future__ import annotations

import asyncio
import tracemalloc

from palyra.dialects.common import Relay


class _Client:
    """Stands in for a StreamResponse that takes every write at once."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.writes.append(data)


async def _idle(relays: list[Relay]) -> None:
    for relay in relays:
        relay.push(b"data: x\n\n")
    for _ in range(3):
        await asyncio.sleep(0)  # each writer writes its frame and waits for more


async def test_an_idle_relay_keeps_little_per_stream() -> None:
    # 5,000 open streams each keep one for as long as they last. With two asyncio.Events
    # (a 64-slot deque each) it kept 3.2 KB; bare futures made as needed, 1.2 KB.
    clients = [_Client() for _ in range(400)]
    warm = [Relay(_Client()) for _ in range(10)]  # type: ignore[arg-type]
    await _idle(warm)  # (the loop's first allocations)
    tracemalloc.start(32)
    try:
        before = tracemalloc.take_snapshot()
        relays = [Relay(client) for client in clients]  # type: ignore[arg-type]
        await _idle(relays)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # Only what the relays made: the process may run other tasks meanwhile (a fixture's
    # server of an earlier test, under xdist), whose allocations are not the relays'.
    kept = sum(
        stat.size_diff
        for stat in after.compare_to(before, "traceback")
        if any(frame.filename.endswith(("common.py", "test_relay.py")) for frame in stat.traceback)
    )
    per_relay = kept / len(relays)
    assert all(client.writes == [b"data: x\n\n"] for client in clients)
    assert per_relay < 2000, f"{per_relay:.0f} bytes per idle relay"
    for relay in warm + relays:
        await relay.close()


async def test_frames_pushed_while_a_write_is_under_way_go_in_the_next() -> None:
    started, go = asyncio.Event(), asyncio.Event()
    writes: list[bytes] = []

    class Held:
        async def write(self, data: bytes) -> None:
            started.set()
            await go.wait()
            writes.append(data)

    relay = Relay(Held())  # type: ignore[arg-type]
    relay.push(b"a")
    await started.wait()  # the writer is inside the write of "a"
    relay.push(b"b")
    relay.push(b"c")
    go.set()
    await asyncio.wait_for(relay.close(), 1)
    assert writes == [b"a", b"bc"]


async def test_a_push_racing_the_writers_cancellation_is_no_error() -> None:
    # The writer waits on its own future; cancelling the writer cancels that future before
    # the task itself has ended: a push in between must not try to wake it.
    client = _Client()
    relay = Relay(client)  # type: ignore[arg-type]
    await _idle([relay])
    relay.abandon()
    assert not relay.push(b"late")  # queued, and not past the limit
    await asyncio.sleep(0)
    relay.abandon()  # (the writer is cancelled now: nothing to retrieve)
    assert client.writes == [b"data: x\n\n"]


async def test_sse_headers_go_out_as_before_and_their_names_are_not_copied_per_stream() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from palyra.dialects.common import sse_response
    from palyra.types import RouteInfo

    kept: list[web.StreamResponse] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        route = RouteInfo(provider_id="p", model_id="m")
        response = await sse_response(request, route, 0.0)
        await response.write(b"data: x\n\n")
        await response.write_eof()
        kept.append(response)
        return response

    app = web.Application()
    app.router.add_get("/", stream)
    server = TestServer(app)
    await server.start_server()
    try:
        heads = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection(server.host, server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            heads.append((await reader.read()).split(b"\r\n\r\n", 1)[0])
            writer.close()
    finally:
        await server.close()
    lines = heads[0].split(b"\r\n")
    assert lines[:5] == [
        b"HTTP/1.1 200 OK",
        b"Content-Type: text/event-stream",
        b"Cache-Control: no-cache",
        b"X-Accel-Buffering: no",
        b"x-palyra-provider-id: p",
    ]
    assert lines[5:9] == [
        b"x-palyra-model-id: m",
        b"x-palyra-failover-count: 0",
        b"x-palyra-retry-count: 0",
        lines[8],
    ]
    assert lines[8].startswith(b"x-palyra-overhead-ms: ")
    # A response keeps its headers as long as its stream lasts: the names are shared, where a
    # plain str name made the CIMultiDict an istr of its own per response (and the writer an
    # encoded copy of it).
    first, second = (list(response.headers.keys()) for response in kept)
    assert all(a is b for a, b in zip(first[:8], second[:8], strict=True))
