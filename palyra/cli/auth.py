"""`palyra auth openai|anthropic api-key`, `palyra auth openai login`, `palyra auth profiles ...`.

All of these talk to the running daemon: it checks keys against the providers, receives the
OAuth callback and owns the refresh task.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import time
import webbrowser
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Group
from rich.text import Text

from palyra.cli.client import DaemonError
from palyra.cli.common import (
    call,
    compact_table,
    daemon,
    error_notes,
    fail,
    nothing_yet,
    plural,
    print_json,
    print_table,
    relative,
    state,
)

app = typer.Typer(no_args_is_help=True, help="Provider credentials: API keys, OAuth, profiles.")
openai_app = typer.Typer(no_args_is_help=True, help="Connect OpenAI (API key or sign-in).")
anthropic_app = typer.Typer(no_args_is_help=True, help="Connect Anthropic (API key).")
profiles_app = typer.Typer(no_args_is_help=True, help="Auth profiles the daemon knows.")
app.add_typer(openai_app, name="openai")
app.add_typer(anthropic_app, name="anthropic")
app.add_typer(profiles_app, name="profiles")

PREFIX = "/console/v1/auth"
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]
KIND_NAMES = {"openai_compatible": "openai"}
ProfileArgument = Annotated[str, typer.Argument(help="profile id")]


def _read_key(stdin: bool, env_var: str | None) -> str:
    if stdin == bool(env_var):
        fail("give exactly one of --stdin or --env VAR (a key never goes on the command line)", 2)
    if env_var:
        value = os.environ.get(env_var, "")
        if not value.strip():
            fail(f"environment variable {env_var} is not set or empty", 2)
        return value.strip()
    value = sys.stdin.read().strip()
    if not value:
        fail("nothing on stdin: pipe the API key in", 2)
    return value


def _connect(provider: str, profile: str, stdin: bool, env_var: str | None, **extra: Any) -> None:
    key = _read_key(stdin, env_var)
    body = {"api_key": key, "profile_id": profile, **{k: v for k, v in extra.items() if v}}
    result = call("POST", f"{PREFIX}/providers/{provider}/api-key", body)["profile"]
    default = " (default)" if result["is_default"] else ""
    print(f"connected {provider}: profile {result['profile_id']}{default}")


ProfileOption = Annotated[str, typer.Option("--profile", help="profile id to create or replace")]
StdinOption = Annotated[bool, typer.Option("--stdin", help="read the key from stdin")]
EnvOption = Annotated[str | None, typer.Option("--env", help="read the key from this env var")]
NameOption = Annotated[str | None, typer.Option("--name", help="display name")]
DefaultOption = Annotated[
    bool, typer.Option("--default", help="make it the default profile of its provider kind")
]


@openai_app.command("api-key")
def openai_api_key(
    profile: ProfileOption,
    stdin: StdinOption = False,
    env: EnvOption = None,
    name: NameOption = None,
    default: DefaultOption = False,
) -> None:
    """Check an OpenAI API key against the provider, then store it in the vault."""
    _connect("openai", profile, stdin, env, profile_name=name, set_default=default)


@anthropic_app.command("api-key")
def anthropic_api_key(
    profile: ProfileOption,
    stdin: StdinOption = False,
    env: EnvOption = None,
    name: NameOption = None,
    default: DefaultOption = False,
) -> None:
    """Check an Anthropic API key against the provider, then store it in the vault."""
    _connect("anthropic", profile, stdin, env, profile_name=name, set_default=default)


@openai_app.command("login")
def openai_login(
    client_id: Annotated[
        str | None, typer.Option("--client-id", help="OAuth client id (else config)")
    ] = None,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="only print the URL to open")
    ] = False,
    profile: Annotated[str | None, typer.Option("--profile", help="profile id")] = None,
    default: DefaultOption = False,
    poll_s: Annotated[float, typer.Option("--poll", help="seconds between checks", min=0.1)] = 1.0,
) -> None:
    """Sign in with OpenAI (OAuth with PKCE) and wait until the browser comes back."""
    body: dict[str, Any] = {"set_default": default}
    if client_id:
        body["client_id"] = client_id
    if profile:
        body["profile_id"] = profile
    started = call("POST", f"{PREFIX}/providers/openai/bootstrap", body)
    url = started["authorization_url"]
    print("Open this URL to sign in:", flush=True)
    print(url, flush=True)
    if not no_browser:
        with contextlib.suppress(webbrowser.Error):  # the printed URL is enough
            webbrowser.open(url)
    path = f"{PREFIX}/providers/openai/callback-state?attempt_id={quote(started['attempt_id'])}"
    client = daemon()
    deadline = started["expires_at_unix_ms"] / 1000 + 5
    while time.time() < deadline:
        try:
            state = client.get(path)
        except DaemonError as exc:
            fail(str(exc))
        if state["state"] == "succeeded":
            print(f"signed in: profile {state['profile_id']}")
            return
        if state["state"] == "failed":
            fail(f"sign-in failed: {state.get('error') or 'unknown reason'}")
        time.sleep(poll_s)
    fail("sign-in timed out: the browser did not come back in time")


def _when(ms: int | None, now_s: float) -> str:
    """An instant as UTC ISO time and how far from now: `2026-11-27T09:00:00Z (in 2h 5m)`."""
    if ms is None:
        return "-"
    at = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{at} ({relative(ms / 1000 - now_s)})"


def _expires(ms: int | None, now_s: float) -> Text:
    if ms is None:
        return Text("-")
    left = ms / 1000 - now_s
    return Text(relative(left), style="" if left > 0 else "red")


@profiles_app.command("list")
def profiles_list(as_json: JsonOption = False) -> None:
    """Every auth profile (never a secret value)."""
    profiles = call("GET", f"{PREFIX}/profiles")["profiles"]
    if as_json:
        print_json(profiles)
        return
    if nothing_yet(
        profiles, "auth profiles", "add one with `palyra auth openai api-key` or `login`"
    ):
        return
    now_s = time.time()
    table = compact_table()
    table.add_column("profile", overflow="fold")
    table.add_column("name", overflow="fold")
    table.add_column("kind", overflow="fold")
    table.add_column("type", overflow="fold")
    table.add_column("refresh", overflow="fold")
    table.add_column("expires", no_wrap=True)
    errors = []
    for p in profiles:
        # The default profile of its kind is marked by its id, not by a column of its own.
        profile = Text(p["profile_id"])
        if p["is_default"]:
            profile.append(" *", style="bold")
        table.add_row(
            profile,
            p["name"],
            KIND_NAMES.get(p["provider_kind"], p["provider_kind"]),
            p["credential_type"].replace("_", " "),
            state(p["refresh_state"]) if p["refresh_state"] != "none" else "-",
            _expires(p["access_expires_at_ms"], now_s),
        )
        if p["last_error"]:
            errors.append((p["profile_id"], p["last_error"]))
    footer = [Text("* the default profile of its kind", style="dim")]
    if not any(p["is_default"] for p in profiles):
        footer = []
    print_table(Group(table, *footer, *error_notes(errors)))


def _print_profile(profile: dict[str, Any], now_s: float) -> None:
    refs = profile.get("vault_refs") or {}
    rows: list[tuple[str, str]] = [
        ("profile", profile["profile_id"]),
        ("name", profile["name"]),
        ("kind", profile["provider_kind"]),
        ("credential", profile["credential_type"].replace("_", " ")),
        ("default", "yes" if profile["is_default"] else "no"),
        ("secrets", ", ".join(f"{k} in {v}" for k, v in sorted(refs.items())) or "-"),
    ]
    if profile.get("client_id"):
        rows.append(("client id", profile["client_id"]))
    if profile.get("scopes"):
        rows.append(("scopes", " ".join(profile["scopes"])))
    if profile["credential_type"] != "api_key" or profile["access_expires_at_ms"] is not None:
        failures = profile.get("refresh_failures") or 0
        rows += [
            ("expires", _when(profile["access_expires_at_ms"], now_s)),
            ("refresh", profile["refresh_state"]),
            ("next refresh", _when(profile.get("next_refresh_at_ms"), now_s)),
            ("last refresh", _when(profile.get("last_refresh_at_ms"), now_s)),
        ]
        if failures:
            rows.append(("refresh failed", plural(failures, "time")))
    rows += [
        ("last error", profile.get("last_error") or "-"),
        ("created", _when(profile["created_at_ms"], now_s)),
        ("updated", _when(profile["updated_at_ms"], now_s)),
    ]
    width = max(len(k) for k, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


@profiles_app.command("show")
def profiles_show(profile_id: ProfileArgument, as_json: JsonOption = False) -> None:
    """One profile in full (never a secret value)."""
    profile = call("GET", f"{PREFIX}/profiles/{quote(profile_id)}")["profile"]
    if as_json:
        print_json(profile)
        return
    _print_profile(profile, time.time())


@profiles_app.command("delete")
def profiles_delete(profile_id: ProfileArgument) -> None:
    """Delete a profile and every secret it holds."""
    call("DELETE", f"{PREFIX}/profiles/{quote(profile_id)}")
    print(f"deleted profile {profile_id}")


@profiles_app.command("refresh")
def profiles_refresh(profile_id: ProfileArgument) -> None:
    """Refresh an OAuth profile's access token now."""
    profile = call("POST", f"{PREFIX}/profiles/{quote(profile_id)}/refresh")["profile"]
    print(f"refreshed {profile['profile_id']}")


@profiles_app.command("set-default")
def profiles_set_default(profile_id: ProfileArgument) -> None:
    """Make a profile the default of its provider kind."""
    profile = call("POST", f"{PREFIX}/profiles/{quote(profile_id)}/default")["profile"]
    print(f"{profile['profile_id']} is now the default for {profile['provider_kind']}")
