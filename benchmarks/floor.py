"""The floor: the least a Python gateway on aiohttp can do, as a reference in the same run.

    python benchmarks/floor.py --port 9200 --upstream http://127.0.0.1:9100 [--loop uvloop]

A bare pass-through: one pooled aiohttp client session, the request body forwarded as it
came, the answer (or the stream, chunk by chunk as it arrives) sent back as it came. No
auth, no parsing, no routing, no logs, no metrics. What palyrad spends beyond this is the
cost of its features; what this spends is aiohttp's and the kernel's.

It runs on asyncio's own event loop unless told `--loop uvloop` (run.py's `--floor-loop`):
on uvloop it spends 6-12% less CPU per request here (2026-11-26: whole chat at 16
concurrent 0.141 against 0.156 ms, streams 0.304 against 0.325, embeddings 0.160 against
0.186), and palyrad runs on uvloop where it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    url = request.app[UPSTREAM] + request.path
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-floor"}
    async with request.app[SESSION].post(url, data=body, headers=headers) as upstream:
        content_type = upstream.headers.get("Content-Type", "application/json")
        if not content_type.startswith("text/event-stream"):
            return web.Response(
                body=await upstream.read(),
                status=upstream.status,
                headers={"Content-Type": content_type},
            )
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    app = web.Application()
    app[UPSTREAM] = args.upstream
    app.router.add_get("/healthz", ready)
    app.router.add_post("/{tail:.*}", forward)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        app[SESSION] = session
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        # The same listen backlog as palyrad: a burst of connections is not the difference.
        await web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()


if __name__ == "__main__":
    options = parse_args()
    if options.loop == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(main(options))
