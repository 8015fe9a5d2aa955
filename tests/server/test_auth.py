"""Authentication and console sessions as a hostile client meets them, over real HTTP.

Undecodable bytes in headers are sent on a raw socket (client libraries refuse to); a
`palyrad` process shows that none of it writes a traceback into the log. Sign-outs are
durable: refused after a restart, and by the other daemons sharing the store.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from palyra.config import PalyraConfig, validate_config
from palyra.daemon import build_app
from palyra.server.auth import api_key_matches, bearer_matches
from palyra.server.sessions import COOKIE, SessionSigner
from tests.conftest import ADMIN_TOKEN, GatewayFactory, gateway_config
from tests.fakes.proxy import CuttableProxy
from tests.state.conftest import drop_schema, postgres_schema_url
from tests.support.process import Daemon, clean_env, start_daemon

VAULT_KEY = base64.b64encode(b"v" * 32).decode()


# -- talking raw HTTP -------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(method: str, path: bytes, *headers: bytes) -> bytes:
    lines = [
        method.encode() + b" " + path + b" HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Connection: close",
        *headers,
    ]
    if method in ("POST", "DELETE"):
        lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def send_raw(port: int, request: bytes) -> RawResponse:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in header_lines]
    return RawResponse(int(status_line.split()[1]), headers, body)  # type: ignore[arg-type]


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def signed(payload: bytes, admin_token: str = ADMIN_TOKEN) -> bytes:
    """A cookie signed as a daemon would sign it: what only someone with the token can make."""
    key = hmac.new(admin_token.encode(), b"palyra-console-session-v1", hashlib.sha256).digest()
    return b64(payload) + b"." + b64(hmac.new(key, payload, hashlib.sha256).digest())


def cookie_header(value: bytes) -> bytes:
    return b"Cookie: " + COOKIE.encode() + b"=" + value


@dataclass
class SignedIn:
    cookie: str
    csrf: str
    set_cookie: str


async def sign_in(base_url: str, **kwargs: Any) -> SignedIn:
    async with (
        aiohttp.ClientSession() as http,
        http.post(base_url + "/console/session", json={"token": ADMIN_TOKEN}, **kwargs) as r,
    ):
        assert r.status == 200, await r.text()
        body = await r.json()
        return SignedIn(r.cookies[COOKIE].value, body["csrf_token"], r.headers["Set-Cookie"])


async def console_status(base_url: str, cookie: str) -> int:
    """The status of a console API request made with this session cookie alone."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            base_url + "/console/v1/models/status", headers={"Cookie": f"{COOKIE}={cookie}"}
        ) as r,
    ):
        return r.status


async def session_probe(base_url: str, cookie: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(base_url + "/console/session", headers={"Cookie": f"{COOKIE}={cookie}"}) as r,
    ):
        assert r.status == 200
        return dict(await r.json())


async def sign_out(base_url: str, session: SignedIn) -> aiohttp.ClientResponse:
    async with (
        aiohttp.ClientSession() as http,
        http.delete(
            base_url + "/console/session",
            headers={"Cookie": f"{COOKIE}={session.cookie}", "X-CSRF-Token": session.csrf},
        ) as r,
    ):
        await r.read()
        return r


# -- hostile input ----------------------------------------------------------------------------

STATUS = b"/console/v1/models/status"
PROBE = b"/console/session"
NOT_SIGNED_IN = {"signed_in": False}
INFINITE_EXP = b'{"sid":"abc","exp":1e999}'
DEEP = b"[" * 3000 + b"]" * 3000


@dataclass(frozen=True)
class Hostile:
    method: str
    path: bytes
    # Given the (valid) signed-in session, the headers to send.
    headers: Callable[[SignedIn], list[bytes]]
    status: int
    body: dict[str, Any] | None = None


