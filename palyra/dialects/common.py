"""What every dialect's routes share: the `x-palyra-*` headers, JSON answers, SSE answers and
the relay that writes a stream's frames."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import orjson
from aiohttp import web

from palyra.types import RouteInfo


def random_id() -> str:
    """32 hex digits. Request and completion ids only need to be unique, not secret, so they
    come from the PRNG: uuid4 reads os.urandom, a system call per id (5x the cost)."""
    return f"{random.getrandbits(128):032x}"


def route_headers(route: RouteInfo, started: float) -> dict[str, str]:
    overhead_ms = max(0.0, (time.perf_counter() - started - route.upstream_s) * 1000)
    return {
        "x-palyra-provider-id": route.provider_id,
        "x-palyra-model-id": route.model_id,
        "x-palyra-failover-count": str(route.failovers),
        "x-palyra-retry-count": str(route.retries),
        "x-palyra-overhead-ms": f"{overhead_ms:.3f}",
    }


def json_response(body: Any, headers: dict[str, str], status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


async def sse_response(
    request: web.Request, route: RouteInfo, started: float
) -> web.StreamResponse:
    """An SSE answer, prepared (its headers sent) with the route's headers."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            **route_headers(route, started),
        }
    )
    await response.prepare(request)
    return response


class Relay:
    """Writes a stream's frames to the client in as few writes as keep it live.

    The handler hands frames over without waiting; a writer task sends all that has piled up
    whenever it gets to run, which is as soon as the handler waits for upstream. So nothing
    waits for more to arrive, and the events of one upstream read leave in one write: one
    system call where writing each chunk made fifty (measured in benchmarks/README.md)."""

    # Past this much unsent, the handler waits for the writer: a slow client slows the
    # reading of upstream, as writing directly would.
    LIMIT = 64 * 1024

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response
        self._pending: list[bytes] = []
        self._size = 0
        self._closing = False
        self._ready = asyncio.Event()  # frames are pending, or closing
        self._taken = asyncio.Event()  # the writer took what was pending
        self._task = asyncio.get_running_loop().create_task(self._run())

    def push(self, frames: bytes) -> bool:
        """Queue frames for the writer; True when the backlog is past `LIMIT`, and the caller
        should wait for `taken` before pushing more. (Not a coroutine: a stream pushes for
        every event, and most never need to wait.)"""
        if self._task.done():
            self._task.result()  # the write failed (client gone): raise that here
        self._pending.append(frames)
        self._size += len(frames)
        self._ready.set()
        return self._size > self.LIMIT

    async def taken(self) -> None:
        """Returns when the writer has taken what was pending; raises what stopped it, if it
        stopped (the client went away) instead."""
        if self._size > self.LIMIT:
            self._taken.clear()
            waiting = asyncio.ensure_future(self._taken.wait())
            try:
                await asyncio.wait((waiting, self._task), return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
            if self._task.done():
                self._task.result()

    async def close(self) -> None:
        """Returns when everything sent has been written."""
        self._closing = True
        self._ready.set()
        await self._task

    def abandon(self) -> None:
        if not self._task.done():
            self._task.cancel()  # the handler failed or was cancelled (client went away)
        elif not self._task.cancelled():
            self._task.exception()  # retrieved: the handler has seen it, or does not care

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            pending, self._pending, self._size = self._pending, [], 0
            self._taken.set()
            await self._response.write(pending[0] if len(pending) == 1 else b"".join(pending))
