"""Fuzzing who may ask: bearer headers, the web console's session cookie and CSRF header,
sign-in and sign-out, the console's static files, and the credential routes (API keys,
OpenAI OAuth bootstrap/callback/callback-state, auth profiles)."""

from __future__ import annotations

import contextlib
from http.cookies import SimpleCookie
from urllib.parse import quote, urlencode

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz.conftest import fuzz_settings
from tests.fuzz.harness import (
    ADMIN_TOKEN,
    Blob,
    Fuzz,
    b64,
    build_request,
    send_raw,
    signed_cookie,
)
from tests.fuzz.strategies import (
    ODD_HEADER_VALUES,
    json_text,
    mutated,
    nested,
    odd_header_value,
    odd_text,
    render,
    session_payload,
)

pytestmark = pytest.mark.timeout(600)

JSON = [("Content-Type", "application/json")]
TOKEN = ADMIN_TOKEN.encode()

GET_ROUTES = [
    "/v1/models",
    "/console/v1/models/status",
    "/console/v1/cron/jobs",
    "/console/v1/agents",
    "/console/v1/auth/profiles",
    "/console/v1/auth/providers/openai/callback-state?attempt_id=x",
    "/console/session",
    "/metrics",
    "/healthz",
]
UNSAFE_ROUTES = [
    ("POST", "/console/v1/models/discover"),
    ("POST", "/console/v1/cron/jobs"),
    ("POST", "/console/v1/runs"),
    ("DELETE", "/console/v1/auth/profiles/nope"),
    ("POST", "/console/v1/auth/providers/openai/api-key"),
    ("DELETE", "/console/session"),
    ("POST", "/v1/chat/completions"),
]

authorization = st.one_of(
    st.sampled_from(
        [
            b"Bearer \xff",
            b"Bearer " + TOKEN + b"\xff",
            b"Bearer \xc3\xa9",
            "Bearer ²".encode(),
            b"Bearer " + TOKEN.upper(),
            b"bearer " + TOKEN,
            b"BEARER  " + TOKEN,
            b"Bearer\t" + TOKEN,
            b"Bearer",
            b"Bearer ",
            b"Basic " + TOKEN,
            b"Bearer " + b"a" * 7000,
            b"Bearer " + TOKEN + b" " + TOKEN,
            b"\xff " + TOKEN,
            b"",
        ]
    ),
    odd_header_value,
    odd_header_value.map(lambda value: b"Bearer " + value),
)


@fuzz_settings(scale=3)
@given(
    value=authorization,
    route=st.sampled_from(GET_ROUTES),
    unsafe=st.sampled_from([None, *UNSAFE_ROUTES]),
)
@example(value=b"Bearer \xff", route="/v1/models", unsafe=None)
def test_bearer_header(fz: Fuzz, value: bytes, route: str, unsafe: tuple[str, str] | None) -> None:
    fz.send("GET", route, [(b"Authorization", value)], authorized=False)
    if unsafe is not None:
        method, path = unsafe
        fz.send(method, path, [(b"Authorization", value), *JSON], b"{}", authorized=False)


# --- sessions -------------------------------------------------------------------------------

signatures = st.one_of(
    st.sampled_from(["", "é", "²", "\udcff", "x" * 43, "a.b", "=" * 43]),
    st.text(max_size=50),
)


@st.composite
def session_cookie(draw: st.DrawFn) -> bytes:
    """A `palyra_session` value: the `<b64 payload>.<b64 signature>` shape with any payload
    (odd numbers, deep nesting, not JSON) and a wrong, odd or valid signature; or any bytes."""
    payload = draw(session_payload())
    how = draw(st.sampled_from(["signed", "unsigned", "unsigned", "raw"]))
    if how == "signed":
        return Blob(signed_cookie(payload).encode())
    if how == "unsigned":
        signature = draw(signatures)
        return Blob(f"{b64(payload)}.{signature}".encode("utf-8", "surrogateescape"))
    return Blob(draw(st.sampled_from(ODD_HEADER_VALUES) | st.just(payload.replace(b";", b""))))