HOSTILE: dict[str, Hostile] = {
    "bearer with an undecodable byte": Hostile(
        "GET", b"/v1/models", lambda s: [b"Authorization: Bearer \xff"], 401
    ),
    "bearer with non-ASCII text": Hostile(
        "GET", b"/v1/models", lambda s: [b"Authorization: Bearer \xc3\xa9t\xc3\xa9"], 401
    ),
    "cookie signature non-ASCII": Hostile(
        "GET", STATUS, lambda s: [cookie_header(b64(INFINITE_EXP) + b".\xc3\xa9")], 401
    ),
    "cookie signature undecodable": Hostile(
        "GET", STATUS, lambda s: [cookie_header(s.cookie.encode()[:-2] + b"\xff\xfe")], 401
    ),
    "cookie signature non-ASCII, session probe": Hostile(
        "GET",
        PROBE,
        lambda s: [cookie_header(b64(INFINITE_EXP) + b".\xc3\xa9")],
        200,
        NOT_SIGNED_IN,
    ),
    "cookie exp 1e999": Hostile(
        "GET", STATUS, lambda s: [cookie_header(b64(INFINITE_EXP) + b".c2ln")], 401
    ),
    "cookie exp 1e999, session probe": Hostile(
        "GET", PROBE, lambda s: [cookie_header(b64(INFINITE_EXP) + b".c2ln")], 200, NOT_SIGNED_IN
    ),
    "signed cookie exp 1e999": Hostile(
        "GET", STATUS, lambda s: [cookie_header(signed(INFINITE_EXP))], 401
    ),
    "signed cookie exp 1e999, session probe": Hostile(
        "GET", PROBE, lambda s: [cookie_header(signed(INFINITE_EXP))], 200, NOT_SIGNED_IN
    ),
    "signed cookie with a lone surrogate for id, session probe": Hostile(
        "GET",
        PROBE,
        lambda s: [cookie_header(signed(b'{"sid":"\\ud800","exp":4102444800}'))],
        200,
        NOT_SIGNED_IN,
    ),
    "cookie nested 3000 deep": Hostile(
        "GET", STATUS, lambda s: [cookie_header(b64(DEEP) + b".c2ln")], 401
    ),
    "cookie nested 3000 deep, session probe": Hostile(
        "GET", PROBE, lambda s: [cookie_header(b64(DEEP) + b".c2ln")], 200, NOT_SIGNED_IN
    ),
    "static name of 300 characters": Hostile(
        "GET", b"/console/static/" + b"a" * 300 + b".js", lambda s: [], 404
    ),
    "static name not shipped": Hostile("GET", b"/console/static/sessions.py", lambda s: [], 404),
    "static name with encoded traversal": Hostile(
        "GET", b"/console/static/..%2F..%2Fserver%2Fapp.js", lambda s: [], 404
    ),
    "x-api-key undecodable": Hostile("POST", b"/v1/messages", lambda s: [b"x-api-key: \xff"], 401),
    "x-api-key non-ASCII": Hostile("GET", b"/v1/models", lambda s: [b"x-api-key: \xc3\xa9"], 401),
    "x-api-key the admin token": Hostile(
        "GET", b"/v1/models", lambda s: [b"x-api-key: " + ADMIN_TOKEN.encode()], 200
    ),
    "x-api-key the admin token, console API": Hostile(
        "GET", STATUS, lambda s: [b"x-api-key: " + ADMIN_TOKEN.encode()], 200
    ),
    "CSRF token non-ASCII on a valid session": Hostile(
        "POST",
        b"/console/v1/models/discover",
        lambda s: [cookie_header(s.cookie.encode()), b"X-CSRF-Token: \xc3\xa9" + s.csrf.encode()],
        403,
    ),
    "CSRF token undecodable on a valid session": Hostile(
        "POST",
        b"/console/v1/models/discover",
        lambda s: [cookie_header(s.cookie.encode()), b"X-CSRF-Token: \xff"],
        403,
    ),
}


def check(name: str, case: Hostile, response: RawResponse) -> None:
    assert response.status == case.status, f"{name}: {response.status} {response.body[:300]!r}"
    if case.body is not None:
        assert response.json() == case.body, name
    assert b"Traceback" not in response.body


