"""The Python load generator: runs in its own process, drives one target with N concurrent
clients, and prints one JSON line of figures.

Used for what wrk cannot see (time to first and last streamed chunk, many open streams), and
for whole requests when wrk is not installed.

    python benchmarks/loadgen.py URL --body-file F [--token T] [--header "Name: value"]...
        [--concurrency N] [--duration S | --requests N] [--stream [--stream-end TEXT]]
        [--timeout S] [--raw]

A stream counts as done when its last event holds the --stream-end text (`data: [DONE]` for
chat completions, `response.completed` for Responses, `message_stop` for Anthropic
Messages); one that ends without it counts as an error.

With --raw (the 5,000 open streams), each stream is a bare asyncio protocol on a connection
of its own, on uvloop when installed: aiohttp's client costs per event about what a gateway's
relay does, which a client sharing two cores with the gateway takes from it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

# Enough of a stream's end to hold its whole last event (a Responses stream's last event
# carries the whole response).
TAIL_BYTES = 16384


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def summary_ms(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {f"p{q}": percentile(ordered, q) for q in (50, 90, 99)} | {
        "max": ordered[-1] if ordered else None
    }


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.body = open(args.body_file, "rb").read()  # noqa: SIM115 - read once, up front
        self.headers = {"Content-Type": "application/json"}
        if args.token:
            self.headers["Authorization"] = f"Bearer {args.token}"
        for header in args.header:
            name, _, value = header.partition(":")
            self.headers[name.strip()] = value.strip()
        self.stream_end = args.stream_end.encode()
        self.latency: list[float] = []
        self.ttfc: list[float] = []
        self.errors = 0
        self.error_samples: list[str] = []
        self.done = 0
        self.issued = 0

    def _failed(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:300])

    async def one(self, http: aiohttp.ClientSession) -> None:
        started = time.perf_counter()
        first: float | None = None
        try:
            async with http.post(self.args.url, data=self.body, headers=self.headers) as response:
                if response.status != 200:
                    self._failed(f"status {response.status}: {(await response.read())[:200]!r}")
                    return
                if self.args.stream:
                    tail = b""
                    async for data in response.content.iter_any():
                        if first is None:
                            first = time.perf_counter()
                        tail = (tail + data)[-TAIL_BYTES:]
                    # The last event: what follows the last blank line but one.
                    last = tail.rstrip().rpartition(b"\n\n")[2]
                    if self.stream_end not in last:
                        self._failed(f"stream ended without {self.stream_end!r}: {tail[-200:]!r}")
                        return
                else:
                    await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        ended = time.perf_counter()
        self.latency.append((ended - started) * 1000)
        if first is not None:
            self.ttfc.append((first - started) * 1000)
        self.done += 1

    async def worker(self, http: aiohttp.ClientSession, deadline: float) -> None:
        while time.perf_counter() < deadline:
            if self.args.requests and self.issued >= self.args.requests:
                return
            self.issued += 1
            await self.one(http)

    async def main(self) -> dict[str, Any]:
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.args.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            # Warm-up: open connections and let the target's caches fill, untimed.
            warm = min(self.args.concurrency, 64)
            await asyncio.gather(*(self.one(http) for _ in range(warm)))
            self.latency.clear()
            self.ttfc.clear()
            self.errors, self.error_samples, self.done, self.issued = 0, [], 0, 0
            started = time.perf_counter()
            deadline = started + (self.args.duration or self.args.timeout)
            await asyncio.gather(
                *(self.worker(http, deadline) for _ in range(self.args.concurrency))
            )
            elapsed = time.perf_counter() - started
        return self.figures(elapsed, stream=self.args.stream)

    def figures(self, elapsed: float, *, stream: bool) -> dict[str, Any]:
        """What a run prints: counts, rate, latency and (streams) time to first chunk."""
        return {
            "requests": self.done,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "seconds": elapsed,
            "rps": self.done / elapsed if elapsed else 0.0,
            "latency_ms": summary_ms(self.latency),
            "ttfc_ms": summary_ms(self.ttfc) if stream else None,
        }


def peak_open(spans: list[tuple[float, float]]) -> int:
    """The most streams that were open at once: between their first byte and their end."""
    events = sorted([(first, 1) for first, _ in spans] + [(end, -1) for _, end in spans])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


class RawStream(asyncio.Protocol):
    """One streamed request on a connection of its own: the request written at once, the
    answer's bytes kept only as far as needed (the status line, the first byte of the body,
    the last bytes); done when the chunked body's terminator arrives."""

    def __init__(self, request: bytes, done: asyncio.Future[None]) -> None:
        self.request = request
        self.done = done
        self.started = time.perf_counter()
        self.first: float | None = None
        self.ended: float | None = None
        self.head = b""
        self.headed = False  # the head (status line and headers) read whole
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.headed:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            data, self.head, self.headed = self.head[end + 4 :], self.head[:end], True
            if not self.head.startswith(b"HTTP/1.1 200"):
                self.tail = data
                self._finish()
                return
        if not data:
            return  # the head alone: the body's first byte is still to come
        if self.first is None:
            self.first = time.perf_counter()
        self.tail = (self.tail + data)[-TAIL_BYTES:]
        if self.tail.endswith(b"\r\n0\r\n\r\n"):
            self.ended = time.perf_counter()
            self._finish()

    def _finish(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


class RawStreams(Run):
    """--raw: N streams at once, each on a connection of its own, on a bare asyncio protocol
    (what aiohttp's client spends per event, about as much as a gateway's relay, would take
    from the gateway on two cores). Its figures mean what Run's do: time to the first byte of
    the body and to the chunked body's end, and a stream counts only if its last bytes hold
    --stream-end."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        url = urlsplit(args.url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        headers = {"Host": f"{self.host}:{self.port}", **self.headers}
        headers["Content-Length"] = str(len(self.body))
        lines = [f"POST {url.path or '/'} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body
        # (first byte, end) of each stream that ended well: how many were open at once.
        self.spans: list[tuple[float, float]] = []

    async def raw_one(self) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        stream = RawStream(self.request, done)
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: stream, self.host, self.port), self.args.timeout
            )
            await asyncio.wait_for(done, self.args.timeout)
        except (OSError, TimeoutError) as exc:
            if stream.transport is not None:
                stream.transport.close()
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        if not stream.head.startswith(b"HTTP/1.1 200"):
            status = stream.head.split(b"\r\n", 1)[0] or b"no answer"
            self._failed(f"{status.decode(errors='replace')}: {stream.tail[:200]!r}")
            return
        if stream.ended is None or stream.first is None:
            self._failed(f"stream cut off: {stream.tail[-200:]!r}")
            return
        # The last event, framing and all: the last few hundred bytes before the terminator.
        if self.stream_end not in stream.tail[-512:]:
            self._failed(f"stream ended without {self.stream_end!r}: {stream.tail[-200:]!r}")
            return
        self.latency.append((stream.ended - stream.started) * 1000)
        self.ttfc.append((stream.first - stream.started) * 1000)
        self.spans.append((stream.first, stream.ended))
        self.done += 1

    async def main(self) -> dict[str, Any]:
        warm = min(self.args.concurrency, 64)
        await asyncio.gather(*(self.raw_one() for _ in range(warm)))
        self.latency.clear()
        self.ttfc.clear()
        self.errors, self.error_samples, self.done = 0, [], 0
        self.spans.clear()
        started = time.perf_counter()
        await asyncio.gather(*(self.raw_one() for _ in range(self.args.requests)))
        elapsed = time.perf_counter() - started
        return {"peak_open": peak_open(self.spans), **self.figures(elapsed, stream=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--token", default="", help="sent as a bearer token")
    parser.add_argument(
        "--header", action="append", default=[], help='"Name: value", sent with every request'
    )
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=0.0)
    parser.add_argument("--requests", type=int, default=0, help="stop after this many")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument(
        "--stream-end", default="data: [DONE]", help="what the last event of a stream holds"
    )
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument(
        "--raw",
        action="store_true",
        help="open streams (--requests) on a bare asyncio protocol, on uvloop when installed",
    )
    args = parser.parse_args()
    if args.raw:
        if not (args.stream and args.requests):
            parser.error("--raw is for open streams: give --stream and --requests")
        with contextlib.suppress(ImportError):
            # As the mock: what the client spends per event it takes from the gateway on a
            # machine of two cores.
            import uvloop

            uvloop.install()
        result = asyncio.run(RawStreams(args).main())
    else:
        result = asyncio.run(Run(args).main())
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