COOKIE_ROUTES = [
    ("GET", "/console/session"),
    ("GET", "/console/v1/models/status"),
    ("GET", "/console/v1/auth/profiles"),
    ("POST", "/console/v1/models/discover"),
    ("DELETE", "/console/session"),
    ("PATCH", "/console/v1/cron/jobs/x"),
]


# aiohttp refuses a header line longer than 8190 bytes in its parser (test_http_fuzz covers
# that); cookies stay under it, so that they reach the daemon's own code.
MAX_COOKIE = 8100


def _cookie_header(value: bytes, shape: str) -> bytes:
    value = value[:MAX_COOKIE]
    if shape == "plain":
        return b"palyra_session=" + value
    if shape == "quoted":
        return b'palyra_session="' + value + b'"'
    if shape == "twice":
        return b"palyra_session=" + value + b"; palyra_session=x.y"
    return b"a=b; palyra_session=" + value + b"; c=d"


@fuzz_settings(scale=4)
@given(
    value=session_cookie(),
    shape=st.sampled_from(["plain", "plain", "quoted", "twice", "among"]),
    route=st.sampled_from(COOKIE_ROUTES),
    csrf=st.none() | odd_header_value,
)
@example(
    value=b"eyJzaWQiOiJ4IiwiZXhwIjoxZTk5OX0.x", shape="plain", route=COOKIE_ROUTES[0], csrf=None
)
@example(
    value=b"eyJzaWQiOiJ4IiwiZXhwIjo0MTAyNDQ0ODAwfQ.\xc3\xa9",
    shape="plain",
    route=COOKIE_ROUTES[0],
    csrf=None,
)
@example(
    value=(b64(nested(3000, "list")) + ".x").encode(),
    shape="plain",
    route=COOKIE_ROUTES[0],
    csrf=None,
)
def test_session_cookie(
    fz: Fuzz, value: bytes, shape: str, route: tuple[str, str], csrf: bytes | None
) -> None:
    method, path = route
    headers: list[tuple[bytes, bytes]] = [(b"Cookie", _cookie_header(value, shape))]
    if csrf is not None:
        headers.append((b"X-CSRF-Token", csrf))
    fz.send(method, path, [*headers, *JSON], b"{}" if method != "GET" else b"", authorized=False)


def _sign_in(fz: Fuzz) -> tuple[bytes, str]:
    """A real session: its Cookie header and its CSRF token."""
    response = fz.send(
        "POST", "/console/session", JSON, render({"token": ADMIN_TOKEN}), authorized=False
    )
    assert response.status == 200, response.body
    cookies: SimpleCookie = SimpleCookie()
    for name, value in response.headers:
        if name == "set-cookie":
            cookies.load(value)
    body = response.json()
    return f"palyra_session={cookies['palyra_session'].value}".encode(), body["csrf_token"]


@fuzz_settings(scale=2)
@given(
    csrf=st.sampled_from([b"\xc3\xa9", b"\xff", "²".encode(), b"", b"x" * 5000]) | odd_header_value,
    route=st.sampled_from([r for r in COOKIE_ROUTES if r[0] != "GET"]),
    append=st.booleans(),
)
@example(csrf=b"\xc3\xa9", route=("POST", "/console/v1/models/discover"), append=False)
def test_csrf_header(fz: Fuzz, csrf: bytes, route: tuple[str, str], append: bool) -> None:
    cookie, token = _sign_in(fz)
    value = token.encode() + csrf if append else csrf
    method, path = route
    headers = [(b"Cookie", cookie), (b"X-CSRF-Token", value), *JSON]
    fz.send(method, path, headers, b"{}", authorized=False)


