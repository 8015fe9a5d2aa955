"""HttpProvider._events: the SSE events of a streamed answer, read off the upstream's body as
it arrives (the decoding itself is tests/test_sse.py's)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from palyra.config import ModelProviderConfig, ProviderConfig
from palyra.credentials import EnvCredentials
from palyra.errors import UpstreamProtocolError
from palyra.models import http
from palyra.models.openai import OpenAIProvider
from palyra.sse import SSEDecoder, SSEEvent


def _upstream(pieces: list[bytes]) -> web.Application:
    """Answers every POST with `pieces`, each written (and sent) on its own."""

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
            await asyncio.sleep(0.005)  # one read each on the other side, as far as can be
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    return app


async def _events(pieces: list[bytes]) -> list[SSEEvent]:
    server = TestServer(_upstream(pieces))
    await server.start_server()
    config = ProviderConfig(
        provider_id="oai",
        kind="openai_compatible",
        base_url=str(server.make_url("/v1")),
        allow_private_base_url=True,
        api_key_env="KEY",
    )
    try:
        async with aiohttp.ClientSession() as session:
            provider = OpenAIProvider(
                config,
                session=session,
                settings=ModelProviderConfig().settings_for(config),
                credentials=EnvCredentials({"KEY": "sk-test"}),
            )
            stream: AsyncIterator[SSEEvent] = provider._events(
                "/chat/completions", {"model": "m", "stream": True}
            )
            return [event async for event in stream]
    finally:
        await server.close()


async def test_events_split_anywhere_across_reads_come_whole_and_in_order() -> None:
    events = await _events(
        [
            b'data: {"a"',
            b": 1}\r",
            b"\n\r\nevent: named\r\ndata: two\r\n",
            b"data: lines\r\n\r\n: a comment\n\nda",
            b"ta: [DONE]\n\n",
        ]
    )
    assert events == [
        SSEEvent("message", '{"a": 1}'),
        SSEEvent("named", "two\nlines"),
        SSEEvent("message", "[DONE]"),
    ]


async def test_the_last_event_without_its_blank_line_is_kept() -> None:
    assert await _events([b"data: one\n\n", b"data: last"]) == [
        SSEEvent("message", "one"),
        SSEEvent("message", "last"),
    ]


async def test_a_line_past_the_decoders_limit_is_a_protocol_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http, "SSEDecoder", lambda: SSEDecoder(max_event_bytes=100))
    with pytest.raises(UpstreamProtocolError, match="broken event stream"):
        await _events([b"data: " + b"x" * 80, b"x" * 80])
