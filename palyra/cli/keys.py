"""`palyra keys create | list | show | revoke | rotate`: client keys, through the daemon.

A new key's secret is printed once, alone on stdout (so `KEY=$(palyra keys create ...)` takes
it whole); what was made, and that the secret is not shown again, go to stderr.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Annotated, Any
from urllib.parse import quote

import typer

from palyra.cli.common import (
    call,
    compact_table,
    fail,
    give_way,
    nothing_yet,
    print_json,
    print_table,
    state,
)
from palyra.keys import BUDGET_PERIODS, parse_duration

app = typer.Typer(no_args_is_help=True, help="Client keys: who may call the inference routes.")

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]
KeyId = Annotated[str, typer.Argument(help="key id (see `palyra keys list`)")]
BASE = "/console/v1/keys"
NOT_AGAIN = "This key will not be shown again: store it now."


def _key_path(key_id: str, tail: str = "") -> str:
    return f"{BASE}/{quote(key_id, safe='')}{tail}"


def _when(ms: int | None, *, date_only: bool = False) -> str:
    if ms is None:
        return "never"
    when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return when.date().isoformat() if date_only else when.isoformat(timespec="seconds")


def _count(n: int) -> str:
    if not n:
        return "-"
    if n < 10_000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.0f}k"
    return f"{n / 1_000_000:.1f}M".replace(".0M", "M")


def _budget(key: dict[str, Any]) -> str:
    if key["budget_usd"] is None:
        return "-"
    return f"${key['budget_usd']:g}/{key['budget_period']}"


def _models(key: dict[str, Any], sep: str = ",") -> str:
    return sep.join(key["models"]) or "all"


def _print_key(key: dict[str, Any]) -> None:
    rows = [
        ("key", key["key_id"]),
        ("name", key["name"]),
        ("prefix", key["prefix"] + "..."),
        ("status", key["status"]),
        ("models", _models(key)),
        ("rpm", _count(key["rpm"])),
        ("tpm", _count(key["tpm"])),
        ("budget", _budget(key)),
        ("expires", _when(key["expires_at_ms"])),
        ("agent", key["agent_id"] or "-"),
        ("created", _when(key["created_at_ms"])),
    ]
    if key["revoked_at_ms"] is not None:
        rows.append(("revoked", _when(key["revoked_at_ms"])))
    width = max(len(k) for k, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def _print_secret(answer: dict[str, Any], what: str, as_json: bool) -> None:
    if as_json:
        print_json(answer)
        return
    key = answer["key"]
    print(f"{what} {key['key_id']} ({key['name']})", file=sys.stderr)
    print(answer["secret"])
    print(NOT_AGAIN, file=sys.stderr)


@app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="who or what the key is for")],
    models: Annotated[
        str | None, typer.Option("--models", help="models it may call, M1,M2 (default: all)")
    ] = None,
    rpm: Annotated[int, typer.Option("--rpm", min=0, help="requests per minute (0: none)")] = 0,
    tpm: Annotated[int, typer.Option("--tpm", min=0, help="tokens per minute (0: none)")] = 0,
    budget_usd: Annotated[
        float | None, typer.Option("--budget-usd", help="spend allowed per budget period, USD")
    ] = None,
    budget_period: Annotated[
        str, typer.Option("--budget-period", help="day | week | month | total (UTC calendar)")
    ] = "month",
    expires: Annotated[
        str | None, typer.Option("--expires", help="valid for, e.g. 30d, 12h, 90m, 1w")
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="agent its usage is attributed to")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Make a key; its secret is printed this once."""
    if budget_period not in BUDGET_PERIODS:
        fail("--budget-period must be day, week, month or total", 2)
    if budget_usd is not None and not budget_usd > 0:
        fail("--budget-usd must be more than 0", 2)
    body: dict[str, Any] = {"name": name, "rpm": rpm, "tpm": tpm, "budget_period": budget_period}
    if models is not None:
        body["models"] = [m.strip() for m in models.split(",") if m.strip()]
        if not body["models"]:
            fail("--models names no model: give M1,M2 (or leave it out for every model)", 2)
    if budget_usd is not None:
        body["budget_usd"] = budget_usd
    if expires is not None:
        try:
            parse_duration(expires)
        except ValueError as exc:
            fail(f"--expires: {exc}", 2)
        body["expires_in"] = expires
    if agent is not None:
        body["agent_id"] = agent
    _print_secret(call("POST", BASE, body), "created", as_json)


@app.command("list")
def keys_list(as_json: JsonOption = False) -> None:
    """Every key, revoked and expired ones included; never a secret."""
    keys = call("GET", BASE)["keys"]
    if as_json:
        print_json(keys)
        return
    if nothing_yet(keys, "client keys", "make one with `palyra keys create`"):
        return
    # Ids and figures never wrap; names and models fold rather than end in "…".
    table = compact_table()
    # The name under the id: in a column of its own it was cut to a few letters a line.
    table.add_column("key\nname", overflow="fold", min_width=16)
    table.add_column("models", overflow="fold")
    table.add_column("rpm/tpm", no_wrap=True)
    table.add_column("budget", no_wrap=True)
    table.add_column("expires", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for key in keys:
        table.add_row(
            f"{key['key_id']}\n{key['name']}",
            _models(key, "\n"),  # one a line: an id cut across lines reads as two
            f"{_count(key['rpm'])}/{_count(key['tpm'])}",
            _budget(key),
            _when(key["expires_at_ms"], date_only=True),
            state(key["status"]),
        )
    give_way(table, 0)  # model ids whole where they can be: the name gives way first
    print_table(table)


@app.command("show")
def keys_show(key_id: KeyId, as_json: JsonOption = False) -> None:
    """One key's settings and status; never its secret."""
    key = call("GET", _key_path(key_id))["key"]
    if as_json:
        print_json(key)
        return
    _print_key(key)


@app.command("revoke")
def keys_revoke(key_id: KeyId) -> None:
    """Stop the key for good, on every daemon sharing the state store within a second."""
    key = call("DELETE", _key_path(key_id))["key"]
    print(f"revoked {key['key_id']} ({key['name']})")


@app.command("rotate")
def keys_rotate(key_id: KeyId, as_json: JsonOption = False) -> None:
    """A new secret for the key, its settings kept; the old secret stops working."""
    _print_secret(call("POST", _key_path(key_id, "/rotate"), {}), "rotated", as_json)
