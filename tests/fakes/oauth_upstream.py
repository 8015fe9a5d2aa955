"""A fake LLM upstream that takes the access tokens a test OAuth server issued, for the tests
of providers signed in with OAuth (tests/fakes/upstream.py has the upstream itself)."""

from __future__ import annotations

from typing import Literal

from aiohttp import web

from tests.auth.oauth_server import OAuthTestServer
from tests.fakes.upstream import ErrorReply, FakeUpstream, _error


class TokenUpstream(FakeUpstream):
    """Accepts access tokens the OAuth server issued (from `min_index` on) and `static_keys`,
    as a Bearer token or (Anthropic) x-api-key."""

    def __init__(self, oauth: OAuthTestServer, static_keys: tuple[str, ...] = ()) -> None:
        super().__init__(api_key=None)
        self.oauth = oauth
        self.static_keys = set(static_keys)
        self.min_index = 0

    def _check_auth(  # type: ignore[override]
        self, request: web.Request, family: Literal["openai", "anthropic"]
    ) -> web.Response | None:
        headers = request.headers
        token = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        valid = self.oauth.issued_access_tokens()[self.min_index :]
        if token and (token in valid or token in self.static_keys):
            return None
        return _error(family, ErrorReply(401, code="invalid_api_key"))