@fuzz_settings(scale=2)
@given(
    body=mutated(
        st.fixed_dictionaries({"token": st.sampled_from([ADMIN_TOKEN, "x", ""])}), ["token"]
    ),
    method=st.sampled_from(["POST", "POST", "GET", "DELETE", "PUT"]),
)
def test_sign_in_and_out(fz: Fuzz, body: Blob, method: str) -> None:
    response = fz.send(method, "/console/session", JSON, body, authorized=False)
    for name, value in response.headers:
        if name == "set-cookie" and "palyra_session=" in value:
            cookie = value.split(";")[0].encode()
            fz.send("GET", "/console/session", [(b"Cookie", cookie)], authorized=False)
            fz.send("DELETE", "/console/session", [(b"Cookie", cookie)], authorized=False)


# --- static files ---------------------------------------------------------------------------

STATIC_NAMES = [
    "app.js",
    "index.html",
    "a" * 300 + ".js",
    "a" * 5000 + ".css",
    "%00.js",
    "a%00.js",
    "..%2fapp.js",
    "%2e%2e%2f%2e%2e%2fpyproject.toml",
    "%C2%B2.css",
    "%ff.js",
    ".js",
    ".hidden.js",
    "APP.JS",
    "app.js%20",
    "app.js.",
    "con.js",
    "app.svg",
    "x.svg",
    "%5c..%5capp.js",
]


STATIC_SUFFIXES = [".js", ".css", ".html", ".svg", ""]
static_names = st.one_of(
    st.sampled_from(STATIC_NAMES),
    st.builds(
        lambda text, suffix: quote(text, safe="") + suffix,
        odd_text,
        st.sampled_from(STATIC_SUFFIXES),
    ),
    # names longer than a file name may be (255 bytes on most file systems)
    st.builds(
        lambda n, suffix: "a" * n + suffix,
        st.sampled_from([250, 255, 256, 300, 1000, 4000]),
        st.sampled_from(STATIC_SUFFIXES),
    ),
)


@fuzz_settings(scale=3)
@given(
    name=static_names,
    prefix=st.sampled_from(
        ["/console/static/", "/console/static//", "/console//static/", "/console/"]
    ),
    method=st.sampled_from(["GET", "GET", "HEAD", "POST"]),
    authorized=st.booleans(),
)
@example(name="a" * 300 + ".js", prefix="/console/static/", method="GET", authorized=False)
def test_console_static(fz: Fuzz, name: str, prefix: str, method: str, authorized: bool) -> None:
    fz.send(method, prefix + name, authorized=authorized)


# --- credentials ----------------------------------------------------------------------------

api_key_template = st.fixed_dictionaries(
    {
        "api_key": st.sampled_from(["sk-fuzz", "sk-" + "x" * 4097, "", " ", "a b", "é", "\u0000"])
        | odd_text
    },
    optional={
        "profile_id": st.sampled_from(["p1", "fuzz-profile", "", "²", "a" * 129, "../x", "P:1"]),
        "profile_name": odd_text,
        "set_default": st.sampled_from([True, False, 1, "true", None]),
    },
)
API_KEY_FIELDS = ["api_key", "profile_id", "profile_name", "set_default"]


def _delete_profile(fz: Fuzz, profile_id: str) -> None:
    request = build_request(
        fz.port, "DELETE", f"/console/v1/auth/profiles/{quote(profile_id, safe='')}", fz.auth()
    )
    with contextlib.suppress(Exception):
        send_raw(fz.port, request)


@fuzz_settings(scale=3)
@given(
    provider=st.sampled_from(["openai", "anthropic"]),
    body=mutated(api_key_template, API_KEY_FIELDS),
)
def test_api_key(fz: Fuzz, provider: str, body: Blob) -> None:
    response = fz.send("POST", f"/console/v1/auth/providers/{provider}/api-key", JSON, body)
    parsed = response.json()
    profile = parsed.get("profile") if isinstance(parsed, dict) else None
    if not isinstance(profile, dict) or not isinstance(profile.get("profile_id"), str):
        return
    profile_id = quote(profile["profile_id"], safe="")
    try:
        fz.send("GET", "/console/v1/auth/profiles")
        fz.send("GET", f"/console/v1/auth/profiles/{profile_id}")
        fz.send("POST", f"/console/v1/auth/profiles/{profile_id}/default")
        fz.send("POST", f"/console/v1/auth/profiles/{profile_id}/refresh")
        fz.send("DELETE", f"/console/v1/auth/profiles/{profile_id}")
    finally:
        _delete_profile(fz, profile["profile_id"])


