"""The token endpoint's answer as a hostile or broken server may give it, over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from palyra.auth.token_endpoint import MAX_EXPIRES_IN_S, TokenEndpointError, request_tokens


@dataclass
class TokenServer:
    url: str = ""
    body: bytes = field(default=b"{}")


@pytest.fixture
async def token_server() -> AsyncIterator[TokenServer]:
    """A token endpoint that answers whatever body the test sets."""
    state = TokenServer()

    async def token(request: web.Request) -> web.Response:
        return web.Response(body=state.body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/token", token)
    server = TestServer(app)
    await server.start_server()
    state.url = str(server.make_url("/token"))
    yield state
    await server.close()


@pytest.mark.parametrize(
    ("expires_in", "expected"),
    [
        (3600, 3600),
        (1e30, MAX_EXPIRES_IN_S),  # overflowed the 64-bit column the expiry is stored in
        (2**63, MAX_EXPIRES_IN_S),
        (True, None),
        (-5, None),
        ("3600", None),
        (None, None),
    ],
)
async def test_a_token_lifetime_is_taken_only_within_bounds(
    token_server: TokenServer, expires_in: object, expected: int | None
) -> None:
    token_server.body = orjson.dumps({"access_token": "at-1", "expires_in": expires_in})
    async with aiohttp.ClientSession() as http:
        tokens = await request_tokens(http, token_server.url, {"grant_type": "x"})
    assert tokens.access_token == "at-1"
    assert tokens.expires_in_s == expected


@pytest.mark.parametrize(
    "tokens",
    [
        {"access_token": "at\r\nX-Injected: 1"},  # found by the fuzz suite: a 500 in the callback
        {"access_token": "at\x00"},
        {"access_token": "jeton-été"},
        {"access_token": "at-1", "refresh_token": "rt\n"},
    ],
)
async def test_a_token_a_header_cannot_carry_is_refused(
    token_server: TokenServer, tokens: dict[str, str]
) -> None:
    token_server.body = orjson.dumps(tokens)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TokenEndpointError) as caught:
            await request_tokens(http, token_server.url, {"grant_type": "x"})
    assert caught.value.error == "invalid_response"
    assert "characters a token cannot have" in caught.value.description
    assert "\r" not in str(caught.value) and "été" not in str(caught.value)
