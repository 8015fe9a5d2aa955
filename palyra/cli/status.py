"""`palyra status`: is the daemon up, which version, for how long, and is anything broken
(providers at a glance, the state store, Redis)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text

import palyra
from palyra.cli.client import DaemonError
from palyra.cli.common import console, daemon, duration, fail, print_json, state

# With several workers, "workers" is the channel between them and the master.
DEPENDENCY_LABELS = {"workers": "worker channel"}


def _providers(providers: dict[str, Any]) -> Text:
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
    return line


def _dependency(info: dict[str, Any] | None) -> Text:
    if info is None:
        return Text("not used")
    if info["ok"]:
        return state("ok")
    return state("degraded", f"degraded: {info['error'] or 'not answering'}")


def status_view(url: str, answer: dict[str, Any]) -> list[Text]:
    """`label  value` lines (not a grid: piped, a grid pads every line to its widest)."""
    version = answer["version"]
    mismatch = "" if version == palyra.__version__ else f" (this palyra: {palyra.__version__})"
    rows: list[tuple[str, Text | str]] = [
        ("daemon", Text.assemble(state("ok", "up"), f" at {url}")),
        ("status", state(answer["status"])),
        ("version", f"palyrad {version}{mismatch}"),
        ("uptime", duration(answer["uptime_s"])),
        ("workers", f"{answer['workers']} (pid {answer['pid']} answered)"),
        ("providers", _providers(answer["providers"])),
    ]
    if answer["providers"]["not_ok"]:
        not_ok = ", ".join(answer["providers"]["not_ok"])
        rows.append(("not ok", f"{not_ok} (see `palyra models status`)"))
    dependencies = dict(answer["dependencies"])
    rows.append(("state store", _dependency(dependencies.pop("state_store", None))))
    rows.append(("redis", _dependency(dependencies.pop("redis", None))))
    for name, info in dependencies.items():
        rows.append((DEPENDENCY_LABELS.get(name, name.replace("_", " ")), _dependency(info)))
    width = max(len(label) for label, _ in rows)
    return [Text.assemble((f"{label:<{width}}", "bold"), "  ", value) for label, value in rows]


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
    out = console()
    for line in status_view(client.base_url, answer):
        out.print(line)