bootstrap_template = st.fixed_dictionaries(
    {},
    optional={
        "client_id": st.sampled_from(["fuzz-client", "", "a" * 257, "\u0000", "é"]),
        "client_secret": st.sampled_from(["s", "", "a b", "x" * 5000]),
        "scopes": st.sampled_from([["openid"], "openid profile", [], [1], "²", ["a b"]]),
        "profile_id": st.sampled_from(["oauth-fuzz", "", "²", "a" * 129]),
        "profile_name": odd_text,
        "set_default": st.booleans(),
    },
)
BOOTSTRAP_FIELDS = [
    "client_id",
    "client_secret",
    "scopes",
    "profile_id",
    "profile_name",
    "set_default",
]

callback_params = st.dictionaries(
    st.sampled_from(["code", "error", "error_description", "state", "iss", "x"]),
    st.sampled_from(["c", "", "²", "a" * 5000, "access_denied", "<script>"]) | odd_text,
    max_size=4,
)


@fuzz_settings(scale=3)
@given(
    body=mutated(bootstrap_template, BOOTSTRAP_FIELDS),
    params=callback_params,
    with_state=st.booleans(),
    twice=st.booleans(),
)
def test_oauth_bootstrap_and_callback(
    fz: Fuzz, body: Blob, params: dict[str, str], with_state: bool, twice: bool
) -> None:
    response = fz.send("POST", "/console/v1/auth/providers/openai/bootstrap", JSON, body)
    parsed = response.json()
    attempt_id = parsed.get("attempt_id") if isinstance(parsed, dict) else None
    if isinstance(attempt_id, str):
        fz.send("GET", f"/console/v1/auth/providers/openai/callback-state?attempt_id={attempt_id}")
        if with_state:
            params = {**params, "state": attempt_id}
    query = urlencode(params)
    for _ in range(2 if twice else 1):
        fz.send("GET", f"/console/v1/auth/providers/openai/callback?{query}", authorized=False)
    if isinstance(parsed, dict) and isinstance(parsed.get("profile_id"), str):
        _delete_profile(fz, parsed["profile_id"])


@fuzz_settings(scale=2)
@given(
    query=st.sampled_from(
        [
            "",
            "?",
            "?attempt_id=",
            "?attempt_id=%ff",
            "?attempt_id=%C2%B2",
            "?attempt_id=" + "a" * 5000,
            "?attempt_id=x&attempt_id=y",
            "?state=%ff&code=%00",
            "?state=" + "a" * 129,
            "?%ff=%ff",
        ]
    )
    | st.builds(lambda t: "?attempt_id=" + quote(t, safe=""), odd_text),
    route=st.sampled_from(["callback-state", "callback"]),
)
def test_oauth_odd_queries(fz: Fuzz, query: str, route: str) -> None:
    fz.send(
        "GET", f"/console/v1/auth/providers/openai/{route}{query}", authorized=route != "callback"
    )


@fuzz_settings(scale=2)
@given(
    profile_id=st.sampled_from(["x", "%C2%B2", "%ff", "%00", "a" * 300, "..", "%2F", "P:1"])
    | odd_text.map(lambda t: quote(t, safe="")),
    action=st.sampled_from(
        [("GET", ""), ("DELETE", ""), ("POST", "/refresh"), ("POST", "/default"), ("PUT", "")]
    ),
    body=st.just(Blob(b"")) | json_text.map(Blob),
)
def test_profiles_odd_ids(fz: Fuzz, profile_id: str, action: tuple[str, str], body: Blob) -> None:
    method, suffix = action
    fz.send(method, f"/console/v1/auth/profiles/{profile_id}{suffix}", JSON, body)
