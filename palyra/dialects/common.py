"""What every dialect's routes share: the `x-palyra-*` headers, JSON answers, SSE answers and
the relay that writes a stream's frames."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import orjson
from aiohttp import web
from multidict import istr

from palyra.types import RouteInfo


def random_id() -> str:
    """32 hex digits. Request and completion ids only need to be unique, not secret, so they
    come from the PRNG: uuid4 reads os.urandom, a system call per id (5x the cost)."""
    return f"{random.getrandbits(128):032x}"


# Header names as istr, made once: named by a plain str, a header costs the response's
# CIMultiDict an istr of its own and the header writer an encoded copy of that, at every
# response, and a stream keeps its response (and them) for as long as it lasts (1.4 KB for a
# stream's eight, measured). The same bytes go out.
PROVIDER_ID = istr("x-palyra-provider-id")
MODEL_ID = istr("x-palyra-model-id")
FAILOVER_COUNT = istr("x-palyra-failover-count")
RETRY_COUNT = istr("x-palyra-retry-count")
OVERHEAD_MS = istr("x-palyra-overhead-ms")
X_REQUEST_ID = istr("x-request-id")


def route_headers(route: RouteInfo, started: float) -> dict[str, str]:
    overhead_ms = max(0.0, (time.perf_counter() - started - route.upstream_s) * 1000)
    return {
        PROVIDER_ID: route.provider_id,
        MODEL_ID: route.model_id,
        FAILOVER_COUNT: str(route.failovers),
        RETRY_COUNT: str(route.retries),
        OVERHEAD_MS: f"{overhead_ms:.3f}",
    }


def json_response(body: Any, headers: dict[str, str], status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


# (Named by istr, as the route's headers are.)
_SSE_HEADERS: dict[str, str] = {
    istr("Content-Type"): "text/event-stream",
    istr("Cache-Control"): "no-cache",
    istr("X-Accel-Buffering"): "no",
}


async def sse_response(
    request: web.Request, route: RouteInfo, started: float
) -> web.StreamResponse:
    """An SSE answer, prepared (its headers sent) with the route's headers."""
    response = web.StreamResponse(headers={**_SSE_HEADERS, **route_headers(route, started)})
    await response.prepare(request)
    return response


class Relay:
    """Writes a stream's frames to the client in as few writes as keep it live.

    The handler hands frames over without waiting; a writer task sends all that has piled up
    whenever it gets to run, which is as soon as the handler waits for upstream. So nothing
    waits for more to arrive, and the events of one upstream read leave in one write: one
    system call where writing each chunk made fifty (measured in benchmarks/README.md).

    A relay lives as long as its stream, so it keeps little between writes: the writer's
    wait and the handler's are bare futures made when one waits, where an `asyncio.Event`
    each kept a 64-slot deque (0.76 KB) and its dict for the life of the stream."""

    __slots__ = ("_closing", "_pending", "_response", "_size", "_taken", "_task", "_wakeup")

    # Past this much unsent, the handler waits for the writer: a slow client slows the
    # reading of upstream, as writing directly would.
    LIMIT = 64 * 1024

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response
        self._pending: list[bytes] = []
        self._size = 0
        self._closing = False
        self._wakeup: asyncio.Future[None] | None = None  # the idle writer's, for frames or close
        self._taken: asyncio.Future[None] | None = None  # the handler's, for the backlog to go
        self._task = asyncio.get_running_loop().create_task(self._run())

    def push(self, frames: bytes) -> bool:
        """Queue frames for the writer; True when the backlog is past `LIMIT`, and the caller
        should wait for `taken` before pushing more. (Not a coroutine: a stream pushes for
        every event, and most never need to wait.)"""
        if self._task.done():
            self._task.result()  # the write failed (client gone): raise that here
        self._pending.append(frames)
        self._size += len(frames)
        self._wake()
        return self._size > self.LIMIT

    async def taken(self) -> None:
        """Returns when the writer has taken what was pending; raises what stopped it, if it
        stopped (the client went away) instead."""
        if self._size > self.LIMIT:
            if self._taken is None:
                self._taken = self._task.get_loop().create_future()
            await asyncio.wait((self._taken, self._task), return_when=asyncio.FIRST_COMPLETED)
            if self._task.done():
                self._task.result()

    async def close(self) -> None:
        """Returns when everything sent has been written."""
        self._closing = True
        self._wake()
        await self._task

    def abandon(self) -> None:
        if not self._task.done():
            self._task.cancel()  # the handler failed or was cancelled (client went away)
        elif not self._task.cancelled():
            self._task.exception()  # retrieved: the handler has seen it, or does not care

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():  # (cancelled with the writer, say)
                wakeup.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                # (Frames pushed while a write was under way are in _pending already: the
                # writer only waits when there is none.)
                self._wakeup = loop.create_future()
                await self._wakeup
                continue
            pending, self._pending, self._size = self._pending, [], 0
            taken = self._taken
            if taken is not None:
                self._taken = None
                if not taken.done():
                    taken.set_result(None)
            await self._response.write(pending[0] if len(pending) == 1 else b"".join(pending))
