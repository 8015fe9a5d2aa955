"""A real OAuth 2.0 authorization server on loopback, built with authlib's Flask integration.

It enforces PKCE with S256 for its public client (no challenge, or `plain`, is refused at the
authorize endpoint; a wrong verifier is refused at the token endpoint), issues refresh tokens
and rotates them on every refresh (the old one is revoked), and approves every authorization
request for one fixed user, so a test drives `/authorize` with a plain HTTP client.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, request
from werkzeug.serving import make_server

CLIENT_ID = "palyra-test-client"
USER_ID = "user-1"


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    redirect_uris: list[str] = field(default_factory=list)
    scope: str = "openid profile email offline_access"

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # Any loopback callback: the daemon's port is only known once a test starts it.
        return redirect_uri.startswith("http://127.0.0.1:")

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user_id: str
    code_challenge: str | None
    code_challenge_method: str | None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class Token:
    access_token: str
    refresh_token: str | None
    client_id: str
    scope: str
    user_id: str
    revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return 3600

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return self.revoked


class StrictCodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE required, S256 only (authlib alone also allows `plain` and no challenge)."""

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge'")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256")
        super().validate_code_challenge(grant, redirect_uri)


class OAuthTestServer:
    def __init__(self, expires_in: int = 3600) -> None:
        self.clients = {CLIENT_ID: Client(CLIENT_ID)}
        self.codes: dict[str, Code] = {}
        self.tokens: list[Token] = []
        self.token_requests: list[dict[str, str]] = []
        self.authorize_requests: list[dict[str, str]] = []
        self.expires_in = expires_in
        self.token_delay_s = 0.0
        self.fail_with_status = 0  # answer the token endpoint with this error status
        self._lock = threading.Lock()
        self.app = self._build()
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OAuthTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(5)

    def issued_access_tokens(self) -> list[str]:
        return [t.access_token for t in self.tokens]

    def revoke_everything(self) -> None:
        for token in self.tokens:
            token.revoked = True

    def _build(self) -> Flask:
        app = Flask("oauth-test-server")
        app.config["OAUTH2_REFRESH_TOKEN_GENERATOR"] = True
        server_ref = self

        def save_token(token: dict[str, Any], req: Any) -> None:
            with server_ref._lock:
                server_ref.tokens.append(
                    Token(
                        access_token=token["access_token"],
                        refresh_token=token.get("refresh_token"),
                        client_id=req.client.client_id,
                        scope=token.get("scope", ""),
                        user_id=USER_ID,
                    )
                )

        app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {
            "authorization_code": self.expires_in,
            "refresh_token": self.expires_in,
        }
        server = AuthorizationServer(app, query_client=self.clients.get, save_token=save_token)

        class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["none"]

            def save_authorization_code(self, code: str, req: Any) -> None:
                data = req.payload.data
                server_ref.codes[code] = Code(
                    code=code,
                    client_id=req.client.client_id,
                    redirect_uri=req.payload.redirect_uri,
                    scope=req.payload.scope or "",
                    user_id=USER_ID,
                    code_challenge=data.get("code_challenge"),
                    code_challenge_method=data.get("code_challenge_method"),
                )

            def query_authorization_code(self, code: str, client: Client) -> Code | None:
                found = server_ref.codes.get(code)
                return found if found and found.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code: Code) -> None:
                server_ref.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: Code) -> str:
                return authorization_code.user_id

        class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["none"]
            INCLUDE_NEW_REFRESH_TOKEN = True

            def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
                for token in server_ref.tokens:
                    if token.refresh_token == refresh_token and not token.revoked:
                        return token
                return None

            def authenticate_user(self, credential: Token) -> str:
                return credential.user_id

            def revoke_old_credential(self, credential: Token) -> None:
                credential.revoked = True

        server.register_grant(AuthorizationCodeGrant, [StrictCodeChallenge(required=True)])
        server.register_grant(RefreshTokenGrant)

        @app.get("/oauth/authorize")
        def authorize() -> Any:
            server_ref.authorize_requests.append(dict(request.args))
            oauth_request = server.create_oauth2_request(None)
            try:
                grant = server.get_authorization_grant(oauth_request)
            except OAuth2Error as error:
                return server.handle_error_response(oauth_request, error)
            return server.create_authorization_response(
                oauth_request, grant_user=USER_ID, grant=grant
            )

        @app.post("/oauth/token")
        def issue_token() -> Any:
            server_ref.token_requests.append(dict(request.form))
            if server_ref.token_delay_s:
                time.sleep(server_ref.token_delay_s)
            if server_ref.fail_with_status:
                body = {"error": "server_error", "error_description": "try later"}
                return body, server_ref.fail_with_status
            return server.create_token_response()

        return app


def random_state() -> str:
    return secrets.token_hex(8)
