"""`palyra status`: is the daemon up, which version, for how long, and is anything broken
(providers at a glance, the state store, Redis)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

import palyra
from palyra.cli.client import DaemonError
from palyra.cli.common import console, daemon, duration, fail, print_json, state

# With several workers, "workers" is the channel between them and the master.
DEPENDENCY_LABELS = {"workers": "worker channel"}


def _providers_line(providers: dict[str, Any]) -> Text:
    line = Text(str(providers["count"]))
    states = providers["states"]
    if states:
        line.append(": ")
        # The good news first, then the rest by how many.
        ordered = sorted(states.items(), key=lambda item: (item[0] != "ok", -item[1], item[0]))
        for i, (name, n) in enumerate(ordered):
            if i:
                line.append(", ")
            line.append(f"{n} ")
            line.append_text(state(name))
    if providers["not_ok"]:
        line.append(f"\nnot ok: {', '.join(providers['not_ok'])} (see `palyra models status`)")
    return line


def _dependency(info: dict[str, Any] | None) -> Text:
    if info is None:
        return Text("not used")
    if info["ok"]:
        return state("ok")
    return state("degraded", f"degraded: {info['error'] or 'not answering'}")


def status_view(url: str, answer: dict[str, Any]) -> Table:
    rows = Table.grid(padding=(0, 2))
    rows.add_column(style="bold", no_wrap=True)
    rows.add_column(overflow="fold")
    rows.add_row("daemon", Text.assemble(state("ok", "up"), f" at {url}"))
    rows.add_row("status", state(answer["status"]))
    version = answer["version"]
    mismatch = "" if version == palyra.__version__ else f" (this palyra: {palyra.__version__})"
    rows.add_row("version", f"palyrad {version}{mismatch}")
    rows.add_row("uptime", duration(answer["uptime_s"]))
    rows.add_row("workers", f"{answer['workers']} (pid {answer['pid']} answered)")
    rows.add_row("providers", _providers_line(answer["providers"]))
    dependencies = dict(answer["dependencies"])
    rows.add_row("state store", _dependency(dependencies.pop("state_store", None)))
    rows.add_row("redis", _dependency(dependencies.pop("redis", None)))
    for name, info in dependencies.items():
        rows.add_row(DEPENDENCY_LABELS.get(name, name.replace("_", " ")), _dependency(info))
    return rows


def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Is the daemon up: version, uptime, providers at a glance, state store and Redis.
    Exit 1 when no daemon answers."""
    client = daemon()
    try:
        answer = client.get("/console/v1/status")
    except DaemonError as exc:
        # Up but the admin route refused (a wrong token, an older daemon): still say it is up.
        try:
            health = client.get("/healthz")
        except DaemonError:
            health = None
        if as_json:
            print_json(
                {"up": health is not None, "url": client.base_url, "error": str(exc)}
                | ({"status": health.get("status")} if health else {})
            )
        if health is None:
            fail(str(exc))
        fail(
            f"the daemon at {client.base_url} is up ({health.get('status')}), but its status "
            f"could not be read: {exc}"
        )
    if as_json:
        print_json({"up": True, "url": client.base_url, **answer})
        return
    console().print(status_view(client.base_url, answer))