@pytest.fixture
async def console(tmp_path: Path, start_gateway: GatewayFactory) -> TestServer:
    return await start_gateway(gateway_config(None, tmp_path / "state"))


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_input_is_a_plain_refusal(console: TestServer, name: str) -> None:
    session = await sign_in(str(console.make_url("")))
    case = HOSTILE[name]
    response = await send_raw(
        console.port or 0, raw_request(case.method, case.path, *case.headers(session))
    )
    check(name, case, response)


async def test_the_shipped_assets_are_still_served(console: TestServer) -> None:
    async with aiohttp.ClientSession() as http:
        for name in ("app.js", "app.css", "index.html"):
            async with http.get(console.make_url(f"/console/static/{name}")) as r:
                assert r.status == 200, name
                assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")


@pytest.fixture
async def palyrad(tmp_path: Path) -> AsyncIterator[Daemon]:
    daemon = await start_daemon(tmp_path, [], clean_env(tmp_path, PALYRA_ADMIN_TOKEN=ADMIN_TOKEN))
    yield daemon
    if daemon.process.returncode is None:
        daemon.process.kill()
        await daemon.process.wait()


async def test_hostile_input_writes_no_traceback_to_the_log(palyrad: Daemon) -> None:
    session = await sign_in(palyrad.url)
    for name, case in HOSTILE.items():
        request = raw_request(case.method, case.path, *case.headers(session))
        check(name, case, await send_raw(palyrad.port, request))
    palyrad.process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(palyrad.process.wait(), 20)
    raw_log = palyrad.log_path.read_text()
    assert "Traceback" not in raw_log
    lines = palyrad.log_lines()
    assert [line for line in lines if line.get("level") in ("error", "critical")] == []
    # Nor did any of it fall through to the safety net of the auth check.
    assert [line for line in lines if line.get("event") == "auth_check_failed"] == []
    statuses = [
        line["status"]
        for line in lines
        if line.get("event") == "request" and line.get("path") != "/healthz"
    ]
    assert len(statuses) == len(HOSTILE) + 1  # and the sign-in
    assert all(isinstance(status, int) and status < 500 for status in statuses)


# -- the same, one layer down -----------------------------------------------------------------


@pytest.mark.parametrize(
    "cookie",
    [
        b64(INFINITE_EXP).decode() + ".é",
        b64(INFINITE_EXP).decode() + ".\udcff",
        b64(INFINITE_EXP).decode() + ".c2ln",
        signed(INFINITE_EXP).decode(),
        signed(b'{"sid":"abc","exp":NaN}').decode(),
        signed(b'{"sid":"abc","exp":true}').decode(),
        signed(b'{"sid":["abc"],"exp":4102444800}').decode(),
        signed(b'{"sid":"\\ud800","exp":4102444800}').decode(),
        signed(b'{"sid":"a b","exp":4102444800}').decode(),
        signed(b'{"sid":"abc","exp":' + b"9" * 30 + b"}").decode(),
        signed(b'{"sid":"abc","exp":4102444800.5}').decode(),
        signed(b'{"sid":"abc"}').decode(),
        signed(b'"abc"').decode(),
        signed(b"[1, 2]").decode(),
        signed(b"\xff\xfe").decode(),
        b64(DEEP).decode() + ".c2ln",
        "not base64 at all!.x",
        ".",
        "",
    ],
)
def test_a_malformed_cookie_is_no_session(cookie: str) -> None:
    assert SessionSigner(ADMIN_TOKEN).verify(cookie) is None


def test_a_signed_cookie_is_a_session_until_it_expires() -> None:
    now = [1_000_000.0]
    signer = SessionSigner(ADMIN_TOKEN, clock=lambda: now[0])
    cookie, session = signer.issue()
    assert signer.verify(cookie) == session
    assert SessionSigner("another-token").verify(cookie) is None
    now[0] = session.expires_at - 1
    assert signer.verify(cookie) == session
    now[0] = session.expires_at
    assert signer.verify(cookie) is None


def test_csrf_token_check_takes_any_text() -> None:
    _, session = SessionSigner(ADMIN_TOKEN).issue()
    assert SessionSigner.csrf_ok(session, session.csrf_token)
    for header in ("é" + session.csrf_token, "\udcff", "", None):
        assert not SessionSigner.csrf_ok(session, header)


def test_bearer_check_takes_any_text() -> None:
    assert bearer_matches(f"Bearer {ADMIN_TOKEN}", ADMIN_TOKEN)
    assert bearer_matches(f"bearer  {ADMIN_TOKEN} ", ADMIN_TOKEN)
    for header in ("Bearer \udcff", "Bearer é", "Bearer \ud800", "Basic x", "", None):
        assert not bearer_matches(header, ADMIN_TOKEN)
    assert bearer_matches("Bearer tökén", "tökén")


def test_api_key_check_takes_any_text() -> None:
    assert api_key_matches(ADMIN_TOKEN, ADMIN_TOKEN)
    assert api_key_matches(f" {ADMIN_TOKEN} ", ADMIN_TOKEN)
    for header in ("\udcff", "é", "\ud800", f"Bearer {ADMIN_TOKEN}", ADMIN_TOKEN[:-1], "", None):
        assert not api_key_matches(header, ADMIN_TOKEN)
    assert api_key_matches("tökén", "tökén")


async def test_a_wrong_x_api_key_is_refused_without_echoing_it(console: TestServer) -> None:
    wrong = "sk-ant-api03-wrong-key-for-palyra"
    for path in ("/v1/models", "/v1/messages", "/v1/chat/completions"):
        async with (
            aiohttp.ClientSession() as http,
            http.get(console.make_url(path), headers={"x-api-key": wrong}) as r,
        ):
            body = await r.text()
            assert r.status == 401, path
            assert "x-api-key" in body and wrong not in body
            assert wrong not in str(r.headers)
            if path == "/v1/messages":
                # On Anthropic's route, in Anthropic's shape (refused before any handler).
                assert json.loads(body)["error"]["type"] == "authentication_error"
                assert json.loads(body)["type"] == "error"


# -- the Secure attribute ---------------------------------------------------------------------


def console_config(state_dir: Path, **daemon: Any) -> PalyraConfig:
    return validate_config({"version": 1, "daemon": {"state_dir": str(state_dir), **daemon}})


def attributes(set_cookie: str) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in set_cookie.split(";")[1:]}


async def test_cookie_over_plain_http_is_not_secure(
    tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    server = await start_gateway(console_config(tmp_path / "state"))
    base = str(server.make_url(""))
    # A header any client can send is not what decides it.
    session = await sign_in(base, headers={"X-Forwarded-Proto": "https"})
    assert {"httponly", "samesite", "path"} <= attributes(session.set_cookie)
    assert "secure" not in attributes(session.set_cookie)


async def test_cookie_behind_a_tls_proxy_is_secure(
    tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    """docs/deployment.md: plain HTTP from the proxy, `public_base_url` is https."""
    config = console_config(tmp_path / "state", public_base_url="https://palyra.example.com")
    server = await start_gateway(config)
    base = str(server.make_url(""))
    session = await sign_in(base)
    assert "SameSite=Strict" in session.set_cookie
    assert {"secure", "httponly", "path"} <= attributes(session.set_cookie)
    response = await sign_out(base, session)
    cleared = response.headers["Set-Cookie"]
    assert cleared.startswith(f"{COOKIE}=") and "secure" in attributes(cleared)


def self_signed_context(tmp_path: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


async def test_cookie_over_https_is_secure(tmp_path: Path) -> None:
    app = build_app(console_config(tmp_path / "state"), env={"PALYRA_ADMIN_TOKEN": ADMIN_TOKEN})
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=self_signed_context(tmp_path))
    try:
        assert server.scheme == "https"
        session = await sign_in(str(server.make_url("")), ssl=False)
        assert "secure" in attributes(session.set_cookie)
    finally:
        await server.close()


# -- sign-out is durable ----------------------------------------------------------------------


async def test_a_signed_out_cookie_stays_refused_after_a_restart(
    tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    config = gateway_config(None, tmp_path / "state")
    first = await start_gateway(config)
    base = str(first.make_url(""))
    kept, left = await sign_in(base), await sign_in(base)
    assert (await sign_out(base, left)).status == 200
    assert await console_status(base, left.cookie) == 401
    await first.close()

    restarted = await start_gateway(config)
    base = str(restarted.make_url(""))
    assert await console_status(base, left.cookie) == 401
    assert await session_probe(base, left.cookie) == NOT_SIGNED_IN
    # Sessions are not lost in a restart: only the signed-out one is refused.
    assert await console_status(base, kept.cookie) == 200


@pytest.fixture(params=["sqlite", "postgres"])
async def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A `[state]` URL two daemons share ("" is SQLite in a shared state dir)."""
    if request.param == "sqlite":
        yield ""
        return
    url, schema = await postgres_schema_url()
    yield url
    await drop_schema(schema)


async def test_a_sign_out_reaches_the_other_daemons(tmp_path: Path, shared_store: str) -> None:
    servers: list[TestServer] = []
    for n in range(2):
        state: dict[str, Any] = {"backend": "postgres", "url": shared_store} if shared_store else {}
        # SQLite is shared by sharing the state dir; PostgreSQL daemons each have their own.
        state_dir = tmp_path / (f"state-{n}" if shared_store else "state")
        config = validate_config(
            {"version": 1, "daemon": {"state_dir": str(state_dir)}, "state": state}
        )
        app = build_app(
            config, env={"PALYRA_ADMIN_TOKEN": ADMIN_TOKEN, "PALYRA_VAULT_KEY": VAULT_KEY}
        )
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
    try:
        one, other = (str(server.make_url("")) for server in servers)
        session = await sign_in(one)
        assert await console_status(other, session.cookie) == 200
        assert (await sign_out(one, session)).status == 200
        assert await console_status(one, session.cookie) == 401
        # The others re-read the revocations every 2 s (palyra.server.sessions.REFRESH_S).
        deadline = asyncio.get_running_loop().time() + 2 + 3
        while await console_status(other, session.cookie) != 401:
            assert asyncio.get_running_loop().time() < deadline, "the other daemon still accepts"
            await asyncio.sleep(0.1)
        assert await session_probe(other, session.cookie) == NOT_SIGNED_IN
    finally:
        for server in servers:
            await server.close()


async def test_a_sign_out_while_the_store_is_away_is_refused_here_and_written_later(
    tmp_path: Path,
) -> None:
    url, schema = await postgres_schema_url()
    proxy = CuttableProxy(5432)
    await proxy.start()
    via_proxy = url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    config = validate_config(
        {
            "version": 1,
            "daemon": {"state_dir": str(tmp_path / "state")},
            "state": {"backend": "postgres", "url": via_proxy},
        }
    )
    env = {"PALYRA_ADMIN_TOKEN": ADMIN_TOKEN, "PALYRA_VAULT_KEY": VAULT_KEY}
    server = TestServer(build_app(config, env=env), host="127.0.0.1")
    await server.start_server()
    try:
        base = str(server.make_url(""))
        session = await sign_in(base)
        proxy.cut()
        response = await sign_out(base, session)
        assert response.status == 503
        body = await response.json()
        assert body["error"]["code"] == "state_store_unavailable"
        assert response.cookies[COOKIE].value == ""  # the browser's copy is cleared anyway
        assert await console_status(base, session.cookie) == 401
        proxy.up = True
        # Written by the background refresh once the store answers; another daemon reads it.
        direct = validate_config(
            {
                "version": 1,
                "daemon": {"state_dir": str(tmp_path / "other")},
                "state": {"backend": "postgres", "url": url},
            }
        )
        other = TestServer(build_app(direct, env=env), host="127.0.0.1")
        await other.start_server()
        try:
            other_base = str(other.make_url(""))
            deadline = asyncio.get_running_loop().time() + 2 * 2 + 3
            while await console_status(other_base, session.cookie) != 401:
                assert asyncio.get_running_loop().time() < deadline, "never written"
                await asyncio.sleep(0.1)
        finally:
            await other.close()
    finally:
        await server.close()
        await proxy.close()
        await drop_schema(schema)
